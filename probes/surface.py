"""Surface baselines for a concept: how far the statements' wording alone gets, on the probe's
own split.

A direction on hidden states that a bag of words matches tells us about the wording of the
contrast data, not about the model. Two baselines see only the text, trained on the probe's
training statements and scored on its test statements:

- ``bow``: bag-of-words logistic regression (scikit-learn ``CountVectorizer()`` then
  ``LogisticRegression(max_iter=2000)``, default C = 1), the check that
  ``probes/data/README.md`` describes;
- ``length``: logistic regression on standardised length and punctuation counts
  (characters, words, mean word length, and each of ``, . ; : ! ? ' " - ( )``).

``compare_to_surface`` then asks whether the probe beats the better of the two on the same
test statements (an exact one-sided McNemar test on the items one gets right and the other
wrong), and words the answer for a reader.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from jaxtyping import Bool, Float, Int
from scipy import stats
from sklearn.feature_extraction.text import CountVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

BASELINES = {"bow": "a bag-of-words classifier", "length": "a length/punctuation classifier"}
PUNCTUATION = ",.;:!?'\"-()"
ALPHA = 0.05  # the probe "beats" a baseline when the one-sided McNemar p is below this


@dataclass(frozen=True)
class SurfaceCheck:
    """The headline probe against the better surface baseline, on the same test items."""

    baseline: str
    """``bow`` or ``length``: the better baseline (bow on ties)."""
    baseline_acc: float
    probe_acc: float
    probe_only: int
    """Test items the probe gets right and the baseline wrong."""
    baseline_only: int
    p_value: float
    """Exact one-sided McNemar p (probe better); 1.0 when no item is discordant."""
    beats: bool
    warning: str | None
    """A plain-words sentence when the probe does not beat the baseline, else None."""


def surface_predictions(
    texts: list[str], y: Int[np.ndarray, " item"], train: np.ndarray, test: np.ndarray
) -> dict[str, Int[np.ndarray, " test"]]:
    """Each baseline's 0/1 predictions on the test items, fitted on the training items.

    Args:
        texts: Every item's text.
        y: Every item's 0/1 label.
        train: Indices of the training items.
        test: Indices of the test items.

    Returns:
        ``{"bow": ..., "length": ...}``: each baseline's prediction per test item.
    """
    texts_arr = np.asarray(texts, dtype=object)
    y = np.asarray(y)
    return {
        "bow": _bow(texts_arr[train], y[train], texts_arr[test]),
        "length": _length(texts_arr[train], y[train], texts_arr[test]),
    }


def length_features(texts: np.ndarray | list[str]) -> Float[np.ndarray, "item feature"]:
    """Characters, words, mean word length, and one count per punctuation mark.

    Args:
        texts: The texts.

    Returns:
        One row per text: characters, words, mean word length, then one count per character
        of ``PUNCTUATION``.
    """
    rows = []
    for text in texts:
        words = text.split()
        mean_word = sum(map(len, words)) / len(words) if words else 0.0
        rows.append([len(text), len(words), mean_word, *(text.count(c) for c in PUNCTUATION)])
    return np.asarray(rows, dtype=np.float64)


def _bow(train_texts: np.ndarray, y: np.ndarray, test_texts: np.ndarray) -> np.ndarray:
    if len(np.unique(y)) < 2:
        return _constant(y, len(test_texts))
    vectorizer = CountVectorizer()
    try:
        features = vectorizer.fit_transform(train_texts)
    except ValueError:  # no word of two or more characters in any training statement
        return _constant(y, len(test_texts))
    model = LogisticRegression(max_iter=2000).fit(features, y)
    return model.predict(vectorizer.transform(test_texts)).astype(np.int64)


def _length(train_texts: np.ndarray, y: np.ndarray, test_texts: np.ndarray) -> np.ndarray:
    if len(np.unique(y)) < 2:
        return _constant(y, len(test_texts))
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    model.fit(length_features(train_texts), y)
    return model.predict(length_features(test_texts)).astype(np.int64)


def _constant(y: np.ndarray, n: int) -> np.ndarray:
    """The training majority label (1 on ties) for every test item."""
    return np.full(n, int(y.mean() >= 0.5), dtype=np.int64)


def compare_to_surface(
    probe_correct: Bool[np.ndarray, " test"],
    surface_correct: dict[str, Bool[np.ndarray, " test"]],
    *,
    layer: int,
) -> SurfaceCheck:
    """Does the probe at ``layer`` beat the better surface baseline on the same test items?

    "Beats" means a higher accuracy *and* an exact one-sided McNemar p below 0.05: the items
    the two classify differently favour the probe more than a fair coin would. Items are
    treated as independent, though the two statements of a pair are not quite, so p is a
    little optimistic for the probe.

    Args:
        probe_correct: Whether the probe classified each test item correctly.
        surface_correct: The same per baseline (``"bow"``, ``"length"``).
        layer: The probe's layer, named in the warning.

    Returns:
        The better baseline, both accuracies, the discordant counts, the p-value, whether the
        probe beats it, and a warning when it does not.
    """
    probe_correct = np.asarray(probe_correct, dtype=bool)
    accs = {name: float(np.mean(c)) for name, c in surface_correct.items()}
    name = max(accs, key=lambda k: (accs[k], k == "bow"))
    other = np.asarray(surface_correct[name], dtype=bool)
    probe_only = int((probe_correct & ~other).sum())
    baseline_only = int((~probe_correct & other).sum())
    n_discordant = probe_only + baseline_only
    p_value = (
        float(stats.binomtest(probe_only, n_discordant, 0.5, alternative="greater").pvalue)
        if n_discordant
        else 1.0
    )
    probe_acc = float(probe_correct.mean())
    beats = probe_acc > accs[name] and p_value < ALPHA
    warning = None if beats else _warning(name, accs[name], probe_acc, p_value, layer, other.size)
    return SurfaceCheck(
        name, accs[name], probe_acc, probe_only, baseline_only, p_value, beats, warning
    )


def _warning(name: str, base: float, acc: float, p: float, layer: int, n: int) -> str:
    what = BASELINES[name]
    tail = "what the probe finds may be the statements' wording, not a concept in the model"
    if not math.isfinite(acc) or acc <= base:
        return (
            f"the probe does not beat the surface baseline: {what} scores {base:.2f} on the same "
            f"{n} test statements, the probe {acc:.2f} at layer {layer}; {tail}"
        )
    return (
        f"the probe is not reliably better than the surface baseline: {acc:.2f} at layer "
        f"{layer} against {base:.2f} for {what} on the same {n} test statements "
        f"(exact McNemar p = {p:.2g}); {tail}"
    )
