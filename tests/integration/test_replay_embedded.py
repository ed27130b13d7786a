"""The embedded SmolLM2 model: the integration tests split from tests/unit/replay/test_loop.py."""

from __future__ import annotations

import pytest
import torch
from unit.replay.test_loop import by_example, fresh_forward

from interp.replay.loop import ReplayConfig, option_token_ids, replay


@pytest.mark.integration
def test_embedded_model_replay_matches_fresh_forward(tmp_path, embedded_model):
    hooks = ["blocks.0.hook_resid_post", "blocks.15.hook_resid_post", "blocks.29.hook_resid_post"]
    config = ReplayConfig(
        out=str(tmp_path / "run"),
        model="smollm2",
        plan="self-correct",
        rounds=2,
        limit=6,
        batch_size=3,
        hooks=hooks,
    )
    run = replay(config, model=embedded_model)
    assert run.manifest["model"]["n_layers"] == 30
    letters = option_token_ids(embedded_model.tokenizer, 3)
    tokens, rows = run.tokens(), by_example(run)
    for e in range(6):
        logits, cache = fresh_forward(embedded_model, tokens[e], hooks)
        for r in range(3):
            row = rows[e].iloc[r]
            pos = int(row["readout_pos"])
            assert tokens[e][pos + 1] == letters[int(row["choice"])]
            for hook in hooks:
                stored = run.activations(hook)[e, r].float()
                fresh = cache[hook][pos].float()
                scale = float(fresh.abs().max())
                assert float((stored - fresh).abs().max()) <= 2e-3 * scale + 1e-3, (e, r, hook)
            expected = torch.log_softmax(logits[pos].double(), -1)[letters]
            stored_lp = torch.tensor(list(row["option_logprobs"]), dtype=torch.float64)
            torch.testing.assert_close(stored_lp, expected, rtol=0, atol=1e-3)
            assert int(row["choice"]) == int(stored_lp.argmax())
