"""The ``interp`` command line: in process through typer's runner and ``main()``, and once as a
real process (``--data A B`` through the installed script, its stdout and stderr)."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from samples import BBQ_LINE
from typer.testing import CliRunner

from interp.cli import _expand_multi_value_options, app, main
from interp.runs.store import Run

INTERP = Path(sys.executable).parent / "interp"


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def bbq_file(path: Path, n: int, category: str) -> Path:
    rows = [{**BBQ_LINE, "example_id": i, "category": category} for i in range(n)]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def invoke(*args: str):
    return CliRunner().invoke(app, list(args))


def assert_user_error(result, *, code: int = 2) -> str:
    """Exit code 2, nothing on stdout, one line on stderr starting with "error:"."""
    assert result.exit_code == code, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.output
    return lines[0]


def run_interp(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    # One intra-op thread, as in-process (see one_torch_thread); everything else as a user has it.
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [str(INTERP), *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=300
    )


# --- argv expansion ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["replay", "--data", "A"], ["replay", "--data", "A"]),
        (
            ["replay", "--data", "A", "B", "--limit", "4"],
            ["replay", "--data", "A", "--data", "B", "--limit", "4"],
        ),
        (
            ["replay", "--task", "bbq", "--data", "A", "B", "C", "--json"],
            ["replay", "--task", "bbq", "--data", "A", "--data", "B", "--data", "C", "--json"],
        ),
        (
            ["replay", "--hooks", "resid_post", "blocks.1.hook_mlp_out", "--data", "A", "B"],
            [
                "replay",
                "--hooks",
                "resid_post",
                "--hooks",
                "blocks.1.hook_mlp_out",
                "--data",
                "A",
                "--data",
                "B",
            ],
        ),
        # Values after another option are that option's, not --data's.
        (
            ["replay", "--data", "A", "--limit", "4", "B"],
            ["replay", "--data", "A", "--limit", "4", "B"],
        ),
        (["replay", "--out", "X", "--rounds", "2"], ["replay", "--out", "X", "--rounds", "2"]),
        (["metrics", "--run", "R", "--json"], ["metrics", "--run", "R", "--json"]),
        ([], []),
    ],
)
def test_expand_multi_value_options(argv, expected):
    assert _expand_multi_value_options(argv) == expected


# --- commands, in process -----------------------------------------------------------------------


def test_help_lists_the_commands():
    result = invoke("--help")
    assert result.exit_code == 0
    for command in ("replay", "metrics", "models", "probe", "patch", "circuit", "export", "sae"):
        assert command in result.stdout


def test_replay_help_lists_its_options():
    result = invoke("replay", "--help")
    assert result.exit_code == 0
    for option in ("--out", "--plan", "--rounds", "--limit", "--hooks", "--data", "--mode"):
        assert option in result.stdout


def test_models_json_lists_tiny():
    result = invoke("models", "--json")
    assert result.exit_code == 0
    rows = json.loads(result.stdout)
    assert "tiny" in [row["name"] for row in rows]


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "run"
    args = ("replay", "--model", "tiny", "--out", str(out), "--rounds", "2", "--limit", "4")
    return out, args, invoke(*args)


def table_rows(text: str) -> dict[int, list[str]]:
    """Rows of the per-round table: round -> the row's cells (split on whitespace)."""
    lines = text.splitlines()
    header = next(i for i, line in enumerate(lines) if line.split()[:2] == ["round", "accuracy"])
    rows = {}
    for line in lines[header + 1 :]:
        cells = line.split()
        if not cells or not cells[0].isdigit():
            break
        rows[int(cells[0])] = cells
    return rows


