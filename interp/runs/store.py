"""The run directory: the contract between replay and every analysis. :class:`Run` is its only
reader and writer (replay's files, every analysis' outputs through ``write_analysis``).

::

    <run>/manifest.json        schema version, model, task, plan + texts, rounds, seed, ...
    <run>/rounds.parquet       one row per example x round
    <run>/tokens.parquet       example_index, tokens: each example's final transcript
    <run>/spans.parquet        one row per example x round: token spans of user message,
                               instruction, answer prefix, answer; read-out position
    <run>/activations/<hook>.safetensors   "activations": [example, round, d_model] float16
    <run>/metrics.json         per-round metrics
    <run>/<analysis>/          probes/<name>/ (tables, tensors, summary.json) and
                               patching/<name>.parquet + <name>.json (see write_analysis)

Every write is atomic (temp file in the same folder, then rename), so a killed process never
leaves a file that looks complete. ``manifest.json`` is written last by a replay and carries
``"complete": true``; an analysis refuses a run without it.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
from jaxtyping import Float

from interp.errors import InterpError

if TYPE_CHECKING:
    # Only for annotations: reading a run (interp metrics, export's tables) must not pay for
    # importing torch; the functions that handle tensors import it themselves.
    import torch
    from transformer_lens import ActivationCache, HookedTransformer

    from interp.inputs.conversation import RoundSpans

# 2: permuted runs (rounds.parquet has base_index, permutation and the *_orig columns);
# unpermuted runs are still written as 1, which every reader accepts unchanged.
SCHEMA_VERSION = 2
SCHEMA_VERSIONS_READ = (1, 2)
ACTIVATION_KEY = "activations"


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp)`` on a temp path beside ``path``, then rename it into place.

    Args:
        path: The file to write; its folder is created if missing.
        write: Writes the content to the path it is given (a temp file in ``path``'s folder).

    Raises:
        OSError: The folder cannot be made or the rename fails; the temp file is removed.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        # mkstemp makes the file 0600; a run file gets the mode any other tool would give it.
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _umask() -> int:
    mask = os.umask(0o022)  # reading the umask means setting it; put it straight back
    os.umask(mask)
    return mask


def write_json(path: Path, obj: Any) -> None:
    """Write ``obj`` as indented JSON (no NaN allowed), atomically.

    Args:
        path: The JSON file to write.
        obj: Any JSON-serialisable value without NaN or infinities.

    Raises:
        ValueError: ``obj`` holds NaN or an infinity (use :func:`interp.stats.json_float`).
    """
    text = json.dumps(obj, indent=2, sort_keys=False, allow_nan=False) + "\n"
    atomic_write(path, lambda tmp: tmp.write_text(text))


def write_parquet(path: Path, frame: pd.DataFrame) -> None:
    """Write a table as parquet without its index, atomically.

    Args:
        path: The parquet file to write.
        frame: The table.
    """
    atomic_write(path, lambda tmp: frame.to_parquet(tmp, index=False))


def write_activations(path: Path, acts: Float[torch.Tensor, "example round d_model"]) -> None:
    """Write one hook's activations as float16 safetensors (key ``ACTIVATION_KEY``), atomically.

    Args:
        path: The ``.safetensors`` file to write.
        acts: One vector per example and round, on any device and dtype.
    """
    import torch
    from safetensors.torch import save_file

    tensor = acts.detach().to("cpu", torch.float16).contiguous()
    atomic_write(path, lambda tmp: save_file({ACTIVATION_KEY: tensor}, str(tmp)))


# spans.parquet: one row per example x round, the token spans of the final transcript that a
# reader needs to find the rounds ([start, end) pairs; -1 where a round has no such span).
SPANS_FILE = "spans.parquet"
SPAN_FIELDS = ("user", "instruction", "prefix", "answer")
SPAN_COLUMNS = [
    "example_index",
    "round",
    *(f"{name}_{end}" for name in SPAN_FIELDS for end in ("start", "end")),
    "readout",
]


def span_record(example_index: int, spans: RoundSpans) -> dict[str, int]:
    """One spans.parquet row (plain ints, so that replay's partial batches can hold it as JSON).

    Args:
        example_index: The example's row number in the run.
        spans: That example's spans in one round.

    Returns:
        ``example_index``, ``round``, ``<field>_start``/``<field>_end`` per span field (-1, -1
        where absent) and ``readout``.
    """
    row = {"example_index": int(example_index), "round": int(spans.round)}
    for name in SPAN_FIELDS:
        span = getattr(spans, name)
        row[f"{name}_start"], row[f"{name}_end"] = (-1, -1) if span is None else map(int, span)
    row["readout"] = int(spans.readout)
    return row


# --- replay's files: written into a run directory before it is complete (so before a Run can
# be opened on it), in this order, the manifest last ----------------------------------------


def write_rounds(out: Path, rounds: pd.DataFrame) -> None:
    """Write ``rounds.parquet`` into a run directory.

    Args:
        out: The run directory (or its ``.partial`` folder).
        rounds: The rounds table, one row per example and round.
    """
    write_parquet(out / "rounds.parquet", rounds)


def write_tokens(out: Path, tokens: pd.DataFrame) -> None:
    """Write ``tokens.parquet`` into a run directory.

    Args:
        out: The run directory (or its ``.partial`` folder).
        tokens: The tokens table.
    """
    write_parquet(out / "tokens.parquet", tokens)


def write_spans(out: Path, records: list[dict[str, int]]) -> None:
    """Write ``spans.parquet`` from :func:`span_record` rows, as int64 columns.

    Args:
        out: The run directory (or its ``.partial`` folder).
        records: One :func:`span_record` per example and round.
    """
    frame = pd.DataFrame(records, columns=SPAN_COLUMNS).astype("int64")
    write_parquet(out / SPANS_FILE, frame)


def write_hook(out: Path, hook: str, acts: Float[torch.Tensor, "example round d_model"]) -> None:
    """Write one hook's activations to ``activations/<hook>.safetensors``.

    Args:
        out: The run directory (or its ``.partial`` folder).
        hook: The hook name, e.g. ``blocks.3.hook_resid_post``.
        acts: One vector per example and round.
    """
    write_activations(out / "activations" / hook_file(hook), acts)


def write_metrics(out: Path, metrics: dict[str, Any]) -> None:
    """``metrics.json`` (replay's, or ``interp metrics`` rewriting it).

    Args:
        out: The run directory.
        metrics: The metrics record (JSON-ready, no NaN).
    """
    write_json(out / "metrics.json", metrics)


SAFE_NAME_LIMIT = 64  # characters of a user-given name (an id, an SAE folder) in a file name
_SAFE_NAME = re.compile(r"[A-Za-z0-9_+=-][A-Za-z0-9._+=-]*")


def safe_name(text: str, limit: int = SAFE_NAME_LIMIT) -> str:
    """``text`` as one part of a file or folder name: unchanged when it is short and made of
    letters, digits and ``._+=-`` only (not starting with a dot); otherwise a slug of those
    characters, cut to fit, and 8 hex digits of its sha256 (so two names stay two names).

    Args:
        text: A user-given name (an id, a folder name).
        limit: Most characters of the result (default ``SAFE_NAME_LIMIT``, 64).

    Returns:
        The name to use in a path; ``text`` itself when already safe (or empty).

    Examples:
        >>> safe_name("resid_post")
        'resid_post'
        >>> safe_name("my probe/v2")
        'my_probe_v2-83ea6708'
    """
    if not text or (len(text) <= limit and _SAFE_NAME.fullmatch(text)):
        return text
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    slug = re.sub(r"[^A-Za-z0-9._+=-]+", "_", text).strip("._")[: limit - 9].rstrip("._")
    return f"{slug}-{digest}" if slug else digest


EXPERIMENT_STARTED = ".experiment-started.json"  # an experiment's name and command, at its start


def unfinished_experiment(path: Path) -> str | None:
    """The one-line account of an experiment directory stopped before its first arm finished
    (no manifest.json yet), with the command that finishes it; None for anything else.

    Args:
        path: A directory that is not a complete run.

    Returns:
        The message naming the command to run again, or None when ``path`` is no unfinished
        experiment directory.
    """
    try:
        started = json.loads((path / EXPERIMENT_STARTED).read_text())
    except (OSError, ValueError):
        started = None
    if isinstance(started, dict) and isinstance(started.get("command"), str):
        return (
            f"{path} is an unfinished experiment directory ({started.get('experiment')}, stopped "
            f"before its first replay finished); run `{started['command']}` again to finish it"
        )
    if (path / "runs").is_dir():
        return (
            f"{path} is an unfinished experiment directory (stopped before its first replay "
            "finished); run the same `interp experiment NAME --out "
            f"{path}` command again to finish it"
        )
    return None


def write_manifest(out: Path, manifest: dict[str, Any]) -> None:
    """Written last: with ``"complete": true`` it makes the directory a run.

    Args:
        out: The run directory (or its ``.partial`` folder).
        manifest: The manifest record.
    """
    write_json(out / "manifest.json", manifest)


# The packages whose versions a replay's manifest records.
REPLAY_PACKAGES = ("interp", "torch", "transformer-lens", "transformers", "sae-lens")


def package_versions(names: Sequence[str]) -> dict[str, str]:
    """The installed version of each package, "not installed" for one that is not.

    Args:
        names: Distribution names (as pip knows them).

    Returns:
        Name -> version, in the order given.
    """
    out = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


@dataclass
class ReplayManifest:
    """What a finished replay's ``manifest.json`` records (:func:`write_replay_manifest`
    adds ``complete`` and the package versions).

    Attributes:
        fingerprint: What makes two replays the same (``interp.replay.loop.fingerprint``).
        config: The replay's settings as stored.
        model: The model's source record (empty when unknown).
        task: The task section (name, files, data hash, examples, targets, ...).
        plan: The plan with its texts.
        rounds: Follow-up rounds (the run holds rounds 0..rounds).
        mode: "choice" or "generate".
        hooks: The full hook names stored under ``activations/``.
        seed: The replay's seed.
        force_round0: The forced-history record, or None.
        command: The command line that made the run.
        timing: Seconds and token counts of the replay.
        schema_version: 1, or :data:`SCHEMA_VERSION` for rows a schema-1 reader would misread.
        permute: The permuted run's record; None (left out) when unpermuted.
        workers: The Ray workers' record; None (left out) without workers.
        template: The conversation template when it is not the tokenizer's own chat
            template (``interp.inputs.conversation.template_record``: the plain-text one of a
            base model); None (left out): the tokenizer's chat template.
    """

    fingerprint: str
    config: dict[str, Any]
    model: dict[str, Any]
    task: dict[str, Any]
    plan: dict[str, Any]
    rounds: int
    mode: str
    hooks: list[str]
    seed: int
    force_round0: dict[str, Any] | None
    command: str
    timing: dict[str, Any]
    schema_version: int = 1
    permute: dict[str, Any] | None = None
    workers: dict[str, Any] | None = None
    template: dict[str, Any] | None = None


def write_replay_manifest(out: Path, record: ReplayManifest) -> dict[str, Any]:
    """Write a finished replay's ``manifest.json`` (last: it makes the directory a run).

    Args:
        out: The run directory.
        record: What the manifest records.

    Returns:
        The manifest as written.
    """
    manifest = {
        "schema_version": record.schema_version,
        "complete": True,
        "fingerprint": record.fingerprint,
        "config": record.config,
        "model": record.model,
        "task": record.task,
        "plan": record.plan,
        "rounds": record.rounds,
        "mode": record.mode,
        "hooks": record.hooks,
        "seed": record.seed,
        "force_round0": record.force_round0,
        **({} if record.permute is None else {"permute": record.permute}),
        **({} if record.workers is None else {"workers": record.workers}),
        **({} if record.template is None else {"template": record.template}),
        "versions": package_versions(REPLAY_PACKAGES),
        "command": record.command,
        "timing": record.timing,
    }
    write_manifest(out, manifest)
    return manifest


def hook_file(hook: str) -> str:
    """The file name of a hook's activations: ``<hook>.safetensors``.

    Args:
        hook: The hook name.

    Returns:
        The file name (no folder).
    """
    return f"{hook}.safetensors"


@dataclass(repr=False)
class Run:
    """A complete run directory, opened for reading."""

    path: Path
    manifest: dict[str, Any]
    _rounds: pd.DataFrame | None = field(default=None, repr=False)
    _spans: pd.DataFrame | None = field(default=None, repr=False)

    @classmethod
    def open(cls, path: str | Path) -> Run:
        """Open a complete run directory and check its files fit together.

        Args:
            path: The run directory.

        Returns:
            The opened run.

        Raises:
            InterpError: No directory there, an unfinished replay or experiment, no or invalid
                manifest, an unknown schema version, or a damaged file (see `Run.check`).
        """
        path = Path(path)
        manifest_path = path / "manifest.json"
        if not path.is_dir():
            raise InterpError(f"no run directory at {path}")
        if not manifest_path.is_file() and (path / ".partial").is_dir():
            raise InterpError(
                f"{path} is an unfinished replay; run the same replay command again to resume it"
            )
        if not manifest_path.is_file():
            unfinished = unfinished_experiment(path)
            if unfinished is not None:
                raise InterpError(unfinished)
            raise InterpError(
                f"{path} is not a run directory (no manifest.json); run interp replay"
            )
        try:
            manifest = json.loads(manifest_path.read_text())
        except json.JSONDecodeError as err:
            raise InterpError(f"{manifest_path}: not valid JSON ({err.msg})") from None
        if not isinstance(manifest, dict):
            raise InterpError(
                f"{manifest_path} holds {type(manifest).__name__}, not a run's manifest (a JSON "
                "object); replay again into a new directory"
            )
        if not manifest.get("complete"):
            raise InterpError(
                f"{path} is an unfinished replay; run the same replay again to finish it"
            )
        if manifest.get("schema_version") not in SCHEMA_VERSIONS_READ:
            raise InterpError(
                f"{path}: run schema {manifest.get('schema_version')}, this interp reads "
                f"{SCHEMA_VERSION}; replay again"
            )
        run = cls(path, manifest)
        run.check()
        return run

    def check(self) -> None:
        """Refuse a run whose files do not fit together, naming the damaged file: the manifest's
        fields, rounds.parquet (columns, one row per example x round), tokens.parquet, and
        every activation file's key, dtype and shape ``[n_examples, n_rounds, d_model]``
        (read from the file headers only). Cheap, so every command runs it before its work."""
        manifest_path = self.path / "manifest.json"
        try:
            n_rounds = int(self.manifest["rounds"]) + 1
            hooks = [str(h) for h in self.manifest["hooks"]]
            d_model = self.manifest.get("model", {}).get("d_model")
            n_stated = self.manifest.get("task", {}).get("n_examples")
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            raise _damaged(manifest_path, f"missing or bad field {err}") from None
        rounds = self.rounds()
        n_examples = _check_rounds(self.path / "rounds.parquet", rounds, n_rounds)
        if n_stated is not None and int(n_stated) != n_examples:
            raise _damaged(
                self.path / "rounds.parquet",
                f"{n_examples} examples, the manifest says {n_stated}",
            )
        tokens = self.path / "tokens.parquet"
        # Checked when present; a missing one is named by tokens() (only patch and export's
        # attention views read it; hand-made test runs often have none).
        n_tokens = len(_read_parquet(tokens, ["example_index"])) if tokens.exists() else None
        if n_tokens is not None and n_tokens != n_examples:
            raise _damaged(tokens, f"{n_tokens} transcripts for {n_examples} examples")
        for hook in hooks:
            expected = (n_examples, n_rounds) + ((int(d_model),) if d_model is not None else ())
            _check_activation_file(self.path / "activations" / hook_file(hook), expected)

    def _facts(self) -> list[tuple[str, Any]]:
        manifest = self.manifest
        model = manifest.get("model") or {}
        task, plan = manifest.get("task") or {}, manifest.get("plan") or {}
        n_examples = task.get("n_examples")
        return [
            ("model", model.get("model_id", "?")),
            ("task", task.get("name", "?")),
            ("plan", plan.get("name", "?")),
            ("rounds", f"0..{manifest.get('rounds', '?')}"),
            ("examples", "?" if n_examples is None else n_examples),
            ("complete", bool(manifest.get("complete"))),
        ]

    def __repr__(self) -> str:
        from interp.runs.display import short

        facts = ", ".join(f"{name} {value}" for name, value in self._facts())
        return f"Run({short(self.path.name, 48)!r}: {short(facts, 140)})"

    def _repr_html_(self) -> str:
        from interp.runs.display import html_card

        facts = [*self._facts(), ("hooks", ", ".join(self.hooks)), ("path", self.path)]
        return html_card(f"Run {self.path.name}", facts)

    def cache(self, example: int, round: int, model: HookedTransformer) -> ActivationCache:
        """A TransformerLens ``ActivationCache`` of one example's stored transcript up to the
        read-out of ``round`` (one ``model.run_with_cache`` on those tokens): every hook at
        every position of that prompt, where the run stores only the read-out's.

        Args:
            example: The example's ``example_index`` (0..examples-1).
            round: The round (0..R); the transcript is cut after its read-out position.
            model: The run's model (checked against the manifest's ``model`` record).

        Returns:
            The cache, batch size 1; position ``-1`` is the read-out.

        Raises:
            InterpError: ``example`` or ``round`` out of range, a model other than the run's,
                or a damaged tokens or spans file.
        """
        import torch

        from interp.model.loading import check_run_model

        transcripts = self.tokens()
        n_examples = len(transcripts)
        if not 0 <= int(example) < n_examples:
            raise InterpError(
                f"example {example} is out of range: the run holds 0..{n_examples - 1}"
            )
        if not 0 <= int(round) < self.n_rounds:
            raise InterpError(
                f"round {round} is out of range: the run holds 0..{self.n_rounds - 1}"
            )
        recorded = self.manifest.get("model") or {}
        check_run_model(model, recorded)
        wanted = recorded.get("model_id")
        source = getattr(model, "interp_source", None)
        if source is not None and wanted and source.model_id != wanted:
            raise InterpError(
                f"the model passed is {source.model_id!r}, the run's is {wanted!r}; pass the "
                "run's model"
            )
        readout = self._readout(int(example), int(round))
        tokens = transcripts[int(example)][: readout + 1]
        ids = torch.tensor([tokens], dtype=torch.long, device=model.cfg.device)
        with torch.no_grad():
            _, cache = model.run_with_cache(ids)
        return cache

    def _readout(self, example: int, round: int) -> int:
        spans = self.round_spans(example)
        if spans is not None:
            return spans[round].readout
        rows = self.rounds()
        if "readout_pos" not in rows.columns:
            raise InterpError(f"{self.path} records no read-out positions; replay it again")
        row = rows[(rows["example_index"] == example) & (rows["round"] == round)]
        return int(row["readout_pos"].iloc[0])

    @property
    def n_rounds(self) -> int:
        """Rounds stored, 0..R: R + 1."""
        return int(self.manifest["rounds"]) + 1

    @property
    def hooks(self) -> list[str]:
        """The hook names whose activations the run stores."""
        return list(self.manifest["hooks"])

    @property
    def n_layers(self) -> int:
        """The replayed model's number of layers."""
        return int(self.manifest["model"]["n_layers"])

    def rounds(self) -> pd.DataFrame:
        """A copy of the rounds table (one row per example and round), read once.

        Raises:
            InterpError: ``rounds.parquet`` is damaged or lacks columns.
        """
        if self._rounds is None:
            self._rounds = _read_parquet(self.path / "rounds.parquet", ROUNDS_COLUMNS)
        return self._rounds.copy()

    def tokens(self) -> list[list[int]]:
        """Final transcript token ids, indexed by example_index."""
        path = self.path / "tokens.parquet"
        frame = _read_parquet(path, ["example_index", "tokens"]).sort_values("example_index")
        return [list(map(int, t)) for t in frame["tokens"]]

    def round_spans(self, example: int) -> list[RoundSpans] | None:
        """Example ``example``'s round spans in its final transcript, rounds 0..R; None for
        a run replayed before replay stored them (no spans.parquet).

        Args:
            example: The example's ``example_index``.

        Raises:
            InterpError: ``spans.parquet`` is damaged or does not hold one row per round for the
                example.
        """
        from interp.inputs.conversation import RoundSpans

        path = self.path / SPANS_FILE
        if not path.is_file():
            return None
        if self._spans is None:
            self._spans = _read_parquet(path, SPAN_COLUMNS)
        rows = self._spans[self._spans["example_index"] == example].sort_values("round")
        if len(rows) != self.n_rounds:
            raise _damaged(path, f"{len(rows)} rows for example {example}, not {self.n_rounds}")

        def span(row: Any, name: str) -> tuple[int, int] | None:
            start, end = int(getattr(row, f"{name}_start")), int(getattr(row, f"{name}_end"))
            return None if start < 0 else (start, end)

        return [
            RoundSpans(
                round=int(row.round),
                **{name: span(row, name) for name in SPAN_FIELDS},
                readout=int(row.readout),
            )
            for row in rows.itertuples()
        ]

    def activations(self, hook: str) -> Float[torch.Tensor, "example round d_model"]:
        """One stored hook's activations, as stored (float16, on the CPU).

        Args:
            hook: A hook name listed in `Run.hooks`.

        Returns:
            One vector per example and round.

        Raises:
            InterpError: The run does not store ``hook``, or its file is damaged.
        """
        from safetensors.torch import load_file

        if hook not in self.hooks:
            raise InterpError(
                f"{self.path} stores no {hook}; stored: {', '.join(self.hooks)} "
                "(replay with --hooks to add it)"
            )
        path = self.path / "activations" / hook_file(hook)
        try:
            return load_file(str(path))[ACTIVATION_KEY]
        except Exception as err:  # (any failure to read it means it is damaged)
            raise _damaged(path, _reason(err)) from None

    def analysis_dir(self, name: str) -> Path:
        """The folder ``<run>/<name>``, created if missing.

        Args:
            name: A folder name inside the run directory.

        Returns:
            The folder's path.
        """
        out = self.path / name
        out.mkdir(exist_ok=True)
        return out

    # --- analyses: every analysis' outputs are written and read here ----------------------
    #
    # Two layouts, fixed per kind so that readers need not guess:
    #   folder (probes, and any new kind):  <run>/<kind>/<name>/<table>.parquet,
    #       <tensor file>.safetensors, summary.json
    #   flat (patching):                    <run>/<kind>/<name>.parquet, <run>/<kind>/<name>.json
    # The summary JSON is the analysis' completeness marker: removed first, written last, so
    # a killed writer leaves an analysis that ``analyses`` does not list (and export skips).

    def write_analysis(
        self,
        kind: str,
        name: str,
        tables: dict[str, pd.DataFrame],
        summary: dict[str, Any],
        tensors: dict[str, AnalysisTensors] | None = None,
    ) -> list[Path]:
        """Write one analysis' tables, tensors and summary; return the files written.

        Flat kinds take exactly one table, keyed ``""``. In a folder, a ``.parquet`` file
        that this call does not write (an earlier call's optional table) is removed before
        the summary is written, so the summary never describes a table it did not make.

        Args:
            kind: The analysis kind (the folder in the run directory, e.g. ``probes``).
            name: The analysis' name within its kind.
            tables: Tables to write, by file stem (flat kinds: one, keyed ``""``).
            summary: The summary record, written last (JSON-ready, no NaN).
            tensors: Safetensors files to write beside the tables, by file stem (not for flat
                kinds).

        Returns:
            The files written: tables, tensors, then the summary.

        Raises:
            ValueError: A flat kind is given other tables than one keyed ``""``, or tensors.
        """
        marker = self._marker(kind, name)
        if kind in FLAT_KINDS:
            if set(tables) != {""} or tensors:
                raise ValueError(f"{kind} analyses store one table keyed '' and no tensors")
            table_paths = {"": marker.with_suffix(".parquet")}
        else:
            table_paths = {key: marker.parent / f"{key}.parquet" for key in tables}
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.unlink(missing_ok=True)
        written: list[Path] = []
        for key, frame in tables.items():
            write_parquet(table_paths[key], frame)
            written.append(table_paths[key])
        if kind not in FLAT_KINDS:
            for stale in sorted(marker.parent.glob("*.parquet")):
                if stale not in written:
                    stale.unlink()
        for file, item in (tensors or {}).items():
            path = marker.parent / f"{file}.safetensors"
            _write_tensors(path, item)
            written.append(path)
        write_json(marker, summary)
        return [*written, marker]

    def write_analysis_text(self, kind: str, name: str, file: str, text: str | None) -> Path:
        """A file drawn from a folder analysis' tables, beside them (a circuit's graph.svg);
        ``text`` None removes it (one an earlier call wrote that this one cannot make).

        Args:
            kind: The analysis kind (not a flat kind).
            name: The analysis' name.
            file: A bare file name (no folder; not the summary's name).
            text: The file's content, or None to remove it.

        Returns:
            The file's path.

        Raises:
            ValueError: ``kind`` is flat or ``file`` is not a bare file name.
        """
        if kind in FLAT_KINDS or Path(file).name != file or file == SUMMARY_NAME:
            raise ValueError(f"{file!r} is not a file name a {kind} analysis can hold")
        path = self._marker(kind, name).parent / file
        if text is None:
            path.unlink(missing_ok=True)
        else:
            atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))
        return path

    def analyses(self, kind: str) -> list[str]:
        """Names of the complete analyses of ``kind`` (those whose summary exists), sorted.

        Args:
            kind: The analysis kind.

        Returns:
            The names, sorted (by file name for flat kinds); empty when there are none.
        """
        root = self.path / kind
        if not root.is_dir():
            return []
        if kind in FLAT_KINDS:
            # sorted by file name (as export always listed them), not by stem
            return [p.stem for p in sorted(root.glob("*.json")) if p.is_file()]
        return sorted(p.name for p in root.iterdir() if (p / SUMMARY_NAME).is_file())

    def read_analysis(self, kind: str, name: str, tables: Sequence[str] | None = None) -> Analysis:
        """One complete analysis: its summary and tables (``tables``: only those names, the
        ones present; None: all). Raises InterpError if it is missing or unfinished.

        Args:
            kind: The analysis kind.
            name: The analysis' name.
            tables: Table names to read; None reads all.

        Returns:
            The analysis, with the tables found.

        Raises:
            InterpError: No complete analysis ``name`` of ``kind``.
        """
        marker = self._marker(kind, name)
        if not marker.is_file():
            raise InterpError(
                f"{self.path} has no complete {kind} analysis {name!r}; "
                f"complete: {', '.join(self.analyses(kind)) or 'none'}"
            )
        summary = json.loads(marker.read_text())
        if kind in FLAT_KINDS:
            paths = {"": marker.with_suffix(".parquet")}
        else:
            paths = {p.stem: p for p in sorted(marker.parent.glob("*.parquet"))}
        wanted = paths if tables is None else {k: paths[k] for k in tables if k in paths}
        frames = {key: pd.read_parquet(path) for key, path in wanted.items() if path.is_file()}
        return Analysis(kind, name, marker.parent, summary, frames)

    def analysis_tensors(self, kind: str, name: str, file: str) -> AnalysisTensors:
        """Tensors and string metadata of ``<kind>/<name>/<file>.safetensors``.

        Args:
            kind: The analysis kind.
            name: The analysis' name.
            file: The file's stem, without ``.safetensors``.

        Returns:
            The tensors by key and the file's metadata.
        """
        from safetensors import safe_open

        path = self._marker(kind, name).parent / f"{file}.safetensors"
        with safe_open(str(path), "pt") as f:
            return AnalysisTensors({k: f.get_tensor(k) for k in f.keys()}, f.metadata() or {})  # noqa: SIM118

    def _marker(self, kind: str, name: str) -> Path:
        root = self.path / kind
        return root / f"{name}.json" if kind in FLAT_KINDS else root / name / SUMMARY_NAME

    # --- export's figures: figures/ may hold files a user put there; export deletes only
    # the ones it lists as its own in figures/.export-files.json.

    def export_files(self) -> set[str]:
        """Names of the files in figures/ that an export wrote (listed before it wrote them)."""
        try:
            names = json.loads((self.path / "figures" / EXPORT_FILES).read_text())
        except (OSError, ValueError):
            return set()  # none yet (or unreadable): then export removes nothing
        return {
            n for n in names if isinstance(n, str) and "/" not in n and n not in ("", ".", "..")
        }

    def write_export_files(self, names: set[str]) -> None:
        """List ``names`` as export's own files in ``figures/.export-files.json``.

        Args:
            names: File names in ``figures/`` that an export is about to write.
        """
        text = json.dumps(sorted(names), indent=1) + "\n"
        path = self.path / "figures" / EXPORT_FILES
        atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))

    def remove_export_files(self, names: set[str]) -> None:
        """Remove listed html/png figures and circuit graphs' json/svg (never another kind of
        file, whatever the list says).

        Args:
            names: File names in ``figures/``, as `Run.export_files` returned them.
        """
        for name in sorted(names):
            path = self.path / "figures" / name
            own = path.suffix in (".html", ".png", ".svg", ".json") and name != EXPORT_FILES
            if own and path.is_file():
                path.unlink()

    def read_metrics(self) -> dict[str, Any] | None:
        """``metrics.json`` as written by replay or ``interp metrics``; None when it is missing
        or damaged (the caller computes the metrics from rounds.parquet instead)."""
        path = self.path / "metrics.json"
        if not path.is_file():
            return None
        try:
            return json.loads(path.read_text())
        except ValueError:
            return None


