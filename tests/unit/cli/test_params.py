"""The CLI's one option vocabulary (issue 24, part 3: interp/cli/params.py): the parsers'
grammar, every command that reads a run taking the selection options, the old spellings still
working with one deprecation line, and one closing line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from interp.cli import app
from interp.cli.params import (
    DEPRECATED,
    DEPRECATED_COMMANDS,
    check_selection,
    deprecation_line,
    parse_examples,
    parse_layer_or_all,
    parse_layers,
    parse_one_example,
    parse_one_layer,
    rewrite_deprecated,
    wrote,
)
from interp.errors import InterpError

COMMAND = typer.main.get_command(app)


def _leaves(group: Any, prefix: str = "") -> dict[str, Any]:
    """Every leaf command by its path after `interp` (typer carries its own click: duck-typed)."""
    found: dict[str, Any] = {}
    for name, command in group.commands.items():
        path = f"{prefix}{name}"
        if hasattr(command, "commands"):
            found.update(_leaves(command, path + " "))
        else:
            found[path] = command
    return found


LEAVES = _leaves(COMMAND)


def _opts(command: Any) -> set[str]:
    return {opt for param in command.params for opt in param.opts}


def _reads_a_run(command: Any) -> bool:
    """A command whose --run is one run directory it analyses (not sae train's corpus runs)."""
    run = next((p for p in command.params if "--run" in p.opts), None)
    return run is not None and "corpus" not in (run.help or "")


# --- the parsers ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "layers"),
    [
        ("12", [12]),
        ("10-14", [10, 11, 12, 13, 14]),
        ("3,5-7", [3, 5, 6, 7]),
        (" 3 , 5 ", [3, 5]),
        ("all", None),
        ("ALL", None),
        (None, None),
    ],
)
def test_one_layer_grammar(text, layers):
    assert parse_layers(text) == layers


@pytest.mark.parametrize("text", ["x", "", "-1", "3-", "5-3", "1,,2", "1.5", "0-99999999999"])
def test_bad_layers_are_one_line_errors(text):
    with pytest.raises(InterpError) as err:
        parse_layers(text)
    assert str(err.value).startswith(f"--layers {text!r}: ") and "\n" not in str(err.value)


def test_patch_takes_one_layer_or_all():
    assert parse_layer_or_all("all", command="patch") == "all"
    assert parse_layer_or_all("7", command="patch") == 7
    assert parse_layer_or_all("7-7", command="patch") == 7
    with pytest.raises(InterpError, match=r"patch analyses one layer or all of them"):
        parse_layer_or_all("3,5", command="patch")


def test_experiment_takes_one_layer():
    assert parse_one_layer(None, command="x") is None
    assert parse_one_layer("4", command="x") == 4
    for text in ("all", "1-2"):
        with pytest.raises(InterpError, match=r"x reads one layer"):
            parse_one_layer(text, command="x")


def test_examples_are_ids_or_indices():
    assert parse_examples(None) is None
    assert parse_examples(["3", "builtin/3", " 12 "]) == [3, "builtin/3", 12]
    with pytest.raises(InterpError, match=r"^--examples: an empty example"):
        parse_examples(["3", " "])
    assert parse_one_example(None, 0, command="c") == 0
    assert parse_one_example(["builtin/2"], 0, command="c") == "builtin/2"
    with pytest.raises(InterpError, match=r"^--examples 1 2: c reads one example"):
        parse_one_example(["1", "2"], 0, command="c")


def test_closing_line():
    assert wrote(Path("a/b")) == "wrote a/b"
    assert wrote([Path("a.json"), Path("b.parquet")]) == "wrote a.json, b.parquet"


# --- every command that reads a run speaks the vocabulary -------------------------------------


def test_the_commands_that_read_a_run_are_found():
    found = {name for name, command in LEAVES.items() if _reads_a_run(command)}
    assert found >= {
        "metrics",
        "probe",
        "patch",
        "circuit",
        "feature-circuit",
        "export",
        "sae features",
        "experiment convergence",
        "experiment superficial",
    }
    assert "sae train" not in found  # its --run names corpus runs


@pytest.mark.parametrize("name", sorted(n for n, c in LEAVES.items() if _reads_a_run(c)))
def test_every_command_that_reads_a_run_has_the_selection_options(name):
    assert {"--examples", "--limit", "--sample", "--seed"} <= _opts(LEAVES[name]), name


@pytest.mark.parametrize("name", ["metrics", "probe", "sae features"])
def test_a_command_that_takes_a_selection_says_it_prints_it_and_stores_nothing(name):
    """probe and sae features pass --examples/--limit/--sample to their library verb (issue
    24) as metrics does; their help says what the selection does, not that it is refused."""
    words = " ".join((LEAVES[name].help or "").split())
    assert "refused" not in words, name
    assert "--examples, --limit and --sample" in words and "never stored over" in words, name


@pytest.mark.parametrize("name", sorted(LEAVES))
def test_shared_options_have_one_help_text(name):
    """--examples, --limit, --sample, --seed, --device, --dtype, --json and --layers are
    declared once (interp.cli.params): their help is the same in every command."""
    from interp.cli import params

    declared = {
        "--examples": params.Examples,
        "--limit": params.Limit,
        "--sample": params.Sample,
        "--seed": params.Seed,
        "--device": params.Device,
        "--dtype": params.Dtype,
        "--json": params.Json,
        "--layers": params.Layers,
        "--control-run": params.ControlRun,
    }
    for param in LEAVES[name].params:
        flag = param.opts[0]
        if flag in declared and not name.startswith("experiment"):  # its --control-run: with --run
            assert param.help == declared[flag].__metadata__[0].help, (name, flag)


