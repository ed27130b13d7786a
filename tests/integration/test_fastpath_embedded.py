"""The embedded SmolLM2 model: the integration tests split from
tests/unit/model/test_fastpath.py."""

from __future__ import annotations

import copy

import pytest
import torch
from unit.model.test_fastpath import _steps

from interp.model import fastpath


@pytest.mark.integration
@torch.no_grad()
def test_embedded_fast_path_is_bitwise_equal(embedded_model, tl_calls):
    """The embedded model: a chat transcript and KV-cached steps, fast vs TransformerLens."""
    ref = copy.deepcopy(embedded_model)
    fastpath.disable(ref)
    tok = embedded_model.tokenizer
    chat = [{"role": "user", "content": "Who was not comfortable using the phone? (a) (b) (c)"}]
    text = tok.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
    tokens = torch.tensor([tok(text, add_special_tokens=False)["input_ids"]] * 2)
    mask = torch.ones_like(tokens)
    mask[1, :4] = 0
    ours = _steps(embedded_model, tokens, mask, n_steps=4)
    assert tl_calls == []
    for a, b in zip(ours, _steps(ref, tokens, mask, n_steps=4), strict=True):
        assert torch.equal(a, b)
