"""Bad Winogender input through the command line: one ``error:`` line, exit 2, nothing written
(no run directory, the inputs' folder unchanged)."""

from __future__ import annotations

from pathlib import Path

import pytest
from faultkit import assert_refused_without_trace

pytestmark = pytest.mark.faults

HEADER = "occupation(0)\tother-participant(1)\tanswer\tsentence"
ROW = "technician\tcustomer\t1\tThe $OCCUPATION told the $PARTICIPANT that $NOM_PRONOUN could pay."
STATS = "occupation\tbergsma_pct_female\tbls_pct_female\tbls_year\ntechnician\t9.42\t40.34\t2015\n"


@pytest.fixture
def space(tmp_path: Path) -> Path:
    (tmp_path / "templates.tsv").write_text(f"{HEADER}\n{ROW}\n")
    (tmp_path / "stats.tsv").write_text(STATS)
    return tmp_path


def _replay(space: Path, data: str, *extra: str) -> tuple[str, ...]:
    out = str(space / "runs" / "new")
    args = ("replay", "--model", "tiny", "--task", "winogender", "--rounds", "1", "--out", out)
    return (*args, "--data", str(space / data), *extra)


def _write(space: Path, name: str, text: str) -> str:
    (space / name).write_text(text)
    return name


@pytest.mark.parametrize(
    ("name", "text", "contains"),
    [
        ("empty.tsv", "", "empty file"),
        ("header_only.tsv", HEADER + "\n", "no rows after the header"),
        (
            "no_sentence.tsv",
            "occupation(0)\tother-participant(1)\tanswer\ntechnician\tc\t1\n",
            "no column 'sentence'",
        ),
        ("short_row.tsv", f"{HEADER}\ntechnician\tcustomer\t1\n", ":2: 3 tab-separated fields"),
        (
            "bad_answer.tsv",
            f"{HEADER}\n{ROW.replace(chr(9) + '1' + chr(9), chr(9) + '7' + chr(9))}\n",
            "answer '7' is not 0 or 1",
        ),
        (
            "no_blank.tsv",
            f"{HEADER}\ntechnician\tcustomer\t1\tThe $OCCUPATION paid.\n",
            "exactly one pronoun placeholder",
        ),
        (  # issue 22 item 5: tokenized for 126 s before the context check refused it
            "long_line.tsv",
            f"{HEADER}\n{ROW}\n{ROW.replace('could pay', 'x' * 5_000_000)}\n",
            "long_line.tsv:3: line is longer than the limit of 64 KiB",
        ),
        (
            "unknown_occupation.tsv",
            f"{HEADER}\n{ROW.replace('technician', 'astronaut')}\n",
            "occupation 'astronaut' is not in the stats file",
        ),
    ],
)
def test_bad_templates(space, name, text, contains):
    data = _write(space, name, text)
    args = _replay(space, data, "--stats", str(space / "stats.tsv"))
    assert_refused_without_trace(space, *args, contains=contains)


@pytest.mark.parametrize(
    ("text", "contains"),
    [
        ("", "empty file"),
        ("occupation\tbls_year\ntechnician\t2015\n", "no column 'bls_pct_female'"),
        ("occupation\tbls_pct_female\ntechnician\tmany\n", "is not a number"),
        ("occupation\tbls_pct_female\ntechnician\t140\n", "is not a percentage"),
    ],
)
def test_bad_stats(space, text, contains):
    stats = _write(space, "bad_stats.tsv", text)
    args = _replay(space, "templates.tsv", "--stats", str(space / stats))
    assert_refused_without_trace(space, *args, contains=contains)


def test_missing_stats_and_files(space):
    assert_refused_without_trace(
        space, *_replay(space, "templates.tsv"), contains="needs the occupations' statistics"
    )
    assert_refused_without_trace(
        space, *_replay(space, "nope.tsv", "--stats", str(space / "stats.tsv")), contains="nope"
    )
    bbq = ("replay", "--model", "tiny", "--out", str(space / "runs" / "x"))
    assert_refused_without_trace(
        space,
        *bbq,
        "--stats",
        str(space / "stats.tsv"),
        contains="--stats applies to task winogender only",
    )
    args = _replay(space, "templates.tsv", "--stats", str(space / "stats.tsv"))
    assert_refused_without_trace(space, *args, "--mode", "generate", contains="does not take")


def test_wrong_data_path_is_named_before_the_statistics(space):
    # Without --stats the statistics are looked for beside --data: a wrong --data path must be
    # reported as such, not as missing statistics.
    assert_refused_without_trace(
        space, *_replay(space, "nope.tsv"), contains=f"--data {space / 'nope.tsv'}: no such file"
    )
