"""The per-layer logistic fit (scikit-learn): the objective it minimises, and the numbers of
the batched Newton solver it replaced, pinned.

The expected numbers below were computed on 2026-12-08 with the project's own batched Newton
solver (``probes/logistic.py`` at commit bfe6772, converged to half a Newton decrement
<= 1e-10), before it was replaced: ``probe_layers(encode_texts(load_model("tiny"), texts),
data, seed=seed)`` for each built-in concept and seed, and ``fit_logistic`` on the small
synthetic sets of ``_synthetic``. The scikit-learn fit must give the same accuracies (within
1e-4: the same predictions) and the same weights to solver precision.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from probes.concepts import load_concept
from probes.directions import probe_layers
from probes.encode import encode_texts
from probes.logistic import fit_logistic

# Correct items per layer (tiny model, 3 layers) out of n_train 252, n_val 76, n_test 108.
N_TRAIN, N_VAL, N_TEST = 252, 76, 108
NEWTON_COUNTS = {
    ("stereotype", 0): {
        "acc": [66, 67, 59],
        "train_acc": [180, 191, 187],
        "val_acc": [42, 46, 47],
        "shuffled_acc": [53, 50, 53],
    },
    ("stereotype", 1): {
        "acc": [59, 73, 66],
        "train_acc": [195, 186, 191],
        "val_acc": [41, 45, 44],
        "shuffled_acc": [57, 56, 60],
    },
    ("morality", 0): {
        "acc": [53, 53, 51],
        "train_acc": [177, 187, 176],
        "val_acc": [38, 40, 39],
        "shuffled_acc": [54, 53, 56],
    },
    ("morality", 1): {
        "acc": [53, 60, 54],
        "train_acc": [173, 176, 170],
        "val_acc": [39, 38, 39],
        "shuffled_acc": [52, 62, 61],
    },
}
DENOMINATOR = {"acc": N_TEST, "train_acc": N_TRAIN, "val_acc": N_VAL, "shuffled_acc": N_TEST}


@pytest.fixture(scope="module")
def concept_encodings(tiny_model):
    return {
        name: (load_concept(name), encode_texts(tiny_model, load_concept(name).texts()))
        for name in ("stereotype", "morality")
    }


@pytest.mark.parametrize("concept, seed", list(NEWTON_COUNTS))
def test_accuracies_on_the_built_in_concepts_are_the_newton_solvers(
    concept_encodings, concept, seed
):
    data, encodings = concept_encodings[concept]
    table = probe_layers(encodings, data, seed=seed).table
    assert table[["n_train", "n_val", "n_test"]].iloc[0].tolist() == [N_TRAIN, N_VAL, N_TEST]
    for column, counts in NEWTON_COUNTS[(concept, seed)].items():
        expected = np.array(counts) / DENOMINATOR[column]
        np.testing.assert_allclose(table[column].to_numpy(), expected, rtol=0, atol=1e-4)


def _synthetic(n: int, d: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Two layers of n items, d features with offsets and unequal spreads; label 1 shifts
    feature 0."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, n, d, generator=gen, dtype=torch.float64)
    x = x * torch.linspace(0.5, 3.0, d, dtype=torch.float64) + torch.arange(d, dtype=torch.float64)
    y = torch.tensor([i % 2 for i in range(n)])
    x[:, :, 0] += 1.5 * y
    return x, y


# fit_logistic of the Newton solver on _synthetic(n, d) with C = c: weight rows, bias.
NEWTON_FITS = {
    (8, 12, 1.0): (  # fewer items than features (the Newton solver's dual path)
        [
            [0.660050424617856, 0.35113783729224834, 0.4914717701538401, -0.006854651299916554,
             0.2648466824518214, -0.2712674939930187, -0.13192161858684257,
             -0.060480276423021166, 0.3866239917136438, -0.03543132282854128,
             -0.23886713303409218, 0.04532852729898086],
            [0.9587423598400391, 0.6095357996235938, -0.40007317164320394, -0.3692601396444856,
             0.18596916570423105, 0.007378663523494832, -0.09144552477539516,
             0.5378808439431462, 0.06306061794307623, -0.017307378457462014,
             -0.05457551209184789, -0.27392963228697725],
        ],
        [-0.830846312183203, -0.6286755270497966],
    ),
    (40, 5, 0.3): (  # more items than features (its primal path)
        [
            [1.710813473679082, 0.04296115601916567, -0.16381221617928302,
             -0.11102311795205408, 0.0457348266701383],
            [1.6958112289022003, 0.046392708532630327, -0.011169119994330352,
             -0.11423229902700155, -0.03864871675019998],
        ],
        [-1.0439077419725424, -0.8690335216847442],
    ),
}  # fmt: skip


@pytest.mark.parametrize("n, d, c", list(NEWTON_FITS))
def test_weights_are_the_newton_solvers(n, d, c):
    x, y = _synthetic(n, d)
    fit = fit_logistic(x, y, c=c)
    weight, bias = NEWTON_FITS[(n, d, c)]
    assert fit.converged.all()
    np.testing.assert_allclose(fit.weight.numpy(), weight, rtol=0, atol=1e-6)
    np.testing.assert_allclose(fit.bias.numpy(), bias, rtol=0, atol=1e-6)


@pytest.mark.parametrize("c", [0.05, 1.0, 20.0])
def test_fit_minimises_summed_loss_plus_l2_over_2c_intercept_unpenalised(c):
    """The optimum of sum_i logloss_i + ||w||^2 / (2c) in standardised coordinates (the
    intercept b free): gradient z'(p - y) + w / c = 0 and sum(p - y) = 0. A mean loss, a
    penalised intercept, or C read as lambda would each leave a gradient here."""
    x, y = _synthetic(30, 7)
    fit = fit_logistic(x, y, c=c)
    mean, scale = x.mean(dim=1), x.std(dim=1, correction=0)
    z = (x - mean[:, None]) / scale[:, None]
    w_std = fit.weight * scale  # the weights on standardised features
    residual = torch.sigmoid(fit.logits(x)) - y.double()
    grad_w = (z.mT @ residual[..., None])[..., 0] + w_std / c
    assert residual.sum(-1).abs().max() < 1e-6
    assert grad_w.abs().max() < 1e-6 * max(1.0, 1 / c)
    assert w_std.abs().max() > 1e-2  # not the trivial zero fit


def test_fit_is_deterministic():
    x, y = _synthetic(40, 5)
    first, again = fit_logistic(x, y), fit_logistic(x, y)
    assert torch.equal(first.weight, again.weight) and torch.equal(first.bias, again.bias)
