"""What every experiment shares: its config, its directory, its replays ("arms") and the
per-example matrices the estimators read.

An experiment directory::

    DIR/manifest.json        experiment name, config, arms (plan texts, replay settings),
                             seed, sizes, package versions, command; "complete" at the end
    DIR/runs/<arm>/          one ordinary run directory per replay (``interp.replay.loop``), so
                             metrics, probe, patch and export work on it as on any run;
                             ``runs/control`` is the control arm (``--control PLAN``)
    DIR/encodings/           the concept encodings every arm's probe shares (one model)
    DIR/tables/<name>.parquet   the experiment's tables (every estimate with its interval)
    DIR/summary.json         headline numbers and the reading; written last

Resumable: a second call with the same settings reuses every replay that is complete (the
replay's own fingerprint decides) and resumes one that was killed; the tables are recomputed
from the runs (cheap), so changing only an analysis setting (``n_boot``, ``eps``, ``layer``)
rewrites them without replaying.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from interp.errors import InterpError
from interp.metrics.rounds import FLOOR_SHARE, POSITION_RULE, compute_metrics, model_floor
from interp.runs.experiment_dir import ExperimentStore
from interp.runs.lock import run_lock
from interp.runs.store import Run
from interp.stats import (
    MULTIPLICITY_METHOD,
    Clusters,
    benjamini_hochberg,
    bootstrap_weights,
    check_cluster_key,
    example_clusters,
)

if TYPE_CHECKING:
    from transformer_lens import HookedTransformer

# The config fields that decide the replays; the others only change the analysis.
REPLAY_FIELDS = (
    "model",
    "task",
    "data",
    "bbq_templates",
    "sample",
    "limit",
    "rounds",
    "seed",
    "plan",
    "control",
    "stats",
    "batch_size",
    "device",
    "dtype",
)


@dataclass
class ExperimentConfig:
    """One experiment's settings; shared by the Python API and ``interp experiment NAME``."""

    out: str = "artifacts/experiments/demo"  # the experiment directory to write
    model: str = "smollm2"  # as for replay: "smollm2", "tiny", a .gguf file, a model folder
    task: str = "builtin"  # "bbq", "builtin", "mc" or "winogender" (convergence only)
    data: list[str] = field(default_factory=list)  # data files (bbq, mc)
    bbq_templates: str | None = None  # bbq: the templates/ folder (see ReplayConfig)
    sample: int | None = None  # a seeded random sample of this many examples
    limit: int | None = None  # only the first N examples
    rounds: int = 3  # follow-up rounds: every replay holds rounds 0..rounds
    seed: int = 0  # seeds the sample, the replays and every bootstrap
    plan: str = "self-correct"  # the plan of single-plan experiments (convergence, superficial)
    # convergence, superficial: the control arm, a same-seed replay of this plan on the same
    # examples, analysed beside the main arm (None: no control)
    control: str | None = "baseline"
    stats: str | None = None  # winogender: the occupations' statistics TSV (as for replay)
    concept: str = "stereotype"  # the probe concept whose score the experiments read
    probe: bool = True  # probe the replays for the concept (reused when already probed)
    layer: int | None = None  # the concept score's layer; None: the probe's headline layer
    eps: float = 0.01  # convergence: "within eps of the limit" (concept: eps x round-0 s.d.)
    n_boot: int = 1000  # bootstrap resamples of every interval
    cluster: str = "template"  # what the bootstrap resamples: template or example
    batch_size: int = 8
    device: str = "cpu"
    dtype: str = "float32"


@dataclass
class ExperimentResult:
    """An experiment's tables (DataFrames) and summary, and where they were written."""

    name: str
    path: Path
    tables: dict[str, pd.DataFrame]
    summary: dict[str, Any]
    # None: written to ``path``; otherwise why it was only printed (a stored result at
    # ``path`` is stronger and is kept)
    not_stored: str | None = None

    def __repr__(self) -> str:
        stored = "written" if self.not_stored is None else "not stored"
        return (
            f"ExperimentResult({self.name!r} at {self.path.name}: tables "
            f"{', '.join(self.tables)}, {stored})"
        )

    def _repr_html_(self) -> str:
        """A small HTML card for notebooks (:func:`interp.runs.display.html_card`)."""
        from interp.runs.display import html_card

        facts = [("path", self.path), ("stored", self.not_stored or "yes")]
        return html_card(f"ExperimentResult {self.name}", facts, self.tables)


