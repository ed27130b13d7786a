"""``interp experiment`` on stored runs and damaged experiment directories (issue 22, items
6-10 and 14): refused in one ``error:`` line before any work, nothing on disk changes, and a
stored analysis is never replaced by a weaker one."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from faultkit import (
    assert_refused_without_trace,
    assert_user_error,
    invoke,
    small_config,
    tree_digest,
)

from interp.replay.loop import replay

pytestmark = pytest.mark.faults


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_model) -> dict[str, Path]:
    """A self-correct run (rounds 0..2), its baseline control, a same-plan copy and a run of
    other weights (tiny seed 1), all on the same three examples. Read-only."""
    root = tmp_path_factory.mktemp("experiment-runs")
    made = {}
    for name, fields in {
        "main": {"plan": "self-correct"},
        "control": {"plan": "baseline"},
        "same_plan": {"plan": "self-correct", "batch_size": 3},
        "other_weights": {"plan": "baseline", "seed": 1},
    }.items():
        config = small_config(root / name, rounds=2, **fields)
        made[name] = replay(config, model=None if name == "other_weights" else tiny_model).path
    return made


def _tiny(out: Path, *args: str) -> tuple[str, ...]:
    return ("experiment", "convergence", "--out", str(out), "--model", "tiny", "--limit", "2",
            "--n-boot", "5", *args)  # fmt: skip


# --- item 6: a manifest that is not an object ------------------------------------------------


@pytest.mark.parametrize("content", ["null", "3", "[1, 2]", '"text"'])
def test_an_experiment_folder_whose_manifest_is_not_an_object(tmp_path, content):
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "manifest.json").write_text(content)
    assert_refused_without_trace(tmp_path, *_tiny(tmp_path / "x"), contains="not an experiment's")
    assert_refused_without_trace(
        tmp_path, "export", "--run", str(tmp_path / "x"), contains="not a run's manifest"
    )
    assert_refused_without_trace(
        tmp_path, "experiment", "convergence", "--run", str(tmp_path / "x"), contains="manifest"
    )


def test_an_experiment_manifest_with_a_damaged_replay_record(tmp_path):
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "manifest.json").write_text('{"experiment": "convergence", "replay": 3}')
    assert_refused_without_trace(tmp_path, *_tiny(tmp_path / "x"), contains="is corrupt")


# --- item 7: plan names before any work ------------------------------------------------------


@pytest.mark.parametrize("flag", ["--control", "--plan"])
def test_an_unknown_plan_is_refused_before_any_replay(tmp_path, flag):
    assert_refused_without_trace(
        tmp_path, *_tiny(tmp_path / "x", flag, "nonsense"), contains="unknown plan"
    )
    assert not (tmp_path / "x").exists()


def test_superficial_refuses_an_unknown_control_before_any_replay(tmp_path):
    args = ("experiment", "superficial", "--out", str(tmp_path / "x"), "--model", "tiny")
    assert_refused_without_trace(tmp_path, *args, "--control", "nonsense", contains="unknown plan")


# --- item 8: controls that are not controls --------------------------------------------------


@pytest.mark.parametrize("name", ["convergence", "superficial"])
@pytest.mark.parametrize(
    ("control", "words"),
    [
        ("main", "is the run itself"),
        ("same_plan", "same plan as the run"),
        ("other_weights", "another model"),
    ],
)
def test_a_control_run_that_is_no_control_is_refused(runs, tmp_path, name, control, words):
    run = shutil.copytree(runs["main"], tmp_path / "main")
    other = run if control == "main" else runs[control]
    assert_refused_without_trace(
        tmp_path,
        *("experiment", name, "--run", str(run), "--control-run", str(other), "--n-boot", "5"),
        contains=words,
    )


# --- item 9: options that cannot apply, and stored results kept ------------------------------


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (("--out", "OUT"), "--out and --run: give one"),
        (("--rounds", "0"), "--rounds does not apply with --run"),
        (("--model", "tiny"), "--model does not apply with --run"),
        (("--plan", "baseline"), "--plan does not apply with --run"),
        (("--layers", "99"), "--layers 99 out of range"),
        (("--layers", "1"), "--layers 1 picks a concept score, but"),
    ],
)
def test_options_a_stored_run_cannot_take_are_refused(runs, tmp_path, args, words):
    run = shutil.copytree(runs["main"], tmp_path / "main")
    args = tuple(str(tmp_path / "e8") if a == "OUT" else a for a in args)
    assert_refused_without_trace(
        tmp_path, "experiment", "convergence", "--run", str(run), *args, contains=words
    )
    assert not (tmp_path / "e8").exists()


@pytest.mark.parametrize("name", ["convergence", "superficial"])
@pytest.mark.parametrize(
    ("weaker", "words"),
    [((), "lacks the stored table"), (("--n-boot", "3"), "fewer resamples than the stored 10")],
)
def test_a_weaker_analysis_is_printed_not_stored(runs, tmp_path, name, weaker, words):
    run = shutil.copytree(runs["main"], tmp_path / "main")
    control = ("--control-run", str(runs["control"]))
    first = invoke("experiment", name, "--run", str(run), *control, "--n-boot", "10")
    assert first.exit_code == 0, first.output
    stored = tree_digest(run)
    again = (*control, *weaker) if weaker else ("--n-boot", "10")
    result = invoke("experiment", name, "--run", str(run), *again)
    assert result.exit_code == 0, result.output
    assert "not stored:" in result.stdout and words in result.stdout
    assert tree_digest(run) == stored


def test_a_stronger_analysis_replaces_the_stored_one(runs, tmp_path):
    run = shutil.copytree(runs["main"], tmp_path / "main")
    assert invoke("experiment", "convergence", "--run", str(run), "--n-boot", "5").exit_code == 0
    control = ("--control-run", str(runs["control"]))
    result = invoke("experiment", "convergence", "--run", str(run), *control, "--n-boot", "10")
    assert result.exit_code == 0 and "wrote" in result.stdout
    summary = json.loads((run / "experiments" / "convergence" / "summary.json").read_text())
    assert summary["n_boot"] == 10 and summary["control"] is not None


# --- item 10: orders with generated answers --------------------------------------------------


def test_permuted_orders_with_generated_answers_are_refused(tmp_path):
    args = ("replay", "--model", "tiny", "--out", str(tmp_path / "r"), "--limit", "2")
    assert_refused_without_trace(
        tmp_path, *args, "--permute", "cyclic", "--mode", "generate", contains="--mode choice"
    )


# --- item 14: exporting an experiment stopped before its first arm finished ------------------


def _killed_start(path: Path, command: str | None) -> None:
    """What kill -9 leaves a few seconds into `interp experiment convergence --out path`."""
    from interp.experiments.common import ExperimentConfig, ExperimentDir

    exp = ExperimentDir("convergence", ExperimentConfig(out=str(path)), command)
    exp.__enter__()
    partial = path / "runs" / "main" / ".partial"
    partial.mkdir(parents=True)
    (partial / "config.json").write_text("{}")
    exp._lock.__exit__(None, None, None)  # the process is gone: its lock with it
    if command is None:  # (a folder left by an interp that wrote no start record)
        (path / ".experiment-started.json").unlink()


def test_exporting_a_killed_experiment_says_how_to_finish_it(tmp_path):
    command = "interp experiment convergence --out exp --model tiny"
    _killed_start(tmp_path / "exp", command)
    line = assert_refused_without_trace(tmp_path, "export", "--run", str(tmp_path / "exp"))
    assert "unfinished experiment directory (convergence" in line
    assert f"run `{command}` again" in line


def test_exporting_an_older_killed_experiment_names_what_it_is(tmp_path):
    _killed_start(tmp_path / "exp", None)
    line = assert_refused_without_trace(tmp_path, "export", "--run", str(tmp_path / "exp"))
    assert "unfinished experiment directory" in line and "interp experiment NAME --out" in line


def test_a_refused_first_start_leaves_no_start_record(tmp_path):
    result = invoke(*_tiny(tmp_path / "x", "--concept", "kindness"))
    assert_user_error(result)
    assert not (tmp_path / "x").exists()
