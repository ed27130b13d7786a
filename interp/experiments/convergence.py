"""Convergence fit: how fast, and to what, does a quantity settle over the rounds?

Per round r the mean over examples of accuracy, option entropy, ECE and the probe's concept
score is fitted with a saturating exponential

    y_r = y_inf + (y_0 - y_inf) * exp(-lam * r),        lam >= 0,

by least squares (``scipy.optimize.curve_fit``, trust-region reflective with the bound
0 <= lam <= LAM_MAX), started from the best of 240 rates between 0.001 and 50 (for a fixed
rate the curve is linear in its two levels, solved exactly). When that best rate is the
smallest one the data do not bend towards a limit: the start is kept and flagged "not
saturating" (y_inf is then an extrapolation). Reported per
quantity: y_0, y_inf, lam and the **settling round**, the first whole round r >= 0 at which
the fitted curve is within eps of y_inf, i.e. ceil(ln(|y_0 - y_inf| / eps) / lam) (0 when the
curve starts within eps; infinite when lam = 0 and it does not). eps is ``--eps`` for
accuracy, ECE (both shares) and entropy (nats); for the concept score, whose scale is the
probe's, it is eps times the standard deviation of the round-0 scores over examples.
A curve that does not move (every round's mean equal) has no rate: lam is NaN, y_inf = y_0
and it settles at round 0.

Intervals: the cluster bootstrap of `interp.stats` (templates by default) draws examples;
each resample's per-round means (its ECE: the weighted ECE of the resample) are fitted again,
and the 2.5 / 97.5 percentiles of the refitted parameters are the 95% interval (resamples
whose fit fails are left out). Three parameters need at least three rounds (0, 1, 2).

The per-example correlation: per example, the entropy drop (round 0 minus the last round)
and the concept-score change (last round minus round 0) at the same layer; Pearson's r with
a cluster-bootstrap interval (weighted correlation per resample), and Spearman's rho. It asks
whether the examples whose uncertainty falls most are those whose concept score moves most.

The control (``--control PLAN``, default ``baseline``; ``none`` skips it): a same-seed replay
of another plan on the same examples, probed like the main arm and fitted the same way (the
concept at the main arm's layer, the main arm's eps). Every table has ``arm`` (main /
control) and ``plan`` columns. ``difference``: per quantity and round, main - control of the
mean and of its change since round 0; ``fit_difference``: main - control of y_inf and of the
settling round. Both arms are averaged under the *same* resample weights (same examples), so
the intervals are paired. The reading credits the main plan only with what exceeds the
control: a quantity that moves as much without the instruction is not the instruction's.

Tasks plug in by their per-example quantities (:func:`task_quantities`): a multiple-choice
task (BBQ, builtin, mc) fits accuracy and ECE; Winogender, which has no correct option, fits
``gender_gap`` = log p(female) - log p(male) per item (the two-pronoun logit difference, as
patching measures on Winogender; > 0 leans female) and ``p_neutral`` (the renormalised
probability of they/their/them). Entropy and the concept score are fitted for every task.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from interp.errors import InterpError
from interp.experiments.common import (
    ExperimentConfig,
    ExperimentDir,
    ExperimentResult,
    Grid,
    ModelHolder,
    check_control,
    concept_matrix,
    no_probe_hint,
    open_run_and_control,
    run_grid,
    store_run_analysis,
    validate,
    weights_for,
    with_model,
    with_position,
)
from interp.runs.distributed import Workers, single_process
from interp.runs.store import Run
from interp.stats import percentile_interval

if TYPE_CHECKING:
    from transformer_lens import HookedTransformer

NAME = "convergence"
LAM_MAX = 50.0  # exp(-50) is 2e-22: a curve at the bound has settled after one round
N_BINS = 10  # ECE bins, equal width, as in interp.metrics.rounds
LAM_GRID = np.geomspace(1e-3, LAM_MAX, 240)  # rates tried for curve_fit's start
SATURATION_FACTOR = 10  # settling later than 10x the last round: "not saturating"
QUANTITIES = ("accuracy", "entropy", "ece", "concept")
WINOGENDER_QUANTITIES = ("gender_gap", "p_neutral", "entropy", "concept")


@dataclass(frozen=True)
class CurveFit:
    y0: float
    y_inf: float
    lam: float
    settle: float  # first whole round within eps of y_inf (inf: never; NaN: no fit)
    rmse: float
    note: str | None = None


def saturating(r: np.ndarray, y_inf: float, y0: float, lam: float) -> np.ndarray:
    """y_inf + (y0 - y_inf) * exp(-lam * r)."""
    return y_inf + (y0 - y_inf) * np.exp(-lam * np.asarray(r, dtype=float))


def settle_round(y0: float, y_inf: float, lam: float, eps: float) -> float:
    """The first whole round at which the fitted curve is within ``eps`` of ``y_inf``."""
    gap = abs(y0 - y_inf)
    if not (math.isfinite(gap) and math.isfinite(lam)):
        return math.nan
    if gap <= eps:
        return 0.0
    if lam <= 0:
        return math.inf
    return float(max(0, math.ceil(math.log(gap / eps) / lam - 1e-12)))


def fit_curve(rounds: np.ndarray, y: np.ndarray, eps: float) -> CurveFit:
    """Least-squares fit of the saturating curve to ``y`` at ``rounds`` (module docstring)."""
    from scipy.optimize import curve_fit

    r = np.asarray(rounds, dtype=float)
    y = np.asarray(y, dtype=float)
    ok = np.isfinite(y)
    r, y = r[ok], y[ok]
    if len(y) < 3:
        return CurveFit(math.nan, math.nan, math.nan, math.nan, math.nan, "fewer than 3 rounds")
    if np.ptp(y) <= 1e-12 * max(1.0, abs(float(y[0]))):
        return CurveFit(float(y[0]), float(y[0]), math.nan, 0.0, 0.0, "flat: no change to fit")
    p0 = _profile_start(r, y)
    if p0[2] <= LAM_GRID[0]:
        # The best rate on the grid is its smallest: the data do not bend towards a limit, and
        # curve_fit would only walk lam towards 0 and y_inf towards infinity. Keep the grid's
        # solution, flagged below as not saturating.
        popt = p0
    else:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # OptimizeWarning: covariance not estimable
                popt, _ = curve_fit(
                    saturating,
                    r,
                    y,
                    p0=p0,
                    bounds=([-np.inf, -np.inf, 0.0], [np.inf, np.inf, LAM_MAX]),
                    maxfev=2_000,
                )
        except (RuntimeError, ValueError) as err:
            return CurveFit(math.nan, math.nan, math.nan, math.nan, math.nan, f"no fit: {err}")
    y_inf, y0, lam = (float(v) for v in popt)
    rmse = float(np.sqrt(np.mean((saturating(r, y_inf, y0, lam) - y) ** 2)))
    settle = settle_round(y0, y_inf, lam, eps)
    # A rate near 0 makes the curve a straight line whose limit is far outside the data:
    # y_inf is then an extrapolation, not a level the rounds approach.
    note = None
    if settle > SATURATION_FACTOR * max(1.0, float(r.max())):
        note = "not saturating within the rounds observed: y_inf is an extrapolation"
    return CurveFit(y0, y_inf, lam, settle, rmse, note)


def _profile_start(r: np.ndarray, y: np.ndarray) -> tuple[float, float, float]:
    """Start values for curve_fit: for each rate on ``LAM_GRID`` the curve is linear in y_inf
    and y_0 - y_inf, solved in closed form; the rate with the least squared error wins. This
    makes the fit fast and keeps it from starting far from the optimum."""
    e = np.exp(-np.outer(LAM_GRID, r))  # [rate, round]
    em = e.mean(axis=1, keepdims=True)
    var = ((e - em) ** 2).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        b = ((e - em) * (y - y.mean())).sum(axis=1) / var
    a = y.mean() - b * em[:, 0]
    sse = ((a[:, None] + b[:, None] * e - y) ** 2).sum(axis=1)
    best = int(np.nanargmin(np.where(np.isfinite(sse), sse, np.inf)))
    return float(a[best]), float(a[best] + b[best]), float(LAM_GRID[best])


# --- per-resample curves ---------------------------------------------------------------------


def weighted_means(weights: np.ndarray, values: np.ndarray) -> np.ndarray:
    """[resample, round] means of [example, round] values, NaN left out."""
    ok = np.isfinite(values)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (weights @ np.where(ok, values, 0.0)) / (weights @ ok.astype(float))


def weighted_ece(confidence: np.ndarray, correct: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """[resample, round] expected calibration error (10 equal-width bins of the chosen
    option's probability): sum over bins of |sum of w * (correct - confidence)| / sum of w,
    which is interp.metrics.rounds' ECE when every weight is 1."""
    n, n_rounds = confidence.shape
    scored = np.isfinite(confidence)
    conf = np.where(scored, confidence, 1.0)
    bins = np.clip(np.ceil(conf * N_BINS).astype(np.int64) - 1, 0, N_BINS - 1)
    gaps = np.zeros((n, n_rounds, N_BINS))
    rows, cols = np.meshgrid(np.arange(n), np.arange(n_rounds), indexing="ij")
    gaps[rows, cols, bins] = np.where(scored, correct - conf, 0.0)
    per_bin = (weights @ gaps.reshape(n, n_rounds * N_BINS)).reshape(-1, n_rounds, N_BINS)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.abs(per_bin).sum(axis=-1) / (weights @ scored.astype(float))


def weighted_pearson(x: np.ndarray, y: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Pearson's r of x and y under each weight row [resample, example]."""
    ok = np.isfinite(x) & np.isfinite(y)
    w = weights * ok
    x, y = np.where(ok, x, 0.0), np.where(ok, y, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        total = w.sum(axis=1)
        mx, my = (w @ x) / total, (w @ y) / total
        cov = (w @ (x * y)) / total - mx * my
        vx = (w @ (x * x)) / total - mx**2
        vy = (w @ (y * y)) / total - my**2
        return cov / np.sqrt(vx * vy)


def task_quantities(run: Run) -> dict[str, np.ndarray] | None:
    """A task's own per-example quantities, [example, round], fitted instead of accuracy and
    ECE; None for multiple-choice tasks (they have a correct option: accuracy and ECE)."""
    from interp.inputs.winogender import is_winogender

    rounds = run.rounds()
    if not is_winogender(rounds):
        return None
    rounds = rounds.sort_values(["example_index", "round"], kind="stable")
    n = rounds["example_index"].nunique()

    def grid(values: Any) -> np.ndarray:
        return np.asarray(values, dtype=float).reshape(n, -1)

    with np.errstate(divide="ignore", invalid="ignore"):
        gap = np.log(grid(rounds["p_female"])) - np.log(grid(rounds["p_male"]))
    return {
        "gender_gap": np.where(np.isfinite(gap), gap, np.nan),
        "p_neutral": grid(rounds["p_neutral"]),
    }


def quantity_curves(
    grid: Grid,
    concept: np.ndarray | None,
    weights: np.ndarray,
    per_example: dict[str, np.ndarray] | None = None,
) -> dict[str, np.ndarray]:
    """Per quantity, [resample, round] means; row 0 is the observed data (weights of 1).
    ``per_example``: a task's own quantities (:func:`task_quantities`) in place of accuracy
    and ECE."""
    ones = np.ones((1, grid.n_examples))
    w = np.vstack([ones, weights])
    if per_example is None:
        curves = {
            "accuracy": weighted_means(w, grid.correct),
            "entropy": weighted_means(w, grid.entropy),
            "ece": weighted_ece(grid.confidence, grid.correct, w),
        }
    else:
        curves = {k: weighted_means(w, v) for k, v in per_example.items()}
        curves["entropy"] = weighted_means(w, grid.entropy)
    if concept is not None:
        curves["concept"] = weighted_means(w, concept)
    return curves


def fit_table(
    curves: dict[str, np.ndarray], eps: dict[str, float], n_examples: int
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The fits (observed fit + percentile intervals over the refitted resamples) and the
    observed per-round means with their intervals and the fitted curve."""
    fits, observed, _ = fit_tables(curves, eps, n_examples)
    return fits, observed


def fit_tables(
    curves: dict[str, np.ndarray], eps: dict[str, float], n_examples: int
) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, np.ndarray]]:
    """``fit_table`` and, per quantity, the fitted (y0, y_inf, lam, settle) of row 0 and of
    every resample, [1 + resample, 4] (what the paired control differences read)."""
    fits, observed, params = [], [], {}
    for name, curve in curves.items():
        n_rounds = curve.shape[1]
        rounds = np.arange(n_rounds)
        main = fit_curve(rounds, curve[0], eps[name])
        boot = np.array(
            [_as_row(fit_curve(rounds, c, eps[name])) for c in curve[1:]], dtype=float
        ).reshape(-1, 4)
        params[name] = np.vstack([np.array(_as_row(main), dtype=float)[None], boot])
        lo, hi = percentile_interval(boot) if len(boot) else (np.full(4, np.nan),) * 2
        row: dict[str, Any] = {"quantity": name}
        for j, key in enumerate(("y0", "y_inf", "lam", "settle")):
            row[key] = getattr(main, key)
            row[f"{key}_lo"], row[f"{key}_hi"] = float(lo[j]), float(hi[j])
        row.update(
            eps=eps[name],
            rmse=main.rmse,
            n_examples=n_examples,
            n_rounds=n_rounds,
            resamples_fitted=int(np.isfinite(boot[:, 1]).sum()) if len(boot) else 0,
            note=main.note,
        )
        fits.append(row)
        mlo, mhi = percentile_interval(curve[1:]) if len(curve) > 1 else (curve[0] * np.nan,) * 2
        fitted = (
            saturating(rounds, main.y_inf, main.y0, main.lam)
            if math.isfinite(main.lam)
            else np.full(n_rounds, main.y0)
        )
        for r in rounds:
            observed.append(
                {
                    "quantity": name,
                    "round": int(r),
                    "mean": float(curve[0, r]),
                    "lo": float(np.asarray(mlo)[r]),
                    "hi": float(np.asarray(mhi)[r]),
                    "fitted": float(fitted[r]),
                }
            )
    return pd.DataFrame(fits), pd.DataFrame(observed), params


def _as_row(fit: CurveFit) -> tuple[float, float, float, float]:
    return (fit.y0, fit.y_inf, fit.lam, fit.settle)


def correlation_table(
    grid: Grid, concept: np.ndarray, layer: int, weights: np.ndarray
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per-example entropy drop vs concept-score change (round 0 -> last round)."""
    from scipy.stats import spearmanr

    drop = grid.entropy[:, 0] - grid.entropy[:, -1]
    change = concept[:, -1] - concept[:, 0]
    r = float(weighted_pearson(drop, change, np.ones((1, len(drop))))[0])
    lo, hi = (
        percentile_interval(weighted_pearson(drop, change, weights))
        if len(weights)
        else (
            math.nan,
            math.nan,
        )
    )
    ok = np.isfinite(drop) & np.isfinite(change)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # constant input: rho is NaN, said by the value
        rho = float(spearmanr(drop[ok], change[ok]).statistic) if ok.sum() > 2 else math.nan
    table = pd.DataFrame(
        [
            {
                "x": "entropy_drop",
                "y": "concept_change",
                "layer": layer,
                "n_examples": int(ok.sum()),
                "pearson": r,
                "lo": float(lo),
                "hi": float(hi),
                "spearman": rho,
            }
        ]
    )
    per_example = pd.DataFrame(
        {
            "example_index": np.arange(grid.n_examples),
            "entropy_drop": drop,
            "concept_change": change,
            "correct_first": grid.correct[:, 0],
            "correct_last": grid.correct[:, -1],
        }
    )
    return table, per_example


# --- the analysis of one run -----------------------------------------------------------------


def analyse_run(
    run: Run,
    *,
    concept: str = "stereotype",
    layer: int | None = None,
    eps: float = 0.01,
    n_boot: int = 1000,
    seed: int = 0,
    cluster: str = "template",
    control: Run | None = None,
) -> tuple[dict[str, pd.DataFrame], dict[str, Any]]:
    """The convergence tables and summary of one run, beside its control run when given
    (same examples; no writing)."""
    for r in (run, control):
        if r is not None and r.n_rounds < 3:
            raise InterpError(
                f"{r.path} has rounds 0..{r.n_rounds - 1}; a convergence fit needs at least "
                "rounds 0..2 (replay with --rounds 2 or more)"
            )
    grid = run_grid(run, cluster)
    found = concept_matrix(run, concept, layer)
    concept_scores, chosen = (found[0], found[1]) if found is not None else (None, None)
    weights = weights_for(grid, n_boot, seed)
    curves = quantity_curves(grid, concept_scores, weights, task_quantities(run))
    eps_by = {name: eps for name in curves if name != "concept"}
    if concept_scores is not None:
        sd = float(np.nanstd(concept_scores[:, 0]))
        eps_by["concept"] = eps * sd if sd > 0 else eps
    main_plan = _plan_name(run)
    fits, observed, params = fit_tables(curves, eps_by, grid.n_examples)
    tables = {
        "fits": with_arm(fits, "main", main_plan),
        "observed": with_arm(observed, "main", main_plan),
    }
    summary: dict[str, Any] = {
        "experiment": NAME,
        "run": str(run.path),
        "plan": main_plan,
        "model": "saturating: y_r = y_inf + (y_0 - y_inf) * exp(-lam * r), lam in [0, 50]",
        "fit": "scipy.optimize.curve_fit (trf, bounded); intervals: refit per bootstrap resample",
        "quantities": list(curves),
        "eps": eps_by,
        "n_boot": n_boot,
        "cluster": grid.clusters.to_dict(),
        "fits": json_rows(tables["fits"]),
    }
    corr = None
    if concept_scores is not None:
        corr, per_example = correlation_table(grid, concept_scores, int(chosen), weights)
        tables["correlation"] = with_arm(corr, "main", main_plan)
        tables["example_changes"] = with_arm(per_example, "main", main_plan)
        summary["concept"] = {"name": concept, "layer": int(chosen)}
        summary["correlation"] = json_rows(tables["correlation"])[0]
    else:
        summary["concept"] = None
        summary["concept_note"] = no_probe_hint(run, concept)
    summary["reading"] = reading(fits, summary.get("correlation"))
    if control is None:
        summary["control"] = None
        summary["control_note"] = "no control: the movement is not compared with another plan"
        summary["reading"].append(
            "no control arm: nothing here separates the plan's effect from what repeated "
            "asking does without it (run with --control PLAN or --control-run DIR)."
        )
        return tables, with_position(summary, [run])
    control_tables, control_summary = _control_arm(
        run, control, grid, weights, curves, params, eps_by, concept, chosen, cluster
    )
    for key, frame in control_tables.items():
        tables[key] = pd.concat([tables[key], frame], ignore_index=True) if key in tables else frame
    summary["control"] = control_summary
    summary["reading"].extend(
        control_reading(
            tables["difference"], main_plan, control_summary["plan"], grid.clusters.n_clusters
        )
    )
    return tables, with_position(summary, [run, control])


def _plan_name(run: Run) -> str | None:
    return run.manifest.get("plan", {}).get("name")


def with_arm(frame: pd.DataFrame, arm: str, plan: str | None) -> pd.DataFrame:
    """``frame`` with ``arm`` and ``plan`` as its first columns."""
    out = frame.copy()
    out.insert(0, "plan", plan)
    out.insert(0, "arm", arm)
    return out


def check_same_examples(run: Run, control: Run) -> None:
    a = run.rounds()["example_id"].drop_duplicates().tolist()
    b = control.rounds()["example_id"].drop_duplicates().tolist()
    if a != b:
        raise InterpError(
            f"the control {control.path} does not hold the same examples in the same order "
            f"as {run.path}; replay it with the same task, data, sample and seed"
        )
    if run.n_rounds != control.n_rounds:
        raise InterpError(
            f"the control {control.path} holds rounds 0..{control.n_rounds - 1}, "
            f"{run.path} 0..{run.n_rounds - 1}; replay it with the same --rounds"
        )


def _control_arm(
    run: Run,
    control: Run,
    grid: Grid,
    weights: np.ndarray,
    curves: dict[str, np.ndarray],
    params: dict[str, np.ndarray],
    eps_by: dict[str, float],
    concept: str,
    layer: int | None,
    cluster: str,
) -> tuple[dict[str, pd.DataFrame], dict[str, Any]]:
    """The control arm fitted like the main one (its concept at the main arm's layer, the
    main arm's eps, the same resample weights) and the paired differences."""
    check_same_examples(run, control)
    cgrid = run_grid(control, cluster)
    found = concept_matrix(control, concept, layer) if layer is not None else None
    ccurves = quantity_curves(
        cgrid, found[0] if found is not None else None, weights, task_quantities(control)
    )
    ccurves = {k: v for k, v in ccurves.items() if k in curves}
    plan = _plan_name(control)
    cfits, cobserved, cparams = fit_tables(ccurves, eps_by, cgrid.n_examples)
    tables = {
        "fits": with_arm(cfits, "control", plan),
        "observed": with_arm(cobserved, "control", plan),
    }
    if found is not None:
        corr, per_example = correlation_table(cgrid, found[0], int(layer), weights)
        tables["correlation"] = with_arm(corr, "control", plan)
        tables["example_changes"] = with_arm(per_example, "control", plan)
    main_plan = _plan_name(run)
    rows, fit_rows = [], []
    for name, ccurve in ccurves.items():
        mcurve = curves[name]
        diff = mcurve - ccurve
        change = (mcurve - mcurve[:, :1]) - (ccurve - ccurve[:, :1])
        lo, hi = percentile_interval(diff[1:]) if len(diff) > 1 else (diff[0] * np.nan,) * 2
        clo, chi = percentile_interval(change[1:]) if len(change) > 1 else (change[0] * np.nan,) * 2
        for r in range(diff.shape[1]):
            rows.append(
                {
                    "quantity": name,
                    "round": r,
                    "main_plan": main_plan,
                    "control_plan": plan,
                    "main": float(mcurve[0, r]),
                    "control": float(ccurve[0, r]),
                    "value": float(diff[0, r]),
                    "lo": float(np.asarray(lo)[r]),
                    "hi": float(np.asarray(hi)[r]),
                    "change_main": float(mcurve[0, r] - mcurve[0, 0]),
                    "change_control": float(ccurve[0, r] - ccurve[0, 0]),
                    "change_diff": float(change[0, r]),
                    "change_lo": float(np.asarray(clo)[r]),
                    "change_hi": float(np.asarray(chi)[r]),
                }
            )
        for j, key in ((1, "y_inf"), (3, "settle")):
            m, c = params[name][:, j], cparams[name][:, j]
            with np.errstate(invalid="ignore"):
                d = m - c
            plo, phi = percentile_interval(d[1:]) if len(d) > 1 else (math.nan, math.nan)
            fit_rows.append(
                {
                    "quantity": name,
                    "parameter": key,
                    "main_plan": main_plan,
                    "control_plan": plan,
                    "main": float(m[0]),
                    "control": float(c[0]),
                    "value": float(d[0]),
                    "lo": float(plo),
                    "hi": float(phi),
                }
            )
    tables["difference"] = pd.DataFrame(rows)
    tables["fit_difference"] = pd.DataFrame(fit_rows)
    summary = {
        "plan": plan,
        "run": str(control.path),
        "paired": "main - control under the same cluster-bootstrap resamples (same examples)",
        "fits": json_rows(tables["fits"]),
        "difference_last_round": json_rows(
            tables["difference"][tables["difference"]["round"] == grid.n_rounds - 1]
        ),
        "fit_difference": json_rows(tables["fit_difference"]),
    }
    return tables, summary


def control_reading(
    difference: pd.DataFrame, main: str | None, control: str | None, n_clusters: int = 2
) -> list[str]:
    """Per quantity: does the main arm move beyond the control (the change since round 0 at
    the last round)? Movements are compared by size: the plan is credited only when the main
    arm moves further than the control (|main| > |control|) in its own direction and the
    paired difference main - control, whose interval excludes 0, points that way. A control
    that moves the other way (main +0.01, control -0.5) makes the difference large, but the
    main arm's own movement is no larger than the control's: nothing is credited then."""
    lines = []
    last = int(difference["round"].max())
    for row in difference[difference["round"] == last].itertuples():
        moved = (
            f"{row.quantity}: from round 0 to {last} the main arm ({main}) changes by "
            f"{row.change_main:+.3g}, the control ({control}) by {row.change_control:+.3g}; "
            f"main - control {row.change_diff:+.3g} [{row.change_lo:+.3g}, {row.change_hi:+.3g}]"
        )
        excludes = row.change_lo > 0 or row.change_hi < 0
        further = abs(row.change_main) > abs(row.change_control)
        if n_clusters < 2 or not (math.isfinite(row.change_lo) and math.isfinite(row.change_hi)):
            lines.append(f"{moved}: no interval (fewer than 2 clusters), so not compared.")
        elif excludes and further and row.change_diff * row.change_main > 0:
            lines.append(
                f"{moved}: the main arm's movement exceeds the control's (further, in its own "
                "direction, and the paired interval excludes 0)."
            )
        elif excludes and row.change_main * row.change_control < 0 and not further:
            lines.append(
                f"{moved}: the arms move in opposite directions and the main arm moves less "
                "than the control: the difference is the control's movement, so nothing here "
                f"is credited to the {main} plan."
            )
        elif excludes:
            lines.append(
                f"{moved}: the main arm moves less than the control (or the other way), so its "
                f"movement is not the {main} plan's doing."
            )
        else:
            lines.append(
                f"{moved}: the main arm's movement does not exceed the control's (the paired "
                f"interval includes 0: they cannot be told apart), so it is not the {main} "
                "plan's doing"
                + (" (the control moves too)." if abs(row.change_control) > 0 else ".")
            )
    return lines


def reading(fits: pd.DataFrame, corr: dict[str, Any] | None) -> list[str]:
    """Plain sentences on what the fitted numbers support."""
    lines = []
    for row in fits.itertuples():
        note = row.note if isinstance(row.note, str) else None
        if note and note.startswith("flat"):
            lines.append(f"{row.quantity}: does not change over the rounds (no rate to fit).")
            continue
        if not math.isfinite(row.lam):
            lines.append(f"{row.quantity}: the curve could not be fitted ({note}).")
            continue
        if note:
            lines.append(f"{row.quantity}: {note} (fitted rate {row.lam:.3g} per round).")
            continue
        moved = not (row.y_inf_lo <= row.y0 <= row.y_inf_hi)
        direction = "rises" if row.y_inf > row.y0 else "falls"
        settle = "never" if math.isinf(row.settle) else f"by round {int(row.settle)}"
        lines.append(
            f"{row.quantity}: {direction} from {row.y0:.3g} towards {row.y_inf:.3g} "
            f"(95% CI [{row.y_inf_lo:.3g}, {row.y_inf_hi:.3g}]), rate {row.lam:.3g} per round, "
            f"within eps {settle}; "
            + (
                "the limit differs from round 0 beyond its interval."
                if moved
                else "round 0 lies inside the limit's interval: no reliable change."
            )
        )
    if corr is not None:
        lo, hi = corr.get("lo"), corr.get("hi")
        if lo is None or hi is None:
            lines.append("entropy drop vs concept change: no interval (too few clusters).")
        elif lo > 0:
            lines.append(
                f"entropy drop vs concept change: r = {corr['pearson']:.2f} [{lo:.2f}, {hi:.2f}]"
                ": examples whose uncertainty falls more have concept scores that rise more "
                "(or fall less) from round 0 to the last round."
            )
        elif hi < 0:
            lines.append(
                f"entropy drop vs concept change: r = {corr['pearson']:.2f} [{lo:.2f}, {hi:.2f}]"
                ": examples whose uncertainty falls more have concept scores that fall more "
                "(or rise less) from round 0 to the last round."
            )
        else:
            lines.append(
                f"entropy drop vs concept change: r = {corr['pearson']:.2f} [{lo:.2f}, {hi:.2f}]"
                ": no reliable per-example link between the two."
            )
    return lines


def json_rows(frame: pd.DataFrame) -> list[dict[str, Any]]:
    out = []
    for rec in frame.to_dict("records"):
        out.append({k: _json(v) for k, v in rec.items()})
    return out


def _json(value: Any) -> Any:
    if isinstance(value, float | np.floating):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


# --- the verbs -------------------------------------------------------------------------------


def convergence_of_run(
    run_dir: str | Path,
    config: ExperimentConfig | None = None,
    *,
    control_run: str | Path | None = None,
    workers: Workers | None = None,
) -> ExperimentResult:
    """Fit an existing run (beside ``control_run``, a replay of another plan on the same
    examples, when given); write ``<run>/experiments/convergence/`` (tables, summary).

    Args:
        run_dir: The run (a directory ``interp replay`` wrote).
        config: The analysis settings read: concept, layer, eps, n_boot, seed, cluster (the
            replay settings are the run's own). None: the defaults.
        control_run: A replay of another plan on the same examples, analysed beside it.
        workers: Not supported (one process); must be None.

    Returns:
        The fits, curves and correlations, and where they were written.

    Raises:
        InterpError: Settings out of range, a layer outside the run or without a probe, or a
            control run on other examples.
    """
    single_process(workers, "convergence_of_run")
    config = config if config is not None else ExperimentConfig()
    concept, layer, eps = config.concept, config.layer, config.eps
    n_boot, seed, cluster = config.n_boot, config.seed, config.cluster
    validate_analysis(
        ExperimentConfig(layer=layer, eps=eps, n_boot=n_boot, seed=seed, cluster=cluster)
    )
    run, control = open_run_and_control(run_dir, control_run)
    if control is not None:
        check_same_examples(run, control)
    if layer is not None:  # refused here, not ignored (it picks a probe layer)
        if layer >= run.n_layers:
            raise InterpError(
                f"layer {layer} is out of range: the run has layers 0..{run.n_layers - 1}"
            )
        if concept_matrix(run, concept, layer) is None:
            raise InterpError(
                f"layer {layer} picks a concept score, but {no_probe_hint(run, concept)}"
            )
    tables, summary = analyse_run(
        run,
        concept=concept,
        layer=layer,
        eps=eps,
        n_boot=n_boot,
        seed=seed,
        cluster=cluster,
        control=control,
    )
    result = ExperimentResult(NAME, run.path / "experiments" / NAME, tables, summary)
    return store_run_analysis(run, result)


def validate_analysis(config: ExperimentConfig) -> None:
    """The analysis settings only (a stored run has its rounds already)."""
    validate(replace(config, rounds=2))


def arms(config: ExperimentConfig) -> dict[str, str]:
    """The arms replayed: ``main`` (``config.plan``) and ``control`` (unless None)."""
    out = {"main": config.plan}
    if config.control is not None:
        out["control"] = config.control
    return out


def convergence(
    config: ExperimentConfig,
    *,
    model: HookedTransformer | None = None,
    progress: bool = True,
    workers: Workers | None = None,
    command: str | None = None,
) -> ExperimentResult:
    """Replay ``config.plan`` and the control plan (each reused when done), probe them, and
    fit the curves of both with their paired differences.

    Args:
        config: The replays (model, task, examples, rounds, plan, control) and the analysis.
        model: The model, loaded (None: loaded when an arm must be replayed).
        progress: Show progress bars while replaying.
        workers: Not supported (one process); must be None.
        command: The command line recorded in the manifest.

    Returns:
        The fits, curves and correlations, and the experiment directory.

    Raises:
        InterpError: Settings that cannot run, or a directory holding another experiment.
    """
    single_process(workers, "convergence")
    validate(config)
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
            layer=config.layer,
            eps=config.eps,
            n_boot=config.n_boot,
            seed=config.seed,
            cluster=config.cluster,
            control=control,
        )
        sizes = {"n_examples": int(run.manifest["task"]["n_examples"]), "rounds": config.rounds}
        return exp.write_result(tables, summary, sizes)
