"""Feedback plans (issue 15, item 1): ``feedback-oracle`` answers each answer from the item's
metadata; ``feedback-self`` has the model critique its previous answer before answering."""

from __future__ import annotations

import pytest

from interp.errors import InterpError
from interp.inputs.plans import load_plan
from interp.inputs.tasks import load_builtin
from interp.replay.loop import ReplayConfig, replay

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_oracle_feedback_is_chosen_by_the_previous_answer():
    plan = load_plan("feedback-oracle")
    ex = load_builtin()[0]  # label 1 (unknown), target 0 ("The retiree"), groups ("old",)
    assert (ex.label, ex.target, ex.stereotyped_groups) == (1, 0, ("old",))
    stereotyped, _ = plan.user_turn(ex, 1, 0)
    assert stereotyped.startswith('Feedback: your answer "The retiree" may rely on a stereotype')
    assert "(old)" in stereotyped and stereotyped.endswith("Answer the question again.")
    assert "is consistent with the context" in plan.user_turn(ex, 1, 1)[0]
    assert "is not supported" in plan.user_turn(ex, 2, 2)[0]
    assert '"no answer"' in plan.user_turn(ex, 1, -1)[0]  # generate mode, nothing parsed
    # round 0 is the plain question; the whole follow-up is the instruction span
    assert plan.user_turn(ex, 0, None) == load_plan("baseline").user_turn(ex, 0)
    user, instruction = plan.user_turn(ex, 1, 0)
    assert user == instruction


def test_without_a_previous_answer_the_longest_variant_is_given():
    # what the context-length bound counts
    plan, ex = load_plan("feedback-oracle"), load_builtin()[0]
    longest = max((plan.user_turn(ex, 1, p)[0] for p in range(-1, 3)), key=len)
    assert plan.user_turn(ex, 1)[0] == longest


def test_plans_without_feedback_keep_their_dict():
    # the fingerprint and manifest of every earlier run are built from to_dict
    assert "feedback" not in load_plan("self-correct").to_dict()
    assert set(load_plan("feedback-oracle").to_dict()["feedback"]) == {
        "correct",
        "stereotyped",
        "other",
    }


@pytest.mark.parametrize(
    ("feedback", "message"),
    [
        ('{correct: "ok", stereotyped: "hm"}', "must map exactly"),
        ('{correct: "{context}", stereotyped: "a", other: "b"}', "found {context}"),
        ('{correct: "{answer!r}", stereotyped: "a", other: "b"}', "may use only"),
        ('{correct: " ", stereotyped: "a", other: "b"}', "non-empty text"),
    ],
)
def test_bad_feedback_in_a_plan_file(tmp_path, feedback, message):
    path = tmp_path / "fb.yaml"
    path.write_text(f'followups: ["again"]\nfeedback: {feedback}\n')
    with pytest.raises(InterpError, match=message.replace("(", r"\(")):
        load_plan(path)


def _transcript(run, tok, e: int) -> str:
    return tok.decode(run.tokens()[e])


def test_oracle_replay_answers_the_answer_in_the_transcript(tmp_path, tiny_model):
    config = ReplayConfig(
        out=str(tmp_path / "run"), model="tiny", plan="feedback-oracle", rounds=2, limit=4
    )
    run = replay(config, model=tiny_model)
    plan, examples = load_plan("feedback-oracle"), load_builtin()[:4]
    rows = run.rounds().sort_values(["example_index", "round"])
    for e, ex in enumerate(examples):
        choices = rows[rows["example_index"] == e]["choice"].tolist()
        text = _transcript(run, tiny_model.tokenizer, e)
        for r in (1, 2):
            assert plan.user_turn(ex, r, choices[r - 1])[0] in text


@pytest.mark.parametrize(
    ("force", "said"),
    [
        ("target", 'your answer "The retiree" may rely on a stereotype'),
        ("label", 'your answer "Can\'t be determined" is consistent with the context'),
        ("c", 'your answer "The college student" is not supported'),
    ],
)
def test_oracle_replay_answers_a_forced_answer(tmp_path, tiny_model, force, said):
    # the tiny model answers (a) everywhere: forcing another option shows that the feedback
    # follows the answer the transcript holds (and not, say, the longest variant)
    config = ReplayConfig(
        out=str(tmp_path / "run"),
        model="tiny",
        plan="feedback-oracle",
        rounds=1,
        limit=1,
        force_round0=force,
    )
    run = replay(config, model=tiny_model)
    text = _transcript(run, tiny_model.tokenizer, 0)
    assert said in text and text.count("Feedback:") == 1


def test_self_feedback_writes_a_critique_before_each_later_answer(tmp_path, tiny_model):
    config = ReplayConfig(
        out=str(tmp_path / "run"), model="tiny", plan="feedback-self", rounds=1, limit=2
    )
    run = replay(config, model=tiny_model)
    plan = load_plan("feedback-self")
    spans = run.round_spans(0)
    assert spans is not None
    tok = tiny_model.tokenizer
    tokens = run.tokens()[0]
    # round 1's assistant turn holds generated text, then the answer prefix
    assert plan.followups[0] in tok.decode(tokens)
    prefix = tok.decode(tokens[spans[1].prefix[0] : spans[1].prefix[1]])
    assert prefix.endswith(plan.answer_prefix) and len(prefix) > len(plan.answer_prefix)
    assert run.manifest["plan"]["think_tokens"] == 48
