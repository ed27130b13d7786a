"""The superficial test: does self-correction change what the model knows, or only its output?

(a) **By round-0 rank.** Every example is put in a group by the rank of its correct option at
    round 0 (1 = the most probable option; options scored equal share the better rank). Per
    rank: the number of examples, accuracy at round 0 and at the last round, and the share
    that improves (wrong at round 0, right at the last round) and worsens, each with a 95%
    cluster-bootstrap interval (templates by default; a resample keeps the groups as they
    are and averages within each). If self-correction only helps where the correct answer is
    already near the top, the improvement is concentrated at rank 2 and absent at rank 3.
(b) **Concept change by outcome.** From the run's stored probe scores (``interp probe``), per
    layer the change of the concept score from round 0 to the last round, averaged over
    examples that improve (wrong -> right) and over those that stayed wrong (wrong -> wrong:
    both groups began wrong, so their difference isolates the improvement), and the
    difference improved - stayed wrong, with intervals from the same resamples. The groups
    right -> right and right -> wrong are reported beside them. A hidden-state change that
    goes with the improvement shows as a difference whose interval excludes 0; equal changes
    in both groups mean the level moves (or not) whatever the output does.

``summary.json`` states the reading the intervals support, in sentences.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from interp.experiments.common import (
    ExperimentConfig,
    ExperimentDir,
    ExperimentResult,
    Grid,
    ModelHolder,
    all_layers_matrix,
    no_probe_hint,
    run_grid,
    validate,
    weights_for,
)
from interp.experiments.convergence import _records, weighted_means
from interp.lock import run_lock
from interp.stats import percentile_interval
from interp.store import Run

if TYPE_CHECKING:
    from transformer_lens import HookedTransformer

NAME = "superficial"
GROUPS = ("improved", "stayed_wrong", "stayed_right", "worsened")


def outcome_groups(grid: Grid) -> np.ndarray:
    """Per example: improved / stayed_wrong / stayed_right / worsened (round 0 -> last)."""
    first, last = grid.correct[:, 0] > 0.5, grid.correct[:, -1] > 0.5
    out = np.where(first, np.where(last, "stayed_right", "worsened"), "")
    return np.where(first, out, np.where(last, "improved", "stayed_wrong"))


def _mean_ci(values: np.ndarray, mask: np.ndarray, weights: np.ndarray) -> tuple[float, ...]:
    """Mean of ``values`` over ``mask`` and its bootstrap interval (examples outside the mask
    count as missing in every resample)."""
    masked = np.where(mask, values, np.nan)[:, None]
    mean = (
        float(weighted_means(np.ones((1, len(values))), masked)[0, 0]) if mask.any() else math.nan
    )
    if not len(weights) or not mask.any():
        return mean, math.nan, math.nan
    lo, hi = percentile_interval(weighted_means(weights, masked)[:, 0])
    return mean, float(lo), float(hi)


def rank_table(grid: Grid, weights: np.ndarray) -> pd.DataFrame:
    rows = []
    groups = outcome_groups(grid)
    for rank in sorted(set(grid.label_rank.tolist()) - {0}):
        mask = grid.label_rank == rank
        row: dict[str, Any] = {"rank": int(rank), "n_examples": int(mask.sum())}
        row["share"] = float(mask.mean())
        for key, values in (
            ("acc_first", grid.correct[:, 0]),
            ("acc_last", grid.correct[:, -1]),
            ("improved", (groups == "improved").astype(float)),
            ("worsened", (groups == "worsened").astype(float)),
        ):
            row[key], row[f"{key}_lo"], row[f"{key}_hi"] = _mean_ci(values, mask, weights)
        rows.append(row)
    return pd.DataFrame(rows)


def concept_change_table(
    grid: Grid, layers: list[int], scores: np.ndarray, weights: np.ndarray
) -> pd.DataFrame:
    """``scores``: [layer, example, round]. Rows: layer x group (and the difference)."""
    groups = outcome_groups(grid)
    change = scores[:, :, -1] - scores[:, :, 0]  # [layer, example]
    rows = []
    for j, layer in enumerate(layers):
        for group in GROUPS:
            mask = groups == group
            mean, lo, hi = _mean_ci(change[j], mask, weights)
            rows.append(
                {"layer": layer, "group": group, "n_examples": int(mask.sum()), "change": mean}
                | {"lo": lo, "hi": hi}
            )
        a, b = groups == "improved", groups == "stayed_wrong"
        diff = _diff(change[j], a, b, np.ones((1, grid.n_examples)))[0]
        if a.any() and b.any() and len(weights):
            lo, hi = percentile_interval(_diff(change[j], a, b, weights))
        else:
            lo = hi = math.nan
        rows.append(
            {
                "layer": layer,
                "group": "improved - stayed_wrong",
                "n_examples": int(a.sum() + b.sum()),
                "change": float(diff),
                "lo": float(lo),
                "hi": float(hi),
            }
        )
    return pd.DataFrame(rows)


def _diff(values: np.ndarray, a: np.ndarray, b: np.ndarray, weights: np.ndarray) -> np.ndarray:
    va = weighted_means(weights, np.where(a, values, np.nan)[:, None])[:, 0]
    vb = weighted_means(weights, np.where(b, values, np.nan)[:, None])[:, 0]
    return va - vb


def reading(ranks: pd.DataFrame, change: pd.DataFrame | None, n_improved: int) -> list[str]:
    lines = []
    if n_improved == 0:
        lines.append(
            "(a) no example goes from wrong at round 0 to right at the last round: "
            "self-correction does not improve any answer here, so (a) and (b) have nothing "
            "to explain."
        )
    else:
        by = {int(r["rank"]): r for r in ranks.to_dict("records")}
        two, three = by.get(2), by.get(3)
        if two and three and two["improved_lo"] > three["improved_hi"]:
            lines.append(
                f"(a) improvements come mostly where the correct answer was second at round 0 "
                f"({two['improved']:.2f} [{two['improved_lo']:.2f}, {two['improved_hi']:.2f}] "
                f"vs {three['improved']:.2f} at rank 3): consistent with a superficial effect "
                "that re-ranks near-top answers."
            )
        else:
            lines.append(
                "(a) the improvement rates by round-0 rank overlap in their intervals: the "
                "data do not show self-correction helping mainly near-top answers."
            )
    if change is None:
        lines.append("(b) no probe scores: the hidden-state part was not measured.")
        return lines
    diffs = change[change["group"] == "improved - stayed_wrong"]
    reliable = diffs[(diffs["lo"] > 0) | (diffs["hi"] < 0)]
    if diffs["lo"].isna().all():
        lines.append(
            "(b) improved and stayed-wrong examples cannot be compared (one group is empty)."
        )
    elif reliable.empty:
        lines.append(
            "(b) at no layer does the concept score change differently for examples that "
            "improved than for those that stayed wrong: the output changed without a "
            "matching hidden-state change along the concept (the superficial reading)."
        )
    else:
        layers = ", ".join(str(int(x)) for x in reliable["layer"])
        lines.append(
            f"(b) at layer(s) {layers} the concept score changes differently for improved "
            "examples than for those that stayed wrong (interval excludes 0): the improvement "
            "goes with a hidden-state change along the concept."
        )
    return lines


def analyse_run(
    run: Run,
    *,
    concept: str = "stereotype",
    n_boot: int = 1000,
    seed: int = 0,
    cluster: str = "template",
) -> tuple[dict[str, pd.DataFrame], dict[str, Any]]:
    grid = run_grid(run, cluster)
    weights = weights_for(grid, n_boot, seed)
    ranks = rank_table(grid, weights)
    tables = {"by_rank": ranks}
    groups = outcome_groups(grid)
    summary: dict[str, Any] = {
        "experiment": NAME,
        "run": str(run.path),
        "plan": run.manifest.get("plan", {}).get("name"),
        "last_round": grid.n_rounds - 1,
        "groups": {g: int((groups == g).sum()) for g in GROUPS},
        "n_boot": n_boot,
        "cluster": grid.clusters.to_dict(),
        "by_rank": _records(ranks),
    }
    found = all_layers_matrix(run, concept)
    change = None
    if found is None:
        summary["concept"] = None
        summary["concept_note"] = no_probe_hint(run, concept)
    else:
        change = concept_change_table(grid, found[0], found[1], weights)
        tables["concept_change"] = change
        summary["concept"] = concept
    summary["reading"] = reading(ranks, change, summary["groups"]["improved"])
    return tables, summary


def superficial_of_run(
    run_dir: str | Path,
    *,
    concept: str = "stereotype",
    n_boot: int = 1000,
    seed: int = 0,
    cluster: str = "template",
) -> ExperimentResult:
    """The superficial test on an existing run; writes ``<run>/experiments/superficial/``."""
    from dataclasses import replace

    validate(replace(ExperimentConfig(), rounds=2, n_boot=n_boot, cluster=cluster))
    run = Run.open(run_dir)
    tables, summary = analyse_run(run, concept=concept, n_boot=n_boot, seed=seed, cluster=cluster)
    with run_lock(run.path):
        run.write_analysis("experiments", NAME, tables, summary)
    return ExperimentResult(NAME, run.path / "experiments" / NAME, tables, summary)


def superficial(
    config: ExperimentConfig,
    *,
    model: HookedTransformer | None = None,
    progress: bool = False,
    command: str | None = None,
) -> ExperimentResult:
    """Replay ``config.plan`` (reused when done), probe it, and run both parts of the test."""
    validate(config)
    holder = ModelHolder(config, model)
    with ExperimentDir(NAME, config, command) as exp:
        run = exp.arm("main", config.plan, holder, progress=progress)
        tables, summary = analyse_run(
            run,
            concept=config.concept,
            n_boot=config.n_boot,
            seed=config.seed,
            cluster=config.cluster,
        )
        sizes = {"n_examples": int(run.manifest["task"]["n_examples"]), "rounds": config.rounds}
        return exp.write_result(tables, summary, sizes)
