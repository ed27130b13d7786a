"""The embedded SmolLM2 model: the integration tests split from tests/unit/model/test_loading.py."""

from __future__ import annotations

import json

import pytest
import torch
from unit.model.test_loading import PROMPTS, _chat_transcript, _tokens

from interp.model.layout import is_relaid
from interp.model.loading import cache_root, embedded_gguf_path, load_model


@pytest.fixture(scope="module")
def embedded_hf():
    from transformers import AutoModelForCausalLM

    path = embedded_gguf_path()
    return AutoModelForCausalLM.from_pretrained(
        path.parent, gguf_file=path.name, dtype=torch.float32
    ).eval()


@pytest.mark.integration
def test_embedded_logits_match_hf(embedded_model, embedded_hf):
    texts = [*PROMPTS, _chat_transcript(embedded_model.tokenizer)]
    for text in texts:
        tokens = _tokens(embedded_model, text)
        with torch.no_grad():
            ours, theirs = embedded_model(tokens), embedded_hf(tokens).logits
        assert (ours - theirs).abs().max() < 1e-4, text
    assert embedded_model.cfg.n_layers == 30 and embedded_model.cfg.d_model == 576


@pytest.mark.integration
def test_embedded_greedy_generation_matches_hf(embedded_model, embedded_hf):
    tokens = _tokens(embedded_model, _chat_transcript(embedded_model.tokenizer))
    with torch.no_grad():
        ours = embedded_model.generate(
            tokens, max_new_tokens=12, do_sample=False, verbose=False, stop_at_eos=False
        )
        theirs = embedded_hf.generate(tokens, max_new_tokens=12, do_sample=False, min_new_tokens=12)
    assert ours[0].tolist() == theirs[0].tolist()


@pytest.mark.integration
def test_embedded_cached_reload_is_identical(embedded_model):
    source = embedded_model.interp_source
    folder = cache_root() / "models" / f"gguf-{source.weights_hash[:16]}"
    assert (folder / "model.safetensors").is_file()
    assert json.loads((folder / "interp.json").read_text())["sha256"] == source.weights_hash
    again = load_model("smollm2")
    tokens = _tokens(embedded_model, PROMPTS[2])
    with torch.no_grad():
        assert torch.equal(embedded_model(tokens), again(tokens))
    assert is_relaid(again)


@pytest.mark.integration
def test_embedded_tokenizer_round_trip_and_template(embedded_model):
    tok = embedded_model.tokenizer
    text = _chat_transcript(tok)
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert tok.decode(ids) == text
    assert text.startswith("<|im_start|>system\n")  # the template's default system prompt
    assert ids[0] == tok.convert_tokens_to_ids("<|im_start|>") and ids[1] != ids[0]
