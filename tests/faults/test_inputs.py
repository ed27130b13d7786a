"""Bad input, through the command line: exit 2, one ``error:`` line, nothing new on disk and
an existing run unchanged (issue 10: context length, parser gaps, option ranges, concept
names). Every case runs on the tiny model and refuses before any forward pass."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from faultkit import assert_refused_without_trace, invoke

pytestmark = pytest.mark.faults

MC_LINE = {
    "id": 1,
    "context": "Two friends met for lunch.",
    "question": "Who paid?",
    "options": ["The first friend", "The second friend", "Unknown"],
    "label": 2,
}


@pytest.fixture(scope="module")
def space(tmp_path_factory) -> Path:
    """A folder holding one complete tiny run (runs/base); the refused commands' inputs are
    written beside it, and nothing below it may change."""
    root = tmp_path_factory.mktemp("inputs")
    base = root / "runs" / "base"
    args = ("replay", "--model", "tiny", "--limit", "2", "--rounds", "1", "--out", str(base))
    result = invoke(*args, "--json")
    assert result.exit_code == 0, result.output
    return root


def _replay(space: Path, *args: str) -> tuple[str, ...]:
    out = space / "runs" / "new"
    return ("replay", "--model", "tiny", "--limit", "2", "--out", str(out), *args)


def _mc(path: Path, *lines: str) -> str:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return str(path)


def _plan(path: Path, text: str | bytes) -> str:
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return str(path)


# --- longer than the model's context: refused up front, naming the example ------------------


def test_rounds_beyond_the_context(space):
    line = assert_refused_without_trace(
        space, *_replay(space, "--rounds", "1000"), contains="context of 2048"
    )
    assert "example builtin/0" in line and "tokens" in line


def test_generation_budget_beyond_the_context(space):
    args = _replay(space, "--mode", "generate", "--max-new-tokens", "100000")
    line = assert_refused_without_trace(space, *args, contains="context of 2048")
    assert "--max-new-tokens" in line


def test_long_mc_context(space):
    long = {**MC_LINE, "id": "long", "context": "The grandson was struggling. " * 1500}
    data = _mc(space / "long.jsonl", json.dumps(MC_LINE), json.dumps(long))
    args = _replay(space, "--task", "mc", "--data", data, "--rounds", "1")
    assert_refused_without_trace(space, *args, contains="example long/long")


def test_think_tokens_beyond_the_context(space):
    plan = _plan(space / "think.yaml", "followups: [Think, then answer.]\nthink_tokens: 100000\n")
    line = assert_refused_without_trace(
        space, *_replay(space, "--plan", plan), contains="context of 2048"
    )
    assert "think_tokens" in line


# --- data files: sizes, numbers, nesting ------------------------------------------------------


@pytest.mark.parametrize(
    ("case", "line", "contains"),
    [
        ("long line", json.dumps({**MC_LINE, "context": "x" * 70_000}), "limit of 64 KiB"),
        ("5000 digits", json.dumps(MC_LINE).replace('"label": 2', '"label": ' + "7" * 5000), ""),
        ("nested 30k deep", '{"id": 1, "options": ' + "[" * 30_000 + "]" * 30_000 + "}", ""),
        ("nested 40 deep", '{"id": 1, "options": ' + "[" * 40 + "]" * 40 + "}", ""),
        ("long id", json.dumps({**MC_LINE, "id": "i" * 300}), "the limit is 200"),
    ],
)
def test_bad_mc_line(space, case, line, contains):
    data = _mc(space / "bad.jsonl", json.dumps(MC_LINE), line)
    message = assert_refused_without_trace(
        space, *_replay(space, "--task", "mc", "--data", data), contains="bad.jsonl:2: "
    )
    expected = {"5000 digits": "more than 18 digits", "nested": "nested too deeply"}
    for key, text in expected.items():
        if case.startswith(key):
            assert text in message
    assert contains in message


# --- plans: encoding, placeholders, sizes -----------------------------------------------------


@pytest.mark.parametrize(
    "question",
    [
        "{context:>100000000000}\n{question}\n{options}",
        "{question.__class__}\n{options}",
        "{question!r}\n{options}",
        "{options[0]}\n{question}\n{options}",
        "{0}\n{question}\n{options}",
        "{hint}\n{question}\n{options}",
    ],
)
def test_plan_placeholders_are_plain_names(space, question):
    plan = _plan(space / "fmt.json", json.dumps({"followups": ["Again."], "question": question}))
    assert_refused_without_trace(space, *_replay(space, "--plan", plan), contains="may use only")


def test_plan_not_utf8(space):
    plan = _plan(space / "latin1.yaml", b"followups: ['R\xe9pondez encore.']\n")
    assert_refused_without_trace(space, *_replay(space, "--plan", plan), contains="not UTF-8")


def test_plan_too_large(space):
    plan = _plan(space / "huge.yaml", "followups: [Again.]\n" + "# padding\n" * 120_000)
    assert_refused_without_trace(space, *_replay(space, "--plan", plan), contains="1 MiB")


def test_plan_text_too_long(space):
    plan = _plan(space / "long.json", json.dumps({"followups": ["Again. " * 3000]}))
    assert_refused_without_trace(space, *_replay(space, "--plan", plan), contains="followups[0]")


def test_plan_huge_integer(space):
    plan = _plan(space / "int.yaml", "followups: [Again.]\nthink_tokens: " + "9" * 5000 + "\n")
    assert_refused_without_trace(space, *_replay(space, "--plan", plan), contains="int.yaml")


# --- options out of range, every command ------------------------------------------------------


def _base(space: Path) -> str:
    return str(space / "runs" / "base")


@pytest.mark.parametrize(
    ("args", "contains"),
    [
        (("--seed", "-1"), "--seed"),
        (("--rounds", "0"), "--rounds"),
        (("--batch-size", "0"), "--batch-size"),
        (("--limit", "0"), "--limit"),
        (("--max-orders", "0"), "--max-orders"),
        (("--permute", "all", "--max-orders", "2"), "--max-orders 6"),
    ],
)
def test_replay_options(space, args, contains):
    assert_refused_without_trace(space, *_replay(space, *args), contains=contains)


@pytest.mark.parametrize(
    ("command", "args", "contains"),
    [
        ("metrics", ("--n-boot", "-5"), "--n-boot"),
        ("metrics", ("--n-boot", "100000000000"), "--n-boot"),
        ("metrics", ("--seed", "-1"), "--seed"),
        ("metrics", ("--debias-space", "geometric"), "debias space"),
        ("patch", ("--layers", "0", "--round", "1", "--n-boot", "-5"), "--n-boot"),
        ("patch", ("--layers", "0", "--round", "1", "--seed", "-1"), "--seed"),
        ("patch", ("--layers", "0", "--round", "1", "--rows", "-1"), "--rows"),
        ("patch", ("--layers", "0", "--round", "1", "--positions", "last:100000"), "last:100000"),
        ("patch", ("--layers", "0", "--round", "1", "--batch-size", "0"), "--batch-size"),
        ("patch", ("--layers", "0", "--round", "1", "--example-batch", "0"), "--example-batch"),
        ("probe", ("--layers", "0-99999999999"), "--layers"),
        ("probe", ("--layers", "2-1"), "--layers"),
        ("probe", ("--seed", "-1"), "--seed"),
        ("export", ("--examples", "99"), "--example"),
        ("export", ("--heads", "0.99"), "--heads"),
    ],
)
def test_analysis_options(space, command, args, contains):
    assert_refused_without_trace(space, command, "--run", _base(space), *args, contains=contains)


# --- concept files ----------------------------------------------------------------------------


def _concept_lines(n_pairs: int = 4) -> list[str]:
    rows = []
    for i in range(n_pairs):
        rows.append({"id": f"{i}/1", "pair": i, "text": f"Old people are slow, {i}.", "label": 1})
        rows.append(
            {"id": f"{i}/0", "pair": i, "text": f"This old man runs fast, {i}.", "label": 0}
        )
    return [json.dumps(row) for row in rows]


@pytest.mark.parametrize(
    ("name", "extra", "contains"),
    [
        ("digits.jsonl", '{"id": 9, "text": "t", "label": 1' + "0" * 5000 + "}", "18 digits"),
        ("deep.jsonl", '{"id": 9, "text": ' + "[" * 30_000 + "]" * 30_000 + "}", "nested"),
        ("wide.jsonl", json.dumps({"id": 9, "text": "t" * 70_000, "label": 1}), "64 KiB"),
        ("...jsonl", None, "letter or digit"),
        ("_.jsonl", None, "letter or digit"),
    ],
)
def test_bad_concept_file(space, name, extra, contains):
    lines = _concept_lines() + ([extra] if extra else [])
    path = _mc(space / name, *lines)
    assert_refused_without_trace(
        space, "probe", "--run", _base(space), "--concept", path, contains=contains
    )


def test_user_concept_never_replaces_a_builtin(space, tmp_path):
    """A user file named morality.jsonl writes probes/user-morality, not probes/morality."""
    run = tmp_path / "run"
    run.mkdir()
    for path in (space / "runs" / "base").rglob("*"):
        target = run / path.relative_to(space / "runs" / "base")
        if path.is_dir():
            target.mkdir(parents=True, exist_ok=True)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(path.read_bytes())
    concept = _mc(tmp_path / "morality.jsonl", *_concept_lines(6))
    result = invoke("probe", "--run", str(run), "--concept", concept, "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["concept"] == "user-morality"
    folders = {p.name for p in (run / "probes").iterdir()}
    assert "user-morality" in folders and "morality" not in folders
