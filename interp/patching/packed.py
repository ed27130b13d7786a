"""Exact patching of several examples at once: their variants share forward passes.

:func:`interp.patching.exact.patch_pair` batches one example's variants; an example has only
a few dozen, and each batch row re-processes the example's whole cached prefix (its keys are
concatenated, rotated and repeated per row). Here the variants of several examples are packed
into the same forwards:

- The examples of a group are recorded in one forward, their prompts right-padded side by
  side (causal attention: no real position sees the padding after it), as
  :func:`interp.patching.core.record_pair` records one: the donor's activations, both
  read-outs, the recipient's KV cache and its unpatched ``resid_pre`` at the patched positions.
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
- Only the logits a caller needs (``columns``: the answer tokens) are unembedded:
  TransformerLens' unembedding copies the whole ``W_U`` on every call.

The blocks are TransformerLens' own modules (``ln1``, the Q/K/V projections, the MLP, ``ln2``)
and their hook points ``hook_resid_pre``, ``attn.hook_z``, ``hook_attn_out``,
``hook_resid_mid``, ``hook_mlp_out`` and ``hook_resid_post`` are called where TransformerLens
calls them, so the patch hooks (residual stream, attention/MLP output, one head's ``z``, SAE
latents at the SAE's hook) are the same as in the per-example path. Only the attention
arithmetic is written here, for the block kinds :mod:`interp.model.fastpath` supports
(global causal rotary attention, MHA or GQA); for any other model :func:`patch_examples` runs
:func:`~interp.patching.exact.patch_pair` per example.

Results equal the per-example path's up to float rounding (the attention sums split at the
prefix, a row starting at its own layer instead of its batch's lowest, other matmul shapes):
~1e-6 on the tiny model, where the tests hold them within 1e-5; ~4e-5 in SmolLM2-135M's logit
differences (logits of ~20). The per-example path itself moves by ~1e-6 with its batch size
(a batch starts at its lowest layer, recomputing the layers below from the cache).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from transformer_lens import HookedTransformer
from transformer_lens.cache.key_value_cache import TransformerLensKeyValueCache
from transformer_lens.hook_points import HookPoint
from transformer_lens.utilities.activation_functions import apply_softcap
from transformer_lens.utils import get_act_name

from interp.errors import InterpError
from interp.model.fastpath import FastBlock
from interp.patching.core import (
    SAE_COMPONENT,
    Variant,
    check_positions,
    final_logits,
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


@dataclass
class ExamplePatch:
    """One example's read-outs: unpatched recipient and donor, and patched per variant (at
    its ``columns`` when given, else the whole vocabulary)."""

    recipient_logits: Float[torch.Tensor, " d_vocab"]
    donor_logits: Float[torch.Tensor, " d_vocab"]
    patched: Float[torch.Tensor, "variant d_vocab"]


def packable(model: HookedTransformer) -> bool:
    """True when every block runs the attention this module writes out (the block kinds of
    :mod:`interp.model.fastpath`, with no option that changes their forward)."""
    cfg = model.cfg
    if cfg.positional_embedding_type != "rotary" or cfg.rotary_dim is None:
        return False
    with torch.no_grad():  # fast_path_ready declines under autograd
        return all(isinstance(b, FastBlock) and b.fast_path_ready() for b in model.blocks)


def group_bytes(model: HookedTransformer, n_examples: int, longest: int) -> int:
    """Bytes a group of ``n_examples`` prompts of up to ``longest`` tokens holds at once: the
    recording forward's KV cache and the rotated prefix tables (keys and values of every
    layer, twice). The memory this path adds over one example at a time."""
    cfg = model.cfg
    n_kv = cfg.n_key_value_heads or cfg.n_heads
    per = 2 * n_examples * n_kv * longest * cfg.d_head * cfg.n_layers * 2
    return per * torch.finfo(cfg.dtype).bits // 8


def patch_examples(
    model: HookedTransformer,
    pairs: Sequence[tuple[torch.Tensor, torch.Tensor]],  # (recipient, donor) token ids
    variants: Sequence[Variant],
    *,
    n_positions: int = 1,
    batch_size: int = 32,
    site: FeatureSite | None = None,
    columns: Sequence[Sequence[int]] | None = None,
) -> list[ExamplePatch]:
    """:func:`~interp.patching.exact.patch_pair` for each (recipient, donor) of ``pairs``,
    every pair's variants packed into shared forwards of ``batch_size`` rows.

    ``columns[i]``: the token ids whose logits pair ``i`` needs (the unembedding then computes
    only those, in that order). Models whose blocks this module does not write out run
    :func:`patch_pair` per pair.
    """
    if batch_size < 1:
        raise InterpError(f"batch size must be at least 1 (got {batch_size})")
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
            logits = [res.recipient_logits, res.donor_logits, res.patched_logits]
            if columns is not None:
                logits = [x[..., list(columns[i])] for x in logits]
            out.append(ExamplePatch(*logits))
        return out
    k = ks[0]
    with torch.no_grad():
        recorded, tables = _record_group(model, pairs, variants, k)
    unembed = _Unembed(model, columns)
    examples = list(range(len(pairs)))
    # The unpatched read-outs, unembedded like the patched rows (see _Unembed).
    unpatched = unembed(torch.cat([r.reads for r in recorded]), [e for e in examples for _ in "rd"])
    # Rows layer-major across the examples: (variant, example); a batch spans few layers.
    order = sorted(range(len(variants)), key=lambda i: variants[i])
    rows = [(e, i) for i in order for e in examples]
    patched: list[list[torch.Tensor | None]] = [[None] * len(variants) for _ in pairs]
    for start in range(0, len(rows), batch_size):
        batch = rows[start : start + batch_size]
        resid = _packed_tail(model, batch, variants, recorded, tables, k, site)
        for (e, i), logits in zip(batch, unembed(resid, [e for e, _ in batch]), strict=True):
            patched[e][i] = logits
    return [
        ExamplePatch(unpatched[2 * e], unpatched[2 * e + 1], torch.stack(patched[e]))  # type: ignore[arg-type]
        for e in examples
    ]


@dataclass
class _Recorded:
    """What the group's recording forward kept of one example."""

    start: dict[str, Float[torch.Tensor, "k d_model"]]  # resid_pre at the recipient's tail
    donor: dict[str, torch.Tensor]  # each variant's activation at the donor's tail
    reads: Float[torch.Tensor, "2 d_model"]  # the last block's output at both read-outs


