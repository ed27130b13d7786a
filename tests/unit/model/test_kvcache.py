"""interp.model.kvcache.greedy_generate against TransformerLens' generate."""

from __future__ import annotations

import copy

import pytest
import torch

from interp.model import fastpath
from interp.model.kvcache import greedy_generate


def _prompts(model, n=2, length=9):
    return torch.randint(
        0, model.cfg.d_vocab, (n, length), generator=torch.Generator().manual_seed(1)
    )


@torch.no_grad()
@pytest.mark.parametrize("attention", ["exact", "sdpa", "transformerlens"])
def test_greedy_generate_gives_transformerlens_generate_tokens(tiny_model, attention):
    model = copy.deepcopy(tiny_model)
    if attention == "transformerlens":
        fastpath.disable(model)
    else:
        fastpath.set_attention(model, attention)
    tokens = _prompts(model)
    ours = greedy_generate(model, tokens, 12)
    theirs = model.generate(
        tokens, max_new_tokens=12, do_sample=False, verbose=False, stop_at_eos=False
    )
    assert ours.shape == (2, 12)
    assert torch.equal(ours, theirs[:, tokens.shape[1] :])


@torch.no_grad()
def test_greedy_generate_runs_the_models_hooks(tiny_model):
    model = copy.deepcopy(tiny_model)
    calls = []

    def double(x, hook):
        calls.append(x.shape[1])
        return x * 2.0

    tokens = _prompts(model, n=1)
    plain = greedy_generate(model, tokens, 4)
    with model.hooks(fwd_hooks=[("blocks.0.hook_resid_post", double)]):
        hooked = greedy_generate(model, tokens, 4)
        expected = model.generate(
            tokens, max_new_tokens=4, do_sample=False, verbose=False, stop_at_eos=False
        )
    assert calls[:4] == [tokens.shape[1], 1, 1, 1]  # the prompt, then one token a step
    assert torch.equal(hooked, expected[:, tokens.shape[1] :])
    assert not torch.equal(hooked, plain)