def validate(config: ExperimentConfig) -> None:
    # Messages start with the field's name; the CLI shows the flag instead.
    if config.rounds < 2:
        raise InterpError(
            f"rounds must be at least 2 for an experiment (got {config.rounds}): a curve of "
            "three parameters needs rounds 0, 1 and 2"
        )
    if config.n_boot < 0:
        raise InterpError(f"n_boot must be at least 0 (got {config.n_boot})")
    if not config.eps > 0:
        raise InterpError(f"eps must be positive (got {config.eps})")
    if config.layer is not None and config.layer < 0:
        raise InterpError(f"layer must be at least 0 (got {config.layer})")
    check_cluster_key(config.cluster)
    if config.probe:  # an unknown concept is refused now, not after the replays
        from probes.concepts import load_concept

        load_concept(config.concept)


def check_control(config: ExperimentConfig) -> None:
    """The control arm must be another plan (experiments with a control arm only); both
    plans load (an unknown name or a bad plan file is refused before any arm is replayed)."""
    load_any_plan(config.task, config.plan)
    if config.control is not None:
        load_any_plan(config.task, config.control)
    if config.control is not None and config.control == config.plan:
        raise InterpError(
            f"control {config.control!r} is the main plan itself; choose another plan as the "
            "control, or none"
        )


def refuse_winogender(config: ExperimentConfig, name: str, why: str) -> None:
    """Experiments that need what Winogender items lack refuse before any compute."""
    from interp.inputs import winogender

    if config.task == winogender.TASK:
        raise InterpError(f"experiment {name} does not take task winogender: {why}")


def with_model(config: ExperimentConfig, model: HookedTransformer | None) -> ExperimentConfig:
    """``config`` naming the model passed in (a config left at the default model records the
    model actually used; one naming another model is refused before anything is written)."""
    from dataclasses import replace

    if model is None:
        return config
    from interp.model.loading import recorded_model_name

    return replace(config, model=recorded_model_name(config.model, model))


class ModelHolder:
    """Loads the model the first time a replay or probe needs it, and only then: a resumed
    experiment whose replays are complete loads none."""

    def __init__(self, config: ExperimentConfig, model: HookedTransformer | None) -> None:
        self.config = config
        self.model = model

    def get(self) -> HookedTransformer:
        if self.model is None:
            from interp.model.loading import load_model

            c = self.config
            self.model = load_model(c.model, device=c.device, dtype=c.dtype, seed=c.seed)
        return self.model


class ExperimentDir(ExperimentStore):
    """An experiment directory being written (hold its lock with ``with``): the run store's
    :class:`~interp.runs.experiment_dir.ExperimentStore`, plus replaying and probing its arms."""

    def __init__(self, name: str, config: ExperimentConfig, command: str | None) -> None:
        super().__init__(name, config, REPLAY_FIELDS, command)

    def arm(
        self,
        arm: str,
        plan: str,
        holder: ModelHolder,
        *,
        progress: bool = False,
        probe: bool | None = None,
        **replay_overrides: Any,
    ) -> Run:
        """Replay (or reuse) the arm ``arm`` with ``plan`` into ``runs/<arm>``; probe it for
        the concept when the config asks, reusing a probe the run already has."""
        from interp.replay.loop import ReplayConfig, fingerprint, replay

        c = self.config
        rc = ReplayConfig(
            out=str(self.path / "runs" / arm),
            model=c.model,
            task=c.task,
            data=list(c.data),
            bbq_templates=c.bbq_templates,
            plan=plan,
            rounds=c.rounds,
            limit=c.limit,
            sample=c.sample,
            batch_size=c.batch_size,
            seed=c.seed,
            device=c.device,
            dtype=c.dtype,
            stats=c.stats,
        )
        for key, value in replay_overrides.items():
            setattr(rc, key, value)
        loaded_plan = load_any_plan(rc.task, plan)
        done = _complete_with(Path(rc.out), fingerprint(rc, loaded_plan))
        run = replay(
            rc, model=None if done else holder.get(), progress=progress, command=self.command
        )
        entry: dict[str, Any] = {
            "run": f"runs/{arm}",
            "plan": loaded_plan.to_dict(),
            "fingerprint": run.manifest.get("fingerprint"),
            "reused": done,
        }
        if probe if probe is not None else c.probe:
            entry["probe"] = ensure_probe(run, c, holder, self.path / "encodings")
        self.arms[arm] = entry
        self.write_manifest(False)  # after each arm: what is done so far
        return run

    def write_result(
        self, tables: dict[str, pd.DataFrame], summary: dict[str, Any], sizes: dict[str, Any]
    ) -> ExperimentResult:
        """Tables, then the manifest, then summary.json last (the completeness marker)."""
        summary = self.write_tables(tables, summary, sizes)
        return ExperimentResult(self.name, self.path, tables, summary)


