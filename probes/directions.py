"""Concept directions per layer: logistic probe, difference of class means, or first principal
component of paired differences, each with its held-out accuracy and two controls.

Every method gives, per layer, a unit direction oriented so label 1 projects higher and a
threshold on the projection (label 1 above it). The probe's threshold is its decision
boundary; mean-diff, pca and the random-direction control use the midpoint of the training
class means projected. Nothing is computed before the train/test split (``split_pairs``):
means, standardisation, components and the probe see training items only.

Controls beside every result:
- ``shuffled_acc``: the same method fitted on training labels permuted at random, balanced
  so the permutation carries no information about the true labels (for pca, the shuffled
  classes are re-paired at random). For probe and mean-diff it sits near chance. For pca
  it need not: the first component of differences is found without labels (labels only
  pick its sign and the pairing), so where the concept is the dominant direction of
  variation even random pairs find it, and its accuracy lands near acc or 1 - acc. Read it
  as "what the method finds without the labels".
- ``random_acc``: a random direction, oriented and thresholded on the training labels.

Controls that can fail (a probe may lose to them):
- ``val_acc``: the same method fitted on the training pairs minus a validation part
  (``validation_split``) and scored on that part. The headline layer is the one with the best
  ``val_acc`` (``choose_layer``), so the test split is never looked at to pick it; the layer
  with the best test ``acc`` is kept beside it, as an optimistic figure.
- ``bow_acc``, ``length_acc``: surface baselines on the same split that see only the
  statements' text (``probes.surface``); constant across layers, repeated so every row shows
  them. ``LayerProbe.surface`` says whether the headline layer beats the better of the two.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from jaxtyping import Float, Int

from interp.errors import InterpError
from interp.stats import wilson_interval
from probes.concepts import ConceptData, split_pairs
from probes.logistic import fit_logistic
from probes.stats import balanced_permutation
from probes.surface import SurfaceCheck, compare_to_surface, surface_predictions

METHODS = ("probe", "mean-diff", "pca")


@dataclass(frozen=True)
class Directions:
    """One unit direction per layer; an item is classified label 1 when its projection on
    the direction exceeds the layer's threshold."""

    vectors: Float[torch.Tensor, "layer d_model"]
    thresholds: Float[torch.Tensor, " layer"]

    def project(
        self, x: Float[torch.Tensor, "layer item d_model"]
    ) -> Float[torch.Tensor, "layer item"]:
        """Projection of every item on its layer's direction, in activation units.

        Args:
            x: Items' activations, one block per layer of the directions.

        Returns:
            One projection per layer and item.
        """
        return (x.to(self.vectors.dtype) @ self.vectors[..., None])[..., 0]

    def predict(
        self, x: Float[torch.Tensor, "layer item d_model"]
    ) -> Int[np.ndarray, "layer item"]:
        """0/1 label of every item at every layer.

        Args:
            x: Items' activations, one block per layer of the directions.

        Returns:
            1 where the projection exceeds the layer's threshold, else 0.
        """
        return (self.project(x) > self.thresholds[:, None]).numpy().astype(np.int64)

    def n_correct(
        self, x: Float[torch.Tensor, "layer item d_model"], y: Int[np.ndarray, " item"]
    ) -> Int[np.ndarray, " layer"]:
        """How many items each layer's direction classifies correctly.

        Args:
            x: Items' activations, one block per layer of the directions.
            y: The items' true 0/1 labels.

        Returns:
            One count per layer.
        """
        return (self.predict(x) == np.asarray(y)[None]).sum(axis=1)


@dataclass(frozen=True, eq=False)
class LayerProbe:
    """The result of `probe_layers`: a table per layer, the directions, and the split."""

    table: pd.DataFrame
    """layer, acc, acc_lo, acc_hi (95% Wilson), train_acc, val_acc, shuffled_acc, random_acc,
    bow_acc, length_acc, n_train, n_val, n_test."""
    directions: Directions
    """Rows follow ``table.layer``; fitted on every training item (validation part included)."""
    train_idx: Int[np.ndarray, " train"]
    test_idx: Int[np.ndarray, " test"]
    val_idx: Int[np.ndarray, " val"]
    """The validation part of ``train_idx``, held out from the fit that gives ``val_acc``."""
    val_layer: int
    """The headline layer: best ``val_acc`` (``choose_layer``), chosen without the test split."""
    test_layer: int
    """The best test ``acc``: chosen on the test split itself, so its accuracy is optimistic."""
    surface: SurfaceCheck
    """Does the probe at ``val_layer`` beat the better surface baseline on the test items?"""


