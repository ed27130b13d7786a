"""The batched all-layer Newton logistic regression that ``probes/logistic.py`` was until
2026-12-08, kept here only as the comparison of ``benchmarks/probe_fit.py`` (the library
fits with scikit-learn now). Unchanged from probes/logistic.py at commit bfe6772, except
that the result type (``LogisticFit``) is imported from there.

L2-regularised logistic regression fitted on every layer at once (batched Newton).

The objective per layer is scikit-learn's ``LogisticRegression(C=c)`` on standardised
features (``StandardScaler`` then the model): sum of log-losses + ||w||^2 / (2c), intercept
not penalised. Same objective, so the two agree to solver tolerance.

Newton's method with a per-layer backtracking line search converges in ~10 iterations. Each
step solves the Hessian system [[z'Wz + lam I, z'W1], [1'Wz, sum W]] by eliminating the
intercept (a Schur complement), so the work is applying (z'Wz + lam I)^-1:
- with more items n than features d: a Cholesky factor of that d x d matrix;
- with fewer (concept data: ~250 statements, d_model 576): the fit moves into the span of
  the training rows, where every product is with the n x n Gram matrix and the inverse
  comes from the Woodbury identity. No d x d matrix is ever formed.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from jaxtyping import Bool, Float, Real

from probes.logistic import LogisticFit  # the result type is the same as the library's

_TINY_SCALE = 1e-12  # features with a smaller spread are constant: left unscaled (as sklearn)
_SCHUR_JITTER = 1e-12  # keeps the intercept's pivot positive when every item is fitted
_ARMIJO = 1e-4
_MAX_HALVINGS = 40


def fit_logistic(
    x: Float[torch.Tensor, "layer item d_model"],
    y: Real[torch.Tensor, " item"],
    *,
    c: float = 1.0,
    tol: float = 1e-10,
    max_iter: int = 100,
    max_cells: int = 1 << 23,
) -> LogisticFit:
    """Fit one logistic regression per layer, all layers batched.

    Features are standardised per layer with the training items' mean and (population)
    standard deviation, the fit is in float64, and the result is mapped back to raw
    activations. ``tol`` bounds half the Newton decrement (an estimate of the distance to the
    optimal loss). Layers are processed in chunks of at most ``max_cells`` item x feature
    values, which bounds memory on big runs.

    Args:
        x: Training items' activations, one block per layer.
        y: The items' 0/1 labels.
        c: Inverse L2 regularisation strength (> 0).
        tol: Convergence threshold on half the Newton decrement.
        max_iter: Most Newton iterations.
        max_cells: Most item x feature values fitted at once (memory bound).

    Returns:
        Weights and bias per layer (on raw activations), which layers converged, and the most
        iterations any chunk took.
    """
    n_layers, n_items, d = x.shape
    per_chunk = max(1, max_cells // max(1, n_items * d))
    y64 = y.to(torch.float64)
    parts = [
        _fit_chunk(x[i : i + per_chunk], y64, 1.0 / c, tol, max_iter)
        for i in range(0, n_layers, per_chunk)
    ]
    return LogisticFit(
        weight=torch.cat([p[0] for p in parts]),
        bias=torch.cat([p[1] for p in parts]),
        converged=torch.cat([p[2] for p in parts]),
        iterations=max(p[3] for p in parts),
    )


def _fit_chunk(
    x: Float[torch.Tensor, "layer item d_model"],
    y: Float[torch.Tensor, " item"],
    lam: float,
    tol: float,
    max_iter: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
    x = x.to(torch.float64)
    mean = x.mean(dim=1)
    scale = x.std(dim=1, correction=0)
    scale = torch.where(scale > _TINY_SCALE, scale, torch.ones_like(scale))
    z = (x - mean[:, None]) / scale[:, None]
    newton = _newton_dual if z.shape[1] < z.shape[2] else _newton_primal
    w_std, b_std, converged, iterations = newton(z, y, lam, tol, max_iter)
    weight = w_std / scale
    bias = b_std - (weight * mean).sum(-1)
    return weight, bias, converged, iterations


def _newton_primal(
    z: Float[torch.Tensor, "layer item d"],
    y: Float[torch.Tensor, " item"],
    lam: float,
    tol: float,
    max_iter: int,
) -> tuple[torch.Tensor, torch.Tensor, Bool[torch.Tensor, " layer"], int]:
    """Newton on (w, b) when items outnumber features: the d x d block z'Wz + lam I is
    factored directly."""
    n_layers, n, d = z.shape
    zt = z.mT.contiguous()  # z' products read memory in order
    eye = torch.eye(d, dtype=z.dtype)
    w = torch.zeros(n_layers, d, dtype=z.dtype)
    b = torch.zeros(n_layers, dtype=z.dtype)
    for iteration in range(1, max_iter + 1):
        eta = (z @ w[..., None])[..., 0] + b[:, None]
        p = torch.sigmoid(eta)
        curvature = p * (1 - p)
        grad_w, col = (zt @ torch.stack([p - y, curvature], dim=-1)).unbind(-1)
        grad_w = grad_w + lam * w
        grad_b = (p - y).sum(-1)
        factor = torch.linalg.cholesky(zt @ (curvature[..., None] * z) + lam * eye)
        m_grad, m_col = torch.cholesky_solve(torch.stack([grad_w, col], -1), factor).unbind(-1)
        step_w, step_b = _schur(m_grad, m_col, col, grad_b, curvature.sum(-1))
        decrement = (grad_w * step_w).sum(-1) + grad_b * step_b
        converged = decrement / 2 <= tol
        if converged.all():
            return w, b, converged, iteration
        step_eta = (z @ step_w[..., None])[..., 0] + step_b[:, None]
        quad = torch.stack([(w * w).sum(-1), (w * step_w).sum(-1), (step_w * step_w).sum(-1)])
        t = _line_search(_loss_along(eta, step_eta, y, quad, lam), decrement)
        w, b = w - t[:, None] * step_w, b - t * step_b
    return w, b, converged, max_iter


def _newton_dual(
    z: Float[torch.Tensor, "layer item d"],
    y: Float[torch.Tensor, " item"],
    lam: float,
    tol: float,
    max_iter: int,
) -> tuple[torch.Tensor, torch.Tensor, Bool[torch.Tensor, " layer"], int]:
    """Newton with w = z' alpha, when features outnumber items.

    The optimum lies in the span of the training rows (the loss gradient is a combination of
    rows, the penalty's is w itself), so nothing is lost. Every product is then with the Gram
    matrix K = zz', computed once, and the Hessian block is inverted by Woodbury:
    (z'Wz + lam I)^-1 z'a = z' (a - S (lam I + SKS)^-1 S K a) / lam with S = W^1/2. An
    iteration costs one n x n Cholesky per layer, whatever d is.
    """
    n_layers, n, _ = z.shape
    gram = z @ z.mT
    eye = torch.eye(n, dtype=z.dtype)
    alpha = torch.zeros(n_layers, n, dtype=z.dtype)
    b = torch.zeros(n_layers, dtype=z.dtype)
    converged = torch.zeros(n_layers, dtype=torch.bool)
    iteration = 0
    while iteration < max_iter:
        iteration += 1
        k_alpha = (gram @ alpha[..., None])[..., 0]  # = z w
        eta = k_alpha + b[:, None]
        p = torch.sigmoid(eta)
        curvature = p * (1 - p)
        root = curvature.sqrt()
        factor = torch.linalg.cholesky(root[:, :, None] * gram * root[:, None, :] + lam * eye)
        # In alpha coordinates the gradient is p - y + lam alpha and the Hessian's intercept
        # column is the curvature; inner products of w-space vectors z'a, z'c are a'Kc.
        rhs = torch.stack([p - y + lam * alpha, curvature], dim=-1)
        k_rhs = gram @ rhs
        m = (rhs - root[..., None] * torch.cholesky_solve(root[..., None] * k_rhs, factor)) / lam
        grad_b = (p - y).sum(-1)
        k_grad, k_col = k_rhs.unbind(-1)
        step, step_b = _schur(m[..., 0], m[..., 1], k_col, grad_b, curvature.sum(-1))
        decrement = (k_grad * step).sum(-1) + grad_b * step_b
        converged = decrement / 2 <= tol
        if converged.all():
            break
        k_step = (gram @ step[..., None])[..., 0]
        step_eta = k_step + step_b[:, None]
        quad = torch.stack(
            [(alpha * k_alpha).sum(-1), (alpha * k_step).sum(-1), (step * k_step).sum(-1)]
        )
        t = _line_search(_loss_along(eta, step_eta, y, quad, lam), decrement)
        alpha, b = alpha - t[:, None] * step, b - t * step_b
    return (z.mT @ alpha[..., None])[..., 0], b, converged, iteration


def _schur(
    m_grad: torch.Tensor,
    m_col: torch.Tensor,
    col: torch.Tensor,
    grad_b: Float[torch.Tensor, " layer"],
    corner: Float[torch.Tensor, " layer"],
) -> tuple[torch.Tensor, Float[torch.Tensor, " layer"]]:
    """The Newton step from [[M, c], [c', corner]] [s; s_b] = [grad; grad_b], eliminating the
    intercept: ``m_grad`` = M^-1 grad, ``m_col`` = M^-1 c, and ``col`` is what a vector is
    dotted with to give c' times it (c itself, or K times c's alpha coordinates)."""
    pivot = corner - (col * m_col).sum(-1) + _SCHUR_JITTER
    step_b = (grad_b - (col * m_grad).sum(-1)) / pivot
    return m_grad - m_col * step_b[:, None], step_b


def _loss_along(eta, step_eta, y, quad, lam) -> Callable[[torch.Tensor], torch.Tensor]:
    """The objective at (w, b) - t (step_w, step_b), per layer, for a vector of t; ``quad``
    holds w.w, w.step_w, step_w.step_w, so the penalty needs no pass over the features."""

    def loss_at(t: Float[torch.Tensor, " layer"]) -> Float[torch.Tensor, " layer"]:
        penalty = quad[0] - 2 * t * quad[1] + t * t * quad[2]
        return _data_loss(eta - t[:, None] * step_eta, y) + lam / 2 * penalty

    return loss_at


def _line_search(loss_at: Callable[[torch.Tensor], torch.Tensor], decrement) -> torch.Tensor:
    """Per-layer backtracking (Armijo): halve the step of each layer whose loss did not drop
    enough; pure Newton steps can overshoot on nearly separable data."""
    t = torch.ones_like(decrement)
    start = loss_at(torch.zeros_like(decrement))
    for _ in range(_MAX_HALVINGS):
        ok = loss_at(t) <= start - _ARMIJO * t * decrement
        if ok.all():
            break
        t = torch.where(ok, t, t / 2)
    return t


def _data_loss(eta, y) -> Float[torch.Tensor, " layer"]:
    return (torch.nn.functional.softplus(eta) - y * eta).sum(-1)