# Analysis kinds stored as <kind>/<name>.parquet + <kind>/<name>.json (all others: a folder).
FLAT_KINDS = frozenset({"patching"})
SUMMARY_NAME = "summary.json"
EXPORT_FILES = ".export-files.json"


@dataclass(frozen=True)
class AnalysisTensors:
    """Named tensors of one safetensors file, and its string metadata."""

    tensors: dict[str, Any]
    metadata: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Analysis:
    """One complete analysis read back from a run directory."""

    kind: str
    name: str
    path: Path  # its folder (flat kinds: the kind's folder)
    summary: dict[str, Any]
    tables: dict[str, pd.DataFrame]


def _write_tensors(path: Path, item: AnalysisTensors) -> None:
    from safetensors.torch import save_file

    tensors = {k: v.contiguous() for k, v in item.tensors.items()}
    atomic_write(path, lambda tmp: save_file(tensors, str(tmp), item.metadata or None))


# --- checking run files -----------------------------------------------------------------------

# The rounds.parquet columns every analysis reads.
ROUNDS_COLUMNS = ["example_index", "example_id", "round", "choice", "correct", "label"]


def _damaged(path: Path, reason: str) -> InterpError:
    run = path.parent.parent if path.parent.name == "activations" else path.parent
    return InterpError(
        f"{path} is damaged ({reason}); the run cannot be used: replay it again "
        f"(delete {run} first, or choose a new --out)"
    )


