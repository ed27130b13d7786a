"""The Winogender task on the embedded SmolLM2 model: a few occupations, two follow-up rounds."""

from __future__ import annotations

import pytest
from unit.inputs.test_winogender import STATS, TEMPLATES, _manual_probs, subset

from interp.inputs.winogender import PRONOUNS, pronoun_variant_ids
from interp.replay.loop import ReplayConfig, replay


@pytest.mark.integration
def test_embedded_winogender_replay(tmp_path, embedded_model):
    if not TEMPLATES.exists():
        pytest.skip("shared Winogender data absent")
    data = subset(tmp_path, ["technician", "nurse", "carpenter"])
    config = ReplayConfig(
        out=str(tmp_path / "run"),
        model="smollm2",
        task="winogender",
        data=[str(data)],
        stats=str(STATS),
        plan="self-correct",
        rounds=2,
        batch_size=4,
        hooks=["blocks.15.hook_resid_post"],
    )
    run = replay(config, model=embedded_model)
    rows = run.rounds()
    assert len(rows) == 12 * 3 and rows["occupation"].nunique() == 3
    # SmolLM2's tokenizer has every variant as one token but "Him" and "Them" (no leading
    # space): those two are scored by the chain rule, the others at the read-out alone.
    tok = embedded_model.tokenizer
    split = {
        tok.decode(seq)
        for case in PRONOUNS
        for pronoun in pronoun_variant_ids(tok, case)
        for seq in pronoun
        if len(seq) > 1
    }
    assert split == {"Him", "Them"}
    # The replay's (KV cache, batched, left-padded) probabilities equal fresh forward passes.
    tokens = run.tokens()
    for _, row in rows[rows["example_index"] < 4].iterrows():
        prompt = tokens[int(row["example_index"])][: int(row["readout_pos"]) + 1]
        want = _manual_probs(embedded_model, prompt, row["case"])
        got = [row["p_male"], row["p_female"], row["p_neutral"]]
        assert got == pytest.approx(want, abs=2e-4)
    per_round = run.read_metrics()["per_round"]
    assert [m["round"] for m in per_round] == [0, 1, 2]
    assert all(m["n_occupations"] == 3 for m in per_round)
