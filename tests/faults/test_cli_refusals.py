"""Refusals that need only a run's manifest or the file system come before torch is imported
(issue 22, item 1): a mistyped run, a round or layer out of range, a model that is not
installed. They are one ``error:`` line, exit 2, nothing on disk changes; the message is the
library's own; and the refusing process never imports torch or TransformerLens. Usage errors
of the parser (an unknown flag, a missing option) are one ``error:`` line too (item 14)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from faultkit import assert_refused_without_trace, invoke, tree_digest

from interp.cli import flag_message
from interp.errors import InterpError

pytestmark = pytest.mark.faults

ROOT = Path(__file__).resolve().parents[2]


def _refusals(run: Path, missing: Path) -> dict[str, tuple[list[str], str]]:
    """case -> (argv, words of its one error line); the tiny run has layers 0..2, rounds 0..1."""
    return {
        "patch, mistyped run": (
            ["patch", "--run", str(missing), "--layers", "1", "--round", "1"],
            f"no run directory at {missing}",
        ),
        "patch, layer out of range": (
            ["patch", "--run", str(run), "--layers", "40", "--round", "1"],
            "--layers 40 is out of range: the model has 3 layers (0..2)",
        ),
        "patch, round out of range": (
            ["patch", "--run", str(run), "--layers", "1", "--round", "9"],
            "run has rounds 0..1; --round 9 needs a replay with --rounds 9 or more",
        ),
        "patch, target round below 0": (
            ["patch", "--run", str(run), "--layers", "1", "--round", "1", "--target-round", "-1"],
            "--target-round -1: rounds start at 0",
        ),
        "patch, unknown dtype": (
            ["patch", "--run", str(run), "--layers", "1", "--round", "1", "--dtype", "fp8"],
            "unknown dtype 'fp8'",
        ),
        "patch, mistyped control run": (
            ["patch", "--run", str(run), "--layers", "1", "--round", "1"]
            + ["--control-run", str(missing)],
            f"no run directory at {missing}",
        ),
        "probe, mistyped run": (["probe", "--run", str(missing)], "no run directory at"),
        "probe, layer out of range": (
            ["probe", "--run", str(run), "--layers", "0,7"],
            "--layers 7 out of range: the model has 3 layers (0..2)",
        ),
        "circuit, round out of range": (
            ["circuit", "--run", str(run), "--round", "9"],
            "run has rounds 0..1; --round 9",
        ),
        "circuit --level features, no transcoder folder": (
            ["circuit", "--level", "features", "--run", str(run), "--transcoders", str(missing)]
            + ["--round", "1"],
            f"--transcoders {missing}: no such folder",
        ),
        "sae features, mistyped run": (
            ["sae", "features", "--run", str(missing), "--sae", str(missing)],
            "no run directory at",
        ),
        "export, mistyped run": (["export", "--run", str(missing)], "no run directory at"),
        "metrics, mistyped run": (["metrics", "--run", str(missing)], "no run directory at"),
        "experiment, mistyped run": (
            ["experiment", "convergence", "--run", str(missing)],
            "no run directory at",
        ),
        "experiment, layer out of range": (
            ["experiment", "convergence", "--run", str(run), "--layers", "9"],
            "--layers 9 out of range: the model has 3 layers (0..2)",
        ),
        "replay, model not installed": (
            ["replay", "--model", "notinstalled", "--out", str(missing)],
            "unknown model 'notinstalled'",
        ),
        "replay, no such gguf": (
            ["replay", "--model", str(missing) + ".gguf", "--out", str(missing)],
            "no such GGUF file",
        ),
        "replay, permuted orders in generate mode": (
            ["replay", "--model", "tiny", "--permute", "cyclic", "--mode", "generate"]
            + ["--out", str(missing)],
            "--permute cyclic needs --mode choice",
        ),
        "replay, malformed ray address": (
            ["replay", "--model", "tiny", "--ray-address", "not a host", "--out", str(missing)],
            "--ray-address 'not a host' is not HOST:PORT",
        ),
        "experiment, unknown control plan": (
            ["experiment", "convergence", "--model", "tiny", "--control", "nonsense"]
            + ["--out", str(missing)],
            "unknown plan 'nonsense'",
        ),
        "sae train, model not installed": (
            ["sae", "train", "--model", "notinstalled", "--out", str(missing)],
            "unknown model 'notinstalled'",
        ),
        "experiment, model not installed": (
            ["experiment", "weak-evidence", "--model", "notinstalled", "--out", str(missing)],
            "unknown model 'notinstalled'",
        ),
    }


CASES = list(_refusals(Path("r"), Path("m")))
# Each command's refusals in their own process (one per command and kind of check).
PROCESS_CASES = [
    "patch, mistyped run",
    "patch, layer out of range",
    "patch, round out of range",
    "probe, layer out of range",
    "circuit, round out of range",
    "sae features, mistyped run",
    "export, mistyped run",
    "metrics, mistyped run",
    "experiment, layer out of range",
    "replay, model not installed",
    "replay, permuted orders in generate mode",
    "replay, malformed ray address",
    "experiment, unknown control plan",
]


@pytest.mark.parametrize("case", CASES)
def test_refused_in_process(base_run, tmp_path, case):
    argv, words = _refusals(base_run, tmp_path / "dmeo")[case]
    assert_refused_without_trace(base_run, *argv, contains=words)
    assert not (tmp_path / "dmeo").exists()


# One process per refusal: it must end without importing torch or TransformerLens (on the
# code before issue 22 each of them imported both, and took ~25 s).
_PROBE = """
import json, sys
sys.argv = ["interp", *json.loads(sys.argv[1])]
from interp.cli import main
try:
    main()
