"""``interp metrics``: recompute a run's metrics (:func:`interp.runs.metrics.metrics`) and
print them (``interp replay`` prints them through :func:`show_metrics` too). Needs pandas and
numpy, never torch."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from interp.cli.format import (
    format_calibration,
    format_debiased_extra,
    format_metrics,
    format_per_category,
)


def metrics(
    run: Annotated[Path, typer.Option(help="A run directory written by `interp replay`.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the metrics as JSON.")] = False,
    n_boot: Annotated[
        int, typer.Option(help="Bootstrap resamples for the intervals (at least 1).")
    ] = 1000,
    seed: Annotated[int, typer.Option(help="Seed of the bootstrap.")] = 0,
    by_category: Annotated[
        bool,
        typer.Option(
            "--by-category",
            help="Print the official BBQ scores of every category at every round, with "
            "intervals (default: a compact table of the first and last round).",
        ),
    ] = False,
    cluster: Annotated[
        str,
        typer.Option(
            help="What the bootstrap resamples: template (category + question_index) or example."
        ),
    ] = "template",
    debias_space: Annotated[
        str,
        typer.Option(
            help="Permuted runs: average the option orders' probabilities in prob space "
            "(default: the distribution of a reader who shuffles the options) or in log space "
            "(cancels an additive letter bias exactly, but one confident order dominates)."
        ),
    ] = "prob",
    control_run: Annotated[
        Path | None,
        typer.Option(
            help="A replay of the same examples under another plan: also print run - control "
            "per round with paired intervals (the same cluster resamples for both runs).",
        ),
    ] = None,
) -> None:
    """Per-round accuracy, BBQ bias scores, uncertainty, calibration, flips and convergence.

    Recomputes the metrics from rounds.parquet and prints one row per round, then the official
    BBQ scores per category. metrics.json is rewritten only with the bootstrap settings it was
    made with (--n-boot and --seed as stored, by default those of replay); other settings are
    printed, never stored over it.
    """
    from interp.options import check_n_boot, check_seed

    if n_boot < 1:  # 0 would store metrics without intervals
        typer.echo(f"error: --n-boot must be at least 1 (got {n_boot})", err=True)
        raise typer.Exit(2)
    check_n_boot(n_boot)
    check_seed(seed)
    from interp import preflight

    preflight.run_manifest(run)  # a mistyped run, before pandas is imported
    from interp.runs.metrics import MetricsConfig
    from interp.runs.metrics import metrics as run_metrics

    config = MetricsConfig(
        n_boot=n_boot,
        seed=seed,
        cluster=cluster,
        debias_space=debias_space,
        control_run=None if control_run is None else str(control_run),
    )
    result = run_metrics(run, config)
    difference = None
    if result.difference is not None:
        difference = (result.difference, _difference_text(result, run))
    show_metrics(
        run, as_json, computed=result.metrics, by_category=by_category, difference=difference
    )


def _difference_text(result: Any, run: Path) -> str:
    """The text of ``--control-run``'s paired table (BBQ metrics or Winogender's)."""
    from interp.inputs.winogender import format_winogender_difference, is_winogender
    from interp.runs.controls import format_metrics_difference
    from interp.runs.store import Run

    names = (result.run.name, f"{result.control_run.name}, plan {result.control_plan}")
    if is_winogender(Run.open(run).manifest):
        return format_winogender_difference(result.difference, *names)
    return format_metrics_difference(result.difference, *names)


def show_metrics(
    path: Path,
    as_json: bool,
    *,
    computed: dict[str, Any] | None = None,
    by_category: bool = False,
    difference: tuple[dict[str, Any], str] | None = None,
) -> None:
    """Print a run's metrics: ``computed`` (by :func:`interp.runs.metrics.metrics`), else
    those stored in its metrics.json (recomputed when that file is damaged)."""
    from interp.runs.store import Run

    run = Run.open(path)
    if run.manifest.get("task", {}).get("name") == "winogender":
        _show_winogender(run, as_json, computed=computed, difference=difference)
        return
    for line in run.manifest.get("task", {}).get("targets", {}).get("warnings", []):
        typer.echo(f"warning: {line}", err=True)
    if computed is not None:
        result = computed
    else:
        try:
            result = json.loads((run.path / "metrics.json").read_text())
        except ValueError:  # damaged: show the metrics anyway; `interp metrics` rewrites it
            from interp.metrics.rounds import compute_metrics

            result = compute_metrics(run.rounds(), seed=int(run.manifest.get("seed", 0)))
    if as_json:
        extra = {} if difference is None else {"plan_difference": difference[0]}
        typer.echo(json.dumps({**result, **extra}, indent=2, allow_nan=False))
        return
    floor = result.get("model_floor") or {}
    if floor.get("flag"):
        typer.echo(f"WARNING: {floor['line']}")  # one line, above everything else
    typer.echo(format_metrics(result))
    typer.echo(format_calibration(result))
    if result.get("per_category"):
        typer.echo(format_per_category(result, every_round=by_category))
    if (result.get("debiased") or {}).get("per_category"):
        typer.echo(format_debiased_extra(result, every_round=by_category))
    if difference is not None:
        typer.echo(difference[1])


def _show_winogender(
    run: Any,
    as_json: bool,
    *,
    computed: dict[str, Any] | None,
    difference: tuple[dict[str, Any], str] | None = None,
) -> None:
    # Winogender runs: correlation with BLS % female and pronoun shares (interp.inputs.winogender).
    from interp.inputs.winogender import format_winogender_metrics, winogender_metrics

    result = computed if computed is not None else run.read_metrics()
    if result is None:
        result = winogender_metrics(run.rounds())
    if as_json:
        extra = {} if difference is None else {"plan_difference": difference[0]}
        typer.echo(json.dumps({**result, **extra}, indent=2, allow_nan=False))
        return
    typer.echo(format_winogender_metrics(result))
    if difference is not None:
        typer.echo(difference[1])
