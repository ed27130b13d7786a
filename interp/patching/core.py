"""Patching primitives: variants, one unpatched forward, and the shared-prefix forward.

One *variant* is one activation to patch: a layer and a component (``resid_pre``,
``resid_post``, ``attn_out``, ``mlp_out``, or one head's ``z`` for ``heads``). The
*recipient* prompt is run with the variant's activation at its last ``k`` positions replaced
by the *donor* prompt's activation at the donor's last ``k`` positions (aligned from the end:
donor ``len_d - j`` <-> recipient ``len_r - j``).

Exact patching (:mod:`interp.patching.exact`) and its gradient estimate
(:mod:`interp.patching.attribution`) both start here: when donor and recipient are prefixes of
one transcript (every round of a run is), a single forward over the longer gives the donor's
activations, both read-outs' logits and the recipient's prefix cache.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from jaxtyping import Float, Int
from transformer_lens import HookedTransformer
from transformer_lens.cache.key_value_cache import TransformerLensKeyValueCache
from transformer_lens.hook_points import HookPoint
from transformer_lens.utils import get_act_name

from interp.errors import InterpError

COMPONENTS = ("resid_pre", "resid_post", "attn_out", "mlp_out", "heads")
# Feature patching's site kind (interp.patching.sae_latents): SAE latents at the SAE's hook.
SAE_COMPONENT = "sae"
# The TransformerLens activation each component patches (``heads``: one head's slice of z).
_ACT = {
    "resid_pre": "resid_pre",
    "resid_post": "resid_post",
    "attn_out": "attn_out",
    "mlp_out": "mlp_out",
    "heads": "z",
}


@dataclass(frozen=True, order=True)
class Variant:
    """One activation to patch."""

    layer: int
    component: str  # one of COMPONENTS
    head: int = -1  # the head for "heads"; for "sae" the latent (-1: all chosen); -1 otherwise
    act: str = ""  # for "sae": the activation the SAE reads (e.g. resid_post)

    @property
    def hook(self) -> str:
        """The TransformerLens hook name, e.g. ``blocks.12.hook_resid_post``."""
        act = self.act if self.component == SAE_COMPONENT else _ACT[self.component]
        return get_act_name(act, self.layer)


def sweep(
    n_layers: int, n_heads: int, layers: Sequence[int], components: Sequence[str]
) -> list[Variant]:
    """Every variant of ``components`` at ``layers`` (all heads for ``heads``), layer-major."""
    for component in components:
        if component not in COMPONENTS:
            raise InterpError(
                f"unknown component {component!r}; use one of {', '.join(COMPONENTS)}"
            )
    for layer in layers:
        if not 0 <= layer < n_layers:
            raise InterpError(
                f"layer {layer} is out of range: the model has layers 0..{n_layers - 1}"
            )
    heads = {c: range(n_heads) if c == "heads" else [-1] for c in components}
    return [Variant(layer, c, h) for layer in layers for c in components for h in heads[c]]


@dataclass
class Recording:
    """What one unpatched forward over a token sequence gave."""

    logits: Float[torch.Tensor, "n_read d_vocab"]  # at the requested read positions
    acts: dict[str, torch.Tensor]  # hook -> [n_positions, ...] at `positions`
    positions: list[int]
    kv: TransformerLensKeyValueCache  # keys and values of every position (batch 1)

    def at(self, hook: str, positions: Sequence[int]) -> torch.Tensor:
        rows = [self.positions.index(p) for p in positions]
        return self.acts[hook][rows]


def record(
    model: HookedTransformer,
    tokens: Int[torch.Tensor, " pos"],
    hooks: Sequence[str],
    positions: Sequence[int],
    reads: Sequence[int],
) -> Recording:
    """Run ``tokens`` once: ``hooks`` at ``positions``, logits at ``reads``, the KV cache."""
    positions = sorted(set(positions))
    acts: dict[str, torch.Tensor] = {}

    def save(act: torch.Tensor, hook: HookPoint) -> None:
        acts[hook.name] = act[0, positions].detach().clone()

    kv = TransformerLensKeyValueCache.init_cache(model.cfg, model.cfg.device, 1)
    mask = torch.ones(1, len(tokens), dtype=torch.long, device=tokens.device)
    with torch.no_grad(), model.hooks(fwd_hooks=[(h, save) for h in dict.fromkeys(hooks)]):
        resid = model(
            tokens[None], past_kv_cache=kv, attention_mask=mask, stop_at_layer=model.cfg.n_layers
        )
        logits = final_logits(model, resid[0, list(reads)])
    return Recording(logits, acts, positions, kv)


def final_logits(
    model: HookedTransformer, resid: Float[torch.Tensor, "n d_model"]
) -> Float[torch.Tensor, "n d_vocab"]:
    """The model's own final norm + unembedding on a few residual vectors (skipping the
    vocabulary matmul at every other position, ~10% of a forward)."""
    return model(resid[:, None], start_at_layer=model.cfg.n_layers)[:, 0]


def logit_gap(
    logits: Float[torch.Tensor, "*batch d_vocab"],
    good: int | Sequence[int],
    bad: int | Sequence[int],
) -> Float[torch.Tensor, "*batch"]:
    """``logit[good] - logit[bad]`` over the last dim. Token sets (a Winogender run's pronoun
    variants) compare the logsumexp of each set: log P(good set) - log P(bad set), as the
    softmax normaliser cancels."""
    if isinstance(good, int) and isinstance(bad, int):
        return logits[..., good] - logits[..., bad]
    good = [good] if isinstance(good, int) else list(good)
    bad = [bad] if isinstance(bad, int) else list(bad)
    return torch.logsumexp(logits[..., good], -1) - torch.logsumexp(logits[..., bad], -1)


def check_positions(k: int, len_recipient: int, len_donor: int) -> int:
    """``k`` when both prompts have that many positions to patch; refused otherwise, before
    any forward runs."""
    if k < 1:
        raise InterpError(f"positions: need at least one position to patch (got {k})")
    if k > min(len_recipient, len_donor):
        raise InterpError(
            f"positions last:{k} reaches before the start of a prompt "
            f"({min(len_recipient, len_donor)} tokens); use a smaller K"
        )
    return k


def tail_positions(length: int, k: int) -> list[int]:
    """The last ``k`` positions of a prompt of ``length`` tokens (the patched ones)."""
    return list(range(length - k, length))


def record_pair(
    model: HookedTransformer,
    recipient: Int[torch.Tensor, " pos_r"],
    donor: Int[torch.Tensor, " pos_d"],
    variants: Sequence[Variant],
    k: int,
) -> tuple[Recording, Recording]:
    """The recipient's and donor's recordings; one forward when one is a prefix of the other.

    The recipient part holds ``resid_pre`` at its tail (the start of a batch that skips the
    unchanged lower layers); the donor part holds every variant's activation at its tail.
    """
    start_hooks = [get_act_name("resid_pre", v.layer) for v in variants]
    donor_hooks = [v.hook for v in variants]
    seq = shared_sequence(recipient, donor)
    if seq is not None:
        rec = record(
            model,
            seq,
            start_hooks + donor_hooks,
            tail_positions(len(recipient), k) + tail_positions(len(donor), k),
            [len(recipient) - 1, len(donor) - 1],
        )
        return rec, rec
    rec = record(
        model, recipient, start_hooks, tail_positions(len(recipient), k), [len(recipient) - 1]
    )
    don = record(model, donor, donor_hooks, tail_positions(len(donor), k), [len(donor) - 1])
    return rec, don


def shared_sequence(
    recipient: Int[torch.Tensor, " pos_r"], donor: Int[torch.Tensor, " pos_d"]
) -> Int[torch.Tensor, " pos"] | None:
    """The longer prompt when the other is a prefix of it (rounds of one transcript), else
    None."""
    longer, shorter = (recipient, donor) if len(recipient) >= len(donor) else (donor, recipient)
    return longer if torch.equal(longer[: len(shorter)], shorter) else None
