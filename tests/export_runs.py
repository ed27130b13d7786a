"""The runs the export tests share (tests/unit/report/test_export.py, tests/e2e/test_browser.py).

A module of its own, not a test module: imported by both under one name, so the session
builds the runs once (``functools.cache``) whichever test file runs first.
"""

from __future__ import annotations

import functools
import shutil
from pathlib import Path

import pytest

from interp.replay.loop import ReplayConfig, replay

ROUNDS = 2
N_EXAMPLES = 6


@functools.cache
def _built(root: str) -> tuple[Path, Path]:
    """(bare, full) run directories under ``root``, built once per test session."""
    from interp.model.loading import load_model
    from interp.patching import PatchConfig, patch
    from probes.api import probe
    from probes.config import ProbeConfig

    model = load_model("tiny")
    bare = Path(root) / "bare"
    replay(
        ReplayConfig(model="tiny", task="builtin", rounds=ROUNDS, limit=N_EXAMPLES, out=str(bare)),
        model=model,
    )
    full = Path(root) / "full"
    shutil.copytree(bare, full)
    # Six examples are three templates: split by template, the tiny model's training answers
    # hold one class and the behaviour probes are undefined; split by example they are not.
    probe(
        full,
        ProbeConfig(concept=_small_concept(Path(root)), n_boot=50, cluster="example"),
        model=model,
    )
    patch(
        full,
        PatchConfig(
            layer="all",
            round=ROUNDS,
            target_round=0,
            component="resid_post,attn_out,mlp_out,heads",
            n_boot=50,
        ),
        model=model,
    )
    return bare, full


def _small_concept(root: Path) -> Path:
    """The first 30 pairs of the built-in stereotype concept (encoding all 180 pairs is most
    of the set-up time), named like the built-in one: its results go to probes/user-stereotype."""
    from importlib import resources

    text = resources.files("probes").joinpath("data/stereotype.jsonl").read_text()
    path = root / "concepts" / "stereotype.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(text.splitlines(keepends=True)[:60]))
    return path


def build_runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The two runs, built once per test session under its base temporary folder."""
    return _built(str(tmp_path_factory.getbasetemp() / "export-runs"))
