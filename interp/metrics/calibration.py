"""Calibration on few items: an equal-mass binned ECE beside the equal-width one.

The ECE with 10 equal-width bins on [0, 1] is biased upward on small samples: most bins hold
a handful of items (or one), and |accuracy - confidence| of a tiny bin is large even for a
calibrated model. Equal-mass bins (each holding the same number of items, by sorted
confidence) spread the items evenly, which lowers that bias (Nixon et al. 2019, "Measuring
calibration in deep learning"; Roelofs et al. 2022, "Mitigating bias in calibration error
estimation"). Both are reported with the number of items in each bin, so a reader sees how
thin the bins are.
"""

from __future__ import annotations

import numpy as np
from jaxtyping import Float

N_BINS = 10
SMALL_SAMPLE = 100  # below this many scored items, the ECE gets a warning

DEFINITIONS = {
    "ece_equal_mass": (
        "ECE with 10 equal-mass bins: items sorted by confidence (ties in example order) and "
        "split into 10 bins of as equal size as possible (fewer bins when there are fewer than "
        "10 items); sum of bin share * |accuracy - mean confidence|. Less biased than the "
        "equal-width ECE on small samples."
    ),
    "ece_bins": (
        "Items per bin: equal_width (the 10 bins (lo, hi] of the ECE) and equal_mass (the bins "
        "of ece_equal_mass), per round."
    ),
    "calibration": (
        f"n_scored: items with option scores (the ECE's denominator); small_sample: fewer than "
        f"{SMALL_SAMPLE}, where the equal-width ECE is biased upward."
    ),
}


def equal_width_counts(confidence: Float[np.ndarray, " item"]) -> list[int]:
    """Items per equal-width bin (lo, hi] on [0, 1], as the ECE bins them (NaN skipped).

    Args:
        confidence: Each item's confidence, in [0, 1]; NaN where unscored.

    Returns:
        ``N_BINS`` counts (a confidence of 0 falls in the first bin).
    """
    conf = confidence[np.isfinite(confidence)]
    bins = np.clip(np.ceil(conf * N_BINS).astype(np.int64) - 1, 0, N_BINS - 1)
    return [int(c) for c in np.bincount(bins, minlength=N_BINS)]


def equal_mass_ece(
    confidence: Float[np.ndarray, " item"], correct: Float[np.ndarray, " item"]
) -> tuple[float | None, list[int]]:
    """(ECE over equal-mass bins, items per bin); (None, []) when no item has a confidence.

    Args:
        confidence: Each item's confidence, in [0, 1]; NaN where unscored.
        correct: 1.0 where the item was answered correctly, else 0.0.

    Returns:
        ``(ece, counts)``: the mean absolute gap between correct answers and confidence over
        up to ``N_BINS`` bins of (nearly) equal size, and the items in each bin.
    """
    scored = np.isfinite(confidence)
    conf, right = confidence[scored], correct[scored]
    if conf.size == 0:
        return None, []
    order = np.argsort(conf, kind="stable")  # ties keep example order: deterministic bins
    bins = np.array_split(order, min(N_BINS, conf.size))
    gap = sum(abs(float(right[b].sum() - conf[b].sum())) for b in bins)
    return gap / conf.size, [int(b.size) for b in bins]


def calibration_entry(
    confidence: Float[np.ndarray, " item"], correct: Float[np.ndarray, " item"]
) -> dict:
    """The per-round calibration fields beside the equal-width ECE.

    Args:
        confidence: Each item's confidence in one round, in [0, 1]; NaN where unscored.
        correct: 1.0 where the item was answered correctly, else 0.0.

    Returns:
        ``ece_equal_mass`` and ``ece_bins`` (equal-width and equal-mass counts).
    """
    value, mass_counts = equal_mass_ece(confidence, correct)
    return {
        "ece_equal_mass": value,
        "ece_bins": {"equal_width": equal_width_counts(confidence), "equal_mass": mass_counts},
    }


def calibration_summary(confidence: Float[np.ndarray, "round item"]) -> dict:
    """How many items the ECE rests on, and a warning line when that is few.

    Args:
        confidence: Each item's confidence per round; NaN where unscored.

    Returns:
        ``n_scored`` (fewest scored items over rounds), ``small_sample``, ``threshold`` and
        ``warning`` (None unless below ``SMALL_SAMPLE``).
    """
    n_scored = int(np.isfinite(confidence).sum(axis=1).min()) if confidence.size else 0
    small = 0 < n_scored < SMALL_SAMPLE
    warning = (
        f"ECE on {n_scored} items (< {SMALL_SAMPLE}): 10 equal-width bins are biased upward "
        "at this size; read the equal-mass ECE and the items per bin (ece_bins)"
        if small
        else None
    )
    return {
        "n_scored": n_scored,
        "small_sample": small,
        "threshold": SMALL_SAMPLE,
        "warning": warning,
    }
