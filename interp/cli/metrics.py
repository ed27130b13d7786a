"""``interp metrics``: recompute a run's metrics and print them (``interp replay`` prints them
through :func:`show_metrics` too). Needs pandas and numpy, never torch."""

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
    from interp.metrics.debias import check_space

    check_space(debias_space)
    difference = None
    if control_run is not None:  # checked and computed before anything is printed
        difference = plan_difference(run, control_run, n_boot=n_boot, seed=seed, cluster=cluster)
    show_metrics(
        run,
        as_json,
        recompute=True,
        n_boot=n_boot,
        seed=seed,
        by_category=by_category,
        cluster=cluster,
        debias_space=debias_space,
        difference=difference,
    )


def plan_difference(
    run_path: Path, control_path: Path, *, n_boot: int, seed: int, cluster: str
) -> tuple[dict[str, Any], str]:
    """The paired run - control table of ``--control-run`` (BBQ metrics or Winogender's
    correlations) and its text."""
    from interp.inputs.winogender import is_winogender
    from interp.metrics.winogender import format_winogender_difference, winogender_plan_difference
    from interp.runs.controls import format_metrics_difference, metrics_difference, open_control
    from interp.runs.store import Run

    run = Run.open(run_path)
    control, checks = open_control(run, control_path)
    names = (run.path.name, f"{control.path.name}, plan {checks['plan']}")
    if is_winogender(run.manifest):
        result = winogender_plan_difference(run.rounds(), control.rounds(), n_boot, seed)
        return result, format_winogender_difference(result, *names)
    result = metrics_difference(
        run.rounds(), control.rounds(), n_boot=n_boot, seed=seed, cluster=cluster
    )
    return result, format_metrics_difference(result, *names)


def show_metrics(
    path: Path,
    as_json: bool,
    *,
    recompute: bool,
    n_boot: int = 1000,
    seed: int = 0,
    by_category: bool = False,
    cluster: str = "template",
    debias_space: str = "prob",
    difference: tuple[dict[str, Any], str] | None = None,
) -> None:
    from interp.metrics.rounds import compute_metrics
    from interp.runs.store import Run, write_json

    run = Run.open(path)
    if run.manifest.get("task", {}).get("name") == "winogender":
        _show_winogender(
            run, as_json, recompute=recompute, n_boot=n_boot, seed=seed, difference=difference
        )
        return
    for line in run.manifest.get("task", {}).get("targets", {}).get("warnings", []):
        typer.echo(f"warning: {line}", err=True)
    if recompute:
        result = compute_metrics(
            run.rounds(), n_boot=n_boot, seed=seed, cluster=cluster, debias_space=debias_space
        )
        # replay stores prob-space debiased scores; another space is printed, not stored
        if _stored_bootstrap(run) == (n_boot, seed, cluster) and debias_space == "prob":
            from interp.runs.lock import run_lock

            with run_lock(run.path):
                write_json(run.path / "metrics.json", result)
    else:
        try:
            result = json.loads((run.path / "metrics.json").read_text())
        except ValueError:  # damaged: show the metrics anyway; `interp metrics` rewrites it
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
    recompute: bool,
    n_boot: int,
    seed: int,
    difference: tuple[dict[str, Any], str] | None = None,
) -> None:
    # Winogender runs: correlation with BLS % female and pronoun shares (interp.metrics.winogender).
    from interp.metrics.winogender import format_winogender_metrics, winogender_metrics
    from interp.runs.store import write_json

    stored = run.read_metrics()
    if recompute or stored is None:
        result = winogender_metrics(run.rounds(), n_boot=n_boot, seed=seed)
        same = (stored or {}).get("bootstrap", {})
        if recompute and (same.get("n_boot"), same.get("seed")) == (n_boot, seed):
            from interp.runs.lock import run_lock

            with run_lock(run.path):
                write_json(run.path / "metrics.json", result)
    else:
        result = stored
    if as_json:
        extra = {} if difference is None else {"plan_difference": difference[0]}
        typer.echo(json.dumps({**result, **extra}, indent=2, allow_nan=False))
        return
    typer.echo(format_winogender_metrics(result))
    if difference is not None:
        typer.echo(difference[1])


def _stored_bootstrap(run: Any) -> tuple[int, int, str]:
    """(n_boot, seed, cluster) of the run's metrics.json; replay's own when it is missing or
    unreadable (a file from before clusters resampled examples)."""
    try:
        stored = json.loads((run.path / "metrics.json").read_text())["bootstrap"]
        cluster = (stored.get("cluster") or {}).get("requested", "example")
        return int(stored["n_boot"]), int(stored["seed"]), str(cluster)
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return 1000, int(run.manifest.get("seed", 0)), "template"
