"""Exact activation patching of one recipient/donor pair, batched over variants.

Why it is fast:

- Everything before the recipient's last ``k`` positions is the same in every variant, so it
  is computed once: one plain forward fills a TransformerLens KV cache, and each variant runs
  only the last ``k`` tokens on top of that cache (expanded along the batch, a view).
- Variants run side by side along the batch dimension, ``batch_size`` per forward. A batch
  whose variants all patch layer ``L`` or later starts at layer ``L`` (``start_at_layer``)
  from the recipient's unpatched ``resid_pre``: the layers below are unchanged.
- When donor and recipient are prefixes of one transcript, one forward records both
  (:func:`interp.patching.core.record_pair`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING

import torch
from jaxtyping import Float, Int
from transformer_lens import HookedTransformer
from transformer_lens.cache.key_value_cache import TransformerLensKeyValueCache
from transformer_lens.cache.key_value_cache_entry import TransformerLensKeyValueCacheEntry
from transformer_lens.hook_points import HookPoint
from transformer_lens.utils import get_act_name

from interp.errors import InterpError
from interp.patching.core import (
    SAE_COMPONENT,
    Recording,
    Variant,
    check_positions,
    final_logits,
    record_pair,
    tail_positions,
)

if TYPE_CHECKING:
    from interp.patching.sae_latents import FeatureSite

Hook = tuple[str, Callable[..., torch.Tensor | None]]


@dataclass
class PairPatch:
    """Exact patching of one recipient/donor pair: logits at the recipient's last position."""

    recipient_logits: Float[torch.Tensor, " d_vocab"]  # unpatched recipient
    donor_logits: Float[torch.Tensor, " d_vocab"]  # unpatched donor, at its last position
    patched_logits: Float[torch.Tensor, "variant d_vocab"]


def patch_pair(
    model: HookedTransformer,
    recipient: Int[torch.Tensor, " pos_r"],
    donor: Int[torch.Tensor, " pos_d"],
    variants: Sequence[Variant],
    *,
    n_positions: int = 1,
    batch_size: int = 32,
    reuse_prefix: bool = True,
    site: FeatureSite | None = None,
) -> PairPatch:
    """Patch each variant from ``donor`` into ``recipient`` at their last ``n_positions``.

    ``reuse_prefix=False`` runs every variant over the whole recipient prompt (the reference
    the KV-prefix path is tested against). ``site``: the SAE and latents of ``sae`` variants
    (feature patching, :mod:`interp.patching.sae_latents`).
    """
    k = check_positions(n_positions, len(recipient), len(donor))
    rec, don = record_pair(model, recipient, donor, variants, k)
    donor_acts = {v.hook: don.at(v.hook, tail_positions(len(donor), k)) for v in variants}
    patched = []
    for chunk in _chunks(sorted(range(len(variants)), key=lambda i: variants[i]), batch_size):
        batch = [variants[i] for i in chunk]
        if reuse_prefix:
            logits = _patched_tail(model, recipient, rec, donor_acts, batch, k, site)
        else:
            logits = _patched_full(model, recipient, donor_acts, batch, k, site)
        patched.extend(zip(chunk, logits, strict=True))
    patched.sort(key=lambda pair: pair[0])
    out = torch.stack([logits for _, logits in patched]) if patched else rec.logits[:0]
    return PairPatch(rec.logits[0], don.logits[-1], out)


def _chunks(items: Sequence[int], size: int) -> list[list[int]]:
    if size < 1:
        raise InterpError(f"batch size must be at least 1 (got {size})")
    return [list(items[i : i + size]) for i in range(0, len(items), size)]


