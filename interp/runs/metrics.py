"""``metrics``: a run's per-round metrics recomputed from its rounds table, the verb behind
``interp metrics``.

BBQ runs get :func:`interp.metrics.rounds.compute_metrics` (accuracy, bias scores,
uncertainty, calibration, flips, convergence; debiased scores on a permuted run), Winogender
runs :func:`interp.inputs.winogender.winogender_metrics`. ``metrics.json`` is rewritten only
when the settings are those it was made with (by default replay's), so another ``n_boot`` or
``seed`` is returned, never stored over it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from interp.errors import InterpError
from interp.options import check_n_boot, check_seed
from interp.runs.store import Run
from interp.stats import DEFAULT_CLUSTER, check_cluster_key


@dataclass(frozen=True)
class MetricsConfig:
    """How a run's metrics are recomputed: the settings of :func:`metrics` and of
    ``interp metrics``.

    Raises:
        InterpError: (from :func:`metrics`) ``n_boot`` below 1, a seed outside
            0..2**32-1, an unknown cluster key or debias space.
    """

    n_boot: int = 1000
    """Bootstrap resamples for the intervals (at least 1)."""
    seed: int = 0
    """Seed of the bootstrap."""
    cluster: str = DEFAULT_CLUSTER
    """What the bootstrap resamples: template (category + question_index) or example."""
    debias_space: str = "prob"
    """Permuted runs: average the option orders' probabilities in prob or log space."""
    control_run: str | None = None
    """A replay of the same examples under another plan: also compute run - control per
    round with paired intervals (the same cluster resamples for both runs)."""


@dataclass(frozen=True, eq=False)
class MetricsResult:
    """What :func:`metrics` computed."""

    run: Path
    """The run's directory."""
    metrics: dict[str, Any]
    """JSON-ready, as ``metrics.json`` holds it."""
    table: pd.DataFrame
    """One row per round, flat columns (``accuracy``, ``accuracy_lo``, ...)."""
    written: bool
    """Whether ``metrics.json`` was rewritten (only with the settings it was made with)."""
    difference: dict[str, Any] | None = None
    """With a control run: the paired run - control table."""
    control_run: Path | None = None
    """With a control run: its directory."""
    control_plan: str | None = None
    """With a control run: the control's plan (as the control check names it)."""

    def __repr__(self) -> str:
        control = "" if self.difference is None else f", control plan {self.control_plan!r}"
        return (
            f"MetricsResult({self.run.name}: {len(self.table)} rounds, "
            f"{'written' if self.written else 'not stored'}{control})"
        )


def metrics(
    run: Run | str | Path,
    config: MetricsConfig | None = None,
    *,
    model: Any = None,
    progress: bool = True,
    workers: Any = None,
) -> MetricsResult:
    """Recompute the metrics of ``run`` from its rounds table.

    Args:
        run: A complete run or its directory.
        config: Bootstrap settings, debias space and control run; None: ``MetricsConfig()``.
        model: Accepted for the verb shape; metrics need no model, so anything but None is
            refused.
        progress: Accepted for the verb shape; metrics show no progress bar.
        workers: Accepted for the verb shape; metrics run in one process, so anything but
            None is refused.

    Returns:
        The metrics (dict and per-round table), whether ``metrics.json`` was rewritten, and
        with a control run the paired difference.

    Raises:
        InterpError: A model or workers given, a bad setting, a missing or damaged run, a
            control run that is not a control of ``run``, or the run in use by a writer.
    """
    if model is not None:
        raise InterpError("metrics are computed from the rounds table: model must be None")
    if workers is not None:
        raise InterpError("metrics run in one process: workers must be None")
    config = MetricsConfig() if config is None else config
    if isinstance(config.n_boot, int) and config.n_boot < 1:  # 0 would store no intervals
        raise InterpError(f"n_boot must be at least 1 (got {config.n_boot})")
    check_n_boot(config.n_boot, "n_boot")
    check_seed(config.seed, "seed")
    check_cluster_key(config.cluster)
    from interp.metrics.debias import check_space

    check_space(config.debias_space)
    opened = run if isinstance(run, Run) else Run.open(run)
    difference, control = _difference(opened, config) if config.control_run else (None, None)
    from interp.inputs.winogender import is_winogender

    if is_winogender(opened.manifest):
        result, written = _winogender(opened, config)
        table = pd.json_normalize(result["per_round"])
    else:
        result, written = _bbq(opened, config)
        from interp.metrics.rounds import metrics_table

        table = metrics_table(result)
    control_path, plan = (None, None) if control is None else control
    return MetricsResult(opened.path, result, table, written, difference, control_path, plan)


def _difference(run: Run, config: MetricsConfig) -> tuple[dict[str, Any], tuple[Path, str]]:
    from interp.inputs.winogender import is_winogender, winogender_plan_difference
    from interp.runs.controls import metrics_difference, open_control

    control, checks = open_control(run, config.control_run)
    if is_winogender(run.manifest):
        result = winogender_plan_difference(
            run.rounds(), control.rounds(), config.n_boot, config.seed
        )
    else:
        result = metrics_difference(
            run.rounds(),
            control.rounds(),
            n_boot=config.n_boot,
            seed=config.seed,
            cluster=config.cluster,
        )
    return result, (control.path, str(checks["plan"]))


def _bbq(run: Run, config: MetricsConfig) -> tuple[dict[str, Any], bool]:
    from interp.metrics.rounds import compute_metrics
    from interp.runs.lock import run_lock
    from interp.runs.store import write_json

    result = compute_metrics(
        run.rounds(),
        n_boot=config.n_boot,
        seed=config.seed,
        cluster=config.cluster,
        debias_space=config.debias_space,
    )
    # replay stores prob-space debiased scores; another space is returned, not stored
    same = _stored_bootstrap(run) == (config.n_boot, config.seed, config.cluster)
    if not (same and config.debias_space == "prob"):
        return result, False
    with run_lock(run.path):
        write_json(run.path / "metrics.json", result)
    return result, True


def _winogender(run: Run, config: MetricsConfig) -> tuple[dict[str, Any], bool]:
    from interp.inputs.winogender import winogender_metrics
    from interp.runs.lock import run_lock
    from interp.runs.store import write_json

    stored = run.read_metrics()
    result = winogender_metrics(run.rounds(), n_boot=config.n_boot, seed=config.seed)
    same = (stored or {}).get("bootstrap", {})
    if (same.get("n_boot"), same.get("seed")) != (config.n_boot, config.seed):
        return result, False
    with run_lock(run.path):
        write_json(run.path / "metrics.json", result)
    return result, True


def _stored_bootstrap(run: Run) -> tuple[int, int, str]:
    """(n_boot, seed, cluster) of the run's metrics.json; replay's own when it is missing or
    unreadable (a file from before clusters resampled examples)."""
    try:
        stored = json.loads((run.path / "metrics.json").read_text())["bootstrap"]
        cluster = (stored.get("cluster") or {}).get("requested", "example")
        return int(stored["n_boot"]), int(stored["seed"]), str(cluster)
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return 1000, int(run.manifest.get("seed", 0)), "template"
