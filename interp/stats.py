"""Statistics shared by every analysis: the cluster bootstrap, percentile and Wilson
intervals, paired run-vs-control intervals, and floats made fit for JSON.

BBQ items are not independent draws. The four variants of one context (ambiguous /
disambiguated x negative / non-negative question) and every item filled into one template
share words, names and the answer options, so their answers are correlated (usually alike;
one right and one wrong when a model answers by position). A bootstrap that resamples them
as independent rows reports intervals of the wrong width, usually too narrow. Here a resample draws
*clusters* with replacement (by default a template: category + ``question_index``) and each
example inherits the count of its cluster; ``cluster="example"`` makes every example its own
cluster, the plain example bootstrap (the same draws as before clusters existed).

One resample is a row of example weights (counts), so any statistic that is a ratio of
weighted sums is one matrix product for all resamples (metrics, probe scores, patching).
A *paired* bootstrap of run - control uses the same weight rows for both runs, so what the
two share (the examples, their difficulty) cancels instead of adding noise.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import pandas as pd
from jaxtyping import Float, Int

from interp.errors import InterpError

CLUSTER_KEYS: tuple[str, ...] = ("template", "example")
DEFAULT_CLUSTER = "template"
CI_LEVEL = 0.95
Z95 = 1.959963984540054  # two-sided 95% normal quantile
# Few clusters: a cluster bootstrap of k clusters has only C(2k-1, k) distinct resamples (3
# clusters: 10, 4: 35, 5: 126), so its percentile interval is coarse and too narrow. Below
# CLUSTER_FLOOR the analyses that apply the floor (metrics, patching, circuits, Winogender's
# plan differences) give no interval ("n/a (k clusters)"); below FEW_CLUSTERS an interval is printed
# with its cluster count and a warning.
CLUSTER_FLOOR = 5
FEW_CLUSTERS = 10

CLUSTER_DEFINITIONS: dict[str, str] = {
    "template": (
        "examples sharing category and question_index (a BBQ template: its ambiguous/"
        "disambiguated x negative/non-negative variants and every item filled into it) form "
        "one cluster; a resample draws clusters with replacement"
    ),
    "example": "every example is its own cluster (the plain example bootstrap)",
}


@dataclass(frozen=True)
class Clusters:
    """Which cluster each example (in ``example_index`` order) belongs to."""

    requested: str
    """The key asked for: "template" or "example"."""
    used: str
    """The key applied: "example" when the run has nothing to form templates from."""
    ids: Int[np.ndarray, " example"]
    """Cluster number 0..n_clusters-1 of each example, numbered in order of first appearance."""
    note: str | None = None
    """Why ``used`` differs from ``requested``, or which examples stand alone; None if neither."""
    base: Int[np.ndarray, " example"] | None = None
    """A permuted run (``--permute``): the base example of each row (all its orders share one
    cluster); None otherwise."""

    @property
    def n_clusters(self) -> int:
        """Number of clusters (0 when there are no examples)."""
        return int(self.ids.max()) + 1 if self.ids.size else 0

    @property
    def n_examples(self) -> int:
        """Number of examples (rows of ``ids``)."""
        return int(self.ids.size)

    def subset(self, examples: Int[np.ndarray, " kept"]) -> Clusters:
        """The clusters of some examples (e.g. those patching keeps), renumbered 0..k-1.

        Args:
            examples: Row positions (into ``ids``) of the examples to keep, any order; repeats
                allowed.

        Returns:
            A ``Clusters`` with the same ``requested``, ``used`` and ``note``, one id per kept
            example, renumbered 0..k-1 in order of first appearance.
        """
        examples = np.asarray(examples, dtype=np.int64)
        _, ids = np.unique(self.ids[examples], return_inverse=True)
        base = None if self.base is None else self.base[examples]
        return Clusters(self.requested, self.used, _first_seen_order(ids), self.note, base)

    def to_dict(self) -> dict[str, Any]:
        """What goes into an output JSON as ``"cluster"``.

        Returns:
            A JSON-ready dict with ``key``, ``requested``, ``definition``, ``n_clusters``,
            ``n_examples`` and ``note``; permuted runs add ``n_base_examples`` and ``orders``.
        """
        return {
            "key": self.used,
            "requested": self.requested,
            "definition": CLUSTER_DEFINITIONS[self.used],
            "n_clusters": self.n_clusters,
            "n_examples": self.n_examples,
            "note": self.note,
            # permuted runs only (older outputs keep their bytes): rows are (example, order)
            **(
                {}
                if self.base is None
                else {
                    "n_base_examples": int(np.unique(self.base).size),
                    "orders": "all orders of a base example are in one cluster",
                }
            ),
        }


T = TypeVar("T")


def n_distinct(ids: Int[np.ndarray, " example"]) -> int:
    """How many clusters ``ids`` holds.

    Args:
        ids: Cluster number of each example (any integers).

    Returns:
        The number of distinct values in ``ids``.
    """
    return int(np.unique(np.asarray(ids)).size)


def cluster_caveat(n_clusters: int) -> str | None:
    """What to say beside intervals from ``n_clusters`` clusters: None from FEW_CLUSTERS on.

    Args:
        n_clusters: Number of clusters the intervals were resampled from (0 or more).

    Returns:
        The "n/a" text below ``CLUSTER_FLOOR`` (5), a coarseness warning below ``FEW_CLUSTERS``
        (10), None from 10 clusters on.

    Examples:
        >>> cluster_caveat(12) is None
        True
        >>> cluster_caveat(3)[:16]
        'n/a (3 clusters)'
    """
    if n_clusters < CLUSTER_FLOOR:
        return (
            f"n/a ({n_clusters} clusters): below the floor of {CLUSTER_FLOOR} clusters no "
            "interval is given (a cluster bootstrap of so few clusters has a handful of "
            "distinct resamples)"
        )
    if n_clusters < FEW_CLUSTERS:
        return (
            f"only {n_clusters} clusters (fewer than {FEW_CLUSTERS}): the intervals are coarse "
            "and likely too narrow"
        )
    return None


def check_cluster_key(key: str) -> None:
    """Refuse a cluster key other than those in ``CLUSTER_KEYS``.

    Args:
        key: The cluster key asked for (``--cluster``): ``"template"`` or ``"example"``.

    Raises:
        InterpError: ``key`` is not one of ``CLUSTER_KEYS``.
    """
    if key not in CLUSTER_KEYS:
        raise InterpError(f"unknown cluster {key!r}; use one of {', '.join(CLUSTER_KEYS)}")


def example_clusters(rounds: pd.DataFrame, key: str = DEFAULT_CLUSTER) -> Clusters:
    """The clusters of a run's examples from its rounds table (one entry per example_index,
    in example_index order).

    ``template`` needs ``category`` and ``question_index`` (written by replay for BBQ and the
    built-in items; optional in ``--task mc`` files). Examples without a question_index stand
    alone, and a run where none has one falls back to ``example``; the note says so.

    Args:
        rounds: A run's rounds table; needs ``example_index`` (and ``example_id``), and for
            ``template`` the ``category`` and ``question_index`` columns; a ``base_index``
            column marks a permuted run.
        key: ``"template"`` (default) or ``"example"``.

    Returns:
        The ``Clusters`` of the run's examples, ``used`` and ``note`` saying what was applied.

    Raises:
        InterpError: ``key`` is not a known cluster key.
    """
    check_cluster_key(key)
    firsts = rounds.sort_values("example_index", kind="stable").drop_duplicates("example_index")
    n = len(firsts)
    identity = np.arange(n, dtype=np.int64)
    base = None
    if "base_index" in firsts:  # a permuted run: an "example" is a base example, all its orders
        base = firsts["base_index"].to_numpy(dtype=np.int64)
        _, ids = np.unique(base, return_inverse=True)
        identity = _first_seen_order(ids)
    if key == "example":
        return Clusters(key, "example", identity, base=base)
    if "question_index" not in firsts or "category" not in firsts:
        return Clusters(
            key,
            "example",
            identity,
            "the run has no question_index column (replayed before clusters existed, or not "
            "BBQ-like); every example is its own cluster",
            base,
        )
    index = firsts["question_index"]
    known = index.notna().to_numpy() & (index.astype(str).str.len() > 0).to_numpy()
    if not known.any():
        return Clusters(
            key,
            "example",
            identity,
            "no example has a question_index (e.g. --task mc without one); every example is "
            "its own cluster",
            base,
        )
    alone_key = firsts["example_id"] if base is None else pd.Series(base)  # orders together
    labels = np.where(
        known,
        firsts["category"].astype(str).to_numpy() + "\x00" + index.astype(str).to_numpy(),
        "\x01" + alone_key.astype(str).to_numpy(),
    )
    _, ids = np.unique(labels, return_inverse=True)
    alone = int((~known).sum())
    note = (
        f"{alone} of {n} examples have no question_index and are clusters of their own"
        if alone
        else None
    )
    return Clusters(key, "template", _first_seen_order(ids), note, base)


def _first_seen_order(ids: np.ndarray) -> Int[np.ndarray, " example"]:
    """Renumber cluster ids 0..k-1 in order of first appearance (so identity stays identity)."""
    ids = np.asarray(ids, dtype=np.int64)
    if ids.size == 0:
        return ids
    _, first = np.unique(ids, return_index=True)
    rank = np.empty(first.size, dtype=np.int64)
    rank[np.argsort(first, kind="stable")] = np.arange(first.size)
    _, inverse = np.unique(ids, return_inverse=True)
    return rank[inverse]


def cluster_weights(
    ids: Int[np.ndarray, " example"], n_boot: int, rng: np.random.Generator
) -> Float[np.ndarray, "resample example"]:
    """Example weights of ``n_boot`` cluster-bootstrap resamples: each resample draws as many
    clusters as there are, with replacement, and every example gets its cluster's count.

    With one example per cluster (``ids`` = 0..n-1) these are exactly the draws of a plain
    example bootstrap from the same generator.

    Args:
        ids: Cluster number 0..k-1 of each example.
        n_boot: Number of resamples (0 or less: an empty array).
        rng: The generator the cluster draws come from (advanced by the call).

    Returns:
        Weights of shape (n_boot, n_examples): each example's count in each resample (all
        zeros rows when there are no examples).
    """
    ids = np.asarray(ids, dtype=np.int64)
    k = int(ids.max()) + 1 if ids.size else 0
    if n_boot <= 0 or k == 0:
        return np.zeros((max(n_boot, 0), ids.size))
    draws = rng.integers(0, k, size=(n_boot, k))
    # Offsetting each resample's draws by k turns n_boot bincounts into one.
    flat = (draws + k * np.arange(n_boot)[:, None]).ravel()
    counts = np.bincount(flat, minlength=n_boot * k).reshape(n_boot, k).astype(float)
    return counts[:, ids]


def bootstrap_weights(
    ids: Int[np.ndarray, " example"], n_boot: int, seed: int
) -> Float[np.ndarray, "resample example"]:
    """``cluster_weights`` from a fresh generator seeded with ``seed``.

    Args:
        ids: Cluster number 0..k-1 of each example.
        n_boot: Number of resamples.
        seed: Seed of the numpy generator (``np.random.default_rng``).

    Returns:
        Weights of shape (n_boot, n_examples), as ``cluster_weights`` gives them.
    """
    return cluster_weights(ids, n_boot, np.random.default_rng(seed))


def percentile_interval(
    samples: Float[np.ndarray, "resample ..."], level: float = CI_LEVEL
) -> tuple[np.ndarray | float, np.ndarray | float]:
    """Percentile interval over the first axis, ignoring non-finite resamples (NaN bounds
    where none is finite); floats for one-dimensional samples.

    Args:
        samples: Bootstrap statistics, resamples along the first axis.
        level: Coverage of the two-sided interval, in (0, 1); default 0.95.

    Returns:
        ``(lo, hi)``: arrays of the trailing shape (floats for 1-D ``samples``); NaN where no
        resample is finite or there are no resamples.
    """
    if samples.shape[0] == 0:
        nan = np.full(samples.shape[1:], np.nan)
        return nan, nan.copy()
    return _percentiles(samples, 100 * (1 - level) / 2)


def _percentiles(
    samples: Float[np.ndarray, "resample ..."], tail: float
) -> tuple[np.ndarray | float, np.ndarray | float]:
    """The ``tail`` and ``100 - tail`` percentiles over the first axis, non-finite left out."""
    masked = np.where(np.isfinite(samples), samples, np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns give NaN bounds
        lo, hi = np.nanpercentile(masked, [tail, 100 - tail], axis=0)
    return lo, hi


def interval_or_none(samples: Float[np.ndarray, " resample"]) -> list[float] | None:
    """A one-number statistic's percentile interval as ``[lo, hi]`` for JSON; None when no
    resample is finite.

    Args:
        samples: The statistic's value in each resample.

    Returns:
        ``[lo, hi]`` of the 95% percentile interval, or None when either bound is not finite.
    """
    lo, hi = percentile_interval(np.asarray(samples, dtype=float))
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return None
    return [float(lo), float(hi)]


def bootstrap_means(
    values: Float[np.ndarray, "example cell"],
    *,
    n_boot: int = 1000,
    seed: int = 0,
    clusters: Int[np.ndarray, " example"] | None = None,
    floor: int = 2,
) -> tuple[Float[np.ndarray, " cell"], Float[np.ndarray, " cell"], Float[np.ndarray, " cell"]]:
    """Mean over examples of every column, with a 95% percentile bootstrap interval.

    Resamples *clusters* of examples (``clusters``: cluster number per row; None: every
    example alone), the same resample for every column, so differences between rounds or
    layers are not blurred by resampling noise. NaN bounds with fewer than ``floor`` clusters
    (at least 2; ``CLUSTER_FLOOR`` where an analysis applies the floor) or ``n_boot`` 0.

    Args:
        values: One row per example, one column per cell (round, layer, ...).
        n_boot: Number of bootstrap resamples; 0 gives NaN bounds.
        seed: Seed of the resampling generator.
        clusters: Cluster number per row; None resamples examples one by one.
        floor: Fewest distinct clusters that give an interval (at least 2 is enforced).

    Returns:
        ``(mean, lo, hi)``, each with one value per column.
    """
    n = values.shape[0]
    mean = values.mean(axis=0)
    ids = np.arange(n) if clusters is None else np.asarray(clusters, dtype=np.int64)
    if len(np.unique(ids)) < max(2, floor) or n_boot == 0:
        nan = np.full_like(mean, np.nan)
        return mean, nan, nan.copy()
    counts = bootstrap_weights(ids, n_boot, seed)
    boot = counts @ values / counts.sum(axis=1, keepdims=True)
    # The tails written out as 2.5, not computed from CI_LEVEL (which gives 2.500000000000002):
    # the probe tables have always used these exact percentiles.
    lo, hi = _percentiles(boot, 2.5)
    return mean, lo, hi


def wilson_bounds(p: float, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of a proportion ``p`` observed in ``n`` > 0 trials, as the
    formula gives it (not clipped to [0, 1]).

    Args:
        p: The observed proportion, in [0, 1].
        n: Number of trials, greater than 0.
        z: Normal quantile of the two-sided level (default ``Z95``, 95%).

    Returns:
        ``(lo, hi)``, unclipped.
    """
    denom = 1 + z**2 / n
    centre = (p + z**2 / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z**2 / (4 * n * n)) / denom
    return centre - half, centre + half


