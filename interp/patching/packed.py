"""Exact patching of several examples at once: their variants share forward passes.

:func:`interp.patching.exact.patch_pair` batches one example's variants; an example has only
a few dozen, and each batch row re-processes the example's whole cached prefix (its keys are
concatenated, rotated and repeated per row). Here the variants of several examples are packed
into the same forwards:

- Each example is recorded once, as in :func:`~interp.patching.exact.patch_pair`
  (:func:`interp.patching.core.record_pair`): the donor's activations, both read-outs, the
  recipient's KV cache and its unpatched ``resid_pre`` at the patched positions.
- Every example's prefix keys are rotated once per layer (their positions do not depend on
  the variant) and held, with the values, in one table per layer, right-padded to the longest
  prefix of the group: ``[example, kv_head, position, d_head]``.
- A batch row is one (example, variant). Rows are ordered layer-major across the examples, so
  a batch holds variants of one or two layers; each row starts at its own variant's layer from
  its example's recorded ``resid_pre`` (the layers below are unpatched, hence the recording's).
- Attention of a row's last ``k`` tokens: scores against its example's prefix keys (gathered
  from the table; positions past the row's own prefix masked) and against its own new keys
  (causal), one softmax over both, and the values likewise. The rotary position of a row's
  new token ``i`` is its own prefix length + ``i``; no position shifts, nothing attends to
  padding (its probability is exactly 0).

The blocks are TransformerLens' own modules (``ln1``, the Q/K/V projections, the MLP, ``ln2``)
and their hook points ``hook_resid_pre``, ``attn.hook_z``, ``hook_attn_out``,
``hook_resid_mid``, ``hook_mlp_out`` and ``hook_resid_post`` are called where TransformerLens
calls them, so the patch hooks (residual stream, attention/MLP output, one head's ``z``, SAE
latents at the SAE's hook) are the same as in the per-example path. Only the attention
arithmetic is written here, for the block kinds :mod:`interp.model.fastpath` supports
(global causal rotary attention, MHA or GQA); for any other model :func:`patch_examples` runs
:func:`~interp.patching.exact.patch_pair` per example.

Results equal the per-example path's up to float rounding (the attention sums split at the
prefix, other matmul shapes); tests hold them within 1e-5. The per-example path itself moves
by ~1e-6 with its batch size (a batch starts at its lowest layer, recomputing the layers below
from the cache).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from transformer_lens import HookedTransformer
from transformer_lens.hook_points import HookPoint
from transformer_lens.utils import get_act_name

from interp.errors import InterpError
from interp.model.fastpath import FastBlock
from interp.patching.core import (
    SAE_COMPONENT,
    Recording,
    Variant,
    check_positions,
    final_logits,
    record,
    shared_sequence,
    tail_positions,
)
from interp.patching.exact import patch_pair

if TYPE_CHECKING:
    from interp.patching.sae_latents import FeatureSite

# Examples whose variants share forwards, by default: enough that a batch of 32 rows holds one
# layer's variants of many examples; the prefix tables cost ~3.5 MB per example on SmolLM2-135M
# (150-token prompts), see prefix_table_bytes.
EXAMPLE_BATCH = 16

# What a caller keeps of one example's patched logits (rows in variant order): the logits
# themselves by default; the pipeline keeps only its logit difference, so that a group never
# holds [examples x variants x d_vocab].
Readout = Callable[[int, torch.Tensor], torch.Tensor]


@dataclass
class ExamplePatch:
    """One example's unpatched read-outs and what ``readout`` kept of its patched ones."""

    recipient_logits: Float[torch.Tensor, " d_vocab"]
    donor_logits: Float[torch.Tensor, " d_vocab"]
    patched: torch.Tensor  # readout(example, logits [variant, d_vocab]), variants in order


