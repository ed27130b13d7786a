"""The fast path's sdpa attention on the embedded model: greedy tokens identical to HF
transformers' on the same weights (tests/unit/model/test_fastpath.py checks it against the
exact path on the tiny model)."""

from __future__ import annotations

import copy

import pytest
import torch
from unit.model.test_loading import PROMPTS, _chat_transcript, _tokens

from interp.model import fastpath
from interp.model.loading import embedded_gguf_path


@pytest.mark.integration
def test_sdpa_greedy_generation_matches_hf(embedded_model):
    from transformers import AutoModelForCausalLM

    path = embedded_gguf_path()
    hf = AutoModelForCausalLM.from_pretrained(
        path.parent, gguf_file=path.name, dtype=torch.float32
    ).eval()
    sdpa = copy.deepcopy(embedded_model)
    fastpath.set_attention(sdpa, "sdpa")
    for text in [_chat_transcript(sdpa.tokenizer), *PROMPTS]:
        tokens = _tokens(sdpa, text)
        with torch.no_grad():
            ours = sdpa.generate(
                tokens, max_new_tokens=16, do_sample=False, verbose=False, stop_at_eos=False
            )
            theirs = hf.generate(tokens, max_new_tokens=16, do_sample=False, min_new_tokens=16)
            exact = embedded_model.generate(
                tokens, max_new_tokens=16, do_sample=False, verbose=False, stop_at_eos=False
            )
        assert ours[0].tolist() == exact[0].tolist(), text
        # HF's min_new_tokens forbids EOS: from the model's first EOS on the two differ
        n = tokens.shape[1]
        assert theirs[0, :n].tolist() == tokens[0].tolist()
        kept = _before_eos(ours[0, n:].tolist(), sdpa.tokenizer.eos_token_id)
        assert kept and kept == theirs[0, n:].tolist()[: len(kept)], text


def _before_eos(tokens: list[int], eos: int) -> list[int]:
    return tokens[: tokens.index(eos)] if eos in tokens else tokens
