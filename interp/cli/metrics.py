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
from interp.cli.params import (
    ControlRun,
    Examples,
    Json,
    Limit,
    Run,
    Sample,
    Seed,
    check_selection,
    parse_examples,
)


def metrics(
    run: Run,
    as_json: Json = False,
    n_boot: Annotated[
        int, typer.Option(help="Bootstrap resamples for the intervals (at least 1).")
    ] = 1000,
    seed: Seed = 0,
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
    control_run: ControlRun = None,
    examples: Examples = None,
    limit: Limit = None,
    sample: Sample = None,
) -> None:
    """Per-round accuracy, BBQ bias scores, uncertainty, calibration, flips and convergence.

    Recomputes the metrics from rounds.parquet and prints one row per round, then the official
    BBQ scores per category. metrics.json is rewritten only with the bootstrap settings it was
    made with (--n-boot and --seed as stored, by default those of replay); other settings are
    printed, never stored over it. With --control-run the same cluster resamples serve both
    runs.

    --examples, --limit and --sample print the metrics of those examples only (--sample drawn
    as replay draws it, seeded by --seed; on a permuted run over base examples, every order
    kept), never stored over metrics.json; not with --control-run (its pairs are every example
    of both runs).
    """
    from interp.options import check_n_boot, check_seed

    if n_boot < 1:  # 0 would store metrics without intervals
        typer.echo(f"error: --n-boot must be at least 1 (got {n_boot})", err=True)
        raise typer.Exit(2)
    check_n_boot(n_boot)
    check_seed(seed)
    chosen = parse_examples(examples)
    check_selection(limit, sample)
    from interp import preflight

    preflight.run_manifest(run)  # a mistyped run, before pandas is imported
    from interp.runs.metrics import MetricsConfig
    from interp.runs.metrics import metrics as run_metrics

    selected = chosen is not None or limit is not None or sample is not None
    config = MetricsConfig(
        n_boot=n_boot,
        seed=seed,
        cluster=cluster,
        debias_space=debias_space,
        control_run=None if control_run is None else str(control_run),
        examples=None if chosen is None else tuple(chosen),
        limit=limit,
        sample=sample,
    )
    result = run_metrics(run, config)
    if selected:
        typer.echo(
            f"note: the metrics of {result.n_examples} selected examples; metrics.json (every "
            "example) is left as it is",
            err=True,
        )
    difference = None
    if result.difference is not None:
        difference = (result.difference, _difference_text(result, run))
    show_metrics(
        run, as_json, computed=result.metrics, by_category=by_category, difference=difference
    )


def _difference_text(result: Any, run: Path) -> str:
    """The text of ``--control-run``'s paired table (BBQ metrics or Winogender's)."""
    from interp.inputs.winogender import is_winogender
    from interp.metrics.winogender import format_winogender_difference
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
    else:  # stored, or computed afresh when missing or damaged (interp.runs.metrics_file)
        from interp.runs.metrics_file import stored_or_computed

        result = stored_or_computed(run)
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
    # Winogender runs: correlation with BLS % female and pronoun shares (interp.metrics.winogender).
    from interp.metrics.winogender import format_winogender_metrics

    if computed is not None:
        result = computed
    else:
        from interp.runs.metrics_file import stored_or_computed

        result = stored_or_computed(run)
    if as_json:
        extra = {} if difference is None else {"plan_difference": difference[0]}
        typer.echo(json.dumps({**result, **extra}, indent=2, allow_nan=False))
        return
    typer.echo(format_winogender_metrics(result))
    if difference is not None:
        typer.echo(difference[1])
