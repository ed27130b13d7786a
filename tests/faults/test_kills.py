"""Kills at many points of replay, probe, patch and export (in-process: the k-th file to be
committed lands, then the process is interrupted). Run again, each ends with the same bytes
as an uninterrupted run, and meanwhile nothing half-written is shown as a result."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from faultkit import copy_run, small_config, tree_digest

from interp.replay.loop import replay
from interp.report.export import export
from interp.report.run_page import load_patching, load_probes
from interp.runs.lock import LOCK_NAME
from interp.runs.store import Run

pytestmark = [pytest.mark.faults, pytest.mark.usefixtures("one_torch_thread")]


def kill_after(monkeypatch, k: int, exc: type[BaseException]) -> list[str]:
    """Interrupt the process right after the k-th atomic write commits its file."""
    real = os.replace
    calls: list[str] = []

    def replace(src, dst, *args, **kwargs):
        real(src, dst, *args, **kwargs)
        calls.append(str(dst))
        if len(calls) == k:
            raise exc()

    monkeypatch.setattr(os, "replace", replace)
    return calls


def without(digest: dict[str, str], *names: str) -> dict[str, str]:
    return {k: v for k, v in digest.items() if k not in names}


def manifest_core(run: Path) -> dict:
    manifest = json.loads((run / "manifest.json").read_text())
    manifest.pop("timing")
    manifest["config"].pop("out")
    return manifest


# Files a replay of small_config commits: config stamp, 3 batches, rounds, tokens, spans,
# 3 activation files, metrics, manifest.
REPLAY_WRITES = 12


@pytest.mark.parametrize("k", range(1, REPLAY_WRITES + 1))
def test_killed_replay_reruns_to_the_same_bytes(tmp_path, tiny_model, base_run, monkeypatch, k):
    out = tmp_path / "run"
    exc = KeyboardInterrupt if k % 2 else SystemExit
    calls = kill_after(monkeypatch, k, exc)
    with pytest.raises(exc):
        replay(small_config(out), model=tiny_model)
    assert len(calls) == k
    assert not (out / LOCK_NAME).exists()
    if k < REPLAY_WRITES:  # not complete yet: nothing may open it as a run
        with pytest.raises(Exception, match="unfinished|not a run"):
            Run.open(out)
    # What kill -9 during a write would also leave: a temp file of an atomic write.
    (out / ".rounds.parquet.a1b2c3d4.tmp").write_bytes(b"half")
    monkeypatch.undo()
    replay(small_config(out), model=tiny_model)
    assert without(tree_digest(out), "manifest.json") == without(
        tree_digest(base_run), "manifest.json"
    )
    assert manifest_core(out) == manifest_core(base_run)


def test_replay_writes_as_many_files_as_counted(tmp_path, tiny_model, monkeypatch):
    calls = kill_after(monkeypatch, 10**6, KeyboardInterrupt)
    replay(small_config(tmp_path / "run"), model=tiny_model)
    assert len(calls) == REPLAY_WRITES  # keeps the parametrisation above honest


@pytest.fixture(scope="module")
def probed(tmp_path_factory, tiny_model, base_run) -> tuple[Path, dict[str, str]]:
    """An uninterrupted probe of a copy of base_run: the bytes every rerun must end with."""
    from probes.api import probe
    from probes.config import ProbeConfig

    run = copy_run(base_run, tmp_path_factory.mktemp("probed") / "run")
    probe(run, ProbeConfig(concept="stereotype", n_boot=50), model=tiny_model)
    return run, probe_digest(run)


def probe_digest(run: Path) -> dict[str, str]:
    """Bytes of every probe file; the encodings cache by its tensor (safetensors writes a
    header of several metadata keys in a random order, so its bytes vary, not its numbers)."""
    from safetensors.torch import load_file

    digest = tree_digest(run / "probes")
    for name in [n for n in digest if n.startswith("encodings/") and n != "encodings"]:
        tensors = load_file(str(run / "probes" / name))
        digest[name] = str({k: t.numpy().tobytes().hex() for k, t in tensors.items()})
    return digest


# Commits of a first probe: the bare and the chat-wrapped concept encodings, 6 tables,
# directions, summary.json.
PROBE_WRITES = 10


@pytest.mark.parametrize("k", [1, 2, 3, 6, 9, PROBE_WRITES])
def test_killed_probe_reruns_to_the_same_bytes(
    tmp_path, tiny_model, base_run, probed, monkeypatch, k
):
    from probes.api import probe
    from probes.config import ProbeConfig

    run = copy_run(base_run, tmp_path / "run")
    kill_after(monkeypatch, k, KeyboardInterrupt)
    with pytest.raises(KeyboardInterrupt):
        probe(run, ProbeConfig(concept="stereotype", n_boot=50), model=tiny_model)
    monkeypatch.undo()
    shown = load_probes(Run.open(run))
    assert shown == {} if k < PROBE_WRITES else set(shown) == {"stereotype"}  # the marker
    probe(run, ProbeConfig(concept="stereotype", n_boot=50), model=tiny_model)
    assert probe_digest(run) == probed[1]


def test_probe_writes_as_many_files_as_counted(tmp_path, tiny_model, base_run, monkeypatch):
    from probes.api import probe
    from probes.config import ProbeConfig

    run = copy_run(base_run, tmp_path / "run")
    calls = kill_after(monkeypatch, 10**6, KeyboardInterrupt)
    probe(run, ProbeConfig(concept="stereotype", n_boot=50), model=tiny_model)
    assert len(calls) == PROBE_WRITES  # keeps the parametrisation above honest


def test_probe_killed_over_an_earlier_result_hides_it(tmp_path, tiny_model, probed, monkeypatch):
    # A second probe (other method) killed after its first table: the folder now mixes two
    # results, so it must not be shown as either.
    from probes.api import probe
    from probes.config import ProbeConfig

    run = copy_run(probed[0], tmp_path / "run")
    kill_after(monkeypatch, 1, KeyboardInterrupt)
    with pytest.raises(KeyboardInterrupt):
        probe(
            run, ProbeConfig(concept="stereotype", method="mean-diff", n_boot=50), model=tiny_model
        )
    monkeypatch.undo()
    assert load_probes(Run.open(run)) == {}


def patch_core(run: Path) -> tuple[bytes, dict]:
    name = "r1-t0-resid_post-denoise-L1"
    summary = json.loads((run / "patching" / f"{name}.json").read_text())
    for volatile in ("timing", "run"):
        summary.pop(volatile)
    return (run / "patching" / f"{name}.parquet").read_bytes(), summary


@pytest.mark.parametrize("k", [1, 2])
def test_killed_patch_reruns_to_the_same_bytes(
    tmp_path, tiny_model, base_run, analysed_run, monkeypatch, k
):
    from interp.patching import PatchConfig, patch

    run = copy_run(base_run, tmp_path / "run")
    kill_after(monkeypatch, k, KeyboardInterrupt)
    with pytest.raises(KeyboardInterrupt):
        patch(run, PatchConfig(layer=1, round=1, n_boot=50), model=tiny_model)
    monkeypatch.undo()
    assert len(load_patching(Run.open(run))) == (k == 2)  # NAME.json: the marker
    patch(run, PatchConfig(layer=1, round=1, n_boot=50), model=tiny_model)
    assert patch_core(run) == patch_core(analysed_run)


def test_patch_killed_over_an_earlier_result_hides_it(
    tmp_path, tiny_model, analysed_run, monkeypatch
):
    # The same patch again with other bootstrap settings, killed after its table: the old
    # summary beside the new table would be shown as one result.
    from interp.patching import PatchConfig, patch

    run = copy_run(analysed_run, tmp_path / "run")
    kill_after(monkeypatch, 1, KeyboardInterrupt)
    with pytest.raises(KeyboardInterrupt):
        patch(run, PatchConfig(layer=1, round=1, n_boot=20), model=tiny_model)
    monkeypatch.undo()
    assert load_patching(Run.open(run)) == {}
    patch(run, PatchConfig(layer=1, round=1, n_boot=20), model=tiny_model)
    table, summary = patch_core(run)
    assert table == patch_core(analysed_run)[0] and summary["bootstrap"]["n_boot"] == 20


@pytest.mark.parametrize("k", [1, 3, 8])
def test_killed_export_reruns_to_the_same_bytes(tmp_path, tiny_model, analysed_run, monkeypatch, k):
    import shutil

    run = copy_run(analysed_run, tmp_path / "run")
    reference = tree_digest(run)
    shutil.rmtree(run / "figures")  # so that the killed export writes every figure anew
    calls = kill_after(monkeypatch, k, KeyboardInterrupt)
    with pytest.raises(KeyboardInterrupt):
        export([run], model=tiny_model)
    monkeypatch.undo()
    assert len(calls) == k
    # index.html is removed first and written last: no page over half the figures.
    assert not (run / "index.html").exists()
    export([run], model=tiny_model)
    assert tree_digest(run) == reference


def test_resume_never_unpickles(tmp_path, tiny_model, base_run, monkeypatch):
    import torch

    out = tmp_path / "run"
    kill_after(monkeypatch, 3, KeyboardInterrupt)  # config stamp and two batches stored
    with pytest.raises(KeyboardInterrupt):
        replay(small_config(out), model=tiny_model)
    monkeypatch.undo()

    def no_pickles(*args, **kwargs):
        raise AssertionError("torch.load: a partial batch file would run pickled code")

    monkeypatch.setattr(torch, "load", no_pickles)
    replay(small_config(out), model=tiny_model)
    assert without(tree_digest(out), "manifest.json") == without(
        tree_digest(base_run), "manifest.json"
    )