except SystemExit as exit:
    code = exit.code
heavy = [m for m in ("torch", "transformer_lens", "sae_lens", "ray", "pandas") if m in sys.modules]
print(json.dumps({"code": code, "heavy": heavy}))
"""


@pytest.mark.parametrize("case", PROCESS_CASES)
def test_refused_without_importing_torch(base_run, tmp_path, case):
    argv, words = _refusals(base_run, tmp_path / "dmeo")[case]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_CACHE": str(tmp_path / "hub")}
    proc = subprocess.run(
        [sys.executable, "-c", _PROBE, json.dumps(argv)],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=300,
    )
    result = json.loads(proc.stdout.splitlines()[-1])
    assert result == {"code": 2, "heavy": []}, (result, proc.stderr)
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and words in lines[0], lines


def test_model_names_the_hf_cache_without_torch(tmp_path):
    """A TransformerLens name whose weights are not in the (empty) cache: refused, no torch."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_CACHE": str(tmp_path / "hub")}
    argv = ["replay", "--model", "gpt2-small", "--out", str(tmp_path / "run")]
    proc = subprocess.run(
        [sys.executable, "-c", _PROBE, json.dumps(argv)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert json.loads(proc.stdout.splitlines()[-1]) == {"code": 2, "heavy": []}, proc.stderr
    assert proc.stderr.startswith("error: gpt2 is not in the local Hugging Face cache")
    assert not (tmp_path / "run").exists()


def test_the_messages_are_the_librarys(base_run, tiny_model, tmp_path):
    """Each early refusal says what the library says when it meets the same input later."""
    from interp import preflight
    from interp.model.loading import load_model
    from interp.patching import PatchConfig, patch
    from interp.runs.store import Run
    from probes.directions import check_layers

    def said(fn, *args, **kwargs) -> str:
        with pytest.raises(InterpError) as err:
            fn(*args, **kwargs)
        return flag_message(str(err.value))

    manifest = preflight.run_manifest(base_run)
    missing = tmp_path / "dmeo"
    assert said(preflight.run_manifest, missing) == said(Run.open, missing)
    assert said(preflight.check_patch_layer, manifest, 40) == said(
        patch, base_run, PatchConfig(layer=40, round=1), model=tiny_model, write=False
    )
    for rounds in ({"round": 9}, {"round": -1}, {"round": 1, "target_round": 5}):
        assert said(preflight.check_rounds, manifest, **rounds) == said(
            patch, base_run, PatchConfig(layer=1, **rounds), model=tiny_model, write=False
        )
    assert said(preflight.check_layers, manifest, [0, 7]) == said(check_layers, [0, 7], 3)
    for name in ("notinstalled", str(tmp_path / "no.gguf"), str(tmp_path)):
        assert said(preflight.check_model, name) == said(load_model, name)
    assert said(preflight.check_dtype, "fp8") == said(load_model, "tiny", dtype="fp8")
    assert said(preflight.check_device, "tpu") == said(load_model, "tiny", device="tpu")


def test_unusual_run_folders_are_left_to_the_library(base_run, tmp_path):
    """No manifest, an unfinished replay, a damaged manifest: the library's fuller message."""
    (tmp_path / "empty").mkdir()
    assert_refused_without_trace(
        tmp_path, "patch", "--run", str(tmp_path / "empty"), "--layers", "1", "--round", "1",
        contains="is not a run directory (no manifest.json)",
    )  # fmt: skip


# --- the parser's usage errors: one line, exit 2 (item 14) ---------------------------------


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["patch", "--bogus-flag"], "No such option: --bogus-flag"),
        (["patch", "--run", "x", "--roud", "3"], "(Possible options: --round"),
        (["patch", "--layers", "1", "--round", "1"], "Missing option '--run'"),
        (["patch", "--run", "x", "--round", "three"], "Invalid value for '--round'"),
        (["experiment", "superficial", "--stats", "s.tsv"], "No such option: --stats"),
        (["experiment", "weak-evidence", "--stats", "s.tsv"], "No such option: --stats"),
        (["sae", "featurs"], "No such command 'featurs'"),
        (["bogus"], "No such command 'bogus'"),
    ],
)
def test_usage_errors_are_one_line(tmp_path, argv, words):
    before = tree_digest(tmp_path)
    result = invoke(*argv)
    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and words in lines[0], lines
    assert "--help" in lines[0]  # where the options are listed
    assert tree_digest(tmp_path) == before