@pytest.mark.parametrize("name", sorted(n for n, c in LEAVES.items() if _reads_a_run(c)))
def test_control_run_or_a_statement_why_not(name):
    command = LEAVES[name]
    assert "--control-run" in _opts(command) or "No --control-run" in (command.help or ""), name


# --- old spellings ------------------------------------------------------------------------------


def test_deprecated_spellings_name_existing_flags():
    for name, table in DEPRECATED.items():
        opts = _opts(LEAVES[name])
        for old, new in table.items():
            assert new in opts and old not in opts, (name, old, new)


def test_rewrite_deprecated(capsys):
    args = ["--layer", "3", "--top=4", "--verify-top", "2", "--layer", "5", "--", "--layer"]
    assert rewrite_deprecated("patch", args) == [
        "--layers",
        "3",
        "--rows=4",
        "--verify-top",
        "2",
        "--layers",
        "5",
        "--",
        "--layer",
    ]
    err = capsys.readouterr().err.splitlines()
    assert err == [deprecation_line("--layer", "--layers"), deprecation_line("--top", "--rows")]
    assert rewrite_deprecated("replay", ["--layer", "3"]) == ["--layer", "3"]


@pytest.mark.parametrize(
    ("argv", "old", "new"),
    [
        (["patch", "--layer", "x", "--round", "1"], "--layer", "--layers"),
        (["patch", "--layers", "0", "--round", "1", "--example", ""], "--example", "--examples"),
        (["patch", "--layers", "0", "--round", "1", "--top", "-1"], "--top", "--rows"),
        (["probe", "--layer", "x"], "--layer", "--layers"),
        (["circuit", "--round", "1", "--top", "0"], "--top", "--top-edges"),
        (
            ["feature-circuit", "--round", "1", "--transcoders", ".", "--top", "0"],
            "--top",
            "--top-features",
        ),
        (
            ["feature-circuit", "--round", "1", "--transcoders", ".", "--example", ""],
            "--example",
            "--examples",
        ),
        (["export", "--example-index", ""], "--example-index", "--examples"),
        (["export", "--example", ""], "--example", "--examples"),
        (["sae", "features", "--sae", ".", "--top", "0"], "--top", "--top-latents"),
        (["experiment", "convergence", "--layer", "x"], "--layer", "--layers"),
    ],
)
def test_old_spellings_work_with_one_deprecation_line(tmp_path, argv, old, new):
    """The old flag reaches the new option's check: the deprecation line, then the one error
    line naming the new flag (each case is refused by that flag's own check)."""
    run = tmp_path / "run"
    run.mkdir()
    result = CliRunner().invoke(app, [*argv, "--run", str(run)])
    assert result.exit_code == 2, result.output
    lines = result.stderr.splitlines()
    if argv[0] in DEPRECATED_COMMANDS:  # an old command's own line comes first
        assert lines.pop(0) == deprecation_line(argv[0], DEPRECATED_COMMANDS[argv[0]])
    assert lines[0] == deprecation_line(old, new)
    assert len(lines) == 2 and lines[1].startswith(f"error: {new}"), lines
    assert list(run.iterdir()) == []
    assert "No such option" not in result.stderr


def test_old_spellings_work_from_the_program_itself(tmp_path):
    """As `python -m interp.cli` (the program's name is not one word): the path of the command
    is found all the same."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[3]
    argv = ["patch", "--run", str(tmp_path / "none"), "--round", "1", "--layer", "x"]
    out = subprocess.run(
        [sys.executable, "-m", "interp.cli", *argv], capture_output=True, text=True, cwd=root
    )
    assert out.returncode == 2
    assert out.stderr.splitlines() == [
        deprecation_line("--layer", "--layers"),
        "error: --layers 'x': expected 'all' or numbers and ranges like 3,5-7",
    ]


def test_a_run_selection_samples_base_examples_by_replays_rule():
    """--sample/--limit over base examples (every order kept), drawn by replay's own
    select_examples, after --examples (interp.inputs.selection, which the CLI hands them to)."""
    import pandas as pd

    from interp.inputs.selection import Selection, select_rows
    from interp.inputs.tasks import load_builtin
    from interp.replay.loop import ReplayConfig, select_examples

    # 6 base examples x 2 orders: example_index 0..11, base_index 0..5
    rounds = pd.DataFrame(
        {
            "example_index": range(12),
            "base_index": [i // 2 for i in range(12)],
            "example_id": [f"b/{i // 2}" for i in range(12)],
            "round": 0,
        }
    )

    def kept(examples=None, limit=None, sample=None, seed=0):
        chosen = Selection(examples=examples, limit=limit, sample=sample, seed=seed)
        return set(select_rows(rounds, chosen)["example_index"].tolist())

    assert kept() == set(range(12))
    assert kept(limit=2) == {0, 1, 2, 3}
    # replay's selection of 3 of 6 examples with seed 5, by position
    six = load_builtin()[:6]
    want = {six.index(e) for e in select_examples(six, ReplayConfig(sample=3, seed=5))}
    got = kept(sample=3, seed=5)
    assert got == {i for i in range(12) if i // 2 in want} and len(got) == 6
    # an id: every order of that example; an index: that one order (as patch)
    assert kept(examples=("b/4", 1)) == {1, 8, 9}
    with pytest.raises(InterpError, match="--limit must be at least 1"):
        check_selection(0, None)
