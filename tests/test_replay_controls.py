"""Replay controls on the tiny model: option scores by whole text (summed and per token) and
the forced-history control (``force_round0``), checked against a fresh forward pass and
manual counts."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from interp.errors import InterpError
from interp.plans import option_letter
from interp.replay import ReplayConfig, replay
from interp.tasks import load_builtin

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def by_example(run) -> dict[int, object]:
    frame = run.rounds().sort_values(["example_index", "round"])
    return {int(i): rows.reset_index(drop=True) for i, rows in frame.groupby("example_index")}


def continuation_logprobs(model, prompt: list[int], continuation: list[int]) -> torch.Tensor:
    """Each continuation token's log-prob after ``prompt``: one unpadded, uncached forward."""
    with torch.no_grad():
        logits = model(torch.tensor([prompt + continuation]))[0].double()
    logp = torch.log_softmax(logits, -1)
    start = len(prompt) - 1  # the logits at position p predict token p + 1
    return torch.stack([logp[start + j, t] for j, t in enumerate(continuation)])


# --- --score text / text-mean -------------------------------------------------------------------


@pytest.fixture(scope="module")
def text_runs(tmp_path_factory, tiny_model):
    runs = {}
    for score in ("text", "text-mean"):
        config = ReplayConfig(
            out=str(tmp_path_factory.mktemp(score) / "run"),
            model="tiny",
            rounds=1,
            limit=4,
            batch_size=3,  # left padding and a frozen cache under the scored continuation
            score=score,
        )
        runs[score] = replay(config, model=tiny_model)
    return runs


@pytest.mark.parametrize("score", ["text", "text-mean"])
def test_text_scores_equal_manual_token_logprobs(text_runs, tiny_model, score):
    run = text_runs[score]
    tok = tiny_model.tokenizer
    examples = load_builtin()[:4]
    tokens, rows = run.tokens(), by_example(run)
    lengths = set()
    for e, ex in enumerate(examples):
        for r in range(2):
            row = rows[e].iloc[r]
            prompt = tokens[e][: int(row["readout_pos"]) + 1]
            expected = []
            for i, option in enumerate(ex.options):
                cont = tok.encode(f"{option_letter(i)}) {option}", add_special_tokens=False)
                lengths.add(len(cont))
                lp = continuation_logprobs(tiny_model, prompt, cont)
                expected.append(float(lp.mean() if score == "text-mean" else lp.sum()))
            stored = [float(x) for x in row["option_logprobs"]]
            assert stored == pytest.approx(expected, abs=1e-4), f"example {e} round {r}"
            assert int(row["choice"]) == int(np.argmax(expected))
    assert len(lengths) > 1  # premise: options of different token lengths


def test_text_mean_differs_from_text(text_runs):
    # Per-token scores are the summed ones divided by a length that varies between options
    # (round 0 only: later prompts hold answers that the two scores chose differently).
    def round0(score: str) -> np.ndarray:
        frame = text_runs[score].rounds()
        return np.array(list(frame[frame["round"] == 0]["option_logprobs"]), dtype=float)

    a, b = round0("text"), round0("text-mean")
    ratio = a / b
    assert np.allclose(ratio, np.round(ratio), atol=1e-3)  # whole token counts
    assert len(np.unique(np.round(ratio))) > 1


def test_unknown_score_is_refused(tmp_path, tiny_model):
    config = ReplayConfig(out=str(tmp_path / "run"), model="tiny", score="text-sum")
    with pytest.raises(InterpError, match="unknown score"):
        replay(config, model=tiny_model)
    assert not (tmp_path / "run").exists()