def open_run_and_control(
    run_dir: str | Path, control_run: str | Path | None
) -> tuple[Run, Run | None]:
    """An existing run and its control run, checked as ``probe``/``patch --control-run``
    check one (another directory, same model weights, rounds, data and examples, another
    plan)."""
    from interp.runs.controls import open_control

    run = Run.open(run_dir)
    if control_run is None:
        return run, None
    return run, open_control(run, control_run)[0]


def weaker_than_stored(
    stored: dict[str, Any], stored_tables: list[str], new: ExperimentResult
) -> str | None:
    """Why ``new`` is weaker than the analysis stored beside it (fewer bootstrap resamples,
    a table it lacks: the control's differences, the concept's correlation), or None."""
    stored_boot, new_boot = stored.get("n_boot"), new.summary.get("n_boot")
    if isinstance(stored_boot, int) and isinstance(new_boot, int) and new_boot < stored_boot:
        return f"--n-boot {new_boot} is fewer resamples than the stored {stored_boot}"
    missing = [t for t in stored_tables if t not in new.tables]
    if missing:
        return f"it lacks the stored table{'s' if len(missing) > 1 else ''} {', '.join(missing)}"
    return None


def store_run_analysis(run: Run, result: ExperimentResult) -> ExperimentResult:
    """Write an experiment's analysis of a run into ``<run>/experiments/NAME/``, unless a
    stored one is stronger: then the new one is only printed (``not_stored`` says why), as
    ``interp metrics`` prints, never stores, other bootstrap settings."""
    with run_lock(run.path):
        if result.name in run.analyses("experiments"):
            stored = run.read_analysis("experiments", result.name, [])
            why = weaker_than_stored(
                stored.summary, sorted(p.stem for p in result.path.glob("*.parquet")), result
            )
            if why is not None:
                result.not_stored = (
                    f"{result.path} keeps its stored analysis: {why}; this one is printed only"
                )
                return result
        run.write_analysis("experiments", result.name, result.tables, result.summary)
    return result


def selected_examples(config: ExperimentConfig) -> list[Any]:
    """The examples the experiment's replays hold (task, data, sample, limit, seed)."""
    from interp.inputs.tasks import load_task
    from interp.replay.loop import ReplayConfig, select_examples

    loaded = load_task(config.task, config.data or None, bbq_templates=config.bbq_templates)
    return select_examples(
        loaded, ReplayConfig(sample=config.sample, limit=config.limit, seed=config.seed)
    )


def replay_settings(config: ExperimentConfig) -> dict[str, Any]:
    settings = asdict(config)
    return {k: settings[k] for k in REPLAY_FIELDS}


