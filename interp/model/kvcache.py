"""Forward passes on a TransformerLens key-value cache: greedy generation, and scoring tokens
without keeping them.

Replay scores option texts (``--score text``) and Winogender scores pronouns that the tokenizer
splits: each continuation runs on top of the conversation's cache, frozen, so its tokens are
scored but not appended and the conversation goes on from where the cache was.

:func:`greedy_generate` is ``model.generate(do_sample=False)`` without its one waste: that
computes the logits of every prompt position (the vocabulary matmul, ~10% of the arithmetic of
48 new tokens after a 42-token prompt on SmolLM2) and keeps the last; here the prompt stops
before the unembedding and only its last position is unembedded, as HF transformers does.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from jaxtyping import Float, Int
from transformer_lens import HookedTransformer
from transformer_lens.cache.key_value_cache import TransformerLensKeyValueCache


def greedy_generate(
    model: HookedTransformer, tokens: Int[torch.Tensor, "batch pos"], max_new_tokens: int
) -> Int[torch.Tensor, "batch new"]:
    """Greedy continuation of unpadded prompts on a fresh key-value cache: the tokens
    ``model.generate(tokens, max_new_tokens=n, do_sample=False, stop_at_eos=False)`` appends.
    Hooks attached to the model run as in any forward.

    Args:
        model: The model (with the fast path's sdpa attention, see
            ``interp.model.fastpath.set_attention``, the fastest).
        tokens: Prompt token ids, one unpadded row per prompt.
        max_new_tokens: How many tokens to generate (at least 1).

    Returns:
        The generated token ids, ``max_new_tokens`` per prompt (EOS does not stop it).
    """
    cache = TransformerLensKeyValueCache.init_cache(model.cfg, model.cfg.device, tokens.shape[0])
    new = []
    with torch.no_grad():
        # From the embeddings (start_at_layer=0), as generate runs: given tokens, the forward
        # would build a padding mask from the tokenizer at every step, and the blocks would
        # then take the masked path, for prompts that have no padding.
        resid = model(
            model.embed(tokens.to(model.cfg.device)),
            past_kv_cache=cache,
            start_at_layer=0,
            stop_at_layer=model.cfg.n_layers,
        )
        logits = model.unembed(model.ln_final(resid[:, -1:]))[:, -1]
        for step in range(max_new_tokens):
            new.append(logits.argmax(-1))
            if step + 1 < max_new_tokens:
                embed = model.embed(new[-1][:, None])
                logits = model(embed, past_kv_cache=cache, start_at_layer=0)[:, -1]
    return torch.stack(new, dim=1)


def logits_on_frozen_cache(
    model: HookedTransformer,
    cache: TransformerLensKeyValueCache,
    conts: Sequence[Sequence[int]],
    pad: int,
    at: Sequence[int] | None = None,
) -> Float[torch.Tensor, "batch pos vocab"] | Float[torch.Tensor, "batch vocab"]:
    """Logits at every position of each continuation (one per cached sequence, right-padded
    with ``pad`` to the longest and masked), with ``cache`` frozen for the call. With ``at``
    (one position per continuation), only the logits there: the vocabulary matmul at every
    other position is skipped.

    Args:
        model: The model the cache was filled by.
        cache: A key-value cache holding one prefix per continuation (batch size
            ``len(conts)``); frozen during the call and unfrozen after, so it is not extended.
        conts: Token ids of each continuation (at least one token each).
        pad: The token id the shorter continuations are padded with (masked out).
        at: One position (0-based, within its continuation) per continuation; None returns
            the logits at every position.

    Returns:
        Logits ``(batch, pos, vocab)`` without ``at``; ``(batch, vocab)`` with it.
    """
    width = max(len(c) for c in conts)
    tokens = torch.full((len(conts), width), pad, dtype=torch.long)
    mask = torch.zeros_like(tokens)
    for b, c in enumerate(conts):
        tokens[b, : len(c)] = torch.tensor(list(c))
        mask[b, : len(c)] = 1
    cache.freeze()
    try:
        with torch.no_grad():
            if at is None:
                return model(
                    tokens.to(model.cfg.device),
                    attention_mask=mask.to(model.cfg.device),
                    past_kv_cache=cache,
                )
            resid = model(
                tokens.to(model.cfg.device),
                attention_mask=mask.to(model.cfg.device),
                past_kv_cache=cache,
                stop_at_layer=model.cfg.n_layers,
            )
            picked = resid[torch.arange(len(conts)), torch.tensor(list(at))]
            return model(picked[:, None], start_at_layer=model.cfg.n_layers)[:, 0]
    finally:
        cache.unfreeze()


def truncate_cache(cache: TransformerLensKeyValueCache, length: int) -> None:
    """Keep only the first ``length`` positions (the rest is dropped, to be re-run).

    Args:
        cache: The key-value cache, shortened in place (keys, values and attention mask).
        length: Number of positions to keep, from the start.
    """
    for entry in cache.entries:
        entry.past_keys = entry.past_keys[:, :length]
        entry.past_values = entry.past_values[:, :length]
    cache.previous_attention_mask = cache.previous_attention_mask[:, :length]


def expanded_cache(cache: TransformerLensKeyValueCache, batch: int) -> TransformerLensKeyValueCache:
    """A batch-1 ``cache`` repeated ``batch`` times along the batch (views, no copy), for
    scoring several continuations of the same prefix in one call; frozen, so nothing is
    appended to it.

    Args:
        cache: A cache of batch size 1.
        batch: How many times to repeat it along the batch axis.

    Returns:
        A new frozen cache sharing ``cache``'s storage.
    """
    from transformer_lens.cache.key_value_cache_entry import TransformerLensKeyValueCacheEntry

    entries = [
        TransformerLensKeyValueCacheEntry(
            e.past_keys.expand(batch, -1, -1, -1),
            e.past_values.expand(batch, -1, -1, -1),
            frozen=True,
        )
        for e in cache.entries
    ]
    mask = cache.previous_attention_mask.expand(batch, -1)
    return TransformerLensKeyValueCache(entries, mask, frozen=True)