def wilson_interval(correct: int, n: int) -> tuple[float, float]:
    """95% Wilson score interval of ``correct`` successes in ``n`` trials, within [0, 1];
    (nan, nan) when ``n`` is 0.

    Wilson rather than the normal approximation because held-out sets are small (~100 items)
    and accuracies sit near 1, where the normal interval leaves [0, 1].

    Args:
        correct: Number of successes, 0..n.
        n: Number of trials (0 or more).

    Returns:
        ``(lo, hi)`` within [0, 1], or ``(nan, nan)`` when ``n`` is 0.

    Examples:
        >>> lo, hi = wilson_interval(8, 10)
        >>> round(lo, 3), round(hi, 3)
        (0.49, 0.943)
        >>> round(wilson_interval(10, 10)[1], 6)
        1.0
    """
    if n == 0:
        return math.nan, math.nan
    lo, hi = wilson_bounds(correct / n, n)
    return max(0.0, lo), min(1.0, hi)


def json_float(value: float) -> float | None:
    """A float for JSON: NaN and infinities become None (JSON has no NaN).

    Args:
        value: Anything ``float()`` accepts.

    Returns:
        ``float(value)``, or None when it is NaN or infinite.

    Examples:
        >>> json_float(0.25), json_float(float("nan")), json_float(float("inf"))
        (0.25, None, None)
    """
    value = float(value)
    return value if math.isfinite(value) else None