def _patched_tail(
    model: HookedTransformer,
    recipient: Int[torch.Tensor, " pos"],
    rec: Recording,
    donor_acts: dict[str, torch.Tensor],
    batch: list[Variant],
    k: int,
    site: FeatureSite | None = None,
) -> Float[torch.Tensor, "batch d_vocab"]:
    """Run only the recipient's last ``k`` tokens on its cached prefix, from the lowest patched
    layer up, one variant per batch row."""
    start = min(v.layer for v in batch)
    prefix = len(recipient) - k
    resid = rec.at(get_act_name("resid_pre", start), tail_positions(len(recipient), k))
    resid = resid[None].expand(len(batch), -1, -1).contiguous()
    cache = expanded_prefix(rec.kv, prefix, len(batch)) if prefix > 0 else None
    # No attention mask: nothing is padded, and without one TransformerLens slices the rotary
    # tables and builds a plain causal mask instead of gathering per batch row.
    with torch.no_grad(), model.hooks(fwd_hooks=_patch_hooks(batch, donor_acts, site)):
        out = model(
            resid, start_at_layer=start, past_kv_cache=cache, stop_at_layer=model.cfg.n_layers
        )
        return final_logits(model, out[:, -1])


def _patched_full(
    model: HookedTransformer,
    recipient: Int[torch.Tensor, " pos"],
    donor_acts: dict[str, torch.Tensor],
    batch: list[Variant],
    k: int,
    site: FeatureSite | None = None,
) -> Float[torch.Tensor, "batch d_vocab"]:
    tokens = recipient[None].expand(len(batch), -1)
    with torch.no_grad(), model.hooks(fwd_hooks=_patch_hooks(batch, donor_acts, site)):
        out = model(tokens, stop_at_layer=model.cfg.n_layers)
        return final_logits(model, out[:, -1])


def expanded_prefix(
    kv: TransformerLensKeyValueCache, length: int, batch: int
) -> TransformerLensKeyValueCache:
    """The first ``length`` cached positions, repeated ``batch`` times (views), frozen so that
    the forward does not store the variants' own keys."""
    entries = [
        TransformerLensKeyValueCacheEntry(
            e.past_keys[:, :length].expand(batch, -1, -1, -1),
            e.past_values[:, :length].expand(batch, -1, -1, -1),
            frozen=True,
        )
        for e in kv.entries
    ]
    mask = kv.previous_attention_mask[:, :length].expand(batch, -1)
    return TransformerLensKeyValueCache(entries, mask, frozen=True)


def _patch_hooks(
    batch: Sequence[Variant],
    donor_acts: dict[str, torch.Tensor],
    site: FeatureSite | None = None,
) -> list[Hook]:
    """One hook per hook name; each overwrites the last positions of its own batch rows.
    Feature variants (component ``sae``) get the site's hook, which swaps latents instead."""
    rows: dict[str, list[int]] = {}
    heads: dict[str, list[int]] = {}
    features: dict[str, tuple[list[int], list[int]]] = {}  # hook -> (rows, latents)
    for i, v in enumerate(batch):
        if v.component == SAE_COMPONENT:
            at, latents = features.setdefault(v.hook, ([], []))
            at.append(i)
            latents.append(v.head)
            continue
        rows.setdefault(v.hook, []).append(i)
        heads.setdefault(v.hook, []).append(v.head)
    if features and site is None:
        raise ValueError("sae variants need the FeatureSite they patch")
    hooks: list[Hook] = [
        (hook, site.hook_fn(latents, at, donor_acts[hook]))
        for hook, (at, latents) in features.items()
    ]
    return hooks + [
        (
            hook,
            partial(
                _overwrite,
                rows=torch.tensor(rows[hook]),
                heads=torch.tensor(heads[hook]) if heads[hook][0] >= 0 else None,
                value=donor_acts[hook],
            ),
        )
        for hook in rows
    ]


def _overwrite(
    act: torch.Tensor,
    hook: HookPoint,
    *,
    rows: Int[torch.Tensor, " n"],
    heads: Int[torch.Tensor, " n"] | None,
    value: torch.Tensor,
) -> torch.Tensor:
    """``act[rows, -k:] = value`` ([batch, pos, d]); for z ([batch, pos, head, d_head]) only
    each row's own head."""
    k = value.shape[0]
    act = act.clone()
    rows = rows.to(act.device)
    value = value.to(act.dtype)
    if heads is None:
        act[rows, -k:] = value
    else:
        heads = heads.to(act.device)
        # Advanced indices split by a slice put their dimension first: [n, k, d_head].
        act[rows, -k:, heads] = value[:, heads].transpose(0, 1)
    return act
