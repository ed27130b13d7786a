"""Fixtures of the fault suite: one small tiny-model run (and one with every analysis) built
once per session; tests damage or interrupt copies of them, never the originals."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from faultkit import small_config

from interp.replay.loop import replay


@pytest.fixture(scope="session")
def base_run(tmp_path_factory, tiny_model) -> Path:
    """A complete replay (no analyses). Read-only for tests: copy it with ``copy_run``."""
    out = tmp_path_factory.mktemp("faults-base") / "run"
    replay(small_config(out), model=tiny_model)
    return out


@pytest.fixture(scope="session")
def analysed_run(tmp_path_factory, tiny_model, base_run) -> Path:
    """``base_run`` plus a probe, a patch and an export (the concept encodings cached)."""
    from interp.patching import PatchConfig, patch
    from interp.report.export import export
    from probes.api import probe
    from probes.config import ProbeConfig

    out = tmp_path_factory.mktemp("faults-analysed") / "run"
    shutil.copytree(base_run, out)
    probe(out, ProbeConfig(concept="stereotype", n_boot=50), model=tiny_model)
    patch(out, PatchConfig(layer=1, round=1, n_boot=50), model=tiny_model)
    export([out], model=tiny_model)
    return out