def _complete_with(out: Path, key: str) -> bool:
    try:
        info = json.loads((out / "manifest.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(info, dict) and bool(info.get("complete")) and info.get("fingerprint") == key


def load_any_plan(task: str, plan: str) -> Any:
    """The plan a replay of ``task`` loads (Winogender has its own plans)."""
    from interp.inputs import winogender
    from interp.inputs.plans import load_plan

    if task == winogender.TASK:
        return winogender.load_winogender_plan(plan)
    return load_plan(plan)


def ensure_probe(
    run: Run, config: ExperimentConfig, holder: ModelHolder, encodings_dir: Path | None = None
) -> dict[str, Any]:
    """The run's probe of the concept: reused when the run has one, made otherwise. Returns
    what the manifest records of it. ``encodings_dir``: the experiment's shared encodings
    cache (every arm runs one model, so the second arm's probe encodes nothing)."""
    from probes.api import probe
    from probes.config import ProbeConfig

    name = probe_name(config.concept)
    reused = name in run.analyses("probes")
    if not reused:
        probe(
            run,
            ProbeConfig(
                concept=config.concept,
                seed=config.seed,
                n_boot=config.n_boot,
                cluster=config.cluster,
            ),
            model=holder.model,  # reused when loaded; probe loads it only if it must
            progress=False,
            encodings_dir=encodings_dir,
        )
    summary = run.read_analysis("probes", name, []).summary
    return {"concept": name, "best_layer": summary.get("best_layer"), "reused": reused}


def probe_name(concept: str) -> str:
    """The folder a concept's probe is stored under (as probes.api names it)."""
    from probes.concepts import CONCEPTS, user_concept_name

    return concept if concept in CONCEPTS else user_concept_name(concept)


# --- per-example matrices --------------------------------------------------------------------


@dataclass(frozen=True)
class Grid:
    """A run's per-example values, [example, round], in example_index order."""

    correct: np.ndarray  # 1.0 / 0.0
    entropy: np.ndarray  # nats, of the renormalised option distribution
    confidence: np.ndarray  # probability of the chosen option (NaN: unscored)
    label_rank: np.ndarray  # [example]: rank of the correct option at round 0 (1 = top)
    clusters: Clusters

    @property
    def n_examples(self) -> int:
        return int(self.correct.shape[0])

    @property
    def n_rounds(self) -> int:
        return int(self.correct.shape[1])


def run_grid(run: Run, cluster: str = "template") -> Grid:
    rounds = run.rounds().sort_values(["example_index", "round"], kind="stable")
    n_ex = rounds["example_index"].nunique()
    n_rounds = run.n_rounds
    if len(rounds) != n_ex * n_rounds:
        raise InterpError(f"{run.path}: rounds.parquet is not one row per example x round")
    correct = rounds["correct"].to_numpy(dtype=float).reshape(n_ex, n_rounds)
    entropy = rounds["entropy"].to_numpy(dtype=float).reshape(n_ex, n_rounds)
    confidence = np.full((n_ex * n_rounds,), np.nan)
    label_rank = np.zeros(n_ex, dtype=np.int64)
    for i, (lp, label, r) in enumerate(
        zip(rounds["option_logprobs"], rounds["label"], rounds["round"], strict=True)
    ):
        logp = np.asarray(lp, dtype=float)
        if logp.size and np.isfinite(logp).all():
            p = np.exp(logp - logp.max())
            confidence[i] = p.max() / p.sum()
            if r == 0:
                label_rank[i // n_rounds] = rank_of(logp, int(label))
    return Grid(
        correct,
        entropy,
        confidence.reshape(n_ex, n_rounds),
        label_rank,
        example_clusters(rounds, cluster),
    )


def rank_of(scores: np.ndarray, index: int) -> int:
    """1 + the number of options scored strictly higher than option ``index`` (ties share
    the better rank); 0 when the scores are missing."""
    if index < 0 or index >= len(scores) or not np.isfinite(scores[index]):
        return 0
    return 1 + int((np.asarray(scores) > scores[index]).sum())


def concept_matrix(
    run: Run, concept: str, layer: int | None
) -> tuple[np.ndarray, int, dict[str, Any]] | None:
    """The stored probe scores of ``concept`` at ``layer`` (None: the probe's headline layer)
    as [example, round], the layer, and the probe's summary; None when the run has no probe
    of the concept."""
    name = probe_name(concept)
    if name not in run.analyses("probes"):
        return None
    analysis = run.read_analysis("probes", name, ["example_scores"])
    scores = analysis.tables.get("example_scores")
    if scores is None:
        return None
    chosen = int(analysis.summary["best_layer"]) if layer is None else layer
    at = scores[scores["layer"] == chosen]
    if at.empty:
        have = ", ".join(str(x) for x in sorted(scores["layer"].unique()))
        raise InterpError(f"layer {chosen} has no stored {name} scores; probed layers: {have}")
    return layer_matrix(at, run.n_rounds), chosen, analysis.summary


def all_layers_matrix(run: Run, concept: str) -> tuple[list[int], np.ndarray] | None:
    """Every probed layer's scores as [layer, example, round]; None without a probe."""
    name = probe_name(concept)
    if name not in run.analyses("probes"):
        return None
    scores = run.read_analysis("probes", name, ["example_scores"]).tables.get("example_scores")
    if scores is None:
        return None
    layers = sorted(int(x) for x in scores["layer"].unique())
    stack = [layer_matrix(scores[scores["layer"] == la], run.n_rounds) for la in layers]
    return layers, np.stack(stack)


def layer_matrix(scores: pd.DataFrame, n_rounds: int) -> np.ndarray:
    table = scores.pivot(index="example_index", columns="round", values="score")
    return table.reindex(columns=range(n_rounds)).to_numpy(dtype=float)


def no_probe_hint(run: Run, concept: str) -> str:
    return (
        f"{run.path} has no {probe_name(concept)} probe scores; make them with "
        f"`interp probe --run {run.path} --concept {concept}` (or run the experiment with "
        "--probe)"
    )


def weights_for(grid: Grid, n_boot: int, seed: int) -> np.ndarray:
    """The cluster-bootstrap weight rows every estimate of one experiment shares."""
    return bootstrap_weights(grid.clusters.ids, n_boot, seed)


# --- many intervals read together ------------------------------------------------------------

MULTIPLICITY = MULTIPLICITY_METHOD


def surviving(family: pd.DataFrame) -> np.ndarray:
    """Which rows of a family of estimates read together (every layer, every effect) count
    as non-zero: the 95% interval (``lo``, ``hi``) excludes 0 *and* the bootstrap p-value
    (``p``) survives the Benjamini-Hochberg correction over the family (``MULTIPLICITY``).
    A table without ``p`` (none was computed) has no survivors."""
    if family.empty or "p" not in family.columns:
        return np.zeros(len(family), dtype=bool)
    excludes = ((family["lo"] > 0) | (family["hi"] < 0)).to_numpy()
    return excludes & benjamini_hochberg(family["p"].to_numpy(dtype=float))


# --- the position caveat ---------------------------------------------------------------------


def arm_position(run: Run) -> dict[str, Any] | None:
    """One arm's position check: ``interp.metrics.rounds.model_floor`` (the one position rule, per
    round) on the arm's metrics (its ``metrics.json``, as ``interp metrics`` shows it, or
    computed from rounds.parquet); None for Winogender runs (pronouns are scored, not
    lettered options)."""
    from interp.inputs.winogender import is_winogender

    rounds = run.rounds()
    if is_winogender(rounds):
        return None
    metrics = run.read_metrics()
    if not metrics or "per_round" not in metrics:
        metrics = compute_metrics(rounds, seed=int(run.manifest.get("seed", 0)), by_category=False)
    floor = metrics.get("model_floor") or model_floor(metrics)
    tops = [
        max((x for x in e["position_share"] if x is not None), default=None)
        for e in metrics["per_round"]
    ]
    tops = [t for t in tops if t is not None]
    return {**floor, "max_share": max(tops) if tops else None}


def position_caveat(arms: dict[str, dict[str, Any] | None]) -> str | None:
    """The reading's plain warning when some arm's answers follow the option position in some
    round (``arms``: arm name -> its ``arm_position``); None when no arm is flagged."""
    flagged = {a: f for a, f in arms.items() if f is not None and f.get("flag")}
    if not flagged:
        return None
    parts = []
    for arm, floor in flagged.items():
        worst = max(floor["rounds"], key=lambda f: f["share"])
        rounds = ", ".join(str(f["round"]) for f in floor["rounds"])
        parts.append(
            f"{arm} (rounds {rounds}; ({chr(ord('a') + worst['option'])}) takes up to "
            f"{worst['share']:.0%} of its answers)"
        )
    return (
        f"caveat: the answers follow option position in {'; '.join(parts)}: in those rounds "
        f"one letter takes more than {FLOOR_SHARE:.0%} of the arm's answers and accuracy's "
        "interval includes chance, so the behavioural readings above say little about content "
        "(compare `interp replay --permute cyclic`)."
    )


def with_position(summary: dict[str, Any], runs: list[Run] | dict[str, Run]) -> dict[str, Any]:
    """Add ``position`` (per arm: the position rule's rounds) and ``position_share`` (the
    largest share of one letter in any arm and round) to a summary, and the caveat to its
    reading when the rule flags some arm. ``runs``: arm name -> run, or runs named by their
    folder (``runs/<arm>``)."""
    named = runs if isinstance(runs, dict) else {run.path.name: run for run in runs}
    arms = {arm: arm_position(run) for arm, run in named.items()}
    shares = [f["max_share"] for f in arms.values() if f is not None and f["max_share"] is not None]
    summary["position_share"] = max(shares) if shares else None
    summary["position"] = {
        arm: None
        if f is None
        else {"flag": f["flag"], "rounds": f["rounds"], "rule": POSITION_RULE}
        for arm, f in arms.items()
    }
    line = position_caveat(arms)
    if line is not None:
        summary["reading"] = [*summary.get("reading", []), line]
    return summary
