"""Store weights once in the memory layout TransformerLens' forward asks for.

TransformerLens 3.9 matches Hugging Face numerics by re-laying-out weights on every forward:
``W.T.contiguous()`` in the MLP and unembed, ``rearrange(W_Q, "h m d -> (h d) m")`` before
the Q/K/V projections, ``rearrange(W_O, "h d m -> m (h d)").contiguous()`` after attention.
During generation that copies every weight of the model for every new token (~65% of the
time when profiled on the embedded model). If each parameter's *storage* already has the
layout those expressions produce, ``.contiguous()`` returns the tensor itself and
``rearrange`` returns a view: no copy, identical values, identical numerics (the same
contiguous matrix reaches ``F.linear`` as before). Shapes, names and hooks are untouched;
``model.to(...)`` keeps strides.
"""

from __future__ import annotations

import torch
from transformer_lens import HookedTransformer

# parameter name suffix -> permutation of the storage order that the forward reads
# contiguously. ``order`` lists the tensor's dims from outermost to innermost in memory.
_STORAGE_ORDER: dict[str, tuple[int, ...]] = {
    # [head, d_model, d_head] read as (head d_head) x d_model
    "attn.W_Q": (0, 2, 1),
    "attn._W_K": (0, 2, 1),
    "attn._W_V": (0, 2, 1),
    "attn.W_K": (0, 2, 1),
    "attn.W_V": (0, 2, 1),
    # [head, d_head, d_model] read as d_model x (head d_head)
    "attn.W_O": (2, 0, 1),
    # [d_in, d_out] read transposed, like nn.Linear's [d_out, d_in]
    "mlp.W_in": (1, 0),
    "mlp.W_gate": (1, 0),
    "mlp.W_out": (1, 0),
    "unembed.W_U": (1, 0),
}


def _with_storage_order(t: torch.Tensor, order: tuple[int, ...]) -> torch.Tensor:
    """Same shape and values as ``t``, memory laid out so ``t.permute(order)`` is contiguous."""
    inverse = [order.index(i) for i in range(len(order))]
    return t.permute(order).contiguous().permute(inverse)


def relayout_weights(model: HookedTransformer) -> int:
    """Re-lay the model's weights in place; returns the number of parameters changed.

    Args:
        model: A loaded model; its parameters' storage is replaced in place (values and
            shapes unchanged).

    Returns:
        How many parameters were re-laid (0 when all already had the wanted layout).
    """
    changed = 0
    with torch.no_grad():
        for name, param in model.named_parameters():
            order = _order_for(name, param)
            if order is not None and not param.data.permute(order).is_contiguous():
                param.data = _with_storage_order(param.data, order)
                changed += 1
    return changed


def is_relaid(model: HookedTransformer) -> bool:
    """True when every weight the forward re-lays already has the wanted layout.

    Args:
        model: A loaded model.

    Returns:
        True when :func:`relayout_weights` would change nothing.
    """
    return all(
        param.data.permute(order).is_contiguous()
        for name, param in model.named_parameters()
        if (order := _order_for(name, param)) is not None
    )


def to_storage(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Contiguous tensors in the forward's layout for saving (safetensors stores only
    contiguous tensors), plus metadata naming each permuted key's order.

    Args:
        state: A state dict (parameter name to tensor), as ``model.state_dict()`` gives it.

    Returns:
        ``(tensors, orders)``: contiguous detached tensors (permuted keys stored in the
        forward's order) and ``{key: "i,j,..."}`` for each permuted key, for the safetensors
        metadata.
    """
    tensors, orders = {}, {}
    for key, t in state.items():
        order = _order_for(key, t)
        if order is None:
            tensors[key] = t.detach().contiguous().clone()
        else:
            tensors[key] = t.detach().permute(order).contiguous()
            orders[key] = ",".join(map(str, order))
    return tensors, orders


def from_storage(
    tensors: dict[str, torch.Tensor], orders: dict[str, str]
) -> dict[str, torch.Tensor]:
    """Inverse of :func:`to_storage`: views with the original shapes, no copies.

    Args:
        tensors: Tensors as :func:`to_storage` wrote them (read back from safetensors).
        orders: The ``{key: "i,j,..."}`` metadata :func:`to_storage` returned.

    Returns:
        The state dict with every tensor in its original shape (permuted views).
    """
    state = {}
    for key, t in tensors.items():
        if key in orders:
            order = [int(i) for i in orders[key].split(",")]
            t = t.permute([order.index(i) for i in range(len(order))])
        state[key] = t
    return state


def _order_for(name: str, t: torch.Tensor) -> tuple[int, ...] | None:
    for suffix, order in _STORAGE_ORDER.items():
        if name.endswith(suffix) and t.dim() == len(order):
            return order
    return None