def packable(model: HookedTransformer) -> bool:
    """True when every block runs the attention this module writes out (the block kinds of
    :mod:`interp.model.fastpath`, with no option that changes their forward)."""
    cfg = model.cfg
    if cfg.positional_embedding_type != "rotary" or cfg.rotary_dim is None:
        return False
    with torch.no_grad():  # fast_path_ready declines under autograd
        return all(isinstance(b, FastBlock) and b.fast_path_ready() for b in model.blocks)


def prefix_table_bytes(model: HookedTransformer, n_examples: int, longest_prefix: int) -> int:
    """Bytes of the rotated prefix keys and values a group of ``n_examples`` holds (every
    layer; the largest memory this path adds over the per-example one)."""
    cfg = model.cfg
    n_kv = cfg.n_key_value_heads or cfg.n_heads
    per = n_examples * n_kv * longest_prefix * cfg.d_head * cfg.n_layers * 2
    return per * torch.finfo(cfg.dtype).bits // 8


def patch_examples(
    model: HookedTransformer,
    pairs: Sequence[tuple[torch.Tensor, torch.Tensor]],  # (recipient, donor) token ids
    variants: Sequence[Variant],
    *,
    n_positions: int = 1,
    batch_size: int = 32,
    site: FeatureSite | None = None,
    readout: Readout | None = None,
) -> list[ExamplePatch]:
    """:func:`~interp.patching.exact.patch_pair` for each (recipient, donor) of ``pairs``,
    every pair's variants packed into shared forwards of ``batch_size`` rows.

    ``readout(i, logits)`` reduces pair ``i``'s patched logits (``[n, d_vocab]``, some of its
    variants, in order) as they come; the results are concatenated per pair. Models whose
    blocks this module does not write out run :func:`patch_pair` per pair.
    """
    if batch_size < 1:
        raise InterpError(f"batch size must be at least 1 (got {batch_size})")
    keep = readout or (lambda _i, logits: logits)
    if not pairs:
        return []
    ks = [check_positions(n_positions, len(r), len(d)) for r, d in pairs]
    if not variants or not packable(model):
        out = []
        for i, (recipient, donor) in enumerate(pairs):
            res = patch_pair(
                model,
                recipient,
                donor,
                variants,
                n_positions=n_positions,
                batch_size=batch_size,
                site=site,
            )
            kept = keep(i, res.patched_logits)
            out.append(ExamplePatch(res.recipient_logits, res.donor_logits, kept))
        return out
    k = ks[0]
    records = [_record_pair(model, r, d, variants, k) for r, d in pairs]
    # The unpatched read-outs, unembedded like the patched rows (see _unembed).
    final = get_act_name("resid_post", model.cfg.n_layers - 1)
    reads = [rec.at(final, [len(r) - 1]) for (rec, _), (r, _) in zip(records, pairs, strict=True)]
    reads += [don.at(final, [len(d) - 1]) for (_, don), (_, d) in zip(records, pairs, strict=True)]
    with torch.no_grad():
        unpatched = _unembed(model, torch.cat(reads))
    prefixes = [len(r) - k for r, _ in pairs]
    lowest = min(v.layer for v in variants)
    tables = _prefix_tables(model, [rec for rec, _ in records], prefixes, lowest)
    donor_acts = [
        {v.hook: don.at(v.hook, tail_positions(len(d), k)) for v in variants}
        for (_, don), (_, d) in zip(records, pairs, strict=True)
    ]
    # Rows layer-major across the examples: (variant, example); a batch spans few layers.
    order = sorted(range(len(variants)), key=lambda i: variants[i])
    rows = [(e, i) for i in order for e in range(len(pairs))]
    pieces: list[list[tuple[int, torch.Tensor]]] = [[] for _ in pairs]
    for start in range(0, len(rows), batch_size):
        batch = rows[start : start + batch_size]
        logits = _packed_tail(
            model, batch, variants, records, prefixes, pairs, tables, donor_acts, k, site
        )
        for e in sorted({e for e, _ in batch}):
            at = [j for j, (e2, _) in enumerate(batch) if e2 == e]
            kept = keep(e, logits[at])
            pieces[e].extend(zip([batch[j][1] for j in at], kept, strict=True))
    out = []
    for e in range(len(pairs)):
        pieces[e].sort(key=lambda p: p[0])
        patched = torch.stack([value for _, value in pieces[e]])
        out.append(ExamplePatch(unpatched[e], unpatched[len(pairs) + e], patched))
    return out


