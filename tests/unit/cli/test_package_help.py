"""The help texts (issue 22, item 3): flags show no value, nothing is cut, ``-h`` and
``--version`` exist, ``replay --plan`` names every plan there is; ``interp models`` has a
header row (item 1)."""

from __future__ import annotations

import re

import pytest
from typer.testing import CliRunner

from interp.cli import app

COMMANDS = [
    [],
    ["models"],
    ["replay"],
    ["metrics"],
    ["probe"],
    ["patch"],
    ["circuit"],
    ["feature-circuit"],
    ["export"],
    ["sae"],
    ["sae", "train"],
    ["sae", "train-transcoders"],
    ["sae", "eval"],
    ["sae", "features"],
    ["experiment"],
    ["experiment", "convergence"],
    ["experiment", "superficial"],
    ["experiment", "interactions"],
    ["experiment", "weak-evidence"],
    ["experiment", "self-distinguish"],
    ["experiment", "finetune-selection"],
    ["finetune"],
]


def _help(*argv: str, width: int = 80) -> str:
    result = CliRunner().invoke(app, [*argv, "--help"], env={"COLUMNS": str(width)})
    assert result.exit_code == 0, result.output
    return result.stdout


@pytest.mark.parametrize("argv", COMMANDS, ids=lambda a: " ".join(a) or "interp")
def test_help_shows_no_value_on_flags_and_cuts_nothing(argv):
    for width in (60, 80, 200):
        text = _help(*argv, width=width)
        assert "<bool>" not in text
        assert "…" not in text  # an option name or text cut short
        assert "-h, --help" in text


@pytest.mark.parametrize("argv", COMMANDS, ids=lambda a: " ".join(a) or "interp")
def test_h_is_help(argv):
    short = CliRunner().invoke(app, [*argv, "-h"], env={"COLUMNS": "80"})
    assert short.exit_code == 0, short.output
    assert short.stdout == _help(*argv)


def test_help_shows_only_the_new_spellings():
    """Old spellings still work (interp.cli.params.DEPRECATED) but --help names only --examples,
    --layers and the four distinct --top names."""
    text = _help("export", width=60)
    assert "--examples" in text and "--example-index" not in text
    assert "--layers" in _help("patch") and "--layer " not in _help("patch")
    for argv, flag in [
        (["patch"], "--rows"),
        (["circuit"], "--top-edges"),
        (["feature-circuit"], "--top-features"),
        (["sae", "features"], "--top-latents"),
    ]:
        text = _help(*argv, width=200)
        assert flag in text and not re.search(r"--top\b(?!-)", text), argv


def test_version():
    from importlib.metadata import version

    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.stdout == f"interp {version('interp')}\n"


def test_replay_plan_help_names_every_plan():
    from interp.inputs.plans import list_plans
    from interp.inputs.winogender import list_winogender_plans

    text = _help("replay", width=200)
    block = text[text.index("--plan") : text.index("--bbq-templates")]
    words = " ".join(re.sub(r"-\n\s*", "-", block).split())
    plans = {*list_plans(), *list_winogender_plans()}
    assert len(plans) >= 8
    for plan in plans:
        assert re.search(rf"(?<![\w-]){re.escape(plan)}(?![\w-])", words), (plan, words)


def test_models_has_a_header_row():
    result = CliRunner().invoke(app, ["models"])
    assert result.exit_code == 0
    header, *rows = result.stdout.splitlines()
    assert header.split() == ["NAME", "KIND", "SIZE", "DETAIL"]
    assert any(row.startswith("tiny ") for row in rows)


def test_models_lists_the_hf_cache_without_torch(tmp_path):
    """A TransformerLens model in the local Hugging Face cache is listed; torch is not loaded."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    repo = tmp_path / "hub" / "models--gpt2"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("abc")
    (repo / "snapshots" / "abc").mkdir(parents=True)
    (repo / "snapshots" / "abc" / "config.json").write_text("{}")
    code = (
        "import json, sys\n"
        "from interp.preflight import list_models\n"
        "print(json.dumps([list_models(), 'torch' in sys.modules]))\n"
    )
    root = Path(__file__).resolve().parents[3]
    env = {**os.environ, "PYTHONPATH": str(root), "HF_HUB_CACHE": str(tmp_path / "hub")}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    )
    rows, loaded_torch = json.loads(out.stdout)
    assert not loaded_torch
    assert {"name": "gpt2", "kind": "Hugging Face cache"}.items() <= next(
        row for row in rows if row["name"] == "gpt2"
    ).items()


def test_no_command_prints_the_help():
    result = CliRunner().invoke(app, [])
    assert result.stdout.startswith("Usage:") and "Commands:" in result.stdout
    assert result.stderr == ""
