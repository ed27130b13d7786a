"""Reading user files within bounds (interp.inputs.files) through the task loaders, and the
context-length bound of a replay (interp.inputs.lengths) against the transcripts a replay writes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from interp.errors import InterpError
from interp.inputs import files as inputs
from interp.inputs import tasks
from interp.inputs.files import json_depth, parse_json_line, read_bounded_bytes
from interp.inputs.lengths import LengthSettings, check_context_length, transcript_bounds
from interp.inputs.plans import load_plan
from interp.inputs.tasks import load_builtin, load_mc
from interp.replay.loop import ReplayConfig, replay

MC = {"id": 1, "question": "Who paid?", "options": ["The first", "The second"], "label": 0}


def _mc(path: Path, *lines: str) -> Path:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"label": ' + "1" * 5000 + "}", "more than 18 digits"),
        ('{"label": ' + "1" * 19 + "}", "more than 18 digits"),
        ("[" * 30_000 + "]" * 30_000, "nested too deeply"),
        ('{"a": ' + "[" * 33 + "]" * 33 + "}", "nested too deeply"),
        (json.dumps({"text": "x" * 65_537}), "longer than the limit of 64 KiB"),
        (json.dumps({"t": "é" * 40_000}, ensure_ascii=False), "longer than"),  # bytes, not chars
    ],
)
def test_json_line_bounds(line, message):
    with pytest.raises(InterpError, match=message) as err:
        parse_json_line(line, "f.jsonl:7")
    assert str(err.value).startswith("f.jsonl:7: ")


def test_json_line_within_bounds():
    value = parse_json_line('{"a": ' + "[" * 31 + "1" * 18 + "]" * 31 + "}", "w")
    assert json_depth(value) == 32


def test_mc_file_bounds_name_file_and_line(tmp_path):
    path = _mc(tmp_path / "q.jsonl", json.dumps(MC), json.dumps({**MC, "id": "i" * 201}))
    with pytest.raises(InterpError, match=r"q\.jsonl:2: field 'id' is 201 characters"):
        load_mc(path)


def test_file_size_limit(tmp_path, monkeypatch):
    monkeypatch.setattr(tasks, "MAX_DATA_FILE_BYTES", 100)
    path = _mc(tmp_path / "big.jsonl", json.dumps(MC), json.dumps({**MC, "id": 2}))
    with pytest.raises(InterpError, match=r"big\.jsonl: data file is larger than the limit"):
        load_mc(path)


def test_endless_file_is_refused_not_read_forever():
    # /dev/zero reports size 0: the read itself stops one byte past the limit.
    with pytest.raises(InterpError, match="larger than the limit of 1 KiB"):
        read_bounded_bytes("/dev/zero", 1024)


def test_limits_are_the_documented_ones():
    assert inputs.MAX_LINE_BYTES == 64 * 1024 and inputs.MAX_DATA_FILE_BYTES == 256 << 20
    assert inputs.MAX_PLAN_FILE_BYTES == 1 << 20


# --- context length --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("plan", "mode", "rounds"),
    [("self-correct", "choice", 3), ("instruct-first", "choice", 4), ("baseline", "choice", 1)],
)
def test_bound_holds_for_the_transcripts_a_replay_writes(
    tiny_model, one_torch_thread, tmp_path, plan, mode, rounds
):
    config = ReplayConfig(
        out=str(tmp_path / "run"), model="tiny", plan=plan, mode=mode, rounds=rounds, limit=4
    )
    run = replay(config, model=tiny_model)
    actual = [len(t) for t in run.tokens()]
    settings = LengthSettings(rounds, mode)
    bounds = transcript_bounds(tiny_model.tokenizer, load_plan(plan), load_builtin()[:4], settings)
    assert all(a <= b for a, b in zip(actual, bounds, strict=True)), (actual, bounds)
    # Not loose: at most the longest option's extra tokens and one token of slack per round.
    assert all(b - a <= 12 * (rounds + 1) for a, b in zip(actual, bounds, strict=True))


def test_context_check_names_the_example(tiny_model):
    examples = load_builtin()[:3]
    plan = load_plan("self-correct")
    check_context_length(tiny_model.tokenizer, 2048, plan, examples, LengthSettings(3))
    with pytest.raises(InterpError, match=r"example builtin/0 .*\(and 2 more examples\).*300"):
        check_context_length(tiny_model.tokenizer, 300, plan, examples, LengthSettings(3))


def test_rounds_beyond_any_context_are_refused_without_building(tiny_model):
    plan = load_plan("baseline")
    with pytest.raises(InterpError, match="--rounds 10000000000 cannot fit"):
        check_context_length(
            tiny_model.tokenizer, 2048, plan, load_builtin()[:1], LengthSettings(10**10)
        )


def test_text_that_comes_back_longer_is_an_error_not_a_crash(tmp_path, one_torch_thread):
    """Generated text is counted at its budget up front; the random tiny model writes byte
    tokens that, decoded and tokenized again, come back longer. With the context set just at
    the bound, the replay must stop with an InterpError before a forward pass overflows."""
    from interp.model.loading import load_model

    model = load_model("tiny")  # its own copy: n_ctx is changed below
    settings = LengthSettings(2, "generate", max_new_tokens=12)
    config = ReplayConfig(
        out=str(tmp_path / "full"), model="tiny", mode="generate", rounds=2, max_new_tokens=12
    )
    config.limit = 2
    actual = [len(t) for t in replay(config, model=model).tokens()]
    bounds = transcript_bounds(
        model.tokenizer, load_plan(config.plan), load_builtin()[:2], settings
    )
    if all(a <= b for a, b in zip(actual, bounds, strict=True)):
        pytest.skip(f"no generated text came back longer here ({actual} <= {bounds})")
    model.cfg.n_ctx = max(bounds)
    config.out = str(tmp_path / "short")
    with pytest.raises(InterpError, match="came back longer"):
        replay(config, model=model)