@dataclass
class _Tables:
    """Per layer: every example's rotated prefix keys and its values, right-padded with 0."""

    keys: dict[int, Float[torch.Tensor, "example kv_head pos d_head"]]
    values: dict[int, Float[torch.Tensor, "example kv_head pos d_head"]]
    lengths: list[int]  # each example's prefix length
    longest: int


def _record_group(
    model: HookedTransformer,
    pairs: Sequence[tuple[torch.Tensor, torch.Tensor]],
    variants: Sequence[Variant],
    k: int,
) -> tuple[list[_Recorded], _Tables]:
    """One forward over every example's prompts, right-padded side by side (a causal model's
    real positions never see the padding after them): as
    :func:`interp.patching.core.record_pair` per example (one sequence when one prompt is a
    prefix of the other, else two), the KV cache turned into the prefix tables."""
    final = get_act_name("resid_post", model.cfg.n_layers - 1)
    start_hooks = [*dict.fromkeys(get_act_name("resid_pre", v.layer) for v in variants), final]
    donor_hooks = [*dict.fromkeys(v.hook for v in variants), final]
    seqs: list[torch.Tensor] = []
    wanted: dict[str, list[tuple[int, list[int], int, str]]] = {}  # hook -> (seq, pos, e, role)
    recipient_seq = []
    for e, (recipient, donor) in enumerate(pairs):
        shared = shared_sequence(recipient, donor)
        roles = [(shared, "start", "donor")] if shared is not None else [
            (recipient, "start", None), (donor, None, "donor")
        ]  # fmt: skip
        for seq, *parts in roles:
            for role in parts:
                if role is None:
                    continue
                tail = tail_positions(len(recipient if role == "start" else donor), k)
                for hook in start_hooks if role == "start" else donor_hooks:
                    wanted.setdefault(hook, []).append((len(seqs), tail, e, role))
            if parts[0] == "start":
                recipient_seq.append(len(seqs))
            seqs.append(seq)
    longest_seq = max(len(q) for q in seqs)
    tokens = torch.zeros(len(seqs), longest_seq, dtype=torch.long, device=model.cfg.device)
    for i, seq in enumerate(seqs):
        tokens[i, : len(seq)] = seq
    kept: list[dict[str, dict[str, torch.Tensor]]] = [{"start": {}, "donor": {}} for _ in pairs]

    def save(act: torch.Tensor, hook: HookPoint) -> None:
        for seq, positions, e, role in wanted[hook.name]:
            kept[e][role][hook.name] = act[seq, positions].detach().clone()

    kv = TransformerLensKeyValueCache.init_cache(model.cfg, model.cfg.device, len(seqs))
    # A mask of ones, as core.record passes: the positions are 0, 1, 2, ... in every row.
    mask = torch.ones_like(tokens)
    with model.hooks(fwd_hooks=[(h, save) for h in wanted]):
        model(tokens, past_kv_cache=kv, attention_mask=mask, stop_at_layer=model.cfg.n_layers)
    recorded = [
        _Recorded(
            kept[e]["start"],
            kept[e]["donor"],
            torch.cat([kept[e]["start"][final][-1:], kept[e]["donor"][final][-1:]]),
        )
        for e in range(len(pairs))
    ]
    lengths = [len(r) - k for r, _ in pairs]
    longest = max(lengths)
    index = torch.tensor(recipient_seq, device=tokens.device)
    keys, values = {}, {}
    for layer in range(min(v.layer for v in variants), model.cfg.n_layers):
        entry = kv.entries[layer]
        positions = torch.arange(longest, device=tokens.device)[None]
        rotated = _rotate(model.blocks[layer].attn, entry.past_keys[index, :longest], positions)
        # Zero past each prefix: padding must be finite (it meets a probability of exactly 0).
        inside = (positions < torch.tensor(lengths, device=tokens.device)[:, None])[..., None, None]
        keys[layer] = (rotated * inside).permute(0, 2, 1, 3).contiguous()
        values[layer] = (entry.past_values[index, :longest] * inside).permute(0, 2, 1, 3)
        values[layer] = values[layer].contiguous()
    return recorded, _Tables(keys, values, lengths, longest)


