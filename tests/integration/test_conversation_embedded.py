"""The embedded SmolLM2 model: the integration tests split from
tests/unit/inputs/test_conversation.py."""

from __future__ import annotations

import pytest
from unit.inputs.test_conversation import PREFIX, ROUNDS

from interp.inputs.conversation import build_conversation


@pytest.mark.integration
def test_embedded_chat_round_trip(embedded_model):
    tok = embedded_model.tokenizer
    conv = build_conversation(tok, ROUNDS, answer_prefix=PREFIX)
    assert tok.decode(conv.tokens) == conv.text
    assert conv.tokens == tok(conv.text, add_special_tokens=False)["input_ids"]
    for r, spans in enumerate(conv.rounds):
        assert conv.span_text(spans.user) == ROUNDS[r].user
        assert tok.decode([conv.tokens[spans.readout]]) == " ("
