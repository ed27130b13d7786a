"""``interp circuit`` (issue 24, "one house for every verb"): one command, both levels
(``--level components|features``); ``--level features`` does what ``interp feature-circuit``
did (same files, same stdout), the old command keeps working for one release with one
deprecation line, and an option of the other level is refused in one line."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import typer
from faultkit import assert_refused_without_trace, invoke, small_config, tree_digest

from interp.cli import app
from interp.cli.circuit import LEVEL_OPTIONS
from interp.cli.params import DEPRECATED_COMMANDS, deprecation_line
from interp.errors import InterpError

COMMAND = typer.main.get_command(app)
OLD_LINE = "deprecated: feature-circuit is now circuit --level features; the old spelling goes in "
OLD_LINE += "the next release"


def _options(name: str) -> dict[str, object]:
    """Flag -> click parameter of a top-level command."""
    return {p.opts[0]: p for p in COMMAND.commands[name].params}


def test_the_deprecation_line_is_the_one_the_issue_names():
    assert deprecation_line("feature-circuit", DEPRECATED_COMMANDS["feature-circuit"]) == OLD_LINE


def test_level_features_takes_every_option_of_feature_circuit():
    """circuit's options less the components level's are feature-circuit's, plus --level; the
    feature level's own options keep their defaults."""
    circuit, old = _options("circuit"), _options("feature-circuit")
    components = {circuit_flag(name) for name in LEVEL_OPTIONS["components"]}
    assert set(circuit) - components == set(old) | {"--level"}
    for name in LEVEL_OPTIONS["features"]:
        flag = circuit_flag(name)
        assert circuit[flag].default == old[flag].default, flag
    assert circuit["--level"].default == "components"


def circuit_flag(name: str) -> str:
    from interp.cli.circuit import _flag

    return _flag(name)


# Each option of one level, with a value other than its default, given at the other level.
CROSS = [
    ("features", ["--method", "eap"]),
    ("features", ["--steps", "2"]),
    ("features", ["--top-edges", "7"]),
    ("features", ["--verify-top", "0"]),
    ("features", ["--category", "Age"]),
    ("features", ["--context-condition", "ambig"]),
    ("features", ["--n-boot", "10"]),
    ("features", ["--cluster", "example"]),
    ("features", ["--dtype", "bfloat16"]),
    ("features", ["--workers", "2"]),
    ("features", ["--ray-address", "auto"]),
    ("features", ["--gpus-per-worker", "1"]),
    ("features", ["--threads-per-worker", "2"]),
    ("components", ["--transcoders", "."]),
    ("components", ["--max-feature-nodes", "8"]),
    ("components", ["--top-features", "3"]),
    ("components", ["--node-threshold", "0.5"]),
    ("components", ["--edge-threshold", "0.5"]),
]


def test_the_cross_level_cases_cover_every_level_option():
    given = {args[0] for _level, args in CROSS}
    assert given == {circuit_flag(n) for names in LEVEL_OPTIONS.values() for n in names}


@pytest.mark.parametrize(("level", "args"), CROSS, ids=[" ".join(a) for _, a in CROSS])
def test_an_option_of_the_other_level_is_refused_in_one_line(tmp_path, level, args):
    run = tmp_path / "run"
    run.mkdir()
    (run / "manifest.json").write_text("{}")  # never read: the refusal comes first
    line = assert_refused_without_trace(
        tmp_path,
        "circuit",
        "--run",
        str(run),
        "--round",
        "1",
        "--level",
        level,
        *args,
        contains=f"{args[0]} is an option of --level",
    )
    assert f"this is --level {level}" in line


def test_a_default_value_of_the_other_level_is_no_refusal(tmp_path):
    """Only a value that would change something is refused: the default passes the level
    check and the next check (the missing run) is the one that answers."""
    missing = tmp_path / "missing"
    assert_refused_without_trace(
        tmp_path,
        "circuit",
        "--run",
        str(missing),
        "--round",
        "1",
        "--level",
        "features",
        "--transcoders",
        str(tmp_path),
        "--method",
        "eap-ig",
        contains="no run directory at",
    )


def test_an_unknown_level_and_features_without_transcoders_are_refused(tmp_path):
    args = ("circuit", "--run", str(tmp_path), "--round", "1")
    assert_refused_without_trace(
        tmp_path, *args, "--level", "feature", contains="--level 'feature'"
    )
    assert_refused_without_trace(
        tmp_path, *args, "--level", "features", contains="needs --transcoders"
    )


