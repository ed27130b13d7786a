"""The self-distinguish experiment (issue 15, item 4): scoring with both orders by hand, the
rebuilt conversation against the stored transcript, and the experiment on the tiny model."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from interp.experiments.common import ExperimentConfig
from interp.experiments.self_distinguish import (
    PREFIX,
    QUESTION,
    rounds_inputs,
    score_orders,
    self_distinguish,
    unbiased_option,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_score_orders_by_hand():
    # [example, order, (a, b)]; order 0 shows the unbiased answer as (a), order 1 as (b)
    logp = np.array(
        [
            [[-1, -2], [-2, -1]],  # picks unbiased both times: (a) then (b)
            [[-1, -2], [-1, -2]],  # always (a): right only in order 0
            [[-2, -1], [-2, -1]],  # always (b): right only in order 1
            [[-2, -1], [-1, -2]],  # picks the stereotyped answer both times
        ],
        dtype=float,
    )
    s = score_orders(logp)
    assert s["order_unbiased_first"].tolist() == [1, 1, 0, 0]
    assert s["order_stereotyped_first"].tolist() == [1, 0, 1, 0]
    assert s["both"].tolist() == [1, 0, 0, 0]
    assert s["picks_a"].tolist() == [0.5, 1.0, 0.0, 0.5]


def test_unbiased_option():
    assert unbiased_option(label=1, target=0) == 1
    assert unbiased_option(label=0, target=0) is None  # the correct answer is the stereotype
    assert unbiased_option(label=2, target=-1) is None


@pytest.fixture(scope="module")
def distinguished(tmp_path_factory, tiny_model):
    config = ExperimentConfig(
        out=str(tmp_path_factory.mktemp("sd") / "exp"),
        model="tiny",
        rounds=2,
        limit=6,
        n_boot=30,
        probe=False,
    )
    return self_distinguish(config, model=tiny_model), config


def test_rebuilt_history_is_the_stored_transcript(distinguished, tiny_model):
    from interp.inputs.conversation import RoundInput, build_conversation
    from interp.runs.store import Run

    result, _ = distinguished
    run = Run.open(result.path / "runs" / "main")
    tok = tiny_model.tokenizer
    rounds = run.rounds().sort_values(["example_index", "round"])
    answers = rounds[rounds["example_index"] == 0]["answer_text"].tolist()
    last = run.n_rounds - 1
    history = rounds_inputs(run, tok, 0, last, answers)
    ask = RoundInput(user=QUESTION.format(first="x", second="y"), prefix=PREFIX)
    conv = build_conversation(
        tok, [*history, ask], answer_prefix=run.manifest["plan"]["answer_prefix"]
    )
    stored = run.tokens()[0]
    end = int(rounds[rounds["example_index"] == 0]["readout_pos"].iloc[-1]) + 1
    assert conv.tokens[:end] == stored[:end]  # the asked model sees the replay's transcript
    assert tok.decode(conv.tokens).endswith(PREFIX)


def test_self_distinguish_end_to_end(distinguished):
    result, config = distinguished
    table = result.tables["per_round"]
    assert table["round"].tolist() == [0, 1, 2]
    for key in ("both", "order_unbiased_first", "order_stereotyped_first", "picks_a"):
        assert ((table[f"{key}_lo"] <= table[key]) & (table[key] <= table[f"{key}_hi"])).all()
    per_example = result.tables["per_example"]
    assert len(per_example) == 3 * result.summary["n_examples"]
    assert 0 < result.summary["position_share"] <= 1  # the position caveat's number
    # both = right in each order, per example
    both = per_example["order_unbiased_first"] * per_example["order_stereotyped_first"]
    assert (both == per_example["both"]).all()
    manifest = json.loads((result.path / "manifest.json").read_text())
    assert manifest["inputs"]["question"] == QUESTION
    # resumed: the replay is reused, the same numbers come back
    stamp = (result.path / "runs" / "main" / "manifest.json").stat().st_mtime_ns
    again = self_distinguish(config)
    assert (result.path / "runs" / "main" / "manifest.json").stat().st_mtime_ns == stamp
    pd.testing.assert_frame_equal(again.tables["per_example"], per_example)


def _last_round(picks_a: float, both_own_right_hi: float) -> pd.DataFrame:
    row = dict(
        round=3,
        both=0.0,
        both_lo=0.0,
        both_hi=0.0,
        order_unbiased_first=picks_a,
        order_stereotyped_first=1 - picks_a,
        picks_a=picks_a,
        n_own_right=10,
        both_own_right_hi=both_own_right_hi,
    )
    return pd.DataFrame([row])


def test_reading_claims_nothing_when_the_letter_decides():
    from interp.experiments.self_distinguish import reading

    # Always (b): 0 in both orders whatever the model knows, so no word on the papers' claim.
    lines = reading(_last_round(picks_a=0.02, both_own_right_hi=0.0))
    assert "picks (b) in 98%" in lines[-1] and "neither supported nor contradicted" in lines[-1]
    assert not any("the papers' claim)" in line for line in lines)
    # A model that uses both letters and fails on its own right answers: the claim's reading.
    lines = reading(_last_round(picks_a=0.5, both_own_right_hi=0.3))
    assert lines[-1].endswith("(the papers' claim).")


def _kept(run, result):
    """The examples the experiment asked about and their (unbiased, stereotyped) texts."""
    from interp.experiments.common import selected_examples

    _, config = result
    examples = {ex.example_id: ex for ex in selected_examples(config)}
    firsts = run.rounds().sort_values(["example_index", "round"]).drop_duplicates("example_index")
    keep, options = [], []
    for row in firsts.itertuples():
        unbiased = unbiased_option(int(row.label), int(row.target))
        if unbiased is not None:
            texts = examples[str(row.example_id)].options
            keep.append(int(row.example_index))
            options.append((texts[unbiased], texts[int(row.target)]))
    return keep, options


def test_cached_logprobs_equal_the_full_passes(distinguished, tiny_model):
    """One KV cache per example grown over the rounds, both orders scored on it frozen: the
    same letter log-probs as a forward pass from scratch per (example, round, order)."""
    from interp.experiments.self_distinguish import cached_logprobs, full_pass_logprobs
    from interp.runs.store import Run

    result, _ = distinguished
    run = Run.open(result.path / "runs" / "main")
    keep, options = _kept(run, distinguished)
    assert run.n_rounds == 3 and len(keep) >= 2
    cached, cut_back = cached_logprobs(run, tiny_model, keep, options)
    full = full_pass_logprobs(run, tiny_model, keep, options)
    assert cut_back == 0  # the chat template's rounds extend each other: nothing re-run
    assert cached.shape == full.shape == (len(keep), 3, 2, 2)
    np.testing.assert_allclose(cached, full, atol=1e-4, rtol=0)
    # and the experiment's table holds these numbers
    per_example = result.tables["per_example"].set_index(["example_index", "round"])
    for j, e in enumerate(keep):
        for r in range(3):
            for o in (0, 1):
                for k, x in enumerate("ab"):
                    got = per_example.loc[(e, r), f"logp_order{o}_{x}"]
                    assert got == pytest.approx(full[j, r, o, k], abs=1e-4)


def test_cut_back_cache_scores_like_a_full_pass(tiny_model):
    """The fallback when a history is not a token prefix of the next: the cache is cut back
    to the common part and the rest re-run; continuations scored on it (two at once, on the
    cache expanded to batch 2) match full passes."""
    import torch
    from transformer_lens.cache.key_value_cache import TransformerLensKeyValueCache

    from interp.model.kvcache import expanded_cache, logits_on_frozen_cache, truncate_cache

    m = tiny_model
    g = torch.Generator().manual_seed(0)
    first = torch.randint(5, 200, (12,), generator=g).tolist()
    second = first[:7] + torch.randint(5, 200, (6,), generator=g).tolist()
    conts = [[11, 12, 13], [14, 15]]
    cache = TransformerLensKeyValueCache.init_cache(m.cfg, m.cfg.device, 1)
    with torch.no_grad():
        m(
            torch.tensor([first]),
            attention_mask=torch.ones(1, 12, dtype=torch.long),
            past_kv_cache=cache,
        )
        truncate_cache(cache, 7)
        m(
            torch.tensor([second[7:]]),
            attention_mask=torch.ones(1, 6, dtype=torch.long),
            past_kv_cache=cache,
        )
        got = logits_on_frozen_cache(m, expanded_cache(cache, 2), conts, 0)
        for b, c in enumerate(conts):
            want = m(torch.tensor([second + c]))[0, len(second) :]
            torch.testing.assert_close(got[b, : len(c)], want, atol=1e-4, rtol=0)
        # only at one position per continuation (the read-outs): the same logits there
        at = logits_on_frozen_cache(m, expanded_cache(cache, 2), conts, 0, at=[2, 0])
        torch.testing.assert_close(at, got[[0, 1], [2, 0]], atol=1e-4, rtol=0)
    assert cache.entries[0].past_keys.shape[1] == len(second)  # frozen: nothing appended