def _record_pair(
    model: HookedTransformer,
    recipient: torch.Tensor,
    donor: torch.Tensor,
    variants: Sequence[Variant],
    k: int,
) -> tuple[Recording, Recording]:
    """:func:`interp.patching.core.record_pair`, also keeping the last block's residual
    stream at both tails (the unpatched read-outs are unembedded here, as the patched are)."""
    final = get_act_name("resid_post", model.cfg.n_layers - 1)
    start_hooks = [get_act_name("resid_pre", v.layer) for v in variants] + [final]
    donor_hooks = [v.hook for v in variants] + [final]
    tail_r, tail_d = tail_positions(len(recipient), k), tail_positions(len(donor), k)
    reads = [len(recipient) - 1, len(donor) - 1]
    seq = shared_sequence(recipient, donor)
    if seq is not None:
        rec = record(model, seq, start_hooks + donor_hooks, tail_r + tail_d, reads)
        return rec, rec
    rec = record(model, recipient, start_hooks, tail_r, reads[:1])
    return rec, record(model, donor, donor_hooks, tail_d, reads[1:])


# BLAS multiplies a matrix by very few rows on another path than by many, which rounds
# differently (on this project's CPUs: 1-3 rows vs 4 or more); unembedding at least this many
# rows makes a row's logits independent of how many rows its batch has, so that patching the
# last layer's residual stream gives the source's read-out logits bit for bit.
_MIN_ROWS = 8


def _unembed(
    model: HookedTransformer, resid: Float[torch.Tensor, "n d_model"]
) -> Float[torch.Tensor, "n d_vocab"]:
    """:func:`interp.patching.core.final_logits` of at least ``_MIN_ROWS`` rows (the last
    one repeated), returning those of ``resid``."""
    n = resid.shape[0]
    if n < _MIN_ROWS:
        resid = torch.cat([resid, resid[-1:].expand(_MIN_ROWS - n, -1)])
    return final_logits(model, resid)[:n]


@dataclass
class _Tables:
    """Per layer: every example's rotated prefix keys and its values, right-padded with 0."""

    keys: dict[int, Float[torch.Tensor, "example kv_head pos d_head"]]
    values: dict[int, Float[torch.Tensor, "example kv_head pos d_head"]]
    longest: int


def _prefix_tables(
    model: HookedTransformer, records: list[Recording], prefixes: list[int], lowest: int
) -> _Tables:
    longest = max(prefixes)
    keys, values = {}, {}
    for layer in range(lowest, model.cfg.n_layers):
        attn = model.blocks[layer].attn
        entry_keys, entry_values = [], []
        for rec, p in zip(records, prefixes, strict=True):
            entry = rec.kv.entries[layer]
            k = _rotate(attn, entry.past_keys[:, :p], torch.arange(p)[None])[0]
            v = entry.past_values[0, :p]
            pad = (0, 0, 0, 0, 0, longest - p)  # [pos, kv_head, d_head]: pad pos at the end
            entry_keys.append(F.pad(k, pad))
            entry_values.append(F.pad(v, pad))
        keys[layer] = torch.stack(entry_keys).permute(0, 2, 1, 3).contiguous()
        values[layer] = torch.stack(entry_values).permute(0, 2, 1, 3).contiguous()
    return _Tables(keys, values, longest)


def _rotate(
    attn: torch.nn.Module,
    x: Float[torch.Tensor, "batch pos head d_head"],
    positions: Int[torch.Tensor, "batch pos"],
) -> Float[torch.Tensor, "batch pos head d_head"]:
    """TransformerLens' rotary embedding of ``x`` at ``positions`` (its tables, its rotation)."""
    rotary_dim = attn.cfg.rotary_dim
    x_rot, x_pass = x[..., :rotary_dim], x[..., rotary_dim:]
    positions = positions.to(attn.rotary_cos.device)
    cos = attn.rotary_cos[positions][:, :, None, :]
    sin = attn.rotary_sin[positions][:, :, None, :]
    rotated = x_rot * cos + attn.rotate_every_two(x_rot) * sin
    return torch.cat([rotated, x_pass], dim=-1)


