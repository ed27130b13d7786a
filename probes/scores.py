"""Concept scores across rounds: how far along a concept direction each round's read-out
state lies, how the instructions move the mean state, and whether the score tracks the
model's uncertainty.

All functions take one layer's stored read-out activations, ``[example, round, d_model]``
(``Run.activations``), and that layer's concept direction.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
import torch
from jaxtyping import Float, Int
from scipy import stats

from interp.errors import InterpError
from interp.stats import bootstrap_means, bootstrap_weights, percentile_interval

SCORE_KINDS = ("projection", "cosine")
_MIN_CORRELATION_POINTS = 3  # below this a correlation says nothing
_MIN_P_POINTS = 5  # below this many round means a p-value is not reported
CELLS_P_NOTE = (
    "no p-value: cells are repeated measures of clustered examples, not independent; read "
    "the cluster-bootstrap interval of r"
)


def check_score_kind(kind: str) -> None:
    """Refuse a score kind other than those in ``SCORE_KINDS``.

    Args:
        kind: ``"projection"`` or ``"cosine"``.

    Raises:
        InterpError: ``kind`` is not one of ``SCORE_KINDS``.
    """
    if kind not in SCORE_KINDS:
        raise InterpError(f"unknown score {kind!r}; use one of {', '.join(SCORE_KINDS)}")


def concept_scores(
    acts: Float[torch.Tensor, "example round d_model"],
    direction: Float[torch.Tensor, " d_model"],
    *,
    kind: str = "projection",
) -> Float[torch.Tensor, "example round"]:
    """``projection``: x . d / |d|, in activation units; ``cosine``: that divided by |x|.

    Args:
        acts: The run's activations at one layer.
        direction: The concept direction (any non-zero norm).
        kind: ``"projection"`` or ``"cosine"``.

    Returns:
        One float64 score per example and round.

    Raises:
        InterpError: ``kind`` is unknown.
    """
    check_score_kind(kind)
    acts = acts.to(torch.float64)
    unit = direction.to(torch.float64) / direction.norm()
    projection = acts @ unit
    if kind == "projection":
        return projection
    return projection / acts.norm(dim=-1).clamp_min(torch.finfo(torch.float64).tiny)


def score_table(
    scores: Float[np.ndarray, "example round"],
    layer: int,
    *,
    n_boot: int = 1000,
    seed: int = 0,
    clusters: Int[np.ndarray, " example"] | None = None,
) -> pd.DataFrame:
    """Mean score per round with a 95% percentile bootstrap interval over clusters of examples
    (the same resample in every round): columns layer, round, mean, lo, hi, n.

    Args:
        scores: One score per example and round.
        layer: The layer, written in the ``layer`` column.
        n_boot: Number of bootstrap resamples; 0 gives NaN bounds.
        seed: Seed of the resampling generator.
        clusters: Cluster number of each example; None: every example alone.

    Returns:
        One row per round.
    """
    mean, lo, hi = bootstrap_means(scores, n_boot=n_boot, seed=seed, clusters=clusters)
    n_rounds = scores.shape[1]
    return pd.DataFrame(
        {
            "layer": layer,
            "round": np.arange(n_rounds),
            "mean": mean,
            "lo": lo,
            "hi": hi,
            "n": scores.shape[0],
        }
    )


def instruction_shift(
    acts: Float[torch.Tensor, "example round d_model"],
    direction: Float[torch.Tensor, " d_model"],
    layer: int,
) -> pd.DataFrame:
    """The mean read-out state at round r minus round 0, for r >= 1: its norm, its cosine
    with the concept direction, and its projection on it (= the change in mean projection
    score). Columns layer, round, norm, cosine, projection.

    Args:
        acts: The run's activations at one layer.
        direction: The concept direction (any non-zero norm).
        layer: The layer, written in the ``layer`` column.

    Returns:
        One row per round from 1 (``cosine`` NaN where the shift is 0).
    """
    acts = acts.to(torch.float64)
    means = acts.mean(dim=0)
    shift = means[1:] - means[0]
    unit = direction.to(torch.float64) / direction.norm()
    norm = shift.norm(dim=-1)
    projection = shift @ unit
    cosine = torch.where(norm > 0, projection / norm.clamp_min(1e-300), torch.nan)
    return pd.DataFrame(
        {
            "layer": layer,
            "round": np.arange(1, acts.shape[1]),
            "norm": norm.numpy(),
            "cosine": cosine.numpy(),
            "projection": projection.numpy(),
        }
    )


def entropy_grid(rounds: pd.DataFrame, n_examples: int, n_rounds: int) -> np.ndarray:
    """rounds.parquet's ``entropy`` as an [example, round] array (NaN where missing).

    Args:
        rounds: A rounds table (``example_index``, ``round``, and ``entropy`` if recorded).
        n_examples: Number of examples (rows of the grid).
        n_rounds: Number of rounds (columns of the grid).

    Returns:
        The grid; all NaN when there is no ``entropy`` column.
    """
    grid = np.full((n_examples, n_rounds), np.nan)
    if "entropy" not in rounds.columns:
        return grid  # no uncertainty recorded: every correlation comes out undefined
    rows = rounds["example_index"].to_numpy(dtype=np.int64)
    cols = rounds["round"].to_numpy(dtype=np.int64)
    keep = (rows >= 0) & (rows < n_examples) & (cols >= 0) & (cols < n_rounds)
    grid[rows[keep], cols[keep]] = rounds["entropy"].to_numpy(dtype=np.float64)[keep]
    return grid


def score_entropy_correlation(
    scores: Float[np.ndarray, "example round"],
    entropy: Float[np.ndarray, "example round"],
    layer: int,
    *,
    clusters: Int[np.ndarray, " example"] | None = None,
    n_boot: int = 1000,
    seed: int = 0,
) -> pd.DataFrame:
    """Pearson and Spearman correlation between concept score and entropy, at three levels:
    ``round-means`` (the per-round means, one point per round), ``example-round`` (every
    example x round cell) and ``within-round`` (every cell after subtracting its round's mean
    from both: whether, at a given round, examples that score higher are also less sure; the
    round-to-round trend that drives the first two is removed). Cells with NaN entropy are
    left out.

    The cells are repeated measures of the same examples (and examples of one template are
    near-duplicates), so the cell levels get no p-value: ``pearson_lo``/``pearson_hi`` is a
    95% cluster-bootstrap interval of r that resamples whole clusters (``clusters``: cluster
    number per example; None: every example alone), all rounds of an example together. The
    round means have as many points as rounds: their two-sided p-values are reported only
    from 5 points on. ``p_note`` says why a p-value is missing.

    Args:
        scores: One concept score per example and round.
        entropy: The answer entropy per example and round (NaN where missing).
        layer: The layer, written in the ``layer`` column.
        clusters: Cluster number of each example; None: every example alone.
        n_boot: Number of bootstrap resamples; 0 gives no intervals.
        seed: Seed of the resampling generator.

    Returns:
        One row per level with the correlations, their counts, intervals, p-values and
        ``p_note``.
    """
    ok = np.isfinite(entropy) & np.isfinite(scores)
    with np.errstate(invalid="ignore"):
        score_means = np.array([scores[ok[:, r], r].mean() for r in range(scores.shape[1])])
        entropy_means = np.array([entropy[ok[:, r], r].mean() for r in range(scores.shape[1])])
    ids = np.arange(scores.shape[0]) if clusters is None else np.asarray(clusters)
    enough = n_boot > 0 and len(np.unique(ids)) >= 2
    weights = bootstrap_weights(ids, n_boot, seed) if enough else None
    means = _correlate("round-means", score_means, entropy_means)
    if means["n"] < _MIN_P_POINTS and np.isfinite(means["pearson_r"]):
        means.update(pearson_p=math.nan, spearman_p=math.nan)
        means["p_note"] = f"no p-value: {means['n']} round means (< {_MIN_P_POINTS} points)"
    rows = [means]
    for level, centred in (("example-round", False), ("within-round", True)):
        x = scores - score_means if centred else scores
        y = entropy - entropy_means if centred else entropy
        row = _correlate(level, x[ok], y[ok])
        row.update(pearson_p=math.nan, spearman_p=math.nan, p_note=CELLS_P_NOTE)
        if weights is not None and np.isfinite(row["pearson_r"]):
            boot = _weighted_pearson(weights, scores, entropy, ok, centred=centred)
            row["pearson_lo"], row["pearson_hi"] = percentile_interval(boot)
        rows.append(row)
    frame = pd.DataFrame(rows, columns=CORRELATION_COLUMNS)
    frame.insert(0, "layer", layer)
    return frame


# The columns of the score-vs-entropy table, also the keys of its records in summary.json.
CORRELATION_COLUMNS = [
    "level",
    "n",
    "pearson_r",
    "pearson_lo",
    "pearson_hi",
    "pearson_p",
    "spearman_r",
    "spearman_p",
    "p_note",
]


def _correlate(level: str, x: np.ndarray, y: np.ndarray) -> dict[str, object]:
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    row: dict[str, object] = {"level": level, "n": int(len(x)), "p_note": None}
    nan = dict.fromkeys(
        ("pearson_r", "pearson_lo", "pearson_hi", "pearson_p", "spearman_r", "spearman_p"),
        math.nan,
    )
    if len(x) < _MIN_CORRELATION_POINTS or np.ptp(x) == 0 or np.ptp(y) == 0:
        return {**row, **nan}  # undefined: too few points or a constant series
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ties/near-constant input: the NaN result says it
        pearson = stats.pearsonr(x, y)
        spearman = stats.spearmanr(x, y)
    return {
        **row,
        **nan,
        "pearson_r": float(pearson.statistic),
        "pearson_p": float(pearson.pvalue),
        "spearman_r": float(spearman.statistic),
        "spearman_p": float(spearman.pvalue),
    }


def _weighted_pearson(
    weights: Float[np.ndarray, "resample example"],
    x: Float[np.ndarray, "example round"],
    y: Float[np.ndarray, "example round"],
    ok: np.ndarray,
    *,
    centred: bool,
) -> Float[np.ndarray, " resample"]:
    """Pearson r over the cells of each resample (an example's cells weigh its count);
    ``centred``: each round's weighted mean removed first (the within-round level)."""
    okf = ok.astype(float)
    x, y = np.where(ok, x, 0.0), np.where(ok, y, 0.0)
    n = weights @ okf  # [resample, round]
    sx, sy = weights @ x, weights @ y
    sxx, syy, sxy = weights @ (x * x), weights @ (y * y), weights @ (x * y)
    with np.errstate(invalid="ignore", divide="ignore"):
        if centred:  # per round: sum of centred products = S_xy - S_x S_y / n
            cxy = np.nansum(sxy - sx * sy / n, axis=1)
            cxx = np.nansum(sxx - sx * sx / n, axis=1)
            cyy = np.nansum(syy - sy * sy / n, axis=1)
        else:
            total = n.sum(axis=1)
            cxy = sxy.sum(1) - sx.sum(1) * sy.sum(1) / total
            cxx = sxx.sum(1) - sx.sum(1) ** 2 / total
            cyy = syy.sum(1) - sy.sum(1) ** 2 / total
        return cxy / np.sqrt(cxx * cyy)