def weighted_means(
    weights: Float[np.ndarray, "resample example"], values: Float[np.ndarray, "example cell"]
) -> Float[np.ndarray, "resample cell"]:
    """Mean of every column under each weight row, NaN values left out of both sums.

    Args:
        weights: One row of example weights per resample (counts from ``cluster_weights``, or a
            row of ones for the plain mean).
        values: One row per example, one column per cell; NaN where a value is missing.

    Returns:
        Weighted column means, one row per resample (NaN where a column has no finite value
        with weight).
    """
    ok = np.isfinite(values)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (weights @ np.where(ok, values, 0.0)) / (weights @ ok.astype(float))


def paired_difference(
    run: Float[np.ndarray, "example cell"],
    control: Float[np.ndarray, "example cell"],
    ids: Int[np.ndarray, " example"],
    *,
    n_boot: int = 1000,
    seed: int = 0,
    floor: int = 2,
) -> dict[str, Float[np.ndarray, " cell"]]:
    """Mean of run - control per column with a paired cluster-bootstrap interval: both runs
    are resampled with the same clusters, so the interval is that of the per-example
    difference. Returns run, control, diff, lo, hi (NaN bounds with fewer than ``floor``
    clusters, at least 2, or ``n_boot`` 0).

    Args:
        run: Per-example values of the run, one column per cell.
        control: The control's values for the same examples and cells (same shape as ``run``).
        ids: Cluster number of each example (rows of ``run``).
        n_boot: Number of bootstrap resamples; 0 gives NaN bounds.
        seed: Seed of the resampling generator.
        floor: Fewest distinct clusters that give an interval (at least 2 is enforced).

    Returns:
        A dict of per-cell arrays: ``run``, ``control``, ``diff`` (NaN-aware means) and ``lo``,
        ``hi`` (the 95% interval of the difference).

    Raises:
        ValueError: ``run`` and ``control`` have different shapes (a programming error, not
            user input).
    """
    run, control = np.asarray(run, dtype=float), np.asarray(control, dtype=float)
    if run.shape != control.shape:
        raise ValueError(f"paired_difference: shapes {run.shape} and {control.shape} differ")
    ones = np.ones((1, run.shape[0]))
    out = {
        "run": weighted_means(ones, run)[0],
        "control": weighted_means(ones, control)[0],
        "diff": weighted_means(ones, run - control)[0],
    }
    ids = np.asarray(ids, dtype=np.int64)
    if n_boot == 0 or n_distinct(ids) < max(2, floor):
        nan = np.full(run.shape[1:], np.nan)
        return {**out, "lo": nan, "hi": nan.copy()}
    weights = bootstrap_weights(ids, n_boot, seed)
    out["lo"], out["hi"] = percentile_interval(weighted_means(weights, run - control))
    return out


