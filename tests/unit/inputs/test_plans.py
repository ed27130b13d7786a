"""Instruction plans: the built-ins, user plan files, and what each round's user turn says."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from interp.errors import InterpError
from interp.inputs.conversation import RoundInput, build_conversation
from interp.inputs.plans import Plan, format_options, list_plans, load_plan, option_letter
from interp.inputs.tasks import Example, load_builtin
from interp.model.tiny import build_tiny_tokenizer

BUILTINS = ("baseline", "self-correct", "instruct-first", "negated", "cot")
DEFAULT_PREFIX = "The single most likely answer is ("

FOUR_OPTIONS = Example(
    example_id="mine/1",
    category="custom",
    context="Two friends met for lunch; one of them paid.",
    question="Who paid?",
    options=("The first friend", "The second friend", "Both", "Unknown"),
    label=3,
    target=None,
    unknown=3,
    context_condition="ambig",
    question_polarity="nonneg",
    source="mine.jsonl:1",
)


@pytest.fixture(scope="module")
def tokenizer():
    return build_tiny_tokenizer()


def write_plan(path: Path, fields: dict) -> Path:
    if path.suffix == ".json":
        path.write_text(json.dumps(fields))
    else:
        path.write_text(yaml.safe_dump(fields))
    return path


def examples() -> list[Example]:
    return [*load_builtin()[:3], FOUR_OPTIONS]


# --- built-in plans ----------------------------------------------------------------------------


def test_builtin_plans_are_listed():
    assert set(BUILTINS) <= set(list_plans())


@pytest.mark.parametrize("name", list_plans())
def test_every_builtin_plan_loads(name):
    plan = load_plan(name)
    assert isinstance(plan, Plan) and plan.name == name
    assert plan.description.strip()
    assert plan.followups and all(f.strip() for f in plan.followups)
    assert "{question}" in plan.question and "{options}" in plan.question
    assert plan.answer_prefix == DEFAULT_PREFIX
    assert plan.think_tokens == (48 if name in ("cot", "feedback-self") else 0)
    assert (plan.first is not None) == (name == "instruct-first")


@pytest.mark.parametrize("name", BUILTINS)
@pytest.mark.parametrize("ex", examples(), ids=lambda e: e.example_id)
def test_round_zero_asks_the_question_with_lettered_options(name, ex):
    plan = load_plan(name)
    text, instruction = plan.user_turn(ex, 0)
    lines = [f"({option_letter(i)}) {option}" for i, option in enumerate(ex.options)]
    for line in lines:
        assert f"\n{line}\n" in f"\n{text}\n"  # each option on a line of its own
    positions = [text.index(ex.context), text.index(ex.question), *map(text.index, lines)]
    assert positions == sorted(positions)  # context, question, (a), (b), ... in that order
    assert f"({option_letter(len(ex.options))})" not in text
    if name == "instruct-first":
        assert instruction == plan.first and text.endswith("\n\n" + plan.first)
    else:
        assert instruction is None
        assert not any(f in text for f in plan.followups)


def test_format_options():
    assert format_options(("x", "y z")) == "(a) x\n(b) y z"
    assert [option_letter(i) for i in range(6)] == list("abcdef")


def test_instruct_first_instruction_span_is_the_instruction(tokenizer):
    plan = load_plan("instruct-first")
    ex = load_builtin()[0]
    rounds = []
    for r in range(3):
        text, instruction = plan.user_turn(ex, r)
        rounds.append(RoundInput(user=text, instruction=instruction, answer="a) x"))
    conv = build_conversation(tokenizer, rounds, answer_prefix=plan.answer_prefix)
    assert conv.span_text(conv.rounds[0].instruction) == plan.first
    assert conv.span_text(conv.rounds[1].instruction) == plan.followups[0]
    assert conv.span_text(conv.rounds[2].instruction) == plan.followups[-1]
    # The instruction is inside round 0's user message, after the question.
    user0, instr0 = conv.rounds[0].user, conv.rounds[0].instruction
    assert user0[0] < instr0[0] < instr0[1] == user0[1]


@pytest.mark.parametrize("name", BUILTINS)
def test_followups_in_order_then_the_last_repeats(name):
    plan = load_plan(name)
    ex = load_builtin()[0]
    n = len(plan.followups)
    for r in range(1, n + 4):
        expected = plan.followups[min(r, n) - 1]
        assert plan.user_turn(ex, r) == (expected, expected)


def test_self_correct_rounds_differ():
    plan = load_plan("self-correct")
    ex = load_builtin()[0]
    one, two, three = (plan.user_turn(ex, r)[0] for r in (1, 2, 3))
    assert "unbiased" in one and one != two and two == three


@pytest.mark.parametrize("name", BUILTINS)
def test_to_dict_round_trips_through_a_plan_file(tmp_path, name):
    plan = load_plan(name)
    data = plan.to_dict()
    assert json.loads(json.dumps(data)) == data
    assert Plan(**{**data, "followups": tuple(data["followups"])}) == plan
    assert load_plan(write_plan(tmp_path / "saved.json", data)) == plan


# --- user plan files ---------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".yaml", ".yml", ".json"])
def test_user_plan_file_loads_with_name_from_file(tmp_path, suffix):
    path = write_plan(
        tmp_path / f"strict{suffix}",
        {"description": "mine", "followups": ["Be fair.", "Check again."], "think_tokens": 5},
    )
    plan = load_plan(str(path))
    assert plan.name == "strict"
    assert plan.followups == ("Be fair.", "Check again.")
    assert plan.think_tokens == 5
    # Fields the file leaves out come from the defaults.
    assert plan.answer_prefix == DEFAULT_PREFIX
    assert plan.question == load_plan("baseline").question
    assert plan.first is None


def test_user_plan_file_overrides_defaults_and_name(tmp_path):
    path = write_plan(
        tmp_path / "file.yaml",
        {
            "name": "custom-name",
            "question": "Q: {question}\nOptions:\n{options}\nContext: {context}",
            "first": "Think of fairness.",
            "followups": ["Again."],
            "answer_prefix": "Answer: (",
        },
    )
    plan = load_plan(path)  # a Path works as well as a str
    assert plan.name == "custom-name" and plan.answer_prefix == "Answer: ("
    text, instruction = plan.user_turn(FOUR_OPTIONS, 0)
    assert text == (
        "Q: Who paid?\nOptions:\n(a) The first friend\n(b) The second friend\n(c) Both\n"
        "(d) Unknown\nContext: Two friends met for lunch; one of them paid.\n\nThink of fairness."
    )
    assert instruction == "Think of fairness."


def test_user_plan_texts_with_braces_in_the_example_are_kept(tmp_path):
    ex = Example(**{**FOUR_OPTIONS.__dict__, "question": "Who wrote {this}?"})
    text, _ = load_plan("baseline").user_turn(ex, 0)
    assert "Who wrote {this}?" in text


BAD_PLANS = {
    "unknown field": ({"followups": ["x"], "folowups": ["y"]}, "unknown plan field.*folowups"),
    "empty followups": ({"followups": []}, "followups"),
    "followups a text": ({"followups": "Be fair."}, "followups"),
    "blank followup": ({"followups": ["ok", "  "]}, "followups"),
    "followup a number": ({"followups": [3]}, "followups"),
    "no followups": ({"description": "x"}, "followups"),
    "question without options": (
        {"followups": ["x"], "question": "{context} {question}"},
        r"\{options\}",
    ),
    "question without question": (
        {"followups": ["x"], "question": "{context} {options}"},
        r"\{question\}",
    ),
    "empty answer prefix": ({"followups": ["x"], "answer_prefix": ""}, "answer_prefix"),
    "think_tokens negative": ({"followups": ["x"], "think_tokens": -1}, "think_tokens"),
    "think_tokens a text": ({"followups": ["x"], "think_tokens": "8"}, "think_tokens"),
    "think_tokens a bool": ({"followups": ["x"], "think_tokens": True}, "think_tokens"),
    "think_tokens a float": ({"followups": ["x"], "think_tokens": 2.5}, "think_tokens"),
    "blank first": ({"followups": ["x"], "first": " "}, "first"),
}


@pytest.mark.parametrize("case", list(BAD_PLANS))
@pytest.mark.parametrize("suffix", [".yaml", ".json"])
def test_bad_plan_file_raises(tmp_path, case, suffix):
    fields, message = BAD_PLANS[case]
    path = write_plan(tmp_path / f"bad{suffix}", fields)
    with pytest.raises(InterpError, match=message) as err:
        load_plan(path)
    assert str(path) in str(err.value)  # says which file is wrong


def test_unknown_builtin_name_lists_the_builtins():
    with pytest.raises(InterpError, match="unknown plan 'be-nice'") as err:
        load_plan("be-nice")
    for name in BUILTINS:
        assert name in str(err.value)


def test_missing_plan_file(tmp_path):
    with pytest.raises(InterpError, match="no such plan file"):
        load_plan(tmp_path / "nowhere.yaml")


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("broken.yaml", "followups: [unclosed\n", "cannot parse plan"),
        ("broken.json", '{"followups": ["x"],}', "cannot parse plan"),
        ("list.yaml", "- a\n- b\n", "one mapping"),
        ("empty.yaml", "", "one mapping"),
    ],
)
def test_unparsable_plan_file(tmp_path, name, text, message):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(InterpError, match=message):
        load_plan(path)


@pytest.mark.parametrize(
    "question",
    ["{context}\n{question}\n{options}\n{hint}", "{question}\n{options}\nReply as {letter: x}"],
)
def test_question_with_unknown_placeholder_is_a_user_error(tmp_path, question):
    path = write_plan(tmp_path / "p.yaml", {"followups": ["x"], "question": question})
    with pytest.raises(InterpError):
        load_plan(path).user_turn(FOUR_OPTIONS, 0)


# --- placeholders and bounds (issue 10) --------------------------------------------------------


@pytest.mark.parametrize(
    "question",
    [
        "{context:>100000000000}\n{question}\n{options}",  # would allocate 100 GB
        "{question.__class__}\n{options}",  # reaches into Python objects
        "{question!r}\n{options}",
        "{options[0]}\n{question}\n{options}",
        "{}\n{question}\n{options}",
        "{question}\n{options}\n{",
    ],
)
def test_placeholders_are_plain_known_names(tmp_path, question):
    path = write_plan(tmp_path / "p.yaml", {"followups": ["x"], "question": question})
    with pytest.raises(InterpError, match="may use only") as err:
        load_plan(path)
    assert str(path) in str(err.value)


def test_literal_braces_still_allowed(tmp_path):
    question = "{{note}} {context}\n{question}\n{options}"
    plan = load_plan(write_plan(tmp_path / "p.yaml", {"followups": ["x"], "question": question}))
    assert plan.user_turn(FOUR_OPTIONS, 0)[0].startswith("{note} ")


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("latin1.yaml", b"followups: ['R\xe9pondez']\n", "not UTF-8"),
        ("big.yaml", b"followups: [x]\n" + b"#\n" * 600_000, "larger than the limit of 1 MiB"),
        ("int.yaml", b"followups: [x]\nthink_tokens: " + b"9" * 5000 + b"\n", "cannot parse"),
        ("deep.yaml", b"followups: " + b"[" * 5000 + b"]" * 5000 + b"\n", "cannot parse"),
        ("int.json", b'{"followups": ["x"], "think_tokens": ' + b"9" * 5000 + b"}", "18 digits"),
        ("deep.json", b'{"followups": ' + b"[" * 5000 + b"]" * 5000 + b"}", "nested too deeply"),
        ("long.json", json.dumps({"followups": ["x" * 20_000]}).encode(), "followups\\[0\\]"),
        ("many.json", json.dumps({"followups": ["x"] * 1001}).encode(), "the limit is 1000"),
    ],
)
def test_plan_file_bounds(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(InterpError, match=message) as err:
        load_plan(path)
    assert str(err.value).startswith(str(path))