def test_the_refusals_come_before_torch_is_imported(tmp_path):
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from interp.cli import app\n"
        f"r = CliRunner().invoke(app, ['circuit', '--run', {str(tmp_path)!r}, '--round', '1',"
        " '--level', 'features', '--dtype', 'float16'])\n"
        "print(r.exit_code, 'torch' in sys.modules)\n"
    )
    root = Path(__file__).resolve().parents[3]
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=root
    ).stdout
    assert out.split() == ["2", "False"]


def test_feature_circuit_prints_one_deprecation_line_then_runs_the_same_checks(tmp_path):
    missing = tmp_path / "tc"
    args = ["--run", str(tmp_path), "--round", "1", "--transcoders", str(missing)]
    (tmp_path / "manifest.json").write_text('{"rounds": [0, 1]}')
    new = invoke("circuit", "--level", "features", *args)
    old = invoke("feature-circuit", *args)
    assert new.exit_code == old.exit_code == 2
    assert old.stderr.splitlines() == [OLD_LINE, *new.stderr.splitlines()]
    assert len(new.stderr.splitlines()) == 1 and "deprecated" not in new.stderr


# --- the same files and the same stdout, on the tiny model with tiny transcoders ------------


@pytest.fixture(scope="module")
def tc_run(tmp_path_factory, tiny_model, one_torch_thread) -> tuple[Path, Path]:
    from interp.circuits.feature_level import circuit_tracer
    from interp.replay.loop import replay
    from interp.sae.corpus import CorpusConfig
    from interp.sae.transcoders import TranscoderTrainConfig, train_transcoders

    try:
        circuit_tracer()
    except InterpError:
        pytest.skip("circuit-tracer is not installed (pip install --no-deps circuit-tracer)")
    root = tmp_path_factory.mktemp("level")
    run = root / "run"
    replay(small_config(run, limit=2, rounds=2), model=tiny_model)
    config = TranscoderTrainConfig(
        out=str(root / "tc"),
        width=64,
        tokens=2048,
        batch_tokens=256,
        eval_tokens=256,
        l1=0.5,
        lr=3e-3,
        corpus=CorpusConfig(corpus=["builtin", "concepts"], context=32),
    )
    return run, train_transcoders(tiny_model, config, progress=False).path


def _feature_run(run: Path, tc: Path, *command: str, as_json: bool = False):
    """Run ``command`` on example 1; its stdout (or printed JSON) and the files it wrote, which
    are then removed. The deprecation line: only and once from feature-circuit."""
    args = [*command, "--run", str(run), "--round", "1", "--transcoders", str(tc)]
    args += ["--max-feature-nodes", "32", "--top-features", "3", "--examples", "1"]
    result = invoke(*args, *(["--json"] if as_json else []))
    assert result.exit_code == 0, result.output
    lines = [line for line in result.stderr.splitlines() if line.startswith("deprecated")]
    assert lines == ([OLD_LINE] if command[0] == "feature-circuit" else [])
    (summary,) = (run / "feature_circuits").glob("*/summary.json")
    # the one thing that differs from one run to the next: how long it took
    recorded = json.loads(summary.read_text())
    assert set(recorded.pop("timing")) >= {"total_s"}
    files = tree_digest(run / "feature_circuits")
    files[str(summary.relative_to(run / "feature_circuits"))] = recorded
    shutil.rmtree(run / "feature_circuits")
    if as_json:
        printed = json.loads(result.stdout)
        assert printed.pop("timing")
        return printed, files
    return result.stdout, files


@pytest.mark.parametrize("as_json", [False, True], ids=["text", "json"])
def test_level_features_writes_what_feature_circuit_writes(tc_run, as_json):
    run, tc = tc_run
    before = tree_digest(run)
    new, new_files = _feature_run(run, tc, "circuit", "--level", "features", as_json=as_json)
    old, old_files = _feature_run(run, tc, "feature-circuit", as_json=as_json)
    assert tree_digest(run) == before  # each left nothing else
    assert new_files and any(name.endswith("summary.json") for name in new_files)
    assert new_files == old_files  # the same files, byte for byte (summary.json: its timing apart)
    assert new == old  # the same stdout (--json: its timing apart)
    if not as_json:
        assert new.splitlines()[-1].startswith("wrote ")
