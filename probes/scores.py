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
from jaxtyping import Float
from scipy import stats

from interp.errors import InterpError
from probes.stats import bootstrap_means

SCORE_KINDS = ("projection", "cosine")
_MIN_CORRELATION_POINTS = 3  # below this a correlation and its p-value say nothing


def check_score_kind(kind: str) -> None:
    if kind not in SCORE_KINDS:
        raise InterpError(f"unknown score {kind!r}; use one of {', '.join(SCORE_KINDS)}")


def concept_scores(
    acts: Float[torch.Tensor, "example round d_model"],
    direction: Float[torch.Tensor, " d_model"],
    *,
    kind: str = "projection",
) -> Float[torch.Tensor, "example round"]:
    """``projection``: x . d / |d|, in activation units; ``cosine``: that divided by |x|."""
    check_score_kind(kind)
    acts = acts.to(torch.float64)
    unit = direction.to(torch.float64) / direction.norm()
    projection = acts @ unit
    if kind == "projection":
        return projection
    return projection / acts.norm(dim=-1).clamp_min(torch.finfo(torch.float64).tiny)


def score_table(
    scores: Float[np.ndarray, "example round"], layer: int, *, n_boot: int = 1000, seed: int = 0
) -> pd.DataFrame:
    """Mean score per round with a 95% percentile bootstrap interval over examples (the same
    resample in every round): columns layer, round, mean, lo, hi, n."""
    mean, lo, hi = bootstrap_means(scores, n_boot=n_boot, seed=seed)
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
    score). Columns layer, round, norm, cosine, projection."""
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
    """rounds.parquet's ``entropy`` as an [example, round] array (NaN where missing)."""
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
) -> pd.DataFrame:
    """Pearson and Spearman correlation (with two-sided p-values) between concept score and
    entropy, at three levels: ``round-means`` (the per-round means, one point per round),
    ``example-round`` (every example x round cell) and ``within-round`` (every cell after
    subtracting its round's mean from both: whether, at a given round, examples that score
    higher are also less sure; the round-to-round trend that drives the first two is removed).
    Cells with NaN entropy are left out.

    The cells are repeated measures of the same examples, not independent draws, so their
    p-values are optimistic; the round-means have as many points as rounds, so their p-values
    are weak. All are reported because none alone is the answer.
    """
    ok = np.isfinite(entropy) & np.isfinite(scores)
    with np.errstate(invalid="ignore"):
        score_means = np.array([scores[ok[:, r], r].mean() for r in range(scores.shape[1])])
        entropy_means = np.array([entropy[ok[:, r], r].mean() for r in range(scores.shape[1])])
    rows = [
        _correlate("round-means", score_means, entropy_means),
        _correlate("example-round", scores[ok], entropy[ok]),
        _correlate(
            "within-round",
            (scores - score_means)[ok],
            (entropy - entropy_means)[ok],
        ),
    ]
    frame = pd.DataFrame(rows)
    frame.insert(0, "layer", layer)
    return frame


def _correlate(level: str, x: np.ndarray, y: np.ndarray) -> dict[str, object]:
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    row: dict[str, object] = {"level": level, "n": int(len(x))}
    nan = dict.fromkeys(("pearson_r", "pearson_p", "spearman_r", "spearman_p"), math.nan)
    if len(x) < _MIN_CORRELATION_POINTS or np.ptp(x) == 0 or np.ptp(y) == 0:
        return {**row, **nan}  # undefined: too few points or a constant series
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ties/near-constant input: the NaN result says it
        pearson = stats.pearsonr(x, y)
        spearman = stats.spearmanr(x, y)
    return {
        **row,
        "pearson_r": float(pearson.statistic),
        "pearson_p": float(pearson.pvalue),
        "spearman_r": float(spearman.statistic),
        "spearman_p": float(spearman.pvalue),
    }