# --- multiplicity: many intervals read at once --------------------------------------------------

FDR_Q = 0.05
MULTIPLICITY_METHOD = (
    "Benjamini-Hochberg at false-discovery rate 0.05 over the family read together, on "
    "two-sided bootstrap p-values (p = 2 x the smaller share of resamples on either side of "
    "0, each counted as (1 + k) / (1 + B))"
)


def bootstrap_p(samples: Float[np.ndarray, "resample ..."]) -> np.ndarray | float:
    """Two-sided bootstrap p-value of "the statistic is 0", over the first axis: 2 x the
    smaller of the shares of finite resamples <= 0 and >= 0, each as (1 + k) / (1 + B), capped
    at 1 (so never 0: B resamples cannot show p below 2 / (1 + B)); NaN where none is finite.
    A 95% percentile interval that excludes 0 has p <= about 0.05.

    Args:
        samples: Bootstrap statistics, resamples along the first axis.

    Returns:
        The p-value(s): a float for 1-D ``samples``, else an array of the trailing shape.
    """
    samples = np.asarray(samples, dtype=float)
    ok = np.isfinite(samples)
    n = ok.sum(axis=0)
    below = (ok & (samples <= 0)).sum(axis=0)
    above = (ok & (samples >= 0)).sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        p = np.minimum(1.0, 2 * (1 + np.minimum(below, above)) / (1 + n))
    p = np.where(n > 0, p, np.nan)
    return float(p) if p.ndim == 0 else p


