"""Small statistics shared by the probe tables: Wilson intervals, bootstrap means, JSON floats."""

from __future__ import annotations

import math

import numpy as np
from jaxtyping import Float, Int

from interp.stats import bootstrap_weights

Z95 = 1.959963984540054  # two-sided 95% normal quantile


def wilson_interval(correct: int, n: int) -> tuple[float, float]:
    """95% Wilson score interval of a proportion; (nan, nan) when ``n`` is 0.

    Wilson rather than the normal approximation because held-out sets are small (~100 items)
    and accuracies sit near 1, where the normal interval leaves [0, 1].
    """
    if n == 0:
        return math.nan, math.nan
    p = correct / n
    denom = 1 + Z95**2 / n
    centre = (p + Z95**2 / (2 * n)) / denom
    half = Z95 * math.sqrt(p * (1 - p) / n + Z95**2 / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def bootstrap_means(
    values: Float[np.ndarray, "example cell"],
    *,
    n_boot: int = 1000,
    seed: int = 0,
    clusters: Int[np.ndarray, " example"] | None = None,
) -> tuple[Float[np.ndarray, " cell"], Float[np.ndarray, " cell"], Float[np.ndarray, " cell"]]:
    """Mean over examples of every column, with a 95% percentile bootstrap interval.

    Resamples *clusters* of examples (``clusters``: cluster number per row, see
    ``interp.stats``; None: every example alone), the same resample for every column, so
    differences between rounds or layers are not blurred by resampling noise. One resample is
    a row of example counts, so all resamples are one matrix product.
    """
    n = values.shape[0]
    mean = values.mean(axis=0)
    ids = np.arange(n) if clusters is None else np.asarray(clusters, dtype=np.int64)
    if len(np.unique(ids)) < 2 or n_boot == 0:
        nan = np.full_like(mean, np.nan)
        return mean, nan, nan.copy()
    counts = bootstrap_weights(ids, n_boot, seed)
    boot = counts @ values / counts.sum(axis=1, keepdims=True)
    lo, hi = np.percentile(boot, [2.5, 97.5], axis=0)
    return mean, lo, hi


def balanced_permutation(
    y: Int[np.ndarray, " item"], rng: np.random.Generator
) -> Int[np.ndarray, " item"]:
    """A random permutation of 0/1 labels that is uncorrelated with them: each true class gets
    label 1 in the overall share (as nearly as whole items allow).

    A plain permutation agrees with the true labels a little by chance (correlation about
    1/sqrt(n)), and a low-variance method such as a difference of means turns that into a
    direction near the concept's, scoring far from 0.5 when the concept is strong. Balanced
    permutations (Southworth et al. 2009) remove that agreement, so the control measures what
    the method finds without label information.
    """
    y = np.asarray(y)
    n_ones = int(y.sum())
    classes = [np.flatnonzero(y == label) for label in (0, 1)]
    quota = np.array([len(members) * n_ones / len(y) for members in classes])
    take = np.floor(quota).astype(int)
    extra = n_ones - take.sum()
    order = rng.permutation(2)
    by_remainder = order[np.argsort(-(quota - take)[order], kind="stable")]
    take[by_remainder[:extra]] += 1
    shuffled = np.zeros_like(y)
    for members, k in zip(classes, take, strict=True):
        shuffled[rng.permutation(members)[:k]] = 1
    return shuffled


def json_float(value: float) -> float | None:
    """A float for JSON: NaN and infinities become None (JSON has no NaN)."""
    value = float(value)
    return value if math.isfinite(value) else None