def _packed_tail(
    model: HookedTransformer,
    batch: list[tuple[int, int]],
    variants: Sequence[Variant],
    records: list[tuple[Recording, Recording]],
    prefixes: list[int],
    pairs: Sequence[tuple[torch.Tensor, torch.Tensor]],
    tables: _Tables,
    donor_acts: list[dict[str, torch.Tensor]],
    k: int,
    site: FeatureSite | None,
) -> Float[torch.Tensor, "batch d_vocab"]:
    """The batch's rows from their lowest layer up; logits at each row's last position."""
    device = model.cfg.device
    layers = [variants[i].layer for _, i in batch]
    start = min(layers)
    examples = torch.tensor([e for e, _ in batch], device=device)
    lengths = torch.tensor([prefixes[e] for e, _ in batch], device=device)

    def recorded(layer: int, at: list[int]) -> torch.Tensor:
        name = get_act_name("resid_pre", layer)
        return torch.stack(
            [
                records[batch[j][0]][0].at(name, tail_positions(len(pairs[batch[j][0]][0]), k))
                for j in at
            ]
        )

    resid = recorded(start, list(range(len(batch))))
    # Positions of each row's new tokens, and the mask of which keys each query sees:
    # [row, query, prefix key] (the row's own prefix) and [query, new key] (causal).
    new_positions = lengths[:, None] + torch.arange(k, device=device)[None]
    prefix_mask = torch.arange(tables.longest, device=device)[None] < lengths[:, None]
    causal = torch.ones(k, k, dtype=torch.bool, device=device).tril()
    mask = torch.cat(
        [prefix_mask[:, None, :].expand(-1, k, -1), causal[None].expand(len(batch), -1, -1)],
        dim=-1,
    )[:, None]  # [row, 1, query, key]
    with torch.no_grad(), model.hooks(fwd_hooks=_patch_hooks(batch, variants, donor_acts, site)):
        for layer in range(start, model.cfg.n_layers):
            joining = [j for j, at in enumerate(layers) if at == layer and layer > start]
            if joining:  # rows whose variant is at this layer start here, unpatched below
                resid = resid.clone()
                resid[joining] = recorded(layer, joining).to(resid.dtype)
            resid = _block(model.blocks[layer], resid, examples, new_positions, mask, tables, layer)
        return _unembed(model, resid[:, -1])


def _block(
    block: torch.nn.Module,
    resid: Float[torch.Tensor, "batch k d_model"],
    examples: Int[torch.Tensor, " batch"],
    positions: Int[torch.Tensor, "batch k"],
    mask: torch.Tensor,
    tables: _Tables,
    layer: int,
) -> Float[torch.Tensor, "batch k d_model"]:
    """One pre-norm block, as TransformerLens runs it, with the packed attention."""
    resid = block.hook_resid_pre(resid)
    normed = block.ln1(resid)
    attn_out = block.hook_attn_out(
        _attention(block.attn, normed, examples, positions, mask, tables, layer)
    )
    resid_mid = block.hook_resid_mid(resid + attn_out)
    mlp_out = block.hook_mlp_out(block.mlp(block.ln2(resid_mid)))
    return block.hook_resid_post(resid_mid + mlp_out)


