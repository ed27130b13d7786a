"""Control runs: the same examples replayed under another plan, to compare an effect against.

A trend across rounds is not by itself an effect of the instruction: the ``baseline`` plan
(answer again, no moral instruction) moves the read-out states too. Analyses that take a
control (``interp probe --control-run``, ``interp patch --control-run``) report run - control
per round with a paired bootstrap (``interp.stats.paired_difference``). Pairing is only
meaningful when both runs hold the same examples in the same order, on the same model, with
the same rounds; ``check_control`` refuses anything else.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from interp.errors import InterpError
from interp.runs.store import Run
from interp.stats import (
    CLUSTER_FLOOR,
    DEFAULT_CLUSTER,
    bootstrap_weights,
    cluster_caveat,
    example_clusters,
    interval_or_none,
    json_float,
)

CONTROL_DEFINITION = (
    "run - control: the same examples replayed under another plan (e.g. baseline, no moral "
    "instruction) on the same model, same rounds and same task data; intervals are paired "
    "cluster bootstraps (both runs resampled with the same clusters), so they are intervals "
    "of the per-example difference"
)


def open_control(run: Run, control: str | Path | Run) -> tuple[Run, dict[str, Any]]:
    """Open the control run and check it pairs with ``run``; returns it and the JSON record
    of what was checked. Raises InterpError naming the first mismatch.

    Args:
        run: The run analysed.
        control: The control run: an opened ``Run`` or its directory.

    Returns:
        ``(control_run, record)``: the opened control and what :func:`check_control` checked.

    Raises:
        InterpError: The control cannot be opened, or does not pair with ``run``.
    """
    other = control if isinstance(control, Run) else Run.open(control)
    return other, check_control(run, other)


def check_control(run: Run, control: Run) -> dict[str, Any]:
    """Same model weights, rounds count, task data hash and example ids in the same order;
    a different run directory and another plan.

    Args:
        run: The run analysed.
        control: The opened control run.

    Returns:
        The JSON record of the pairing: the control's path and plan, the checks made, the
        number of examples and ``CONTROL_DEFINITION``.

    Raises:
        InterpError: The control is the run itself, or differs in model (id or weights hash),
            rounds, task data hash, example ids or their order, or mode, or used the same plan.
    """
    where = f"control run {control.path}"
    if run.path.resolve() == control.path.resolve():
        raise InterpError(f"{where} is the run itself; pass a replay of another plan")
    model, other_model = run.manifest.get("model", {}), control.manifest.get("model", {})
    want, got = model.get("weights_hash"), other_model.get("weights_hash")
    if want != got or model.get("model_id") != other_model.get("model_id"):
        raise InterpError(
            f"{where} was replayed on another model ({other_model.get('model_id')}, weights "
            f"{str(got)[:12]}) than the run ({model.get('model_id')}, weights {str(want)[:12]}); "
            "replay the control with the run's model"
        )
    if run.n_rounds != control.n_rounds:
        raise InterpError(
            f"{where} has rounds 0..{control.n_rounds - 1}, the run 0..{run.n_rounds - 1}; "
            f"replay the control with --rounds {run.n_rounds - 1}"
        )
    task, other_task = run.manifest.get("task", {}), control.manifest.get("task", {})
    if task.get("data_hash") != other_task.get("data_hash"):
        raise InterpError(
            f"{where} was replayed on other task data (hash {str(other_task.get('data_hash'))[:12]}"
            f", the run's {str(task.get('data_hash'))[:12]}); replay it on the run's files"
        )
    ids, other_ids = example_ids(run), example_ids(control)
    if ids != other_ids:
        raise InterpError(
            f"{where} holds other examples than the run: {_first_difference(ids, other_ids)}; "
            "replay it with the run's --task, --data, --limit/--sample and --seed"
        )
    if run.manifest.get("mode") != control.manifest.get("mode"):
        raise InterpError(
            f"{where} was replayed in {control.manifest.get('mode')} mode, the run in "
            f"{run.manifest.get('mode')} mode; the read-out positions would not correspond"
        )
    plan, other_plan = run.manifest.get("plan", {}), control.manifest.get("plan", {})
    if _plan_texts(plan) == _plan_texts(other_plan):
        raise InterpError(
            f"{where} used the same plan as the run ({plan.get('name')}); a control replays "
            "the same examples under another plan (e.g. --plan baseline)"
        )
    return {
        "run": str(control.path),
        "plan": other_plan.get("name"),
        "checked": [
            "model weights",
            "rounds",
            "task data hash",
            "example ids in order",
            "mode",
            "another plan",
        ],
        "n_examples": len(ids),
        "definition": CONTROL_DEFINITION,
    }


def example_ids(run: Run) -> list[str]:
    """The run's example ids in example_index order.

    Args:
        run: An opened run (its rounds table is read).

    Returns:
        One id (as text) per example.
    """
    rounds = run.rounds()
    firsts = rounds.sort_values("example_index", kind="stable").drop_duplicates("example_index")
    return [str(x) for x in firsts["example_id"]]


def _first_difference(ids: list[str], other: list[str]) -> str:
    if len(ids) != len(other):
        return f"{len(other)} examples, the run {len(ids)}"
    i = int(np.flatnonzero(np.array(ids) != np.array(other))[0])
    return f"example {i} is {other[i]!r}, the run's is {ids[i]!r}"


def _plan_texts(plan: dict[str, Any]) -> dict[str, Any]:
    """What the model is told; a plan renamed but otherwise equal is the same plan."""
    return {k: v for k, v in plan.items() if k not in ("name", "description")}


# --- paired plan differences of the metrics ----------------------------------------------------

PLAN_DIFFERENCE_DEFINITION = (
    "run - control of each metric per round, paired: every resample draws the same clusters "
    "(BBQ templates, with every variant and item in them) for both runs and computes both "
    "metrics on that draw, so the interval is that of the difference. Overlapping marginal "
    "intervals do not show that two plans agree; this interval excluding 0 shows they differ. "
    f"Below {CLUSTER_FLOOR} clusters no interval is given"
)


def metrics_difference(
    rounds: pd.DataFrame,
    control: pd.DataFrame,
    *,
    n_boot: int = 1000,
    seed: int = 0,
    cluster: str = DEFAULT_CLUSTER,
) -> dict[str, Any]:
    """Run - control of the BBQ metrics with intervals (``interp.metrics.rounds.CI_METRICS``), per
    round, from the two runs' rounds tables (the same examples in the same order).

    Args:
        rounds: The run's rounds table.
        control: The control run's rounds table (same examples, same order, same rounds).
        n_boot: Number of paired bootstrap resamples; 0 gives no intervals.
        seed: Seed of the resampling generator.
        cluster: The cluster key (``"template"`` or ``"example"``) resampled.

    Returns:
        A JSON-ready dict with ``per_round`` (per round, for each metric: ``run``, ``control``,
        ``diff`` and ``ci``, None below ``CLUSTER_FLOOR`` clusters or with ``n_boot`` 0),
        ``n_examples``, ``n_clusters``, ``cluster``, ``bootstrap`` and ``definition``.

    Raises:
        InterpError: The two tables hold other examples or rounds, or ``cluster`` is unknown.
    """
    from interp.metrics.rounds import CI_METRICS, build_grid, resampled_stats

    run_grid, control_grid = build_grid(rounds), build_grid(control)
    if run_grid.rounds != control_grid.rounds or _ids(rounds) != _ids(control):
        raise InterpError(
            "the control run holds other examples or rounds than the run; replay it with the "
            "run's --task, --data, --limit/--sample, --seed and --rounds"
        )
    clusters = example_clusters(rounds, cluster)
    n = run_grid.n_examples
    ones = np.ones((1, n))
    point = {k: resampled_stats(g, ones) for k, g in (("run", run_grid), ("control", control_grid))}
    weights = np.zeros((0, n))
    if n_boot and clusters.n_clusters >= CLUSTER_FLOOR:
        weights = bootstrap_weights(clusters.ids, n_boot, seed)
    boot = {
        k: resampled_stats(g, weights) for k, g in (("run", run_grid), ("control", control_grid))
    }
    per_round = []
    for j, r in enumerate(run_grid.rounds):
        entry: dict[str, Any] = {"round": int(r)}
        for name in CI_METRICS:
            a, b = point["run"][name][0, j], point["control"][name][0, j]
            ci = interval_or_none(boot["run"][name][:, j] - boot["control"][name][:, j])
            entry[name] = {
                "run": json_float(a),
                "control": json_float(b),
                "diff": json_float(a - b),
                "ci": ci if len(weights) else None,
            }
        per_round.append(entry)
    return {
        "n_examples": n,
        "n_clusters": clusters.n_clusters,
        "cluster": clusters.to_dict(),
        "per_round": per_round,
        "bootstrap": {"n_boot": int(n_boot), "seed": int(seed)},
        "definition": PLAN_DIFFERENCE_DEFINITION,
    }


def _ids(rounds: pd.DataFrame) -> list[str]:
    firsts = rounds.sort_values("example_index", kind="stable").drop_duplicates("example_index")
    return [str(x) for x in firsts["example_id"]]


DIFFERENCE_COLUMNS = ("accuracy", "bias_amb", "bias_dis", "entropy")


def format_metrics_difference(result: dict[str, Any], run: str, control: str) -> str:
    """The paired run - control table ``interp metrics --control-run`` prints.

    Args:
        result: What :func:`metrics_difference` returned.
        run: The run's name, as printed in the heading.
        control: The control's name, as printed in the heading.

    Returns:
        The table as text (no trailing newline), with a warning line when the clusters are few.
    """
    k = result["n_clusters"]
    lines = [
        f"run ({run}) - control ({control}), paired over {k} "
        f"{result['cluster']['key']} clusters (the same resamples for both runs):",
        "round  " + "  ".join(f"{name + ' diff [95% CI]':<28}" for name in DIFFERENCE_COLUMNS),
    ]
    for e in result["per_round"]:
        cells = []
        for name in DIFFERENCE_COLUMNS:
            v = e[name]
            if v["diff"] is None:
                cells.append(f"{'n/a':<28}")
                continue
            ci = v["ci"]
            text = f"[{ci[0]:+.3f}, {ci[1]:+.3f}]" if ci else f"n/a ({k} clusters)"
            cells.append(f"{v['diff']:+.3f} {text:<21}")
        lines.append(f"{e['round']:>5}  " + "  ".join(cells))
    caveat = cluster_caveat(k)
    if caveat:
        lines.append(f"WARNING: {caveat}")
    lines.append(
        "a plan differs from its control where the paired interval excludes 0; overlapping "
        "marginal intervals do not show the absence of a difference"
    )
    return "\n".join(lines)
