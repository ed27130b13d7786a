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
    goes with the improvement shows as a difference whose interval excludes 0 and survives
    Benjamini-Hochberg over the layers (``interp.experiments.common.surviving``); where none
    survives the groups cannot be told apart, which is not evidence for the superficial
    reading.

The control (``--control PLAN``, default ``baseline``; ``none`` skips it): a same-seed replay
of another plan on the same examples. (a) is tabled for both arms (``arm``/``plan`` columns;
examples grouped by the *main* arm's round-0 rank) with ``by_rank_difference``, main - control
per rank of the improved / worsened share and the last-round accuracy. (b) is tabled for the
control on the **same example groups** (defined by the main arm's outcome) with
``concept_change_difference``, main - control per layer and group of the concept change.
Both arms are averaged under the same resample weights, so the intervals are paired. The
reading credits the main plan only with what exceeds the control: concept scores that fall
across rounds as much without the instruction are not the instruction's doing.

``summary.json`` states the reading the intervals support, in sentences. Tasks without a
correct answer (Winogender) are refused: the groups need right and wrong answers.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from interp.errors import InterpError
from interp.experiments.common import (
    MULTIPLICITY,
    ExperimentConfig,
    ExperimentDir,
    ExperimentResult,
    Grid,
    ModelHolder,
    all_layers_matrix,
    check_control,
    no_probe_hint,
    open_run_and_control,
    refuse_winogender,
    run_grid,
    store_run_analysis,
    surviving,
    validate,
    weights_for,
    with_model,
    with_position,
)
from interp.experiments.convergence import check_same_examples, json_rows, weighted_means, with_arm
from interp.runs.distributed import Workers, single_process
from interp.runs.store import Run
from interp.stats import bootstrap_p, percentile_interval

if TYPE_CHECKING:
    from transformer_lens import HookedTransformer

NAME = "superficial"
GROUPS = ("improved", "stayed_wrong", "stayed_right", "worsened")
WHY_NOT_WINOGENDER = (
    "its groups (improved, stayed wrong) need a correct answer per item, and Winogender items "
    "have none; use experiment convergence"
)
DIFF_MEASURES = ("improved", "worsened", "acc_last")
# How the readings name their multiplicity correction (interp.experiments.common.surviving).
BH_SHORT = "Benjamini-Hochberg, FDR 0.05"


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


def rank_table(grid: Grid, weights: np.ndarray, ranks: np.ndarray | None = None) -> pd.DataFrame:
    """``ranks``: the round-0 rank each example is grouped by (default: the grid's own)."""
    rows = []
    groups = outcome_groups(grid)
    ranks = grid.label_rank if ranks is None else ranks
    for rank in sorted(set(ranks.tolist()) - {0}):
        mask = ranks == rank
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
    grid: Grid,
    layers: list[int],
    scores: np.ndarray,
    weights: np.ndarray,
    groups: np.ndarray | None = None,
) -> pd.DataFrame:
    """``scores``: [layer, example, round]. Rows: layer x group (and the difference).
    ``groups``: the outcome group of each example (default: the grid's own outcomes; the
    control arm is grouped by the main arm's)."""
    groups = outcome_groups(grid) if groups is None else groups
    change = scores[:, :, -1] - scores[:, :, 0]  # [layer, example]
    rows = []
    for j, layer in enumerate(layers):
        for group in GROUPS:
            mask = groups == group
            mean, lo, hi = _mean_ci(change[j], mask, weights)
            masked = np.where(mask, change[j], np.nan)[:, None]
            pval = bootstrap_p(weighted_means(weights, masked)[:, 0]) if mask.any() else math.nan
            rows.append(
                {"layer": layer, "group": group, "n_examples": int(mask.sum()), "change": mean}
                | {"lo": lo, "hi": hi, "p": float(pval)}
            )
        a, b = groups == "improved", groups == "stayed_wrong"
        diff = _diff(change[j], a, b, np.ones((1, grid.n_examples)))[0]
        if a.any() and b.any() and len(weights):
            samples = _diff(change[j], a, b, weights)
            lo, hi = percentile_interval(samples)
            pval = bootstrap_p(samples)
        else:
            lo = hi = pval = math.nan
        rows.append(
            {
                "layer": layer,
                "group": "improved - stayed_wrong",
                "n_examples": int(a.sum() + b.sum()),
                "change": float(diff),
                "lo": float(lo),
                "hi": float(hi),
                "p": float(pval),
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
    tested = diffs.dropna(subset=["lo", "hi"])
    reliable = tested[surviving(tested)]
    if tested.empty:
        lines.append(
            "(b) improved and stayed-wrong examples cannot be compared (one group is empty)."
        )
    elif reliable.empty:
        lines.append(
            f"(b) at no layer can the concept-score change of examples that improved be told "
            f"apart from that of examples that stayed wrong ({len(tested)} layers, "
            f"{BH_SHORT}): the data neither show a hidden-state change along the concept that "
            "goes with the improvement nor rule one out."
        )
    else:
        layers = ", ".join(str(int(x)) for x in reliable["layer"])
        lines.append(
            f"(b) at layer(s) {layers} the concept score changes differently for improved "
            f"examples than for those that stayed wrong (interval excludes 0 and survives "
            f"{BH_SHORT} over {len(tested)} layers): the improvement goes with a hidden-state "
            "change along the concept."
        )
    return lines


def _paired_rank_difference(
    grid: Grid, cgrid: Grid, ranks: np.ndarray, weights: np.ndarray
) -> pd.DataFrame:
    """Per round-0 rank (the main arm's) and measure: main - control, paired intervals."""
    w = np.vstack([np.ones((1, grid.n_examples)), weights])
    values = {}
    for arm, g in (("main", grid), ("control", cgrid)):
        groups = outcome_groups(g)
        values[arm] = {
            "improved": (groups == "improved").astype(float),
            "worsened": (groups == "worsened").astype(float),
            "acc_last": g.correct[:, -1],
        }
    rows = []
    for rank in sorted(set(ranks.tolist()) - {0}):
        mask = ranks == rank
        for measure in DIFF_MEASURES:
            m = weighted_means(w, np.where(mask, values["main"][measure], np.nan)[:, None])[:, 0]
            c = weighted_means(w, np.where(mask, values["control"][measure], np.nan)[:, None])
            d = m - c[:, 0]
            lo, hi = percentile_interval(d[1:]) if len(d) > 1 else (math.nan, math.nan)
            rows.append(
                {"rank": int(rank), "measure": measure, "n_examples": int(mask.sum())}
                | {"main": float(m[0]), "control": float(c[0, 0]), "value": float(d[0])}
                | {"lo": float(lo), "hi": float(hi), "p": float(bootstrap_p(d[1:]))}
            )
    return pd.DataFrame(rows)


def _paired_change_difference(
    layers: list[int],
    scores: np.ndarray,
    cscores: np.ndarray,
    groups: np.ndarray,
    weights: np.ndarray,
) -> pd.DataFrame:
    """Per layer and group (the main arm's): main - control of the concept change round 0 ->
    last, paired intervals; and of the improved - stayed_wrong contrast."""
    n = scores.shape[1]
    w = np.vstack([np.ones((1, n)), weights])
    change = scores[:, :, -1] - scores[:, :, 0]
    cchange = cscores[:, :, -1] - cscores[:, :, 0]
    rows = []
    for j, layer in enumerate(layers):
        per: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        for group in GROUPS:
            mask = groups == group
            m = weighted_means(w, np.where(mask, change[j], np.nan)[:, None])[:, 0]
            c = weighted_means(w, np.where(mask, cchange[j], np.nan)[:, None])[:, 0]
            per[group] = (m, c)
        a, b = per["improved"], per["stayed_wrong"]
        per["improved - stayed_wrong"] = (a[0] - b[0], a[1] - b[1])
        for group, (m, c) in per.items():
            d = m - c
            lo, hi = percentile_interval(d[1:]) if len(d) > 1 else (math.nan, math.nan)
            size = (
                int(np.isin(groups, ["improved", "stayed_wrong"]).sum())
                if " - " in group
                else int((groups == group).sum())
            )
            rows.append(
                {"layer": layer, "group": group, "n_examples": size}
                | {"main": float(m[0]), "control": float(c[0]), "value": float(d[0])}
                | {"lo": float(lo), "hi": float(hi), "p": float(bootstrap_p(d[1:]))}
            )
    return pd.DataFrame(rows)


def control_reading(
    rank_diff: pd.DataFrame,
    change_diff: pd.DataFrame | None,
    control_change: pd.DataFrame | None,
    main: str | None,
    control: str | None,
    n_clusters: int = 2,
) -> list[str]:
    """Whether the main arm's improvements and concept movement exceed the control's."""
    if n_clusters < 2:
        return [
            f"vs control ({control}): no interval (fewer than 2 clusters), so the arms are "
            "not compared."
        ]
    lines = []
    imp = rank_diff[rank_diff["measure"] == "improved"]
    beyond = imp[surviving(imp)]
    if beyond.empty:
        lines.append(
            f"(a) vs control ({control}): at no round-0 rank can the improved share under "
            f"{main} be told apart from the control's ({len(imp)} ranks, {BH_SHORT}): the "
            "improvements are not shown to be the instruction's doing."
        )
    else:
        where = ", ".join(
            f"rank {int(r['rank'])} {r['value']:+.2f} [{r['lo']:+.2f}, {r['hi']:+.2f}]"
            for r in beyond.to_dict("records")
        )
        lines.append(f"(a) vs control ({control}): main - control improved share: {where}.")
    if change_diff is None or control_change is None:
        lines.append("(b) vs control: no probe scores for both arms, not compared.")
        return lines
    own = control_change[control_change["group"].isin(GROUPS)]
    moved = own[surviving(own)]
    if not moved.empty:
        layers = ", ".join(sorted({str(int(x)) for x in moved["layer"]}, key=int))
        lines.append(
            f"(b) the control ({control}, no such instruction) also moves the concept score "
            f"from round 0 to the last round at layer(s) {layers}: a change there is not by "
            "itself evidence of the instruction."
        )
    groups = change_diff[change_diff["group"].isin(GROUPS)]
    reliable = groups[surviving(groups)]
    if reliable.empty:
        lines.append(
            f"(b) main - control: at no layer and group can the concept score's movement under "
            f"{main} be told apart from the control's on the same examples ({len(groups)} "
            f"layer x group cells, {BH_SHORT}): the main arm's hidden-state movement is not "
            "shown to exceed the control's."
        )
    else:
        # The largest differences first: with many examples every layer can be "reliable".
        rows = reliable.assign(size=reliable["value"].abs()).sort_values("size", ascending=False)
        rows = rows.to_dict("records")
        # beyond: the main arm moves further than the control, in its own direction (a
        # control moving the other way makes the difference large, not the main arm's move)
        beyond = [
            r for r in rows if r["value"] * r["main"] > 0 and abs(r["main"]) > abs(r["control"])
        ]
        where = ", ".join(
            f"layer {int(r['layer'])} {r['group']} {r['value']:+.3g} [{r['lo']:+.3g}, "
            f"{r['hi']:+.3g}]" + ("" if r in beyond else " (less than the control)")
            for r in rows[:6]
        )
        lines.append(
            f"(b) main - control: the concept change under {main} differs from the control's "
            f"in {len(rows)} of {len(groups.dropna(subset=['value']))} layer x group cells "
            f"(interval excludes 0 and survives {BH_SHORT}), beyond it in the main arm's own "
            f"direction in {len(beyond)}; "
            f"the largest: {where}."
        )
    return lines


def analyse_run(
    run: Run,
    *,
    concept: str = "stereotype",
    n_boot: int = 1000,
    seed: int = 0,
    cluster: str = "template",
    control: Run | None = None,
) -> tuple[dict[str, pd.DataFrame], dict[str, Any]]:
    """Both parts of the test on one run, beside its control run when given (same
    examples; the control grouped by the main arm's ranks and outcomes)."""
    from interp.inputs.winogender import is_winogender

    for r in (run, control):
        if r is not None and is_winogender(r.manifest):
            raise InterpError(
                f"{r.path} is a Winogender run, which superficial does not take: "
                + WHY_NOT_WINOGENDER
            )
    if control is not None:
        check_same_examples(run, control)
    grid = run_grid(run, cluster)
    weights = weights_for(grid, n_boot, seed)
    plan = run.manifest.get("plan", {}).get("name")
    ranks = rank_table(grid, weights)
    tables = {"by_rank": with_arm(ranks, "main", plan)}
    groups = outcome_groups(grid)
    summary: dict[str, Any] = {
        "experiment": NAME,
        "run": str(run.path),
        "plan": plan,
        "last_round": grid.n_rounds - 1,
        "groups": {g: int((groups == g).sum()) for g in GROUPS},
        "n_boot": n_boot,
        "cluster": grid.clusters.to_dict(),
        "by_rank": json_rows(tables["by_rank"]),
        "multiplicity": MULTIPLICITY,
    }
    found = all_layers_matrix(run, concept)
    change = None
    if found is None:
        summary["concept"] = None
        summary["concept_note"] = no_probe_hint(run, concept)
    else:
        change = concept_change_table(grid, found[0], found[1], weights)
        tables["concept_change"] = with_arm(change, "main", plan)
        summary["concept"] = concept
    summary["reading"] = reading(ranks, change, summary["groups"]["improved"])
    if control is None:
        summary["control"] = None
        summary["control_note"] = "no control: the movement is not compared with another plan"
        summary["reading"].append(
            "no control arm: nothing here separates the plan's effect from what repeated "
            "asking does without it (run with --control PLAN or --control-run DIR)."
        )
        return tables, with_position(summary, [run])
    cplan = control.manifest.get("plan", {}).get("name")
    cgrid = run_grid(control, cluster)
    cranks = rank_table(cgrid, weights, ranks=grid.label_rank)
    tables["by_rank"] = pd.concat(
        [tables["by_rank"], with_arm(cranks, "control", cplan)], ignore_index=True
    )
    rank_diff = _paired_rank_difference(grid, cgrid, grid.label_rank, weights)
    tables["by_rank_difference"] = rank_diff
    cfound = all_layers_matrix(control, concept)
    change_diff = control_change = None
    if found is not None and cfound is not None and cfound[0] == found[0]:
        control_change = concept_change_table(cgrid, cfound[0], cfound[1], weights, groups)
        tables["concept_change"] = pd.concat(
            [tables["concept_change"], with_arm(control_change, "control", cplan)],
            ignore_index=True,
        )
        change_diff = _paired_change_difference(found[0], found[1], cfound[1], groups, weights)
        tables["concept_change_difference"] = change_diff
    summary["control"] = {
        "plan": cplan,
        "run": str(control.path),
        "paired": "main - control under the same cluster-bootstrap resamples (same examples)",
        "grouped_by": "the main arm's round-0 rank and outcome (the same examples per group)",
        "groups": {g: int((outcome_groups(cgrid) == g).sum()) for g in GROUPS},
        "by_rank_difference": json_rows(rank_diff),
    }
    summary["reading"].extend(
        control_reading(
            rank_diff, change_diff, control_change, plan, cplan, grid.clusters.n_clusters
        )
    )
    return tables, with_position(summary, [run, control])


def superficial_of_run(
    run_dir: str | Path,
    config: ExperimentConfig | None = None,
    *,
    control_run: str | Path | None = None,
    workers: Workers | None = None,
) -> ExperimentResult:
    """The superficial test on an existing run (beside ``control_run``, a replay of another
    plan on the same examples, when given); writes ``<run>/experiments/superficial/``.

    Args:
        run_dir: The run (a directory ``interp replay`` wrote).
        config: The analysis settings read: concept, n_boot, seed, cluster (the replay
            settings are the run's own). None: the defaults.
        control_run: A replay of another plan on the same examples, analysed beside it.
        workers: Not supported (one process); must be None.

    Returns:
        The rank and concept-change tables, and where they were written.

    Raises:
        InterpError: Settings out of range, or a control run on other examples.
    """
    from dataclasses import replace

    single_process(workers, "superficial_of_run")
    config = config if config is not None else ExperimentConfig()
    concept, n_boot, seed, cluster = config.concept, config.n_boot, config.seed, config.cluster

    validate(replace(ExperimentConfig(), rounds=2, n_boot=n_boot, cluster=cluster))
    run, control = open_run_and_control(run_dir, control_run)
    tables, summary = analyse_run(
        run, concept=concept, n_boot=n_boot, seed=seed, cluster=cluster, control=control
    )
    result = ExperimentResult(NAME, run.path / "experiments" / NAME, tables, summary)
    return store_run_analysis(run, result)


def arms(config: ExperimentConfig) -> dict[str, str]:
    """The arms replayed: ``main`` (``config.plan``) and ``control`` (unless None)."""
    out = {"main": config.plan}
    if config.control is not None:
        out["control"] = config.control
    return out


def superficial(
    config: ExperimentConfig,
    *,
    model: HookedTransformer | None = None,
    progress: bool = True,
    workers: Workers | None = None,
    command: str | None = None,
) -> ExperimentResult:
    """Replay ``config.plan`` and the control plan (each reused when done), probe them, and
    run both parts of the test on both, with their paired differences.

    Args:
        config: The replays (model, task, examples, rounds, plan, control) and the analysis.
        model: The model, loaded (None: loaded when an arm must be replayed).
        progress: Show progress bars while replaying.
        workers: Not supported (one process); must be None.
        command: The command line recorded in the manifest.

    Returns:
        The tables and summary, and the experiment directory.

    Raises:
        InterpError: Settings that cannot run (Winogender), or a directory holding
            another experiment.
    """
    single_process(workers, NAME)
    validate(config)
    refuse_winogender(config, NAME, WHY_NOT_WINOGENDER)
    check_control(config)
    config = with_model(config, model)  # the model passed, not the default, is recorded
    holder = ModelHolder(config, model)
    with ExperimentDir(NAME, config, command) as exp:
        run = exp.arm("main", config.plan, holder, progress=progress)
        control = (
            exp.arm("control", config.control, holder, progress=progress)
            if config.control is not None
            else None
        )
        tables, summary = analyse_run(
            run,
            concept=config.concept,
            n_boot=config.n_boot,
            seed=config.seed,
            cluster=config.cluster,
            control=control,
        )
        sizes = {"n_examples": int(run.manifest["task"]["n_examples"]), "rounds": config.rounds}
        return exp.write_result(tables, summary, sizes)
