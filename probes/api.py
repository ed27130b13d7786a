"""``probe``: concept directions per layer, and what the rounds of a run do along them.

One call reads a run directory, fits the concept's direction on every chosen layer from the
concept data (encoded by the run's own model, cached), and measures on the run's stored
read-out activations:

- ``per_layer``  held-out accuracy of the direction, with its controls (``probe_layers``):
                 shuffled labels, a random direction, the validation accuracy that picks the
                 headline layer, surface baselines (bag of words, length/punctuation), and the
                 transfer to the chat read-out position (``probes.transfer``);
- ``scores``     mean concept score per layer x round, 95% bootstrap interval over examples;
- ``shift``      the instruction shift (mean state at round r minus round 0) per layer x round:
                 its norm and cosine with the concept direction;
- ``correlation`` concept score vs entropy across rounds, per layer (Pearson, Spearman);
- ``behaviour``  how well each layer's read-out predicts the model's own answer being
                 stereotyped / correct.

Written to ``<run>/probes/<concept>/``: those tables as parquet, ``example_scores.parquet``
(every example x round x layer), ``directions.safetensors`` (the unit directions) and
``summary.json``. With a selection of the run's examples (``ProbeConfig.examples``, ``limit``,
``sample``) only those examples are scored (the directions, fitted on the concept data, are
the same), and the result is returned, not written: the stored results keep every example.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from jaxtyping import Float
from transformer_lens import HookedTransformer

from interp.errors import InterpError
from interp.inputs.selection import Selection, select_rows
from interp.model.hooknames import act_name
from interp.options import check_n_boot, check_seed
from interp.runs.controls import open_control
from interp.runs.distributed import Workers
from interp.runs.lock import run_lock
from interp.runs.store import AnalysisTensors, Run
from interp.stats import (
    Clusters,
    check_cluster_key,
    example_clusters,
    json_float,
    paired_difference,
    wilson_interval,
)
from probes.behaviour import behaviour_probes
from probes.concepts import ConceptData, load_concept
from probes.config import ProbeConfig
from probes.directions import LayerProbe, check_layers, check_method, choose_layer, probe_layers
from probes.encode import cached_encodings, check_position, weights_hash
from probes.scores import (
    CORRELATION_COLUMNS,
    check_score_kind,
    concept_scores,
    entropy_grid,
    instruction_shift,
    score_entropy_correlation,
    score_table,
)
from probes.surface import SurfaceCheck
from probes.transfer import cached_wrapped_encodings, transfer_table

BEST_LAYER_RULE = (
    "the layer with the highest accuracy on a validation split of the training pairs (the "
    "earliest on ties), fitted without them; the test split is not looked at to choose it, so "
    "its test accuracy is an honest estimate"
)
SELECTION_NOTE = (
    "the examples selected only (--examples, --limit, --sample): printed, not stored; the "
    "run's probe results (every example) are left as they are"
)
TEST_LAYER_RULE = (
    "the layer with the highest test accuracy: chosen on the test split itself, so its "
    "accuracy is optimistic"
)


@dataclass(frozen=True, eq=False)
class ProbeResult:
    """Everything :func:`probe` computed; the same tables it wrote."""

    concept: str
    per_layer: pd.DataFrame
    """layer, acc, acc_lo, acc_hi, train_acc, val_acc, shuffled_acc, random_acc, bow_acc,
    length_acc, n_train, n_val, n_test; with transfer, also transfer_acc,
    transfer_centred_acc, wrapped_acc."""
    scores: pd.DataFrame
    """layer, round, mean, lo, hi, n: mean concept score with a 95% bootstrap interval."""
    shift: pd.DataFrame
    """layer, round (>= 1), norm, cosine, projection of mean state(r) - mean state(0)."""
    correlation: pd.DataFrame
    """layer, level, n, pearson_r, pearson_lo, pearson_hi (cluster bootstrap, cell levels),
    pearson_p, spearman_r, spearman_p (round means from 5 rounds on), p_note."""
    behaviour: pd.DataFrame
    """behaviour, layer, acc, acc_lo, acc_hi, shuffled_acc, majority_acc, base_rate, n_..."""
    example_scores: pd.DataFrame
    """layer, example_index, round, score."""
    directions: Float[torch.Tensor, "layer d_model"]
    """Unit concept direction per layer, rows following ``per_layer.layer``."""
    control: pd.DataFrame | None = None
    """With a control run: layer, round, run, control, diff, lo, hi (mean score, run -
    control, paired cluster-bootstrap interval) and change_diff, change_lo, change_hi (the
    same for each run's change since round 0)."""
    summary: dict[str, Any] = field(default_factory=dict)
    out_dir: Path | None = None

    def __repr__(self) -> str:
        best = self.summary.get("best_layer")
        return (
            f"ProbeResult({self.concept}: {len(self.per_layer)} layers, best layer {best}, "
            f"{'with' if self.control is not None else 'no'} control)"
        )

    def _repr_html_(self) -> str:
        """A small HTML card for notebooks (:func:`interp.runs.display.html_card`)."""
        from interp.runs.display import html_card

        facts = [
            ("concept", self.concept),
            ("best layer", self.summary.get("best_layer")),
            ("control", self.control is not None),
            ("stored in", self.out_dir),
        ]
        tables = {"per_layer": self.per_layer, "scores": self.scores}
        if self.control is not None:
            tables["control"] = self.control
        return html_card(f"ProbeResult {self.concept}", facts, tables)


def _probe(
    run: Run | str | Path,
    config: ProbeConfig,
    model: HookedTransformer | None,
    progress: bool,
    encodings_dir: str | Path | None,
) -> ProbeResult:
    """:func:`probe`, its checks in the order that refuses bad input before any encoding."""
    check_method(config.method)
    check_position(config.position)
    check_score_kind(config.score)
    check_seed(config.seed)
    check_n_boot(config.n_boot, "n_boot")
    check_cluster_key(config.cluster)
    selection = config.selection  # a bad limit, sample or example list, before any file
    # checks every run file (interp.runs.store) before any encoding
    run = run if isinstance(run, Run) else Run.open(run)
    control_run = config.control_run
    control = open_control(run, control_run) if control_run is not None else None
    data = load_concept(config.concept)
    chosen = _run_layers(run, None if config.layers is None else list(config.layers))
    if control is not None:
        _check_control_hooks(control[0], chosen)
    kept = None if selection.is_all() else _selected_examples(run, selection)
    # One writer per run directory (interp.runs.lock), refused before the slow encoding.
    with run_lock(run.path):
        return _probe_locked(
            run,
            data,
            chosen,
            config.method,
            config.position,
            config.score,
            config.seed,
            config.test_size,
            config.n_boot,
            model,
            progress,
            config.transfer,
            config.cluster,
            control,
            Path(encodings_dir) if encodings_dir is not None else None,
            kept,
        )


def _selected_examples(run: Run, selection: Selection) -> list[int]:
    """The run's ``example_index`` values ``selection`` keeps, ascending (on a permuted run
    every order of a kept base example).

    Raises:
        InterpError: An example the run lacks, or a sample larger than its examples.
    """
    rows = select_rows(run.rounds(), selection)
    return sorted(int(i) for i in rows["example_index"].unique())


def _probe_locked(
    run: Run,
    data: ConceptData,
    chosen: list[int],
    method: str,
    position: str,
    score: str,
    seed: int,
    test_size: float,
    n_boot: int,
    model: HookedTransformer | None,
    progress: bool,
    transfer: bool,
    cluster: str,
    control: tuple[Run, dict[str, Any]] | None,
    encodings_dir: Path | None = None,
    kept: list[int] | None = None,
) -> ProbeResult:
    """The probe itself, under the run's lock: directions fitted on the concept data, then
    the run's examples scored along them.

    Args:
        kept: The run's examples to score (``example_index``, ascending), as the config's
            selection chose them; None: every example. The same positions of the control
            run are read (:func:`~interp.runs.controls.check_control` pairs the two runs'
            examples in order). With a selection nothing is written into the run.
    """
    cache_dir = encodings_dir or run.analysis_dir("probes") / "encodings"
    encodings = _concept_encodings(run, data, position, model, progress, cache_dir)
    probe = probe_layers(
        encodings, data, layers=chosen, method=method, seed=seed, test_size=test_size
    )
    per_layer, transfer_info = _with_transfer(
        run,
        data,
        probe,
        model,
        progress,
        transfer,
        method=method,
        seed=seed,
        test_size=test_size,
        cache_dir=cache_dir,
    )
    acts = torch.stack([run.activations(_hook(layer)).float() for layer in chosen])
    rounds = run.rounds()
    if kept is not None:
        acts, rounds = acts[:, kept], _renumbered(rounds, kept)
    clusters = example_clusters(rounds, cluster)
    tables = _round_tables(
        acts, probe, chosen, rounds, score=score, n_boot=n_boot, seed=seed, clusters=clusters
    )
    behaviour = behaviour_probes(
        acts, rounds, chosen, seed=seed, test_size=test_size, clusters=clusters.ids, n_boot=n_boot
    )
    # A Winogender run has no correct or stereotyped option: both behaviours are undefined.
    wino = "p_female" in rounds.columns
    if control is not None:
        tables["control"] = _control_table(
            acts,
            control[0],
            probe,
            chosen,
            score=score,
            n_boot=n_boot,
            seed=seed,
            clusters=clusters,
            kept=kept,
        )
    if kept is not None:  # positions in the selection back to the run's example_index
        scores = tables["example_scores"]
        scores["example_index"] = np.asarray(kept)[scores["example_index"].to_numpy()]
    config = {
        "concept": data.name,
        "concept_source": data.source,
        "method": method,
        "position": position,
        "score": score,
        "seed": seed,
        "test_size": test_size,
        "layers": chosen,
        "n_examples": int(acts.shape[1]),
        "n_rounds": int(acts.shape[2]),
        "transfer": transfer_info,
        "cluster": clusters.to_dict(),
        **({"behaviour_skipped": WINOGENDER_BEHAVIOUR} if wino else {}),
    }
    result = ProbeResult(
        concept=data.name,
        per_layer=per_layer,
        behaviour=behaviour,
        directions=probe.directions.vectors.float(),
        **tables,
    )
    summary = summarize(result, config, probe.surface)
    if control is not None:
        summary["control"] = _control_summary(control[1], result.control, summary["best_layer"])
    out_dir: Path | None = run.path / "probes" / data.name
    if kept is None:
        _write(run, result, summary)
    else:  # as `interp metrics` does: a subset is returned, never stored over the full result
        summary["selection"] = {"example_index": kept, "note": SELECTION_NOTE}
        out_dir = None
    return ProbeResult(**{**result.__dict__, "summary": summary, "out_dir": out_dir})


def _with_transfer(
    run: Run,
    data: ConceptData,
    probe: LayerProbe,
    model: HookedTransformer | None,
    progress: bool,
    enabled: bool,
    *,
    method: str,
    seed: int,
    test_size: float,
    cache_dir: Path,
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """``probe.table`` with the transfer columns added, and what the wrapping used (or why
    transfer was not measured)."""
    if not enabled:
        return probe.table, {"skipped": "not requested"}
    prefix = run.manifest.get("plan", {}).get("answer_prefix")
    if not isinstance(prefix, str):
        return probe.table, {"skipped": "the run's manifest records no plan answer prefix"}
    system = run.manifest.get("config", {}).get("system")
    info = run.manifest["model"]
    digest = weights_hash(model) if model is not None else str(info["weights_hash"])
    wrapped = cached_wrapped_encodings(
        data.texts(),
        name=data.name,
        answer_prefix=prefix,
        system=system,
        weights_hash=digest,
        cache_dir=cache_dir,
        get_model=lambda: model if model is not None else _load_run_model(info),
        progress=progress,
    )
    table, _ = transfer_table(probe, wrapped, data, method=method, seed=seed, test_size=test_size)
    return probe.table.merge(table, on="layer"), {"answer_prefix": prefix, "system": system}


def _load_run_model(info: dict[str, Any]) -> HookedTransformer:
    from interp.model.loading import load_run_model

    return load_run_model(info)


def _hook(layer: int) -> str:
    return act_name("resid_post", layer)


def _run_layers(run: Run, layers: Sequence[int] | None) -> list[int]:
    stored = [layer for layer in range(run.n_layers) if _hook(layer) in run.hooks]
    if layers is None:
        if not stored:
            raise InterpError(
                f"{run.path} stores no blocks.*.hook_resid_post activations; replay with "
                "--hooks resid_post to probe it"
            )
        return stored
    chosen = check_layers(layers, run.n_layers)
    missing = [layer for layer in chosen if layer not in stored]
    if missing:
        raise InterpError(
            f"{run.path} stores no {_hook(missing[0])}; stored layers: "
            f"{', '.join(map(str, stored)) or 'none'} (replay with --hooks to add it)"
        )
    return chosen


def _concept_encodings(
    run: Run,
    data: ConceptData,
    position: str,
    model: HookedTransformer | None,
    progress: bool,
    cache_dir: Path,
) -> Float[torch.Tensor, "item layer d_model"]:
    info = run.manifest["model"]
    if model is not None:
        from interp.model.loading import check_run_model

        check_run_model(model, info)
    digest = weights_hash(model) if model is not None else str(info["weights_hash"])

    def get_model() -> HookedTransformer:
        return model if model is not None else _load_run_model(info)

    encodings = cached_encodings(
        data.texts(),
        name=data.name,
        position=position,
        weights_hash=digest,
        cache_dir=cache_dir,
        get_model=get_model,
        progress=progress,
    )
    if encodings.shape[1:] != (run.n_layers, int(info["d_model"])):
        raise InterpError(
            f"concept encodings have {encodings.shape[1]} layers x {encodings.shape[2]} dims, "
            f"the run's model {run.n_layers} x {info['d_model']}; pass the run's model"
        )
    return encodings


def _round_tables(
    acts: Float[torch.Tensor, "layer example round d_model"],
    probe: LayerProbe,
    layers: list[int],
    rounds: pd.DataFrame,
    *,
    score: str,
    n_boot: int,
    seed: int,
    clusters: Clusters,
) -> dict[str, pd.DataFrame]:
    n_examples, n_rounds = acts.shape[1:3]
    entropy = entropy_grid(rounds, n_examples, n_rounds)
    parts: dict[str, list[pd.DataFrame]] = {
        "scores": [],
        "shift": [],
        "correlation": [],
        "example_scores": [],
    }
    for i, layer in enumerate(layers):
        direction = probe.directions.vectors[i]
        values = concept_scores(acts[i], direction, kind=score).numpy()
        parts["scores"].append(
            score_table(values, layer, n_boot=n_boot, seed=seed, clusters=clusters.ids)
        )
        parts["shift"].append(instruction_shift(acts[i], direction, layer))
        parts["correlation"].append(
            score_entropy_correlation(
                values, entropy, layer, clusters=clusters.ids, n_boot=n_boot, seed=seed
            )
        )
        parts["example_scores"].append(_example_scores(values, layer))
    return {name: pd.concat(frames, ignore_index=True) for name, frames in parts.items()}


def _renumbered(rounds: pd.DataFrame, kept: list[int]) -> pd.DataFrame:
    """The rows of the ``kept`` examples, their ``example_index`` renumbered 0..len(kept)-1 in
    order (the row of each in the selected activations, as the score tables index them)."""
    position = {old: new for new, old in enumerate(kept)}
    rows = rounds[rounds["example_index"].isin(position)]
    return rows.assign(example_index=rows["example_index"].map(position)).reset_index(drop=True)


def _check_control_hooks(control: Run, layers: list[int]) -> None:
    missing = [_hook(layer) for layer in layers if _hook(layer) not in control.hooks]
    if missing:
        raise InterpError(
            f"control run {control.path} stores no {missing[0]}; replay it with the run's --hooks"
        )


def _control_table(
    acts: Float[torch.Tensor, "layer example round d_model"],
    control: Run,
    probe: LayerProbe,
    layers: list[int],
    *,
    score: str,
    n_boot: int,
    seed: int,
    clusters: Clusters,
    kept: list[int] | None = None,
) -> pd.DataFrame:
    """Run - control concept score per layer and round: the control's stored read-outs
    projected on the run's directions (the same model and concept data give the same
    directions), paired by example.

    Args:
        kept: The examples ``acts`` holds (the run's selection); the control's same
            examples are read. None: every example.
    """
    frames = []
    for i, layer in enumerate(layers):
        hook = _hook(layer)
        direction = probe.directions.vectors[i]
        run_scores = concept_scores(acts[i], direction, kind=score).numpy()
        control_acts = control.activations(hook).float()
        if kept is not None:
            control_acts = control_acts[kept]
        ctrl_scores = concept_scores(control_acts, direction, kind=score)
        frames.append(
            paired_score_table(
                layer, run_scores, ctrl_scores.numpy(), clusters.ids, n_boot=n_boot, seed=seed
            )
        )
    return pd.concat(frames, ignore_index=True)


def paired_score_table(
    layer: int,
    run_scores: Float[np.ndarray, "example round"],
    control_scores: Float[np.ndarray, "example round"],
    clusters: np.ndarray,
    *,
    n_boot: int = 1000,
    seed: int = 0,
) -> pd.DataFrame:
    """One layer's rows of ``control.parquet``: mean score of each run per round, run -
    control, and the difference of their changes since round 0, with paired cluster-bootstrap
    intervals (``clusters``: cluster number per example)."""
    level = paired_difference(run_scores, control_scores, clusters, n_boot=n_boot, seed=seed)
    change = paired_difference(
        run_scores - run_scores[:, :1],
        control_scores - control_scores[:, :1],
        clusters,
        n_boot=n_boot,
        seed=seed,
    )
    return pd.DataFrame(
        {
            "layer": layer,
            "round": np.arange(run_scores.shape[1]),
            **{k: level[k] for k in ("run", "control", "diff", "lo", "hi")},
            "change_diff": change["diff"],
            "change_lo": change["lo"],
            "change_hi": change["hi"],
        }
    )


def _control_summary(checks: dict[str, Any], table: pd.DataFrame, layer: int) -> dict[str, Any]:
    columns = ["round", "run", "control", "diff", "lo", "hi", "change_diff", "change_lo"]
    return {
        **checks,
        "layer": layer,
        "by_round": _records(table, layer, [*columns, "change_hi"]),
    }


def _example_scores(values: np.ndarray, layer: int) -> pd.DataFrame:
    n_examples, n_rounds = values.shape
    return pd.DataFrame(
        {
            "layer": layer,
            "example_index": np.repeat(np.arange(n_examples), n_rounds),
            "round": np.tile(np.arange(n_rounds), n_examples),
            "score": values.reshape(-1),
        }
    )


def summarize(result: ProbeResult, config: dict[str, Any], surface: SurfaceCheck) -> dict[str, Any]:
    """The JSON summary: config; the headline layer (chosen on validation) with its test
    accuracy, controls, surface baselines and transfer, and the optimistic test-chosen layer
    beside it; ``surface_warning`` (a sentence, or null when the probe beats the surface
    baselines); at the headline layer the score per round, the shift and the score-entropy
    correlation; the best layer of each behaviour probe. NaN becomes null."""
    table = result.per_layer.set_index("layer", drop=False)
    layer = choose_layer(result.per_layer, "val_acc")
    best = table.loc[layer]
    test_best = table.loc[choose_layer(result.per_layer, "acc")]
    transfer_columns = [
        c for c in ("transfer_acc", "transfer_centred_acc", "wrapped_acc") if c in table
    ]
    return {
        **config,
        "n_train": int(best["n_train"]),
        "n_val": int(best["n_val"]),
        "n_test": int(best["n_test"]),
        "best_layer": layer,
        "best_layer_rule": BEST_LAYER_RULE,
        "accuracy": _floats(best, ["acc", "acc_lo", "acc_hi", "train_acc", "val_acc"]),
        "test_chosen": {
            "layer": int(test_best["layer"]),
            **_floats(test_best, ["acc", "acc_lo", "acc_hi"]),
            "rule": TEST_LAYER_RULE,
        },
        "controls": _floats(best, ["shuffled_acc", "random_acc"]),
        "surface_baselines": {
            **_floats(best, ["bow_acc", "length_acc"]),
            "better": surface.baseline,
            "probe_only": surface.probe_only,
            "baseline_only": surface.baseline_only,
            "mcnemar_p": json_float(surface.p_value),
            "probe_beats_surface": surface.beats,
        },
        "surface_warning": surface.warning,
        "transfer": {
            **config["transfer"],
            **_floats(best, transfer_columns),
            **({"warning": _transfer_warning(best)} if transfer_columns else {}),
        },
        "scores_by_round": _records(result.scores, layer, ["round", "mean", "lo", "hi"]),
        "shift_by_round": _records(result.shift, layer, ["round", "norm", "cosine"]),
        "correlation": _records(result.correlation, layer, CORRELATION_COLUMNS),
        "behaviour": _behaviour_summary(result.behaviour),
    }


def _transfer_warning(best: pd.Series) -> str | None:
    """A sentence when the bare direction (threshold re-set) does not separate the statements
    at the chat read-out better than chance: its 95% Wilson interval reaches 0.5."""
    n = int(best["n_test"])
    acc = float(best["transfer_centred_acc"])
    lo, _ = wilson_interval(round(acc * n), n)
    if lo > 0.5:
        return None
    return (
        f"the direction learned on bare statements does not separate them at the chat read-out "
        f"({acc:.2f} at layer {int(best['layer'])}, chance 0.5; fitted there: "
        f"{float(best['wrapped_acc']):.2f}); the run's concept scores at this layer may not "
        "measure the concept"
    )


def _floats(row: pd.Series, columns: list[str]) -> dict[str, float | None]:
    return {column: json_float(row[column]) for column in columns}


def _records(frame: pd.DataFrame, layer: int, columns: list[str]) -> list[dict[str, Any]]:
    rows = frame.loc[frame["layer"] == layer, columns]
    return [{k: _json_value(v) for k, v in row.items()} for row in rows.to_dict("records")]


def _json_value(value: Any) -> Any:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, int | np.integer):
        return int(value)
    return json_float(value)


WINOGENDER_BEHAVIOUR = (
    "Winogender run: no option is correct or stereotyped, so the behaviour probes (stereotyped, "
    "correct) are undefined and not reported; the concept probes are unchanged"
)


def _behaviour_summary(frame: pd.DataFrame) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for behaviour, rows in frame.groupby("behaviour", sort=False):
        if rows["acc"].notna().any():
            best = rows.loc[rows["acc"].idxmax()]
            out[str(behaviour)] = {
                "best_layer": int(best["layer"]),
                **_floats(best, ["acc", "acc_lo", "acc_hi", "shuffled_acc", "majority_acc"]),
                "n_test": int(best["n_test"]),
            }
        else:
            out[str(behaviour)] = None  # a single class among training answers, or no test
    return out


def _write(run: Run, result: ProbeResult, summary: dict[str, Any]) -> None:
    """Through Run.write_analysis: summary.json is the folder's completeness marker (removed
    first, written last; export skips a folder without it), and an earlier call's
    control.parquet goes when this call has no control, so the summary describes every table."""
    tables = {
        name: getattr(result, name)
        for name in ("per_layer", "scores", "shift", "correlation", "behaviour", "example_scores")
    }
    if result.control is not None:
        tables["control"] = result.control
    layers = ",".join(map(str, result.per_layer["layer"]))
    directions = AnalysisTensors({"directions": result.directions}, {"layers": layers})
    run.write_analysis(
        "probes", result.concept, tables, summary, tensors={"directions": directions}
    )


def probe(
    run: Run | str | Path,
    config: ProbeConfig | None = None,
    *,
    model: HookedTransformer | None = None,
    progress: bool = True,
    workers: Workers | None = None,
    encodings_dir: str | Path | None = None,
) -> ProbeResult:
    """Probe ``run`` for a concept as ``config`` says; write ``<run>/probes/<concept>/`` and
    return its tables.

    With a selection (``config.examples``, ``limit``, ``sample``; on a permuted run whole base
    examples) only the selected run examples are scored, each exactly as the full probe scores
    it, and a control run is read at the same examples; the result is returned with
    ``out_dir`` None and ``summary["selection"]``, never written over the stored results.

    Args:
        run: A complete run (``interp replay``) or its directory.
        config: The concept, layers, method, split, bootstrap, control run and selection of
            the run's examples; None: ``ProbeConfig()`` (the stereotype concept, every stored
            layer, every example).
        model: The run's model, already loaded; None loads it from the manifest, and only
            when the concept's encodings are not cached yet.
        progress: Show progress bars while encoding.
        workers: Accepted for the verb shape; probing runs in one process, so anything but
            None is refused.
        encodings_dir: Where the concept encodings are cached (default: the run's
            ``probes/encodings``). Runs of one model can share a folder: the cache files are
            keyed by the texts, the weights hash and (chat-wrapped) the answer prefix and
            system prompt, so a shared hit is the encoding a private one would compute.

    Returns:
        The tables it wrote into ``RUN/probes/<concept>/`` (with a selection: computed, not
        written), as DataFrames.

    Raises:
        InterpError: Workers given, an unknown concept or a bad concept file, a layer the run
            did not store, a bad setting, a control run that is not a control of ``run``, an
            example the run lacks, or a sample larger than its examples.
    """
    if workers is not None:
        raise InterpError("probe runs in one process: workers must be None")
    config = ProbeConfig() if config is None else config
    return _probe(run, config, model, progress, encodings_dir)
