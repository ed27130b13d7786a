"""``interp experiment``: bad input is one ``error:`` line, exit 2, and nothing on disk
changes (issue 15). All refused before any forward pass."""

from __future__ import annotations

from pathlib import Path

import pytest
from faultkit import assert_refused_without_trace

pytestmark = pytest.mark.faults


def _experiment(out: Path, *args: str) -> tuple[str, ...]:
    tiny = ("--model", "tiny", "--limit", "2", "--n-boot", "5")
    return ("experiment", "convergence", "--out", str(out), *tiny, *args)


def test_one_round_is_refused_and_nothing_is_written(tmp_path):
    line = assert_refused_without_trace(
        tmp_path, *_experiment(tmp_path / "x", "--rounds", "1"), contains="--rounds"
    )
    assert "at least 2" in line
    assert not (tmp_path / "x").exists()


def test_unknown_plan_leaves_no_experiment_folder(tmp_path):
    assert_refused_without_trace(
        tmp_path, *_experiment(tmp_path / "x", "--plan", "nope"), contains="unknown plan"
    )
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (("--cluster", "page"), "unknown cluster"),
        (("--n-boot", "-1"), "--n-boot must be at least 0"),
        (("--eps", "0"), "--eps must be positive"),
        (("--concept", "kindness"), "unknown concept"),
    ],
)
def test_bad_analysis_options(tmp_path, args, words):
    assert_refused_without_trace(tmp_path, *_experiment(tmp_path / "x", *args), contains=words)


def test_neither_out_nor_run(tmp_path):
    assert_refused_without_trace(
        tmp_path, "experiment", "superficial", "--model", "tiny", contains="--out DIR"
    )


def test_a_folder_holding_something_else_is_refused(tmp_path):
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "notes.txt").write_text("mine")
    assert_refused_without_trace(tmp_path, *_experiment(tmp_path / "x"), contains="not empty")


def test_convergence_of_a_one_round_run_is_refused(base_run):
    # base_run holds rounds 0..1: too few for three parameters
    assert_refused_without_trace(
        base_run,
        "experiment",
        "convergence",
        "--run",
        str(base_run),
        contains="at least rounds 0..2",
    )


def test_bad_n_boot_on_an_existing_run_is_refused(analysed_run, tmp_path):
    from faultkit import copy_run

    run = copy_run(analysed_run, tmp_path / "run")
    assert_refused_without_trace(
        run, "experiment", "superficial", "--run", str(run), "--n-boot", "-3", contains="n-boot"
    )


def test_a_run_directory_as_out_points_to_run(base_run):
    assert_refused_without_trace(base_run, *_experiment(base_run), contains="is a run directory")


def test_weak_evidence_without_qualifying_items(tmp_path):
    # the first built-in item alone: one ambiguous item, too few for two halves
    args = ("--model", "tiny", "--limit", "1", "--out", str(tmp_path / "x"))
    assert_refused_without_trace(
        tmp_path, "experiment", "weak-evidence", *args, contains="weak evidence needs"
    )


def test_self_distinguish_without_targets(tmp_path):
    data = tmp_path / "q.jsonl"
    data.write_text('{"id": 1, "question": "Who?", "options": ["A", "B", "Unknown"], "label": 2}\n')
    args = ("--model", "tiny", "--task", "mc", "--data", str(data), "--out", str(tmp_path / "x"))
    assert_refused_without_trace(
        tmp_path, "experiment", "self-distinguish", *args, contains="bias target"
    )


WINOGENDER = Path("/work/shared/data/winogender/templates.tsv")
for _parent in Path(__file__).resolve().parents:
    if (_parent / "shared" / "data" / "winogender" / "templates.tsv").is_file():
        WINOGENDER = _parent / "shared" / "data" / "winogender" / "templates.tsv"
        break


@pytest.mark.skipif(not WINOGENDER.is_file(), reason="shared Winogender data absent")
@pytest.mark.parametrize(
    ("command", "why"),
    [
        ("superficial", "need a correct answer per item"),
        ("weak-evidence", "'unknown' answer"),
        ("self-distinguish", "unbiased and the stereotyped answer"),
        ("interactions", "feedback factor needs BBQ metadata"),
    ],
)
def test_experiments_without_a_winogender_design_refuse_it(tmp_path, command, why):
    args = ("--model", "tiny", "--task", "winogender", "--data", str(WINOGENDER))
    line = assert_refused_without_trace(
        tmp_path,
        "experiment",
        command,
        *args,
        "--out",
        str(tmp_path / "x"),
        contains="does not take task winogender",
    )
    assert why in line
    assert not (tmp_path / "x").exists()


def test_a_control_equal_to_the_plan_is_refused(tmp_path):
    args = _experiment(tmp_path / "x", "--plan", "baseline", "--control", "baseline")
    assert_refused_without_trace(tmp_path, *args, contains="is the main plan itself")


def test_control_run_without_run_is_refused(tmp_path):
    args = _experiment(tmp_path / "x", "--control-run", str(tmp_path))
    assert_refused_without_trace(tmp_path, *args, contains="--control-run goes with --run")


def test_a_control_run_of_other_examples_is_refused(base_run, tmp_path):
    import pandas as pd
    from faultkit import copy_run

    run = copy_run(base_run, tmp_path / "run")
    other = copy_run(base_run, tmp_path / "other")
    rounds = pd.read_parquet(other / "rounds.parquet")  # the same run, other example ids
    rounds["example_id"] = rounds["example_id"].astype(str) + "-other"
    rounds.to_parquet(other / "rounds.parquet")
    assert_refused_without_trace(
        tmp_path,
        "experiment",
        "superficial",
        "--run",
        str(run),
        "--control-run",
        str(other),
        contains="holds other examples than the run",  # (interp.runs.controls, as probe/patch)
    )
