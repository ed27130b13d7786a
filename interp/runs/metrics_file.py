"""A run's ``metrics.json``: computed from rounds.parquet, and when it may be stored over.

replay stores the metrics with its own bootstrap settings; ``interp metrics`` recomputes them
with the settings it is given and stores the result only when they are the ones the stored
file was made with (else another reading would replace the run's own): :func:`recompute`
decides, the CLI only prints. :func:`stored_or_computed` is replay's reading: the stored file,
or the metrics computed afresh when it is missing or damaged (never stored then).
"""

from __future__ import annotations

from typing import Any

from interp.runs.store import Run

__all__ = ["recompute", "stored_bootstrap", "stored_or_computed"]


def _is_winogender(run: Run) -> bool:
    return run.manifest.get("task", {}).get("name") == "winogender"


def stored_bootstrap(run: Run) -> tuple[int, int, str]:
    """(n_boot, seed, cluster) of the run's metrics.json; replay's own when it is missing or
    unreadable (a file from before clusters resampled examples: cluster ``example``).

    Args:
        run: The run whose metrics.json is read.

    Returns:
        The bootstrap settings the stored metrics were computed with.
    """
    try:
        stored = (run.read_metrics() or {})["bootstrap"]
        cluster = (stored.get("cluster") or {}).get("requested", "example")
        return int(stored["n_boot"]), int(stored["seed"]), str(cluster)
    except (ValueError, KeyError, TypeError, AttributeError):
        return 1000, int(run.manifest.get("seed", 0)), "template"


def recompute(
    run: Run,
    *,
    n_boot: int = 1000,
    seed: int = 0,
    cluster: str = "template",
    debias_space: str = "prob",
    keep: set[int] | None = None,
) -> tuple[dict[str, Any], bool]:
    """The run's metrics computed from rounds.parquet with these settings, stored over
    metrics.json only when the settings are those it was made with (BBQ: n_boot, seed and
    cluster, debiased in prob space as replay stores them; Winogender: n_boot and seed) and
    every example is read.

    Args:
        run: The run.
        n_boot: Bootstrap resamples of the intervals.
        seed: Seed of the bootstrap.
        cluster: What the bootstrap resamples (BBQ runs): template or example.
        debias_space: Permuted runs: average the orders in prob or log space (BBQ runs).
        keep: Only these ``example_index`` values (a selection: the result is returned,
            never stored); None: every example.

    Returns:
        The metrics record (what metrics.json holds) and whether it was stored.
    """
    from interp.runs.lock import run_lock
    from interp.runs.store import write_json

    rounds = run.rounds()
    if keep is not None:
        rounds = rounds[rounds["example_index"].isin(keep)]
    if _is_winogender(run):
        from interp.metrics.winogender import winogender_metrics

        stored = (run.read_metrics() or {}).get("bootstrap", {})
        result = winogender_metrics(rounds, n_boot=n_boot, seed=seed)
        same = (stored.get("n_boot"), stored.get("seed")) == (n_boot, seed)
    else:
        from interp.metrics.rounds import compute_metrics

        result = compute_metrics(
            rounds, n_boot=n_boot, seed=seed, cluster=cluster, debias_space=debias_space
        )
        same = stored_bootstrap(run) == (n_boot, seed, cluster) and debias_space == "prob"
    same = same and keep is None
    if same:
        with run_lock(run.path):
            write_json(run.path / "metrics.json", result)
    return result, same


def stored_or_computed(run: Run) -> dict[str, Any]:
    """metrics.json as stored; when it is missing or damaged, the metrics computed with
    replay's settings (shown, not stored: ``interp metrics`` rewrites the file).

    Args:
        run: The run.

    Returns:
        The metrics record.
    """
    stored = run.read_metrics()
    if stored is not None:
        return stored
    if _is_winogender(run):
        from interp.metrics.winogender import winogender_metrics

        return winogender_metrics(run.rounds(), n_boot=1000, seed=0)
    from interp.metrics.rounds import compute_metrics

    return compute_metrics(run.rounds(), seed=int(run.manifest.get("seed", 0)))