def test_replay_prints_a_table_per_round(cli_run):
    out, _, result = cli_run
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output
    rows = table_rows(result.stdout)
    assert sorted(rows) == [0, 1, 2]
    run = Run.open(out)
    frame = run.rounds()
    for r, cells in rows.items():
        accuracy = frame[frame["round"] == r]["correct"].mean()
        assert cells[1] == f"{accuracy:.3f}"  # the accuracy column, before its interval
    assert "n = 4 examples" in result.stdout
    assert result.stdout.rstrip().endswith(f"wrote {out}")
    assert run.manifest["config"]["rounds"] == 2 and run.manifest["config"]["limit"] == 4
    assert run.manifest["command"].startswith("interp ")


def test_replay_again_returns_the_same_run(cli_run):
    out, args, first = cli_run
    inode = (out / "rounds.parquet").stat().st_ino  # an atomic rewrite makes a new file
    again = invoke(*args)
    assert again.exit_code == 0
    assert table_rows(again.stdout) == table_rows(first.stdout)
    assert (out / "rounds.parquet").stat().st_ino == inode  # not rewritten


def test_replay_with_other_arguments_on_the_same_out_is_refused(cli_run):
    out, args, _ = cli_run
    line = assert_user_error(invoke(*args[:-1], "3"))  # --limit 3 instead of 4
    assert "different run" in line


def test_metrics_json(cli_run):
    out, _, _ = cli_run
    stored = (out / "metrics.json").read_bytes()
    result = invoke("metrics", "--run", str(out), "--json", "--n-boot", "50")
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.stdout)
    assert metrics["n_examples"] == 4
    assert len(metrics["per_round"]) == 3
    frame = Run.open(out).rounds()
    for entry in metrics["per_round"]:
        correct = frame[frame["round"] == entry["round"]]["correct"]
        assert entry["accuracy"]["value"] == pytest.approx(correct.mean())
    assert metrics["bootstrap"]["n_boot"] == 50
    # Other bootstrap settings than the stored ones are printed, never saved over them.
    assert (out / "metrics.json").read_bytes() == stored


def test_metrics_table(cli_run):
    out, _, _ = cli_run
    result = invoke("metrics", "--run", str(out), "--n-boot", "20")
    assert result.exit_code == 0
    assert sorted(table_rows(result.stdout)) == [0, 1, 2]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--rounds", "0"], "--rounds"),
        (["--limit", "0"], "--limit"),
        (["--batch-size", "0"], "--batch-size"),
        (["--plan", "be-nice"], "unknown plan"),
        (["--plan", "nowhere.yaml"], "no such plan file"),
        (["--task", "bbq", "--data", "nowhere/Age.jsonl"], "file not found"),
        (["--task", "bbq"], "needs at least one data file"),
        (["--mode", "sample"], "unknown mode"),
        (["--hooks", "blocks.7.hook_resid_post"], "out of range"),
        (["--hooks", "resid"], "unknown hook"),
        (["--model", "no-such-model"], "unknown model"),
    ],
)
def test_replay_bad_input(tmp_path, args, message):
    out = tmp_path / "parent" / "run"
    result = invoke("replay", "--model", "tiny", "--out", str(out), "--limit", "2", *args)
    assert message in assert_user_error(result)
    assert not (tmp_path / "parent").exists()


def test_metrics_on_a_missing_directory(tmp_path):
    line = assert_user_error(invoke("metrics", "--run", str(tmp_path / "nothing")))
    assert str(tmp_path / "nothing") in line
    assert not (tmp_path / "nothing").exists()


def test_metrics_on_a_directory_that_is_no_run(tmp_path):
    assert "manifest.json" in assert_user_error(invoke("metrics", "--run", str(tmp_path)))


# --- probe, patch and export on the same run ----------------------------------------------------