class _Unembed:
    """The final norm and unembedding of a few residual vectors, at each example's columns.

    BLAS multiplies by very few rows on another path than by many, which rounds differently
    (here: 1-3 rows vs 4 or more); at least ``MIN_ROWS`` rows (the last repeated) make a
    row's logits independent of how many rows its batch has, so that patching the last
    layer's residual stream gives the source's read-out logits bit for bit.
    """

    MIN_ROWS = 8

    def __init__(self, model: HookedTransformer, columns: Sequence[Sequence[int]] | None) -> None:
        self.model = model
        self.columns = None
        if columns is not None:
            union = sorted({int(c) for cols in columns for c in cols})
            at = {c: j for j, c in enumerate(union)}
            self.columns = torch.tensor(union, device=model.cfg.device)
            self.picks = [torch.tensor([at[int(c)] for c in cols]) for cols in columns]
            w_u = model.unembed.W_U[:, self.columns]
            self.weight = w_u.T.contiguous()
            self.bias = model.unembed.b_U[self.columns]

    def __call__(
        self, resid: Float[torch.Tensor, "n d_model"], examples: list[int]
    ) -> list[torch.Tensor]:
        """Each row's logits at its example's columns (``examples[row]``)."""
        n = resid.shape[0]
        if n < self.MIN_ROWS:
            resid = torch.cat([resid, resid[-1:].expand(self.MIN_ROWS - n, -1)])
        with torch.no_grad():
            if self.columns is None:
                logits = final_logits(self.model, resid)[:n]
                return list(logits)
            model = self.model
            x = model.ln_final(resid) if model.cfg.normalization_type is not None else resid
            logits = F.linear(x, self.weight, self.bias)[:n]
            logits = apply_softcap(logits, model.cfg.output_logits_soft_cap)
        return [row[self.picks[e]] for row, e in zip(logits, examples, strict=True)]


def _rotate(
    attn: torch.nn.Module,
    x: Float[torch.Tensor, "batch pos head d_head"],
    positions: torch.Tensor,  # [batch or 1, pos]
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
    recorded: list[_Recorded],
    tables: _Tables,
    k: int,
    site: FeatureSite | None,
) -> Float[torch.Tensor, "batch d_model"]:
    """The batch's rows from their lowest layer up: the last block's output at each row's
    last position."""
    device = model.cfg.device
    layers = [variants[i].layer for _, i in batch]
    start = min(layers)
    examples = torch.tensor([e for e, _ in batch], device=device)
    lengths = torch.tensor([tables.lengths[e] for e, _ in batch], device=device)

    def unpatched(layer: int, at: list[int]) -> torch.Tensor:
        name = get_act_name("resid_pre", layer)
        return torch.stack([recorded[batch[j][0]].start[name] for j in at])

    resid = unpatched(start, list(range(len(batch))))
    # Positions of each row's new tokens, and the keys each query sees: [row, 1, query, key],
    # its own prefix, then its own new tokens causally.
    new_positions = lengths[:, None] + torch.arange(k, device=device)[None]
    prefix_mask = torch.arange(tables.longest, device=device)[None] < lengths[:, None]
    causal = torch.ones(k, k, dtype=torch.bool, device=device).tril()
    mask = torch.cat(
        [prefix_mask[:, None, :].expand(-1, k, -1), causal[None].expand(len(batch), -1, -1)],
        dim=-1,
    )[:, None]
    hooks = _patch_hooks(batch, variants, recorded, site)
    with torch.no_grad(), model.hooks(fwd_hooks=hooks):
        for layer in range(start, model.cfg.n_layers):
            joining = [j for j, at in enumerate(layers) if at == layer and layer > start]
            if joining:  # rows whose variant is at this layer start here, unpatched below
                resid = resid.clone()
                resid[joining] = unpatched(layer, joining).to(resid.dtype)
            block = model.blocks[layer]
            resid = _block(block, resid, examples, new_positions, mask, tables, layer)
        return resid[:, -1]


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
    recorded: list[_Recorded],
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
        value = torch.stack([recorded[batch[j][0]].donor[name] for j in at])  # [n, k, ...]
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
