"""``metrics``: a run's per-round metrics recomputed from its rounds table, the verb behind
``interp metrics``.

BBQ runs get :func:`interp.metrics.rounds.compute_metrics` (accuracy, bias scores,
uncertainty, calibration, flips, convergence; debiased scores on a permuted run), Winogender
runs :func:`interp.metrics.winogender.winogender_metrics`. ``metrics.json`` is rewritten only
when the settings are those it was made with (by default replay's), so another ``n_boot`` or
``seed`` is returned, never stored over it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from interp.errors import InterpError
from interp.inputs.selection import Selection
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
    examples: tuple[int | str, ...] | None = None
    """Only these examples (ids or indices); None: every example."""
    limit: int | None = None
    """Only the first N (base) examples of the selection."""
    sample: int | None = None
    """A seeded random N (base) examples (drawn as replay draws, seeded by ``seed``)."""

    @property
    def selection(self) -> Selection:
        """The examples chosen, as every verb that selects spells them."""
        return Selection(
            examples=self.examples, limit=self.limit, sample=self.sample, seed=self.seed
        )


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
    """Whether ``metrics.json`` was rewritten (only with the settings it was made with, and
    every example read)."""
    n_examples: int
    """How many examples the metrics read (fewer than the run's with a selection)."""
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

    def _repr_html_(self) -> str:
        """A small HTML card for notebooks (:func:`interp.runs.display.html_card`)."""
        from interp.runs.display import html_card

        facts = [("run", self.run), ("examples", self.n_examples), ("written", self.written)]
        if self.difference is not None:
            facts += [("control run", self.control_run), ("control plan", self.control_plan)]
        return html_card(f"MetricsResult {self.run.name}", facts, {"table": self.table})


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
    selection = config.selection
    if config.control_run and not selection.is_all():
        raise InterpError(
            "--control-run pairs every example of both runs; leave out --examples, --limit "
            "and --sample"
        )
    difference, control = _difference(opened, config) if config.control_run else (None, None)
    rounds = opened.rounds()
    keep = None
    if not selection.is_all():
        from interp.inputs.selection import select_rows

        keep = set(select_rows(rounds, selection)["example_index"].tolist())
    from interp.runs.metrics_file import recompute

    result, written = recompute(
        opened,
        n_boot=config.n_boot,
        seed=config.seed,
        cluster=config.cluster,
        debias_space=config.debias_space,
        keep=keep,
    )
    from interp.inputs.winogender import is_winogender

    if is_winogender(opened.manifest):
        table = pd.json_normalize(result["per_round"])
    else:
        from interp.metrics.rounds import metrics_table

        table = metrics_table(result)
    n_examples = rounds["example_index"].nunique() if keep is None else len(keep)
    control_path, plan = (None, None) if control is None else control
    return MetricsResult(
        opened.path, result, table, written, int(n_examples), difference, control_path, plan
    )


def _difference(run: Run, config: MetricsConfig) -> tuple[dict[str, Any], tuple[Path, str]]:
    from interp.inputs.winogender import is_winogender
    from interp.metrics.winogender import winogender_plan_difference
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