def check_method(method: str) -> None:
    """Refuse a direction method other than those in ``METHODS``.

    Args:
        method: ``"probe"``, ``"mean-diff"`` or ``"pca"``.

    Raises:
        InterpError: ``method`` is not one of ``METHODS``.
    """
    if method not in METHODS:
        raise InterpError(f"unknown method {method!r}; use one of {', '.join(METHODS)}")


def check_layers(layers: Sequence[int] | None, n_layers: int) -> list[int]:
    """Sorted distinct layers, every one in 0..n_layers-1; None means all of them.

    Args:
        layers: Layer numbers (repeats and any order allowed), or None for all.
        n_layers: The model's number of layers.

    Returns:
        The layers, sorted and distinct.

    Raises:
        InterpError: ``layers`` is empty, or a layer is out of range.

    Examples:
        >>> check_layers([3, 1, 3], 4)
        [1, 3]
    """
    if layers is None:
        return list(range(n_layers))
    chosen = sorted({int(layer) for layer in layers})
    if not chosen:
        raise InterpError("no layers given; pass at least one layer, or none for all")
    bad = [layer for layer in chosen if not 0 <= layer < n_layers]
    if bad:
        raise InterpError(
            f"layer {bad[0]} out of range: the model has {n_layers} layers (0..{n_layers - 1})"
        )
    return chosen


def choose_layer(table: pd.DataFrame, column: str = "val_acc") -> int:
    """The layer with the highest ``column`` (the earliest on ties; NaN never wins).

    Args:
        table: A per-layer table with ``layer`` and ``column``.
        column: The column to maximise.

    Returns:
        The layer number (the first row's layer when no value is finite).
    """
    values = table[column].to_numpy(dtype=np.float64)
    if not np.isfinite(values).any():
        return int(table["layer"].iloc[0])
    return int(table["layer"].iloc[int(np.nanargmax(values))])