def _attention(
    attn: torch.nn.Module,
    x: Float[torch.Tensor, "batch k d_model"],
    examples: Int[torch.Tensor, " batch"],
    positions: Int[torch.Tensor, "batch k"],
    mask: torch.Tensor,
    tables: _Tables,
    layer: int,
) -> Float[torch.Tensor, "batch k d_model"]:
    """Global causal rotary attention of each row's new tokens over its example's prefix (the
    gathered table rows) and its own new tokens; heads grouped by their key/value head."""
    q, k, v = attn.calculate_qkv_matrices(x, x, x)  # [b, k, head, d]; k, v: kv heads
    q = _rotate(attn, q, positions)
    k = _rotate(attn, k, positions)
    b, n_new, n_heads, d_head = q.shape
    n_kv = k.shape[2]
    group = n_heads // n_kv  # query heads h = g * group + j read kv head g (repeat_interleave)
    q = q.permute(0, 2, 1, 3).reshape(b, n_kv, group * n_new, d_head)
    prefix_k = tables.keys[layer].index_select(0, examples)  # [b, kv, pos, d]
    prefix_v = tables.values[layer].index_select(0, examples)
    k = k.permute(0, 2, 1, 3)  # [b, kv, k, d]
    v = v.permute(0, 2, 1, 3)
    scores = (
        torch.cat([q @ prefix_k.transpose(-1, -2), q @ k.transpose(-1, -2)], dim=-1)
        / attn.attn_scale
    )  # [b, kv, group * k, pos + k]
    scores = scores.view(b, n_heads, n_new, -1)
    scores = torch.where(mask, scores, attn.IGNORE.to(scores.device))
    pattern = F.softmax(scores, dim=-1).view(b, n_kv, group * n_new, -1)
    longest = prefix_k.shape[2]
    z = pattern[..., :longest] @ prefix_v + pattern[..., longest:] @ v  # [b, kv, g * k, d]
    z = attn.hook_z(z.view(b, n_heads, n_new, d_head).permute(0, 2, 1, 3))
    w = attn.W_O.permute(2, 0, 1).reshape(attn.W_O.shape[2], -1)
    return F.linear(z.reshape(b, n_new, n_heads * d_head), w, attn.b_O)


# --- patch hooks with a donor value per row ----------------------------------------------------


Hook = tuple[str, Callable[..., torch.Tensor | None]]


def _patch_hooks(
    batch: list[tuple[int, int]],
    variants: Sequence[Variant],
    donor_acts: list[dict[str, torch.Tensor]],
    site: FeatureSite | None,
) -> list[Hook]:
    """One hook per hook name; each overwrites the last positions of its own rows with the
    row's own example's donor activation (one head's slice for ``heads``; for ``sae`` the
    site's latent swap)."""
    by_hook: dict[str, list[int]] = {}
    for j, (_, i) in enumerate(batch):
        by_hook.setdefault(variants[i].hook, []).append(j)
    hooks: list[Hook] = []
    for name, at in by_hook.items():
        value = torch.stack([donor_acts[batch[j][0]][name] for j in at])  # [n, k, ...]
        heads = [variants[batch[j][1]].head for j in at]
        if variants[batch[at[0]][1]].component == SAE_COMPONENT:
            if site is None:
                raise ValueError("sae variants need the FeatureSite they patch")
            hooks.append((name, site.hook_fn(heads, at, value)))
            continue
        rows = torch.tensor(at)
        head_index = torch.tensor(heads) if heads[0] >= 0 else None
        hooks.append((name, _overwriter(rows, head_index, value)))
    return hooks


def _overwriter(
    rows: Int[torch.Tensor, " n"], heads: Int[torch.Tensor, " n"] | None, value: torch.Tensor
) -> Callable[[torch.Tensor, HookPoint], torch.Tensor]:
    def overwrite(act: torch.Tensor, hook: HookPoint) -> torch.Tensor:
        """``act[rows, -k:] = value`` ([n, k, d]); for z only each row's own head."""
        n_new = value.shape[1]
        act = act.clone()
        at = rows.to(act.device)
        val = value.to(device=act.device, dtype=act.dtype)
        if heads is None:
            act[at, -n_new:] = val
        else:
            h = heads.to(act.device)
            # Advanced indices split by a slice put their dimension first: [n, k, d_head].
            act[at, -n_new:, h] = val[torch.arange(len(h), device=act.device), :, h]
        return act

    return overwrite
