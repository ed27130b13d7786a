"""L2-regularised logistic regression per layer: scikit-learn's ``LogisticRegression``.

The objective per layer is ``LogisticRegression(C=c)`` on features standardised with the
training items' mean and population standard deviation: C * (sum of log-losses) +
||w||^2 / 2, the intercept not penalised. (scikit-learn minimises the mean of the log-losses
plus ||w||^2 / (2 C n), the same minimiser; divided by C it is sum + ||w||^2 / (2 C), the
objective of the batched Newton solver this module replaced, so its c is scikit-learn's C.)
The fit is in float64 and the result is mapped back to raw activations.

Solver: newton-cg at ``tol`` 1e-8. Predictions must not depend on where the solver stopped:
at scikit-learn's default ``tol`` (1e-4) lbfgs and newton-cg stop early enough to flip one
or two held-out items of the embedded model's concept data against the exact optimum, and
lbfgs at a tight ``tol`` needs ~300 iterations a layer. newton-cg reaches the optimum (weights
within ~2e-6 relative of the Newton solver's) in ~15. It is deterministic: it starts from
zero and draws nothing at random.

Why scikit-learn and not the own batched all-layer Newton solver the project had before: one
implementation, the common one, as exact (the same held-out accuracies on the embedded
model's concept data, 30 layers, 252 training items, d_model 576) and about as fast: in one
run of ``benchmarks/probe_fit.py`` (where the Newton solver lives on as the comparison) 1.16x
its speed on the stereotype concept and 0.7x on morality, ~0.4-0.5 s of CPU for all 30
layers either way.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch
from jaxtyping import Bool, Float, Real
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression

_TINY_SCALE = 1e-12  # features with a smaller spread are constant: left unscaled (as sklearn)


@dataclass(frozen=True)
class LogisticFit:
    """Per-layer logistic regressions, expressed on raw (unstandardised) activations:
    P(label 1 | x) = sigmoid(x @ weight[l] + bias[l])."""

    weight: Float[torch.Tensor, "layer d_model"]
    bias: Float[torch.Tensor, " layer"]
    converged: Bool[torch.Tensor, " layer"]
    iterations: int

    def logits(
        self, x: Float[torch.Tensor, "layer item d_model"]
    ) -> Float[torch.Tensor, "layer item"]:
        """Logits of every item at its own layer (``x`` has one row block per layer).

        Args:
            x: Items' activations, one block per fitted layer.

        Returns:
            One logit per layer and item.
        """
        return (x.to(self.weight.dtype) @ self.weight[..., None])[..., 0] + self.bias[:, None]


def fit_logistic(
    x: Float[torch.Tensor, "layer item d_model"],
    y: Real[torch.Tensor, " item"],
    *,
    c: float = 1.0,
    tol: float = 1e-8,
    max_iter: int = 1000,
) -> LogisticFit:
    """Fit one logistic regression per layer (scikit-learn, newton-cg), layer after layer.

    Features are standardised per layer with the training items' mean and (population)
    standard deviation, the fit is in float64, and the result is mapped back to raw
    activations. ``tol`` bounds the largest gradient component of the mean loss
    (scikit-learn's ``tol``): tight by default, so that predictions do not depend on where
    the solver stopped.

    Args:
        x: Training items' activations, one block per layer.
        y: The items' 0/1 labels (both classes present).
        c: Inverse L2 regularisation strength (> 0), scikit-learn's ``C``.
        tol: newton-cg's convergence tolerance.
        max_iter: Most newton-cg iterations per layer.

    Returns:
        Weights and bias per layer (on raw activations), which layers converged, and the most
        iterations any layer took.
    """
    x64 = x.to(torch.float64)
    mean = x64.mean(dim=1)
    scale = x64.std(dim=1, correction=0)
    scale = torch.where(scale > _TINY_SCALE, scale, torch.ones_like(scale))
    z = ((x64 - mean[:, None]) / scale[:, None]).numpy()
    labels = np.asarray(y.cpu().numpy(), dtype=np.int64)
    n_layers, _, d = z.shape
    w_std = np.empty((n_layers, d))
    b_std = np.empty(n_layers)
    iterations = np.empty(n_layers, dtype=np.int64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # reported as ``converged``
        for layer in range(n_layers):
            clf = LogisticRegression(C=c, solver="newton-cg", tol=tol, max_iter=max_iter)
            clf.fit(z[layer], labels)
            w_std[layer], b_std[layer] = clf.coef_[0], clf.intercept_[0]
            iterations[layer] = int(clf.n_iter_[0])
    weight = torch.from_numpy(w_std) / scale
    bias = torch.from_numpy(b_std) - (weight * mean).sum(-1)
    return LogisticFit(
        weight=weight,
        bias=bias,
        converged=torch.from_numpy(iterations < max_iter),
        iterations=int(iterations.max()) if n_layers else 0,
    )
