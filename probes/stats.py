"""Statistics specific to probes: label permutations for the shuffled-label control.

The intervals, bootstrap means and JSON floats the probe tables use are shared with every
other analysis and live in :mod:`interp.stats`.
"""

from __future__ import annotations

import numpy as np
from jaxtyping import Int


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

    Args:
        y: The true 0/1 labels.
        rng: The generator the permutation is drawn from (advanced by the call).

    Returns:
        Shuffled 0/1 labels with as many ones as ``y``.
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