def validation_split(
    data: ConceptData, train: np.ndarray, *, test_size: float = 0.3, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Split the training items (indices into ``data``) into a fitting and a validation part,
    by pair and stratified as ``split_pairs`` does, holding out ``test_size`` of them.

    Args:
        data: The concept's items.
        train: Indices of the training items into ``data``.
        test_size: Share of the training pairs (or items) held out for validation.
        seed: Seed of the split.

    Returns:
        ``(fit, val)``: indices into ``data``.

    Raises:
        InterpError: Fewer than two training pairs (or items), or as :func:`split_pairs`.
    """
    sub = ConceptData(data.name, data.items.iloc[train].reset_index(drop=True), data.source)
    units = sub.items["pair"].nunique() if sub.paired else len(sub.items)
    if units < 2:
        what = "pairs" if data.paired else "items"
        raise InterpError(
            f"{data.source}: {units} training {what} cannot be split again for validation; "
            f"the concept needs more {what} (at least 3)"
        )
    fit, val = split_pairs(sub, test_size=test_size, seed=seed)
    return train[fit], train[val]


def probe_layers(
    encodings: Float[torch.Tensor, "item layer d_model"],
    data: ConceptData,
    *,
    layers: Sequence[int] | None = None,
    method: str = "probe",
    seed: int = 0,
    test_size: float = 0.3,
    c: float = 1.0,
) -> LayerProbe:
    """Fit the concept direction on every chosen layer at once and score it on held-out
    items, beside the shuffled-label and random-direction controls, the validation accuracy
    that picks the headline layer, and the surface baselines.

    ``encodings`` holds every layer of the model (``encode_texts``); ``layers`` picks some
    (default all). The split is ``split_pairs(data, test_size, seed)``, the validation part
    ``validation_split(data, train, test_size, seed)``; the controls use ``seed`` too, so the
    same seed gives the same table.

    Args:
        encodings: Every layer's encoding of every item of ``data``.
        data: The concept's items.
        layers: Layers to probe; None: all.
        method: ``"probe"`` (logistic regression), ``"mean-diff"`` or ``"pca"`` (paired items
            only).
        seed: Seed of the split and the controls.
        test_size: Share of pairs (or items) held out, in (0, 1).
        c: Inverse L2 regularisation strength of the logistic fit (> 0).

    Returns:
        The per-layer table (held-out accuracy with Wilson interval, train and validation
        accuracy, controls, surface baselines, counts), the fitted directions, the split, the
        validation-chosen and best layers, and the surface check.

    Raises:
        InterpError: Unknown method, encodings and items disagree in number, bad layers,
            ``"pca"`` without pairs, or too few items to split.
    """
    check_method(method)
    if encodings.shape[0] != len(data.items):
        raise InterpError(
            f"{encodings.shape[0]} encodings for {len(data.items)} items of {data.name}; "
            "encode the same concept file"
        )
    chosen = check_layers(layers, encodings.shape[1])
    x = encodings[:, chosen].transpose(0, 1)  # [layer item d]
    labels = data.labels()
    pairs = data.items["pair"].to_numpy() if data.paired else None
    if method == "pca" and pairs is None:
        raise InterpError(f"method 'pca' needs paired items; {data.source} has no 'pair' field")
    train, test = split_pairs(data, test_size=test_size, seed=seed)
    x_train, y_train, x_test, y_test = x[:, train], labels[train], x[:, test], labels[test]
    rng = np.random.default_rng(seed)
    pairs_train = None if pairs is None else pairs[train]
    fitted = fit_directions(x_train, y_train, method=method, pairs=pairs_train, c=c)
    y_shuffled, pairs_shuffled = shuffle_labels(y_train, pairs_train, rng)
    shuffled = fit_directions(x_train, y_shuffled, method=method, pairs=pairs_shuffled, c=c)
    random = random_directions(x_train, y_train, rng)
    fit_idx, val_idx = validation_split(data, train, test_size=test_size, seed=seed)
    pairs_fit = None if pairs is None else pairs[fit_idx]
    for_val = fit_directions(x[:, fit_idx], labels[fit_idx], method=method, pairs=pairs_fit, c=c)
    surface = surface_predictions(data.texts(), labels, train, test)
    n_test = len(test)
    correct = fitted.n_correct(x_test, y_test)
    intervals = [wilson_interval(int(k), n_test) for k in correct]
    table = pd.DataFrame(
        {
            "layer": chosen,
            "acc": correct / n_test,
            "acc_lo": [lo for lo, _ in intervals],
            "acc_hi": [hi for _, hi in intervals],
            "train_acc": fitted.n_correct(x_train, y_train) / len(train),
            "val_acc": for_val.n_correct(x[:, val_idx], labels[val_idx]) / len(val_idx),
            "shuffled_acc": shuffled.n_correct(x_test, y_test) / n_test,
            "random_acc": random.n_correct(x_test, y_test) / n_test,
            "bow_acc": float(np.mean(surface["bow"] == y_test)),
            "length_acc": float(np.mean(surface["length"] == y_test)),
            "n_train": len(train),
            "n_val": len(val_idx),
            "n_test": n_test,
        }
    )
    val_layer = choose_layer(table, "val_acc")
    at = chosen.index(val_layer)
    probe_correct = fitted.predict(x_test)[at] == y_test
    check = compare_to_surface(
        probe_correct, {k: v == y_test for k, v in surface.items()}, layer=val_layer
    )
    return LayerProbe(
        table, fitted, train, test, val_idx, val_layer, choose_layer(table, "acc"), check
    )


def fit_directions(
    x: Float[torch.Tensor, "layer item d_model"],
    y: Int[np.ndarray, " item"],
    *,
    method: str = "probe",
    pairs: np.ndarray | None = None,
    c: float = 1.0,
) -> Directions:
    """Directions from training items only. ``pairs`` (a pair id per item) is needed by pca.

    Args:
        x: Training items' activations, one block per layer.
        y: The items' 0/1 labels.
        method: ``"probe"``, ``"mean-diff"`` or ``"pca"``.
        pairs: A pair id per item (``"pca"`` only).
        c: Inverse L2 regularisation strength (``"probe"`` only, > 0).

    Returns:
        A unit direction and threshold per layer.

    Raises:
        InterpError: Unknown method, or ``"pca"`` without pairs.
    """
    check_method(method)
    x = x.to(torch.float64)
    if method == "probe":
        fit = fit_logistic(x, torch.tensor(y), c=c)
        norm = fit.weight.norm(dim=-1).clamp_min(torch.finfo(torch.float64).tiny)
        return Directions(fit.weight / norm[:, None], -fit.bias / norm)
    if method == "mean-diff":
        vectors = x[:, y == 1].mean(dim=1) - x[:, y == 0].mean(dim=1)
    else:
        if pairs is None:
            raise InterpError("method 'pca' needs a pair id for every item")
        vectors = _first_component(_paired_differences(x, y, pairs))
    return _oriented(vectors, x, y)


def random_directions(
    x: Float[torch.Tensor, "layer item d_model"],
    y: Int[np.ndarray, " item"],
    rng: np.random.Generator,
) -> Directions:
    """A random Gaussian direction per layer, oriented and thresholded on the labels.

    Args:
        x: Training items' activations, one block per layer.
        y: The items' 0/1 labels.
        rng: The generator the directions are drawn from (advanced by the call).

    Returns:
        A random unit direction and threshold per layer.
    """
    draws = rng.standard_normal((x.shape[0], x.shape[2]))
    return _oriented(torch.from_numpy(draws), x.to(torch.float64), y)


def shuffle_labels(
    y: Int[np.ndarray, " item"], pairs: np.ndarray | None, rng: np.random.Generator
) -> tuple[Int[np.ndarray, " item"], np.ndarray | None]:
    """Labels permuted at random, balanced so they carry no information about the true ones
    (`balanced_permutation`); with pairs, the shuffled label-1 and label-0 items are re-paired
    at random (a pair must hold one of each).

    Args:
        y: The true 0/1 labels.
        pairs: A pair id per item, or None.
        rng: The generator used (advanced by the call).

    Returns:
        ``(labels, pairs)``: the shuffled labels and the new pair ids (None without pairs).
    """
    shuffled = balanced_permutation(y, rng)
    if pairs is None:
        return shuffled, None
    ones = rng.permutation(np.flatnonzero(shuffled == 1))
    zeros = rng.permutation(np.flatnonzero(shuffled == 0))
    new_pairs = np.empty(len(y), dtype=np.int64)
    new_pairs[ones] = np.arange(len(ones))
    new_pairs[zeros] = np.arange(len(zeros))
    return shuffled, new_pairs


def _oriented(
    vectors: Float[torch.Tensor, "layer d_model"],
    x: Float[torch.Tensor, "layer item d_model"],
    y: Int[np.ndarray, " item"],
) -> Directions:
    """Unit vectors flipped so label 1's mean projection is the higher, thresholded at the
    midpoint of the two class means' projections."""
    unit = vectors / vectors.norm(dim=-1, keepdim=True).clamp_min(torch.finfo(vectors.dtype).tiny)
    proj = (x @ unit[..., None])[..., 0]
    mean1, mean0 = proj[:, y == 1].mean(dim=1), proj[:, y == 0].mean(dim=1)
    sign = torch.where(mean1 >= mean0, 1.0, -1.0).to(unit.dtype)
    return Directions(unit * sign[:, None], sign * (mean1 + mean0) / 2)


def _paired_differences(
    x: Float[torch.Tensor, "layer item d_model"], y: Int[np.ndarray, " item"], pairs: np.ndarray
) -> Float[torch.Tensor, "layer pair d_model"]:
    """Label-1 item minus label-0 item of every pair with both members present."""
    codes = pd.factorize(pairs)[0]
    first: dict[int, int] = {}
    second: dict[int, int] = {}
    for i, (code, label) in enumerate(zip(codes, y, strict=True)):
        (first if label == 1 else second)[code] = i
    common = sorted(set(first) & set(second))
    if not common:
        raise InterpError("method 'pca' found no pair with one item of each label")
    ones = [first[k] for k in common]
    zeros = [second[k] for k in common]
    return x[:, ones] - x[:, zeros]


def _first_component(
    diffs: Float[torch.Tensor, "layer pair d_model"],
) -> Float[torch.Tensor, "layer d_model"]:
    """First principal axis of the differences, uncentred.

    Uncentred on purpose: the consistent label-1-minus-label-0 shift is the signal, and
    centring would subtract it. (Representation reading flips each pair's order at random
    and centres; the uncentred axis of the unflipped differences is the same axis without
    the randomness.) Computed from the smaller of the two Gram matrices.
    """
    n_pairs, d = diffs.shape[1:]
    if n_pairs <= d:
        _, vecs = torch.linalg.eigh(diffs @ diffs.mT)
        return (diffs.mT @ vecs[..., -1:])[..., 0]
    _, vecs = torch.linalg.eigh(diffs.mT @ diffs)
    return vecs[..., -1]
