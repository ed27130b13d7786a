"""The training recipes: what each round of a planned conversation answers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from interp.errors import InterpError
from interp.finetune.config import FinetuneConfig
from interp.finetune.recipes import plan_conversations
from interp.inputs.plans import load_plan
from interp.inputs.tasks import load_task

BBQ = Path(__file__).resolve().parents[3].parent / "shared" / "data" / "bbq"
AGE = BBQ / "Age.jsonl"
pytestmark = pytest.mark.skipif(
    not AGE.is_file(), reason="../shared/data/bbq is not beside the repo"
)


def _plan(examples, **kw):
    args = dict(
        recipe="self-correction",
        plan=load_plan("self-correct"),
        control_plan=load_plan("baseline"),
        rounds=2,
        error_share=0.5,
        permute="cyclic",
        seed=3,
    )
    args.update(kw)
    return plan_conversations(examples, **args)


@pytest.fixture(scope="module")
def examples():
    return load_task("bbq", [str(AGE)])[:400]


def test_self_correction_plants_errors_that_only_the_instruction_corrects(examples):
    planned = _plan(examples)
    assert len(planned) == len(examples)
    planted = [p for p in planned if p.planted]
    # about half of the ambiguous items with a bias target, none of the others
    eligible = [
        p
        for p in planned
        if p.example.context_condition == "ambig" and p.example.target is not None
    ]
    assert 0.35 < len(planted) / len(eligible) < 0.65
    for p in planned:
        ex = p.example
        assert ex.options == tuple(examples[planned.index(p)].options[i] for i in p.order)
        if not p.planted:
            assert p.answers == (ex.label,) * 3  # correct throughout
            continue
        assert ex.context_condition == "ambig" and ex.label == ex.unknown
        assert p.answers[0] == ex.target != ex.label
        if p.plan.name == "self-correct":
            assert p.answers[1:] == (ex.label, ex.label)  # moved to "unknown"
        else:
            assert p.plan.name == "baseline" and p.answers[1:] == (ex.target, ex.target)
    plans = {p.plan.name for p in planted}
    assert plans == {"self-correct", "baseline"}
    # every rotation appears, so position cannot stand in for content
    assert {p.order for p in planned} == {(0, 1, 2), (1, 2, 0), (2, 0, 1)}


def test_same_seed_same_plan_and_error_share_bounds(examples):
    a, b = _plan(examples), _plan(examples)
    assert [(p.answers, p.order, p.plan.name) for p in a] == [
        (p.answers, p.order, p.plan.name) for p in b
    ]
    assert not any(p.planted for p in _plan(examples, error_share=0.0))
    all_planted = _plan(examples, error_share=1.0)
    assert all(
        p.planted
        for p in all_planted
        if p.example.context_condition == "ambig" and p.example.target is not None
    )


def test_answers_recipe_answers_correctly_in_the_files_order(examples):
    planned = _plan(examples, recipe="answers", control_plan=None, permute="none")
    assert all(p.order == (0, 1, 2) and p.answers == (p.example.label,) * 3 for p in planned)
    assert planned[0].example == examples[0]


def test_self_correction_needs_bbq_items(examples):
    from dataclasses import replace

    plain = [replace(ex, unknown=None, context_condition=None) for ex in examples[:3]]
    with pytest.raises(InterpError, match="needs BBQ items"):
        _plan(plain)


def test_the_conversations_hold_the_planned_answers(tmp_path):
    """Tokenized conversations hold, per round, the planned option's letter and text."""
    from interp.finetune.train import build_examples
    from interp.model.loading import load_model

    model = load_model("tiny", seed=0)
    cfg = FinetuneConfig(
        out=str(tmp_path / "o"),
        task="bbq",
        data=(str(AGE),),
        recipe="self-correction",
        permute="cyclic",
        rounds=2,
        error_share=1.0,
    )
    from dataclasses import replace

    from interp.inputs.selection import Selection

    cfg = replace(cfg, selection=Selection(limit=30))
    convs, spans, recipe = build_examples(model, cfg)
    planned = _plan(load_task("bbq", [str(AGE)])[:30], error_share=1.0, seed=0)
    assert recipe["planted_round0_errors"] == sum(p.planted for p in planned) > 0
    tok = model.tokenizer
    for toks, sp, p in zip(convs, spans, planned, strict=True):
        said = [tok.decode(toks[a:b]) for a, b in sp]
        letters = [s.strip()[0] for s in said]
        assert letters == ["abc"[i] for i in p.answers]
    json.dumps(recipe)


def test_letter_loss_trains_only_the_option_letters(tmp_path):
    """--loss letter: one loss position per round, the letter the read-out scores."""
    from dataclasses import replace

    from interp.finetune.train import build_examples
    from interp.inputs.selection import Selection
    from interp.model.loading import load_model

    model = load_model("tiny", seed=0)
    cfg = FinetuneConfig(
        out=str(tmp_path / "o"),
        task="bbq",
        data=(str(AGE),),
        recipe="self-correction",
        permute="cyclic",
        rounds=2,
        loss="letter",
        selection=Selection(limit=12),
    )
    convs, spans, recipe = build_examples(model, cfg)
    planned = _plan(load_task("bbq", [str(AGE)])[:12], seed=0)
    assert recipe["answer_tokens"] == 12 * 3
    for toks, sp, p in zip(convs, spans, planned, strict=True):
        assert all(b == a + 1 for a, b in sp)
        assert [model.tokenizer.decode(toks[a:b]).strip() for a, b in sp] == [
            "abc"[i] for i in p.answers
        ]
    full = build_examples(model, replace(cfg, loss="answer"))
    assert full[0] == convs and full[2]["answer_tokens"] > recipe["answer_tokens"]
