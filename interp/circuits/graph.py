"""The computational graph of a circuit: senders (outputs), receivers (inputs), and edges.

Senders, in forward order: ``embed`` (the residual stream entering block 0, i.e. token and
positional embeddings), then per layer ``L``: every head ``a{L}.h{h}`` (its slice of the
attention output, TransformerLens' ``hook_result``) and the MLP ``m{L}``. Receivers: per layer
each head's query input ``a{L}.h{h}.q`` and each key/value head's key and value inputs
(``a{L}.g{g}.k`` / ``.v``, TransformerLens' ``use_split_qkv_input``; grouped-query models have
fewer key/value heads than query heads), the MLP input ``m{L}.in``, and ``logits`` (the
residual stream entering the final norm). An edge joins every sender to every receiver it
feeds, i.e. every sender that writes to the residual stream before the receiver reads it.

A receiver's input is the sum of its senders' outputs plus constants (attention output
biases), so patching an edge means replacing one term of that sum. In a model with norms after
each sublayer (Gemma 2/3: ``ln1_post``, ``ln2_post``) the MLP's output is taken after its norm
(TransformerLens' ``hook_mlp_out``) and a head's output is its ``hook_result`` scaled the way
the attention output's post-norm scales their sum (its weight over the sum's RMS in that
forward), so that the heads' outputs still add up to what the residual stream receives.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from jaxtyping import Bool
from transformer_lens import HookedTransformer

from interp.errors import InterpError


@dataclass(frozen=True)
class Graph:
    """Node names and the edge mask of one model."""

    n_layers: int
    n_heads: int
    n_kv_heads: int

    @classmethod
    def of(cls, model: HookedTransformer) -> Graph:
        cfg = model.cfg
        if cfg.parallel_attn_mlp or cfg.attn_only:
            raise InterpError(
                "interp circuit needs sequential attention + MLP blocks (this model has "
                "parallel or attention-only blocks)"
            )
        if cfg.use_normalization_before_and_after and _has_attn_bias(model):
            # A head's share of the post-norm output is its result scaled as the sum is
            # (interp.circuits.eap); an output bias would be a share that no head owns.
            raise InterpError(
                "interp circuit: post-sublayer norms are supported only without attention "
                "output biases (this model has them)"
            )
        kv = cfg.n_key_value_heads if cfg.n_key_value_heads is not None else cfg.n_heads
        if cfg.ungroup_grouped_query_attention:
            kv = cfg.n_heads
        return cls(cfg.n_layers, cfg.n_heads, kv)

    # --- senders ------------------------------------------------------------------------------
    @property
    def n_senders(self) -> int:
        return 1 + self.n_layers * (self.n_heads + 1)

    def head_sender(self, layer: int, head: int) -> int:
        return 1 + layer * (self.n_heads + 1) + head

    def mlp_sender(self, layer: int) -> int:
        return 1 + layer * (self.n_heads + 1) + self.n_heads

    def senders(self) -> list[tuple[str, int, str, int]]:
        """(name, layer, kind, head) per sender; embed has layer -1."""
        out = [("embed", -1, "embed", -1)]
        for layer in range(self.n_layers):
            out += [(f"a{layer}.h{h}", layer, "head", h) for h in range(self.n_heads)]
            out.append((f"m{layer}", layer, "mlp", -1))
        return out

    def sender_stage(self) -> np.ndarray:
        """Forward order of each sender: embed 0, heads of layer L 2L+1, MLP L 2L+2."""
        stage = [0]
        for layer in range(self.n_layers):
            stage += [2 * layer + 1] * self.n_heads + [2 * layer + 2]
        return np.array(stage)

    # --- receivers ----------------------------------------------------------------------------
    @property
    def per_layer(self) -> int:
        return self.n_heads + 2 * self.n_kv_heads + 1

    @property
    def n_receivers(self) -> int:
        return self.n_layers * self.per_layer + 1

    def q_receiver(self, layer: int) -> int:
        return layer * self.per_layer

    def k_receiver(self, layer: int) -> int:
        return layer * self.per_layer + self.n_heads

    def v_receiver(self, layer: int) -> int:
        return layer * self.per_layer + self.n_heads + self.n_kv_heads

    def mlp_receiver(self, layer: int) -> int:
        return layer * self.per_layer + self.n_heads + 2 * self.n_kv_heads

    @property
    def logits_receiver(self) -> int:
        return self.n_receivers - 1

    def receivers(self) -> list[tuple[str, int, str, int]]:
        """(name, layer, kind, head) per receiver; logits has layer n_layers."""
        out = []
        for layer in range(self.n_layers):
            out += [(f"a{layer}.h{h}.q", layer, "q", h) for h in range(self.n_heads)]
            out += [(f"a{layer}.g{g}.k", layer, "k", g) for g in range(self.n_kv_heads)]
            out += [(f"a{layer}.g{g}.v", layer, "v", g) for g in range(self.n_kv_heads)]
            out.append((f"m{layer}.in", layer, "mlp_in", -1))
        out.append(("logits", self.n_layers, "logits", -1))
        return out

    def receiver_stage(self) -> np.ndarray:
        stage = []
        for layer in range(self.n_layers):
            stage += [2 * layer + 1] * (self.n_heads + 2 * self.n_kv_heads) + [2 * layer + 2]
        return np.array([*stage, 2 * self.n_layers + 1])

    def mask(self) -> Bool[np.ndarray, "sender receiver"]:
        """True where the sender feeds the receiver (written before it is read)."""
        return self.sender_stage()[:, None] < self.receiver_stage()[None, :]

    def edges(self) -> pd.DataFrame:
        """One row per edge, in (sender, receiver) order: indices and names."""
        s, r = np.nonzero(self.mask())
        senders, receivers = self.senders(), self.receivers()
        return pd.DataFrame(
            {
                "sender_index": s.astype(np.int64),
                "receiver_index": r.astype(np.int64),
                "sender": [senders[i][0] for i in s],
                "receiver": [receivers[i][0] for i in r],
                "sender_layer": [senders[i][1] for i in s],
                "receiver_layer": [receivers[i][1] for i in r],
            }
        )

    def torch_mask(self, device: torch.device | str) -> torch.Tensor:
        return torch.from_numpy(self.mask()).to(device)


def _has_attn_bias(model: HookedTransformer) -> bool:
    return any(bool(block.attn.b_O.detach().abs().max() > 0) for block in model.blocks)


@contextlib.contextmanager
def split_inputs(model: HookedTransformer) -> Iterator[HookedTransformer]:
    """The model with per-head outputs, per-head q/k/v inputs and the MLP-input hook turned
    on, restored afterwards. The flags only add hook points (TransformerLens computes the same
    numbers; :mod:`interp.model.fastpath` falls back to TransformerLens' block while they are on),
    so the shared model is borrowed rather than copied."""
    cfg = model.cfg
    saved = (cfg.use_attn_result, cfg.use_split_qkv_input, cfg.use_hook_mlp_in)
    model.set_use_attn_result(True)
    model.set_use_split_qkv_input(True)
    model.set_use_hook_mlp_in(True)
    try:
        yield model
    finally:
        model.set_use_attn_result(saved[0])
        model.set_use_split_qkv_input(saved[1])
        model.set_use_hook_mlp_in(saved[2])
