"""Edge attribution patching of one target/source pair at the read-out position.

Edge patching (the definition the scores estimate): in the target round's forward, the input
of receiver ``v`` at the read-out is

    input_v = (its unpatched sum) + sum_u c[u, v] * (a_u(source) - a_u(current))

where ``a_u(source)`` is sender ``u``'s output at the source round's read-out (a fixed
recording) and ``a_u(current)`` its output in this forward. ``c = 1`` on an edge carries the
source's activation along it, ``c = 0`` the current run's (ACDC / EAP's edge patching, as in
Syed et al. 2023 and Hanna et al. 2024). Every edge at 1 hands every receiver, the logits
included, the source's outputs: the source round's value exactly; none gives the target's.

EAP scores an edge by the first-order change, ``(a_u(source) - a_u(target)) . dm/d input_v``.
EAP-IG averages ``dm/d input_v`` over ``steps`` forwards with every edge at ``alpha = k /
steps`` (k = 0 .. steps-1: a left Riemann sum along the straight path from the target to the
full patch, so that one step is EAP). The earlier positions keep the target round's keys and
values (the round pairs share the target's prefix, which is computed once and cached).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from jaxtyping import Float, Int
from transformer_lens import HookedTransformer
from transformer_lens.hook_points import HookPoint

from interp.circuits.graph import Graph
from interp.patching.core import final_logits, logit_gap, record, shared_sequence
from interp.patching.exact import expanded_prefix

Letters = int | tuple[int, ...]


def _sender_hooks(n_layers: int, post_norm: bool = False) -> list[str]:
    hooks = ["blocks.0.hook_resid_pre"]
    for layer in range(n_layers):
        hooks.append(f"blocks.{layer}.attn.hook_result")
        if post_norm:  # the scale of the attention output's post-norm (graph.py)
            hooks.append(f"blocks.{layer}.ln1_post.hook_scale")
        hooks.append(f"blocks.{layer}.hook_mlp_out")
    return hooks


def _post_norm(model: HookedTransformer) -> bool:
    return bool(model.cfg.use_normalization_before_and_after)


def _head_outputs(
    model: HookedTransformer,
    layer: int,
    result: Float[torch.Tensor, "*batch head d_model"],
    scale: Float[torch.Tensor, "*batch 1"],
) -> Float[torch.Tensor, "*batch head d_model"]:
    """The heads' shares of a post-norm attention output: ``ln1_post`` applied to each head's
    result with the scale of their sum (TransformerLens' RMSNorm: ``x / scale * w``)."""
    ln = model.blocks[layer].ln1_post
    return (result / scale[..., None, :]).to(result.dtype) * ln.w


@dataclass
class EdgePair:
    """One target/source pair, recorded once, patched many times (model flags from
    :func:`interp.circuits.graph.split_inputs` must be on)."""

    model: HookedTransformer
    graph: Graph
    target_start: Float[torch.Tensor, " d_model"]  # resid_pre of block 0 at the read-out
    target_out: Float[torch.Tensor, "sender d_model"]
    source_out: Float[torch.Tensor, "sender d_model"]
    kv: object  # the target's prefix cache (TransformerLensKeyValueCache)
    prefix: int
    good: Letters
    bad: Letters
    target_value: float
    source_value: float

    @classmethod
    def record(
        cls,
        model: HookedTransformer,
        graph: Graph,
        target: Int[torch.Tensor, " pos_t"],
        source: Int[torch.Tensor, " pos_s"],
        good: tuple[Letters, Letters],
        bad: tuple[Letters, Letters],
    ) -> EdgePair:
        """``good``/``bad``: (target round's, source round's) option tokens."""
        hooks = _sender_hooks(graph.n_layers, _post_norm(model))
        lt, ls = len(target), len(source)
        seq = shared_sequence(target, source)
        if seq is not None and len(seq) == ls:
            rec = record(model, seq, hooks, [lt - 1, ls - 1], [lt - 1, ls - 1])
            t_out, s_out = _senders(model, rec, hooks, lt - 1), _senders(model, rec, hooks, ls - 1)
            t_logits, s_logits, kv = rec.logits[0], rec.logits[-1], rec.kv
        else:  # not rounds of one transcript: two forwards
            t_rec = record(model, target, hooks, [lt - 1], [lt - 1])
            s_rec = record(model, source, hooks, [ls - 1], [ls - 1])
            t_out = _senders(model, t_rec, hooks, lt - 1)
            s_out = _senders(model, s_rec, hooks, ls - 1)
            t_logits, s_logits, kv = t_rec.logits[0], s_rec.logits[0], t_rec.kv
        return cls(
            model=model,
            graph=graph,
            target_start=t_out[0],
            target_out=t_out,
            source_out=s_out,
            kv=kv,
            prefix=lt - 1,
            good=good[0],
            bad=bad[0],
            target_value=float(logit_gap(t_logits.double(), good[0], bad[0])),
            source_value=float(logit_gap(s_logits.double(), good[1], bad[1])),
        )

    @property
    def delta(self) -> Float[torch.Tensor, "sender d_model"]:
        """a_u(source) - a_u(target) at the read-out."""
        return self.source_out - self.target_out

    def _forward(
        self, coeffs: Float[torch.Tensor, "batch sender receiver"], grads: list | None = None
    ) -> Float[torch.Tensor, " batch"]:
        model, g = self.model, self.graph
        batch = coeffs.shape[0]
        coeffs = coeffs.to(self.source_out.dtype)
        current: list[torch.Tensor] = []  # sender outputs of this forward, [batch, k, d]

        def patch(x: torch.Tensor, first: int, n: int) -> torch.Tensor:
            cur = torch.cat(current, 1)
            diff = self.source_out[None, : cur.shape[1]] - cur
            c = coeffs[:, : cur.shape[1], first : first + n]
            return torch.einsum("bsd,bsn->bnd", diff, c)

        def start(x: torch.Tensor, hook: HookPoint) -> torch.Tensor:
            if grads is not None:
                x = x.detach().clone().requires_grad_(True)
            current.append(x[:, -1:])
            return x

        def sender(x: torch.Tensor, hook: HookPoint) -> None:
            current.append(x[:, -1] if x.ndim == 4 else x[:, -1:])

        def post_norm(layer: int, x: torch.Tensor, hook: HookPoint) -> None:
            # The heads' results (the last senders appended) as the residual stream gets them.
            current[-1] = _head_outputs(model, layer, current[-1], x[:, -1])

        def bind_norm(layer: int):
            return lambda x, hook: post_norm(layer, x, hook)

        def receiver(first: int, n: int, x: torch.Tensor, hook: HookPoint) -> torch.Tensor:
            p = patch(x, first, n)
            x = x + (p[:, None] if x.ndim == 4 else p)
            if grads is not None:
                grads.append((first, x))
            return x

        def bind(first: int, n: int):
            return lambda x, hook: receiver(first, n, x, hook)

        fwd = [("blocks.0.hook_resid_pre", start)]
        for layer in range(g.n_layers):
            b = f"blocks.{layer}"
            fwd += [
                (f"{b}.hook_q_input", bind(g.q_receiver(layer), g.n_heads)),
                (f"{b}.hook_k_input", bind(g.k_receiver(layer), g.n_kv_heads)),
                (f"{b}.hook_v_input", bind(g.v_receiver(layer), g.n_kv_heads)),
                (f"{b}.attn.hook_result", sender),
                *([(f"{b}.ln1_post.hook_scale", bind_norm(layer))] if _post_norm(model) else []),
                (f"{b}.hook_mlp_in", bind(g.mlp_receiver(layer), 1)),
                (f"{b}.hook_mlp_out", sender),
            ]
        last = f"blocks.{g.n_layers - 1}.hook_resid_post"
        fwd.append((last, bind(g.logits_receiver, 1)))
        resid = self.target_start[None, None].expand(batch, 1, -1).contiguous()
        cache = expanded_prefix(self.kv, self.prefix, batch) if self.prefix > 0 else None
        with model.hooks(fwd_hooks=fwd):
            out = model(resid, start_at_layer=0, past_kv_cache=cache, stop_at_layer=g.n_layers)
            logits = final_logits(model, out[:, -1])
        return logit_gap(logits, self.good, self.bad)

    def values(
        self, coeffs: Float[torch.Tensor, "n sender receiver"], batch_size: int = 32
    ) -> Float[np.ndarray, " n"]:
        """The target's value with each row's edge coefficients (exact edge patching)."""
        out = []
        with torch.no_grad():
            for i in range(0, coeffs.shape[0], batch_size):
                out.append(self._forward(coeffs[i : i + batch_size]).double().cpu())
        return torch.cat(out).numpy() if out else np.zeros(0)

    def gradients(self, alphas: Sequence[float]) -> Float[torch.Tensor, "receiver d_model"]:
        """dm/d input_v at the read-out, averaged over forwards with every edge at alpha."""
        mask = self.graph.torch_mask(self.source_out.device).to(self.source_out.dtype)
        coeffs = torch.tensor(list(alphas), dtype=mask.dtype, device=mask.device)
        coeffs = coeffs[:, None, None] * mask[None]
        grads: list[tuple[int, torch.Tensor]] = []
        with torch.enable_grad():
            value = self._forward(coeffs, grads).sum()
            found = torch.autograd.grad(value, [x for _, x in grads])
        out = torch.zeros(self.graph.n_receivers, self.source_out.shape[1], dtype=torch.float64)
        for (first, _), d in zip(grads, found, strict=True):
            d = d[:, -1].double().cpu().mean(0)  # [n, d] or [d]
            d = d if d.ndim == 2 else d[None]
            out[first : first + d.shape[0]] = d
        return out

    def scores(self, steps: int = 1) -> Float[np.ndarray, "sender receiver"]:
        """EAP (steps=1) or EAP-IG scores of every edge; 0 where no edge exists."""
        grad = self.gradients([k / steps for k in range(steps)])
        score = self.delta.double().cpu() @ grad.T
        return score.numpy() * self.graph.mask()


def _senders(
    model: HookedTransformer, rec, hooks: list[str], pos: int
) -> Float[torch.Tensor, "sender d_model"]:
    parts = []
    for hook in hooks:
        act = rec.at(hook, [pos])[0]
        if hook.endswith("ln1_post.hook_scale"):  # follows its layer's hook_result
            parts[-1] = _head_outputs(model, int(hook.split(".")[1]), parts[-1], act)
            continue
        parts.append(act if act.ndim == 2 else act[None])
    return torch.cat(parts, 0)