def benjamini_hochberg(
    p_values: Float[np.ndarray, " test"] | list[float], q: float = FDR_Q
) -> np.ndarray:
    """Which of a family of tests are discoveries at false-discovery rate ``q`` (the
    Benjamini-Hochberg step-up rule: the k smallest p-values, k the largest with
    p_(k) <= k q / m). NaN p-values are not tests: never discoveries, not counted in m.

    Args:
        p_values: One p-value per test; NaN marks "not tested".
        q: The false-discovery rate, in (0, 1); default 0.05.

    Returns:
        A boolean array shaped like ``p_values``: True for the discoveries.

    Examples:
        >>> benjamini_hochberg([0.01, 0.04, 0.03, 0.5]).tolist()
        [True, False, False, False]
        >>> benjamini_hochberg([0.01, 0.02, float("nan")]).tolist()
        [True, True, False]
    """
    p = np.asarray(p_values, dtype=float)
    found = np.zeros(p.shape, dtype=bool)
    tested = np.flatnonzero(np.isfinite(p))
    m = len(tested)
    if m == 0:
        return found
    order = tested[np.argsort(p[tested], kind="stable")]
    passing = np.flatnonzero(p[order] <= q * np.arange(1, m + 1) / m)
    if passing.size:
        found[order[: passing[-1] + 1]] = True
    return found


