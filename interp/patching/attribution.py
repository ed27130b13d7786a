"""Attribution patching: a first-order estimate of every patch from one forward and backward.

For a variant with recipient activation ``a_r`` and donor activation ``a_d`` (at the same
aligned positions as exact patching, :mod:`interp.patching.exact`), the change of the metric ``m``
(the recipient's logit difference at its read-out) is estimated as

    m(patched) - m(recipient)  ~=  sum over positions of (a_d - a_r) . dm/da  at a_r

(Nanda 2023, "Attribution patching"). One forward with gradients on the recipient and one
backward give ``dm/da`` for every layer, component and head at once; the donor activations come
from the same forward when the donor prompt is a prefix of the recipient's (or the reverse).
The estimate is exact for a metric linear in the activation and degrades where attention
patterns or norms change a lot; ``PatchConfig(verify_top=K)`` checks it against exact
patching.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from jaxtyping import Float, Int
from transformer_lens import HookedTransformer
from transformer_lens.hook_points import HookPoint

from interp.patching.core import (
    Variant,
    check_positions,
    final_logits,
    logit_gap,
    record,
    shared_sequence,
    tail_positions,
)


@dataclass
class PairAttribution:
    """Attribution of one recipient/donor pair."""

    recipient_logits: Float[torch.Tensor, " d_vocab"]  # unpatched recipient, last position
    donor_logits: Float[torch.Tensor, " d_vocab"]  # unpatched donor, last position
    deltas: Float[torch.Tensor, " variant"]  # estimated change of the metric per variant


def attribute_pair(
    model: HookedTransformer,
    recipient: Int[torch.Tensor, " pos_r"],
    donor: Int[torch.Tensor, " pos_d"],
    variants: Sequence[Variant],
    *,
    good: int | Sequence[int],
    bad: int | Sequence[int],
    n_positions: int = 1,
) -> PairAttribution:
    """Estimate, for each variant, how patching it from ``donor`` into ``recipient`` (last
    ``n_positions`` aligned) changes ``logit[good] - logit[bad]`` at the recipient's end."""
    k = check_positions(n_positions, len(recipient), len(donor))
    hooks = list(dict.fromkeys(v.hook for v in variants))
    rec_pos, don_pos = tail_positions(len(recipient), k), tail_positions(len(donor), k)
    seq = shared_sequence(recipient, donor)
    reads = [len(recipient) - 1] if seq is None else [len(recipient) - 1, len(donor) - 1]
    acts, logits = _forward_with_grad(model, recipient if seq is None else seq, hooks, reads)
    metric = logit_gap(logits[0], good, bad)
    metric.backward()
    if seq is None:
        don = record(model, donor, hooks, don_pos, [len(donor) - 1])
        donor_acts = {h: don.at(h, don_pos) for h in hooks}
        donor_logits = don.logits[0]
    else:
        donor_acts = {h: acts[h][0, don_pos].detach() for h in hooks}
        donor_logits = logits[1].detach()
    scores = {
        h: (donor_acts[h] - acts[h][0, rec_pos].detach()) * acts[h].grad[0, rec_pos] for h in hooks
    }
    deltas = torch.stack([_variant_score(scores[v.hook], v) for v in variants])
    return PairAttribution(logits[0].detach(), donor_logits, deltas)


def _forward_with_grad(
    model: HookedTransformer,
    tokens: Int[torch.Tensor, " pos"],
    hooks: Sequence[str],
    reads: Sequence[int],
) -> tuple[dict[str, torch.Tensor], Float[torch.Tensor, "n_read d_vocab"]]:
    """Forward with gradients flowing from the embeddings (the loaded models' weights do not
    require grad); every hooked activation keeps its ``.grad`` after ``backward``."""
    acts: dict[str, torch.Tensor] = {}

    def track(act: torch.Tensor, hook: HookPoint) -> None:
        act.retain_grad()
        acts[hook.name] = act

    def leaf(embed: torch.Tensor, hook: HookPoint) -> torch.Tensor:
        return embed.detach().requires_grad_()

    fwd = [("hook_embed", leaf)] + [(h, track) for h in hooks]
    with torch.enable_grad(), model.hooks(fwd_hooks=fwd):
        resid = model(tokens[None], stop_at_layer=model.cfg.n_layers)
        logits = final_logits(model, resid[0, list(reads)])
    return acts, logits


def _variant_score(score: torch.Tensor, variant: Variant) -> Float[torch.Tensor, ""]:
    """Sum of (a_d - a_r) * grad over positions and features (one head's slice for z)."""
    if variant.head >= 0:
        score = score[:, variant.head]
    return score.sum()
