"""Behaviour probes: does a round's read-out state predict the model's own answer?

Two targets, from the run alone (no concept data):
- ``stereotyped``: the answer is the bias target (``choice == target``), on rows with a known
  target (``target >= 0``);
- ``correct``: the answer is right (``correct``).
Rows whose answer could not be parsed (``choice < 0``) are left out of both: there is no
answer to predict. Items are (example, round) cells; the train/test split is by *cluster*
of examples (a BBQ template by default, ``interp.stats``), so neither the rounds of one
example nor the near-duplicate variants of one template straddle it (they would leak).
The accuracy's interval is a cluster bootstrap over the test clusters, not a binomial
interval over cells: the cells of one cluster are not independent.

Beside each accuracy: the same probe on shuffled training labels (a balanced permutation,
as for concept probes), and the majority
baseline (predict the training majority class), because answers are often imbalanced (the
embedded model favours one option) and a probe must beat that, not 0.5.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch
from jaxtyping import Bool, Float, Int

from interp.stats import bootstrap_weights, percentile_interval
from probes.logistic import fit_logistic
from probes.stats import balanced_permutation

BEHAVIOURS = ("stereotyped", "correct")


def split_examples(
    n_examples: int,
    *,
    test_size: float = 0.3,
    seed: int = 0,
    clusters: Int[np.ndarray, " example"] | None = None,
) -> tuple[Int[np.ndarray, " train"], Int[np.ndarray, " test"]]:
    """Sorted train and test example indices: round(k * test_size) of the k clusters (None:
    every example alone) go to test, at least one on each side when there are two or more;
    an example goes where its cluster goes.

    Args:
        n_examples: Number of examples (indices 0..n_examples-1).
        test_size: Share of clusters that go to test, in [0, 1].
        seed: Seed of the cluster permutation.
        clusters: Cluster number 0..k-1 of each example; None: every example alone.

    Returns:
        ``(train, test)`` example indices.
    """
    ids = np.arange(n_examples) if clusters is None else np.asarray(clusters, dtype=np.int64)
    k = int(ids.max()) + 1 if ids.size else 0
    n_test = min(max(round(k * test_size), 1), k - 1) if k > 1 else 0
    order = np.random.default_rng(seed).permutation(k)
    is_test = np.isin(ids, order[:n_test])
    return np.flatnonzero(~is_test), np.flatnonzero(is_test)


def behaviour_labels(rounds: pd.DataFrame, behaviour: str) -> pd.DataFrame:
    """The rows a behaviour is defined on: columns example_index, round, y (0/1).

    Args:
        rounds: A rounds table (``choice``, ``target``, ``correct``, ``example_index``,
            ``round``).
        behaviour: ``"stereotyped"`` (answered rows with a target: y = chose the target) or
            ``"correct"`` (answered rows: y = correct).

    Returns:
        One row per item the behaviour is defined on.
    """
    answered = rounds[rounds["choice"].to_numpy() >= 0]
    if behaviour == "stereotyped":
        rows = answered[answered["target"].to_numpy() >= 0]
        y = rows["choice"].to_numpy() == rows["target"].to_numpy()
    else:
        rows = answered
        y = rows["correct"].to_numpy().astype(bool)
    return pd.DataFrame(
        {
            "example_index": rows["example_index"].to_numpy(dtype=np.int64),
            "round": rows["round"].to_numpy(dtype=np.int64),
            "y": y.astype(np.int64),
        }
    )


def behaviour_probes(
    acts: Float[torch.Tensor, "layer example round d_model"],
    rounds: pd.DataFrame,
    layers: Sequence[int],
    *,
    seed: int = 0,
    test_size: float = 0.3,
    c: float = 1.0,
    clusters: Int[np.ndarray, " example"] | None = None,
    n_boot: int = 1000,
) -> pd.DataFrame:
    """Held-out accuracy per behaviour and layer (``acts`` rows follow ``layers``).

    Columns behaviour, layer, acc, acc_lo, acc_hi (95% cluster bootstrap over the test
    clusters; ``clusters``: cluster number per example, None: every example alone),
    shuffled_acc, majority_acc, base_rate (share of label 1 among test items), n_train,
    n_test. Accuracies are NaN when the training items hold a single class or the test side
    is empty.

    Args:
        acts: Activations per layer, example and round.
        rounds: The run's rounds table.
        layers: The layer number of each row block of ``acts``.
        seed: Seed of the split, the shuffled-label control and the bootstrap.
        test_size: Share of clusters held out, in [0, 1].
        c: Inverse L2 regularisation strength of the logistic fit (> 0).
        clusters: Cluster number of each example; None: every example alone.
        n_boot: Number of bootstrap resamples of the test clusters; 0 gives NaN bounds.

    Returns:
        One row per behaviour (``BEHAVIOURS``) and layer.
    """
    ids = np.arange(acts.shape[1]) if clusters is None else np.asarray(clusters, dtype=np.int64)
    train_ex, test_ex = split_examples(acts.shape[1], test_size=test_size, seed=seed, clusters=ids)
    tables = []
    for offset, behaviour in enumerate(BEHAVIOURS):
        items = behaviour_labels(rounds, behaviour)
        is_train = np.isin(items["example_index"].to_numpy(), train_ex)
        is_test = np.isin(items["example_index"].to_numpy(), test_ex)
        rng = np.random.default_rng([seed, offset])
        test = items[is_test]
        boot = _item_weights(ids[test["example_index"].to_numpy()], n_boot, seed)
        table = _probe_items(acts, items[is_train], test, rng, c, boot)
        table.insert(0, "layer", list(layers))
        table.insert(0, "behaviour", behaviour)
        tables.append(table)
    return pd.concat(tables, ignore_index=True)


def _probe_items(
    acts: Float[torch.Tensor, "layer example round d_model"],
    train: pd.DataFrame,
    test: pd.DataFrame,
    rng: np.random.Generator,
    c: float,
    boot: Float[np.ndarray, "resample item"] | None,
) -> pd.DataFrame:
    n_layers = acts.shape[0]
    y_train, y_test = train["y"].to_numpy(), test["y"].to_numpy()
    frame = pd.DataFrame(
        {
            "acc": np.nan,
            "acc_lo": np.nan,
            "acc_hi": np.nan,
            "shuffled_acc": np.nan,
            "majority_acc": np.nan,
            "base_rate": y_test.mean() if len(y_test) else np.nan,
            "n_train": len(train),
            "n_test": len(test),
        },
        index=range(n_layers),
    )
    if len(np.unique(y_train)) < 2 or len(test) == 0:
        return frame  # nothing to learn, or nothing to test on
    x_train = _gather(acts, train)
    x_test = _gather(acts, test)
    hits = _hits(x_train, y_train, x_test, y_test, c)
    shuffled = _hits(x_train, balanced_permutation(y_train, rng), x_test, y_test, c)
    majority = int(y_train.mean() >= 0.5)
    frame["acc"] = hits.mean(axis=1)
    if boot is not None:
        resampled = (boot @ hits.T.astype(float)) / boot.sum(axis=1, keepdims=True)
        frame["acc_lo"], frame["acc_hi"] = percentile_interval(resampled)
    frame["shuffled_acc"] = shuffled.mean(axis=1)
    frame["majority_acc"] = float((y_test == majority).mean())
    return frame


def _gather(
    acts: Float[torch.Tensor, "layer example round d_model"], items: pd.DataFrame
) -> Float[torch.Tensor, "layer item d_model"]:
    examples = torch.as_tensor(items["example_index"].to_numpy(copy=True))
    rounds = torch.as_tensor(items["round"].to_numpy(copy=True))
    return acts[:, examples, rounds].float()


def _item_weights(
    item_clusters: Int[np.ndarray, " item"], n_boot: int, seed: int
) -> Float[np.ndarray, "resample item"] | None:
    """Cluster-bootstrap weights of the test items (None: fewer than 2 clusters, no interval)."""
    _, ids = np.unique(item_clusters, return_inverse=True)
    if n_boot == 0 or len(np.unique(ids)) < 2:
        return None
    return bootstrap_weights(ids, n_boot, seed)


def _hits(
    x_train: Float[torch.Tensor, "layer item d_model"],
    y_train: Int[np.ndarray, " item"],
    x_test: Float[torch.Tensor, "layer test_item d_model"],
    y_test: Int[np.ndarray, " test_item"],
    c: float,
) -> Bool[np.ndarray, "layer test_item"]:
    """Whether the probe fitted on the training items gets each test item right."""
    fit = fit_logistic(x_train, torch.tensor(y_train), c=c)
    predicted = (fit.logits(x_test) > 0).numpy()
    return predicted == (y_test == 1)[None]