# --- numbers as people read them (captions, graph labels, the report's findings) -------------


def sig3(value: Any, why: str | None = None, *, sign: bool = False) -> str:
    """``value`` to 3 significant digits ("0.344", "-1.04", "1.00"); a missing one (None or
    not finite) is "n/a" followed by ``why`` in brackets when a reason is given.

    Args:
        value: A number, or anything ``float()`` cannot read (shown as missing).
        why: Why a missing value is missing (shown after "n/a"); None: no reason.
        sign: Put "+" before a value >= 0.

    Returns:
        The text.

    >>> sig3(0.34374427795410156), sig3(0.9999999999999999), sig3(None, "1 cluster")
    ('0.344', '1.00', 'n/a (1 cluster)')
    """
    try:
        v = float(value)
    except (TypeError, ValueError):
        v = float("nan")
    if not np.isfinite(v):
        return f"n/a ({why})" if why else "n/a"
    text = f"{v:#.3g}"
    if "e" not in text:
        text = text.rstrip(".")
    return f"+{text}" if sign and v >= 0 else text


def interval_text(ci: Any, why: str | None = None) -> str:
    """A 95% interval as "[lo, hi]" (3 significant digits), or "n/a (why)".

    Args:
        ci: (low, high), or None.
        why: Why there is no interval, shown when there is none.

    Returns:
        The text.
    """
    if ci is None or len(ci) != 2 or any(sig3(x) == "n/a" for x in ci):
        return f"n/a ({why})" if why else "n/a"
    return f"[{sig3(ci[0])}, {sig3(ci[1])}]"


def no_interval_reason(n_clusters: Any = None, n_boot: Any = None) -> str:
    """Why an analysis gave no interval: the cluster floor (:data:`CLUSTER_FLOOR`), no
    bootstrap, or (neither known) the interval is undefined for these data.

    Args:
        n_clusters: How many clusters the bootstrap resampled (None: not known).
        n_boot: How many resamples were asked for (None: not known).

    Returns:
        The reason, for "n/a (reason)".
    """
    if n_boot is not None and int(n_boot) == 0:
        return "no bootstrap: n_boot 0"
    if n_clusters is not None and int(n_clusters) < CLUSTER_FLOOR:
        return f"{int(n_clusters)} clusters < floor {CLUSTER_FLOOR}"
    return "no interval: the bootstrap resamples give none"