def test_patch_last_layer_readout_carries_the_whole_change(cli_run):
    out, _, _ = cli_run
    args = ("--run", str(out), "--layers", "2", "--round", "2", "--n-boot", "20")
    result = invoke("patch", *args, "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    [row] = summary["table"]
    assert (row["layer"], row["component"]) == (2, "resid_post")
    assert row["effect"] == pytest.approx(1.0, abs=1e-4)  # the last layer's residual is all
    assert (out / "patching" / f"{summary['name']}.parquet").exists()
    table = invoke("patch", *args)
    assert table.exit_code == 0 and "effect" in table.stdout and "\nwrote " in table.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--layers", "3", "--round", "1"], "out of range"),
        (["--layers", "x", "--round", "1"], "--layers"),
        (["--layers", "1", "--round", "3"], "round"),
        (["--layers", "1", "--round", "1", "--component", "mlp"], "component"),
    ],
)
def test_patch_bad_input(cli_run, args, message):
    out, _, _ = cli_run
    before = sorted(p.name for p in out.rglob("*"))
    assert message in assert_user_error(invoke("patch", "--run", str(out), *args))
    assert sorted(p.name for p in out.rglob("*")) == before  # nothing half-written


def test_probe_writes_tables_and_prints_the_best_layer(cli_run):
    out, _, _ = cli_run
    result = invoke("probe", "--run", str(out), "--concept", "morality", "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["best_layer"] in range(3)
    assert (out / "probes" / "morality" / "summary.json").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--layers", "7"], "layer"),
        (["--layers", "a-b"], "--layers"),
        (["--concept", "nowhere.jsonl"], "nowhere.jsonl"),
        (["--method", "svm"], "method"),
    ],
)
def test_probe_bad_input(cli_run, args, message):
    out, _, _ = cli_run
    assert message in assert_user_error(invoke("probe", "--run", str(out), *args))


def test_export_prints_the_index_path_last(cli_run):
    out, _, _ = cli_run
    result = invoke("export", "--run", str(out))
    assert result.exit_code == 0, result.output
    assert result.stdout.strip().splitlines()[-1] == f"wrote {out / 'index.html'}"
    assert (out / "index.html").read_text().count("<html") == 1


def test_export_of_a_missing_run(tmp_path):
    assert "no run directory" in assert_user_error(invoke("export", "--run", str(tmp_path / "x")))


# --- the real program ---------------------------------------------------------------------------


def test_main_expands_data_and_reports_one_line(tmp_path, monkeypatch, capsys):
    # main() in process: "--data A B" reaches the loader as two files, and B is the missing one
    # it reports, on one line of stderr with exit code 2.
    age = bbq_file(tmp_path / "Age.jsonl", 2, "Age")
    out = tmp_path / "run"
    argv = ["interp", "replay", "--model", "tiny", "--task", "bbq", "--data", str(age),
            str(tmp_path / "missing.jsonl"), "--out", str(out)]  # fmt: skip
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.splitlines() == [f"error: {tmp_path / 'missing.jsonl'}: file not found"]
    assert not out.exists()


def test_program_replays_two_bbq_files(tmp_path):
    age = bbq_file(tmp_path / "Age.jsonl", 3, "Age")
    religion = bbq_file(tmp_path / "Religion.jsonl", 3, "Religion")
    out = tmp_path / "run"
    proc = run_interp(
        "replay", "--model", "tiny", "--task", "bbq", "--data", "Age.jsonl", "Religion.jsonl",
        "--limit", "4", "--rounds", "1", "--out", "run", "--json",
        cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""  # --json: no progress bar, no warnings
    metrics = json.loads(proc.stdout)  # --json: stdout is the JSON alone
    assert metrics["n_examples"] == 4 and len(metrics["per_round"]) == 2
    run = Run.open(out)
    assert run.manifest["task"]["files"] == [str(age.resolve()), str(religion.resolve())]
    ids = list(run.rounds().drop_duplicates("example_index")["example_id"])
    assert ids == ["Age/0", "Age/1", "Age/2", "Religion/0"]
    # The command is recorded as it runs (after expansion): running it again is the same replay.
    command = shlex.split(run.manifest["command"])
    assert command[0] == "interp"
    assert command[1:] == _expand_multi_value_options(proc.args[1:])
