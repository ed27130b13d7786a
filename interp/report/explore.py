"""The explorer's data: one run (and its control run) as the views of ``interp.explore`` and
``interp explore --run R`` show it, as JSON-ready Python values. No widget here.

Every view reads what the run stores (``rounds.parquet``, ``tokens.parquet``, ``spans.parquet``,
``metrics.json`` and the analyses under ``probes/``, ``patching/``, ``sae/`` and ``circuits/``)
through :class:`interp.runs.store.Run`; a view whose data the run lacks returns
``{"missing": "..."}`` naming the command that makes it. Debiased option probabilities of a
permuted run are the run's own debiasing (:func:`interp.metrics.debias.debiased_rounds`).

:func:`view_state` maps the explorer's state (example, round, layer, query, filters) to every
view the page draws: the widget (:mod:`interp.report.explore_widget`) and the local server
(``interp explore``) both call it, so both show the same data.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from interp.errors import InterpError
from interp.inputs.selection import Selection, select_rows
from interp.metrics.debias import debiased_rounds, is_permuted
from interp.metrics.rounds import metrics_table
from interp.runs.store import Run

# The example filters, as the picker names them.
FILTERS = (
    "ambiguous",
    "disambiguated",
    "changed",
    "right_to_wrong",
    "wrong_to_right",
    "stereotyped",
)
TOP_LATENTS = 10
TOP_EDGES = 40


def records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """A table as JSON-ready rows (NaN as None, numpy scalars as Python numbers)."""
    return json.loads(frame.to_json(orient="records", double_precision=6))


def _open(run: str | Path | Run) -> Run:
    return run if isinstance(run, Run) else Run.open(run)


@dataclass(frozen=True)
class Segment:
    """Consecutive transcript tokens of one round and one kind."""

    round: int
    kind: str  # user, instruction, prefix, answer, other
    text: str
    start: int
    end: int
    readout: bool


class Explorer:
    """The views of one run, beside its control run's.

    Args:
        run: A run directory (or an open Run).
        control: The control run (same examples, no instruction), or None.
        model: A loaded model; only its tokenizer is used here (the transcript's text). Without
            one the tokenizer of the run's model is loaded where that needs no network
            (``tiny``, a local folder, the Hugging Face cache); else tokens show as ids.
        selection: Only these examples (ids or indices, a seeded sample, a limit: as every
            verb that selects); None: every example.
    """

    def __init__(
        self,
        run: str | Path | Run,
        control: str | Path | Run | None = None,
        model: Any = None,
        selection: Selection | None = None,
    ) -> None:
        self.run = _open(run)
        self.control: Run | None = None
        if control is not None:
            from interp.runs.controls import open_control

            self.control, _ = open_control(self.run, control)
        self.model = model
        self.selection = selection
        self._views: dict[tuple, Any] = {}

    # --- the stored tables, read once -------------------------------------------------------

    @cached_property
    def rounds(self) -> pd.DataFrame:
        rounds = self.run.rounds()
        if self.selection is not None and not self.selection.is_all():
            rounds = select_rows(rounds, self.selection)
        return rounds

    @cached_property
    def _by_example(self) -> dict[int, pd.DataFrame]:
        return {int(e): g.sort_values("round") for e, g in self.rounds.groupby("example_index")}

    @cached_property
    def _control_rounds(self) -> dict[tuple[str, int], pd.Series]:
        if self.control is None:
            return {}
        frame = self.control.rounds()
        return {(str(r["example_id"]), int(r["round"])): r for _, r in frame.iterrows()}

    @cached_property
    def permuted(self) -> bool:
        return is_permuted(self.rounds)

    @cached_property
    def _debiased(self) -> dict[tuple[int, int], list[float]]:
        if not self.permuted:
            return {}
        table = debiased_rounds(self.rounds)
        return {
            (int(r.example_index), int(r.round)): [float(np.exp(x)) for x in r.option_logprobs]
            for r in table.itertuples()
        }

    @cached_property
    def table(self) -> pd.DataFrame:
        """One row per example: what the picker shows and filters on."""
        rounds = self.rounds.sort_values(["example_index", "round"])
        first = rounds.groupby("example_index").first()
        last = rounds.groupby("example_index").last()
        texts = rounds.groupby("example_index")["answer_text"].agg(
            lambda s: " | ".join(str(t) for t in s)
        )
        out = pd.DataFrame(
            {
                "example_index": first.index.astype(int),
                "example_id": first["example_id"].astype(str).to_numpy(),
                "category": first["category"].astype(str).to_numpy() if "category" in first else "",
                "context_condition": first["context_condition"].astype(str).to_numpy()
                if "context_condition" in first
                else "",
                "first_choice": first["choice"].astype(int).to_numpy(),
                "last_choice": last["choice"].astype(int).to_numpy(),
                "first_correct": first["correct"].astype(bool).to_numpy(),
                "last_correct": last["correct"].astype(bool).to_numpy(),
                "stereotyped": last["biased"].astype(bool).to_numpy(),
                "answers": texts.reindex(first.index).to_numpy(),
            }
        )
        out["changed"] = out["first_choice"] != out["last_choice"]
        out["right_to_wrong"] = out["first_correct"] & ~out["last_correct"]
        out["wrong_to_right"] = ~out["first_correct"] & out["last_correct"]
        if self.permuted:
            out["base_index"] = first["base_index"].astype(int).to_numpy()
            out["permutation"] = [
                ",".join(str(int(i)) for i in p) for p in first["permutation"].to_numpy()
            ]
        return out.reset_index(drop=True)

    @cached_property
    def tokens(self) -> list[list[int]]:
        """The final transcripts' token ids (``tokens.parquet``), read once."""
        return self.run.tokens()

    @cached_property
    def n_rounds(self) -> int:
        return int(self.rounds["round"].max()) + 1

    # --- the picker -------------------------------------------------------------------------

    @cached_property
    def question_texts(self) -> dict[int, str]:
        """example_index -> its question as the model read it: round 0's user message (the
        context, the question and the options), decoded with the run's tokenizer; read on
        the first search, once (spans.parquet read whole, one batch decode). Empty where no
        tokenizer loads offline."""
        from interp.runs.store import SPANS_FILE

        tok = self.tokenizer
        if tok is None:
            return {}
        examples = [int(e) for e in self.table["example_index"]]
        first = self.rounds[self.rounds["round"] == 0].set_index("example_index")
        ends = {e: int(first.loc[e, "readout_pos"]) for e in examples}  # no spans: up to it
        starts = dict.fromkeys(examples, 0)
        path = self.run.path / SPANS_FILE
        if path.is_file():
            spans = pd.read_parquet(
                path, columns=["example_index", "round", "user_start", "user_end"]
            )
            spans = spans[(spans["round"] == 0) & (spans["user_start"] >= 0)]
            for e, a, b in zip(
                spans["example_index"], spans["user_start"], spans["user_end"], strict=True
            ):
                if int(e) in starts:
                    starts[int(e)], ends[int(e)] = int(a), int(b)
        ids = [self.tokens[e][starts[e] : ends[e]] for e in examples]
        decode = getattr(tok, "batch_decode", None)
        texts = decode(ids) if decode is not None else [tok.decode(i) for i in ids]
        return dict(zip(examples, texts, strict=True))

    def orders(self) -> list[str]:
        """A permuted run's option orders ("0,1,2": the original; "1,2,0": ...), else []."""
        if not self.permuted:
            return []
        return sorted(self.table["permutation"].unique().tolist())

    def examples(
        self,
        query: str = "",
        filters: tuple[str, ...] | list[str] = (),
        order: str = "",
    ) -> pd.DataFrame:
        """The examples that match ``query`` and pass every filter in ``filters`` (names in
        :data:`FILTERS`) and, on a permuted run, are shown in option order ``order`` ("" or
        None: every order).

        ``query``: every word of it (case-insensitive) is in the example's index, id,
        category, answers or question text (round 0's user message: context, question and
        options). ``changed``: the last round's answer differs from round 0's;
        ``right_to_wrong`` / ``wrong_to_right``: round 0 right (wrong) and the last round
        wrong (right); ``stereotyped``: the last round's answer is the stereotyped target;
        ``ambiguous`` / ``disambiguated``: the BBQ context condition.

        Raises:
            InterpError: An unknown filter, an order the run does not have, or an order on a
                run that is not permuted.
        """
        unknown = [f for f in filters if f not in FILTERS]
        if unknown:
            raise InterpError(f"unknown filter {unknown[0]!r}; use one of {', '.join(FILTERS)}")
        table = self.table
        keep = np.ones(len(table), dtype=bool)
        for name in filters:
            if name == "ambiguous":
                keep &= (table["context_condition"] == "ambig").to_numpy()
            elif name == "disambiguated":
                keep &= (table["context_condition"] == "disambig").to_numpy()
            else:
                keep &= table[name].to_numpy(dtype=bool)
        if order:
            if not self.permuted:
                raise InterpError(
                    f"option order {order!r}: {self.run.path} is not a permuted run "
                    "(replay with --permute to have orders)"
                )
            if order not in self.orders():
                raise InterpError(
                    f"option order {order!r} is not in the run; it has {', '.join(self.orders())}"
                )
            keep &= (table["permutation"] == order).to_numpy()
        words = query.strip().lower().split()
        if words:
            text = (
                table["example_index"].astype(str)
                + " "
                + table["example_id"]
                + " "
                + table["category"]
                + " "
                + table["answers"]
                + " "
                + table["example_index"].map(self.question_texts).fillna("")
            ).str.lower()
            for word in words:
                keep &= text.str.contains(word, regex=False).to_numpy()
        return table[keep].reset_index(drop=True)

    # --- one example ------------------------------------------------------------------------

    def _rows(self, example: int) -> pd.DataFrame:
        rows = self._by_example.get(int(example))
        if rows is None:
            raise InterpError(
                f"example {example} is not in {self.run.path}: it has examples "
                f"0..{len(self._by_example) - 1}"
            )
        return rows

    @cached_property
    def tokenizer(self) -> Any:
        """The tokenizer of the run's model, or None where it cannot be loaded offline."""
        if self.model is not None and getattr(self.model, "tokenizer", None) is not None:
            return self.model.tokenizer
        info = self.run.manifest.get("model", {})
        try:
            if info.get("kind") == "tiny" or info.get("model_id") == "tiny":
                from interp.model.tiny import build_tiny_tokenizer

                return build_tiny_tokenizer()
            from transformers import AutoTokenizer

            source = info.get("path") or info.get("model_id")
            if not source:
                return None
            folder = Path(source)
            if folder.is_file():  # a GGUF file: its tokenizer lives in it
                return AutoTokenizer.from_pretrained(folder.parent, gguf_file=folder.name)
            return AutoTokenizer.from_pretrained(str(source), local_files_only=True)
        except Exception:  # no tokenizer offline: the transcript shows token ids
            return None

    def transcript(self, example: int) -> dict[str, Any]:
        """The example's final transcript as segments: per round its user message, the
        instruction inside it, the answer prefix and the answer, the read-out token apart."""
        rows = self._rows(example)
        tokens = self.tokens[int(example)]
        readouts = {int(p): int(r) for p, r in zip(rows["readout_pos"], rows["round"], strict=True)}
        kind = ["other"] * len(tokens)
        round_of = [0] * len(tokens)
        spans = self.run.round_spans(int(example))
        for s in spans or []:
            for name, span in (
                ("user", s.user),
                ("instruction", s.instruction),
                ("prefix", s.prefix),
                ("answer", s.answer),
            ):
                if span is not None:
                    kind[span[0] : span[1]] = [name] * (span[1] - span[0])
        starts = [0] + (
            [(s.answer or (s.readout, s.readout + 1))[1] for s in spans[:-1]]
            if spans
            else [p + 1 for p in sorted(readouts)[:-1]]
        )
        for r, start in enumerate(starts):
            end = starts[r + 1] if r + 1 < len(starts) else len(tokens)
            round_of[start:end] = [r] * (end - start)
        tok = self.tokenizer
        segments: list[Segment] = []
        i = 0
        while i < len(tokens):
            j = i + 1
            if i not in readouts:
                while (
                    j < len(tokens)
                    and j not in readouts
                    and kind[j] == kind[i]
                    and round_of[j] == round_of[i]
                ):
                    j += 1
            ids = [int(t) for t in tokens[i:j]]
            text = tok.decode(ids) if tok is not None else " ".join(f"#{t}" for t in ids)
            segments.append(Segment(round_of[i], kind[i], text, i, j, i in readouts))
            i = j
        return {
            "n_tokens": len(tokens),
            "decoded": tok is not None,
            "spans_known": spans is not None,
            "segments": [s.__dict__ for s in segments],
        }

    def example_view(self, example: int, round: int | None = None) -> dict[str, Any]:
        """The example: its transcript, and per round its answer and option probabilities
        (``raw``: exp of the stored option log-probs; ``debiased``: averaged over the option
        orders of a permuted run; ``control``: the control run's, same example and round)."""
        rows = self._rows(example)
        out_rounds = []
        for r in rows.itertuples():
            key = (str(r.example_id), int(r.round))
            control = self._control_rounds.get(key)
            base = int(r.base_index) if self.permuted else None
            out_rounds.append(
                {
                    "round": int(r.round),
                    "choice": int(r.choice),
                    "answer_text": str(r.answer_text),
                    "correct": bool(r.correct),
                    "biased": bool(r.biased),
                    "readout_pos": int(r.readout_pos),
                    "raw": [float(np.exp(x)) for x in r.option_logprobs],
                    "debiased": self._debiased.get((base, int(r.round))) if self.permuted else None,
                    "control": None
                    if control is None
                    else [float(np.exp(x)) for x in control["option_logprobs"]],
                    "control_choice": None if control is None else int(control["choice"]),
                }
            )
        first = rows.iloc[0]
        view: dict[str, Any] = {
            "example_index": int(example),
            "example_id": str(first["example_id"]),
            "category": str(first.get("category", "")),
            "context_condition": str(first.get("context_condition", "")),
            "label": int(first["label"]),
            "target": int(first["target"]),
            "round": self._round(round),
            "rounds": out_rounds,
            "transcript": self.transcript(example),
            "control_run": None if self.control is None else str(self.control.path),
        }
        if self.permuted:
            same = self.table[self.table["base_index"] == int(first["base_index"])]
            view["orders"] = records(same[["example_index", "permutation"]])
        return view

    def _round(self, round: int | None) -> int:
        if round is None:
            return self.n_rounds - 1
        if not 0 <= round < self.n_rounds:
            raise InterpError(
                f"round {round} is out of range: the run has rounds 0..{self.n_rounds - 1}"
            )
        return int(round)

    # --- concept scores ---------------------------------------------------------------------

    def _probe_scores(self, run: Run, concept: str | None) -> tuple[str, dict] | None:
        names = run.analyses("probes")
        if not names:
            return None
        name = concept if concept in names else names[0]
        key = ("probe", str(run.path), name)
        if key not in self._views:
            found = run.read_analysis("probes", name, ["example_scores", "scores"]).tables
            self._views[key] = found
        return name, self._views[key]

    def concepts(self) -> list[str]:
        return self.run.analyses("probes")

    def concept_heatmap(self, example: int, concept: str | None = None) -> dict[str, Any]:
        """The example's concept score per layer x round (the probe's stored example scores),
        the run's mean per layer x round, and the control run's example where it has them."""
        row = self._rows(example).iloc[0]
        found = self._probe_scores(self.run, concept)
        if found is None or "example_scores" not in found[1]:
            return {"missing": f"run `interp probe --run {self.run.path}` to make it"}
        name, tables = found
        scores = tables["example_scores"]
        layers = sorted(int(x) for x in scores["layer"].unique())
        rounds = sorted(int(x) for x in scores["round"].unique())
        mine = scores[scores["example_index"] == int(example)]
        out: dict[str, Any] = {
            "concept": name,
            "concepts": self.concepts(),
            "layers": layers,
            "rounds": rounds,
            "example": _grid(mine, layers, rounds, "score"),
        }
        if "scores" in tables:
            out["run_mean"] = _grid(tables["scores"], layers, rounds, "mean")
        if self.control is None:
            out["control"] = {"missing": "pass control= (--control-run) to compare"}
        else:
            theirs = self._probe_scores(self.control, name)
            if theirs is None or "example_scores" not in theirs[1] or theirs[0] != name:
                out["control"] = {
                    "missing": f"run `interp probe --run {self.control.path}` to make it"
                }
            else:
                index = self.control.rounds()
                index = index.loc[index["example_id"] == row["example_id"], "example_index"]
                frame = theirs[1]["example_scores"]
                frame = (
                    frame[frame["example_index"] == int(index.min())] if len(index) else frame[:0]
                )
                out["control"] = _grid(frame, layers, rounds, "score")
        out["scale"] = colour_scale(
            [out[k] for k in ("example", "run_mean", "control") if isinstance(out.get(k), list)]
        )
        return out

    # --- the analyses below the heatmap ------------------------------------------------------

    def patching_rows(self, example: int, layer: int | None = None) -> dict[str, Any]:
        """Per patching analysis its rows for the example (at ``layer`` where given)."""
        self._rows(example)
        names = self.run.analyses("patching")
        if not names:
            return {"missing": f"run `interp patch --run {self.run.path}` to make it"}
        out = []
        for name in names:
            key = ("patching", name)
            if key not in self._views:
                self._views[key] = self.run.read_analysis("patching", name).tables[""]
            table = self._views[key]
            rows = table[table["example_index"] == int(example)]
            if layer is not None and "layer" in rows:
                rows = rows[rows["layer"] == int(layer)]
            out.append(
                {"name": name, "rows": records(rows.drop(columns=["example_id"], errors="ignore"))}
            )
        return {"analyses": out}

    def sae_latents(self, example: int, round: int | None = None) -> dict[str, Any]:
        """Per SAE-features analysis: the stored latents whose activation on this example moved
        most from round 0 (to ``round``, default the last), with their contexts."""
        self._rows(example)
        names = self.run.analyses("sae")
        if not names:
            return {
                "missing": f"run `interp sae features --run {self.run.path} --sae SAE` to make it"
            }
        r = self._round(round)
        out = []
        for name in names:
            key = ("sae", name)
            if key not in self._views:
                self._views[key] = self.run.read_analysis(
                    "sae", name, ["example_acts", "contexts"]
                ).tables
            tables = self._views[key]
            acts = tables.get("example_acts")
            if acts is None:
                continue
            mine = acts[acts["example_index"] == int(example)]
            wide = mine.pivot_table(index="latent", columns="round", values="activation")
            if wide.empty or r not in wide.columns or 0 not in wide.columns:
                out.append({"name": name, "latents": []})
                continue
            change = (wide[r] - wide[0]).rename("change")
            order = change.abs().sort_values(ascending=False, kind="stable").index[:TOP_LATENTS]
            latents = []
            contexts = tables.get("contexts")
            for latent in order:
                item = {
                    "latent": int(latent),
                    "round0": float(wide.loc[latent, 0]),
                    "round": float(wide.loc[latent, r]),
                    "change": float(change[latent]),
                }
                if contexts is not None and "latent" in contexts:
                    item["contexts"] = records(contexts[contexts["latent"] == latent].head(3))
                latents.append(item)
            out.append({"name": name, "round": r, "latents": latents})
        return {"analyses": out}

    def circuit_edges(self) -> dict[str, Any]:
        """Per circuit analysis its strongest edges (|score|)."""
        names = self.run.analyses("circuits")
        if not names:
            return {"missing": f"run `interp circuit --run {self.run.path}` to make it"}
        out = []
        for name in names:
            key = ("circuits", name)
            if key not in self._views:
                edges = self.run.read_analysis("circuits", name, ["edges"]).tables.get("edges")
                if edges is not None and "score" in edges:
                    edges = edges.assign(_size=edges["score"].abs()).sort_values(
                        "_size", ascending=False, kind="stable"
                    )
                    edges = edges.drop(columns="_size").head(TOP_EDGES)
                self._views[key] = [] if edges is None else records(edges)
            out.append({"name": name, "edges": self._views[key]})
        return {"analyses": out}

    def attention(self, example: int, layer: int | None = None, head: int = 0) -> dict[str, Any]:
        """Where head ``head`` of ``layer`` (default the last layer) attends from each round's
        read-out: per round its strongest keys, and the share of attention per round of the
        transcript. Not stored by any command: computed with ``model`` (one forward per
        example, kept), else missing."""
        if self.model is None:
            return {
                "missing": "attention is computed from the model: pass model= to interp.explore, "
                f"or run `interp export --run {self.run.path} --heads LAYER.HEAD --examples "
                f"{int(example)}`"
            }
        rows = self._rows(example)
        n_layers, n_heads = int(self.model.cfg.n_layers), int(self.model.cfg.n_heads)
        layer = n_layers - 1 if layer is None else int(layer)
        if not (0 <= layer < n_layers and 0 <= head < n_heads):
            raise InterpError(
                f"head {layer}.{head}: the model has layers 0..{n_layers - 1} and heads "
                f"0..{n_heads - 1}"
            )
        key = ("attention", int(example))
        if key not in self._views:
            from interp.report.attention import readout_rows

            tokens = self.tokens[int(example)]
            readouts = [int(p) for p in rows["readout_pos"]]
            self._views[key] = readout_rows(self.model, tokens, readouts).numpy()
        weights = self._views[key][layer, head]  # [round, key]
        segments = self.transcript(example)["segments"]
        round_of = np.zeros(weights.shape[1], dtype=int)
        for seg in segments:
            round_of[seg["start"] : seg["end"]] = seg["round"]
        tokens = self.tokens[int(example)]
        tok = self.tokenizer
        out = []
        for r, pos in enumerate(int(p) for p in rows["readout_pos"]):
            row = weights[r, : pos + 1]
            top = np.argsort(-row, kind="stable")[:8]
            out.append(
                {
                    "round": r,
                    "readout_pos": pos,
                    "per_round": [float(row[round_of[: pos + 1] == k].sum()) for k in range(r + 1)],
                    "top": [
                        {
                            "pos": int(i),
                            "round": int(round_of[i]),
                            "weight": float(row[i]),
                            "text": tok.decode([int(tokens[i])]) if tok else f"#{tokens[i]}",
                        }
                        for i in top
                    ],
                }
            )
        return {"layer": layer, "head": head, "n_heads": n_heads, "rounds": out}

    # --- the run tab ------------------------------------------------------------------------

    @cached_property
    def _metrics_tab(self) -> dict[str, Any]:
        metrics = self.run.read_metrics()
        if metrics is None:
            return {"missing": f"run `interp metrics --run {self.run.path}` to make it"}
        out: dict[str, Any] = {"raw": records(metrics_table(metrics))}
        deb = metrics.get("debiased")
        out["debiased"] = (
            records(metrics_table(deb))
            if isinstance(deb, dict) and "per_round" in deb
            else {"missing": "the run is not permuted: replay with --permute to debias"}
        )
        if self.control is None:
            out["control"] = {"missing": "pass control= (--control-run) to compare"}
        else:
            theirs = self.control.read_metrics()
            out["control"] = (
                records(metrics_table(theirs))
                if theirs is not None
                else {"missing": f"run `interp metrics --run {self.control.path}` to make it"}
            )
        return out

    def metrics_tab(self) -> dict[str, Any]:
        """Per round the run's metrics with their intervals (raw, debiased where the run is
        permuted) beside the control run's."""
        return self._metrics_tab


def colour_scale(grids: list[list[list[float | None]]]) -> dict[str, Any] | None:
    """The colour scale the heatmaps share: the range of their values (None: no value).

    ``diverging`` where the values straddle 0: symmetric about 0 (``lo = -hi``, white at 0),
    so a cell's sign reads from its hue; else ``sequential`` from the smallest value to the
    largest. A single value spans a range of width 0: the page colours it mid-scale.
    """
    values = [v for grid in grids for row in grid for v in row if v is not None]
    if not values:
        return None
    lo, hi = float(min(values)), float(max(values))
    if lo < 0 < hi:
        bound = max(-lo, hi)
        return {"kind": "diverging", "lo": -bound, "hi": bound, "min": lo, "max": hi}
    return {"kind": "sequential", "lo": lo, "hi": hi, "min": lo, "max": hi}


def _grid(frame: pd.DataFrame, layers: list[int], rounds: list[int], column: str) -> list:
    """``frame``'s ``column`` as a layer x round list of lists (None where absent; the mean
    where a cell has several rows)."""
    at_layer = {layer: i for i, layer in enumerate(layers)}
    at_round = {r: j for j, r in enumerate(rounds)}
    total = np.zeros((len(layers), len(rounds)))
    count = np.zeros((len(layers), len(rounds)))
    cells = zip(
        frame["layer"].to_numpy(),
        frame["round"].to_numpy(),
        frame[column].to_numpy(dtype=float),
        strict=True,
    )
    for layer, r, value in cells:
        i, j = at_layer.get(int(layer)), at_round.get(int(r))
        if i is not None and j is not None and not np.isnan(value):
            total[i, j] += value
            count[i, j] += 1
    return [
        [float(total[i, j] / count[i, j]) if count[i, j] else None for j in range(len(rounds))]
        for i in range(len(layers))
    ]


# --- state -> views ----------------------------------------------------------------------------

STATE_KEYS = ("example", "round", "layer", "head", "query", "filters", "order", "concept")


def view_state(explorer: Explorer, state: dict[str, Any]) -> dict[str, Any]:
    """Every view for ``state`` (example, round, layer, head, query, filters, order, concept):
    what the widget's data traits hold and the server's ``/api/state`` returns."""
    order = state.get("order") or ""
    listed = explorer.examples(
        state.get("query", "") or "", tuple(state.get("filters") or ()), order
    )
    example = state.get("example")
    shown = set(listed["example_index"].tolist())
    if example is None:
        example = int(listed["example_index"].iloc[0]) if len(listed) else 0
    explorer._rows(int(example))  # an example the run lacks is refused
    if shown and int(example) not in shown:  # the filters left it out: the same base
        asked = explorer.table["example_index"] == int(example)  # example in an order kept,
        same = (  # else the first example they keep
            listed[listed["base_index"] == explorer.table.loc[asked, "base_index"].iloc[0]]
            if explorer.permuted
            else listed[:0]
        )
        example = int((same if len(same) else listed)["example_index"].iloc[0])
    example = int(example)
    round = explorer._round(state.get("round"))
    layer = state.get("layer")
    layer = None if layer is None or int(layer) < 0 else int(layer)
    return {
        "state": {
            "example": example,
            "round": round,
            "layer": -1 if layer is None else layer,
            "head": int(state.get("head") or 0),
            "query": state.get("query", "") or "",
            "filters": list(state.get("filters") or ()),
            "order": order,
            "concept": state.get("concept") or "",
        },
        "run": {
            "path": str(explorer.run.path),
            "n_rounds": explorer.n_rounds,
            "n_examples": len(explorer.table),
            "permuted": explorer.permuted,
            "filters": list(FILTERS),
            "orders": explorer.orders(),
        },
        "examples": records(
            listed[
                ["example_index", "example_id", "category", "context_condition", "changed"]
                + (["permutation"] if explorer.permuted else [])
            ].head(500)
        ),
        "n_listed": len(listed),
        "example": explorer.example_view(example, round),
        "heatmap": explorer.concept_heatmap(example, state.get("concept") or None),
        "patching": explorer.patching_rows(example, layer),
        "sae": explorer.sae_latents(example, round),
        "circuit": explorer.circuit_edges(),
        "attention": explorer.attention(example, layer, int(state.get("head") or 0)),
        "metrics": explorer.metrics_tab(),
    }