def _reason(err: BaseException) -> str:
    text = str(err).splitlines()[0] if str(err) else ""
    return f"{type(err).__name__}: {text}"[:200] if text else type(err).__name__


def _read_parquet(path: Path, columns: list[str]) -> pd.DataFrame:
    if not path.is_file():
        raise _damaged(path, "file missing")
    try:
        frame = pd.read_parquet(path)
    except Exception as err:  # (truncated, garbage, not parquet: all damage)
        raise _damaged(path, _reason(err)) from None
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise _damaged(path, f"no column {', '.join(missing)}")
    return frame


def _check_rounds(path: Path, rounds: pd.DataFrame, n_rounds: int) -> int:
    """One row per example x round 0..R, examples 0..n-1; return n."""
    n = rounds["example_index"].nunique()
    expected = {(e, r) for e in range(n) for r in range(n_rounds)}
    try:
        index, rnd = rounds["example_index"].astype(int), rounds["round"].astype(int)
        seen = set(zip(index, rnd, strict=True))
    except (TypeError, ValueError) as err:
        raise _damaged(path, _reason(err)) from None
    if len(rounds) != n * n_rounds or seen != expected:
        raise _damaged(
            path, f"{len(rounds)} rows are not {n} examples x {n_rounds} rounds (0..{n_rounds - 1})"
        )
    return n


def _check_activation_file(path: Path, shape: tuple[int, ...]) -> None:
    from safetensors import safe_open

    if not path.is_file():
        raise _damaged(path, "file missing")
    try:
        with safe_open(str(path), "np") as f:  # headers only: no torch for `interp metrics`
            keys = list(f.keys())
            if keys != [ACTIVATION_KEY]:
                raise _damaged(path, f"keys {keys}, expected [{ACTIVATION_KEY!r}]")
            tensor = f.get_slice(ACTIVATION_KEY)
            dtype, got = tensor.get_dtype(), tuple(tensor.get_shape())
    except InterpError:
        raise
    except Exception as err:  # (truncated or not safetensors)
        raise _damaged(path, _reason(err)) from None
    if dtype != "F16":
        raise _damaged(path, f"dtype {dtype}, expected float16")
    if got[: len(shape)] != shape or len(got) != 3:
        raise _damaged(
            path,
            f"shape {list(got)} does not match rounds.parquet: expected [{shape[0]} examples, "
            f"{shape[1]} rounds, {shape[2] if len(shape) > 2 else 'd_model'}]",
        )
