"""Replay and patching sharded over Ray (interp.runs.distributed): the merged result is the run.

One local Ray cluster limited to this machine's cores serves the module (starting one costs
seconds); `run_jobs` joins it instead of starting its own. The driver-kill test starts its own,
in the `interp` process it kills.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from interp.patching import PatchConfig, patch
from interp.patching.pipeline import PATCH_SHARD
from interp.replay.loop import ReplayConfig, replay
from interp.runs.distributed import KILL_ONCE_ENV, Workers

ray = pytest.importorskip("ray", reason="the Ray extra is not installed (pip install interp[ray])")
pytestmark = pytest.mark.ray

CONFIG = {"model": "tiny", "task": "builtin", "rounds": 2, "batch_size": 4, "limit": 12}
# What a workers run may add to or change in the manifest: how it was spread, and the clock.
NOT_THE_RESULT = ("workers", "timing", "command")


@pytest.fixture(scope="module")
def cluster():
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    return replay(ReplayConfig(out=str(tmp_path_factory.mktemp("single") / "run"), **CONFIG))


def digest(run_dir: Path) -> dict[str, str]:
    """Every file's hash but the manifest's (compared field by field instead)."""
    return {
        str(p.relative_to(run_dir)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(run_dir.rglob("*"))
        if p.is_file() and p.name not in ("manifest.json", ".interp.lock")
    }


def manifest_result(run_dir: Path) -> dict:
    manifest = json.loads((run_dir / "manifest.json").read_text())
    manifest["config"].pop("out")  # where each copy was written
    return {k: v for k, v in manifest.items() if k not in NOT_THE_RESULT}


def assert_same_run(a: Path, b: Path) -> None:
    assert digest(a) == digest(b)
    assert manifest_result(a) == manifest_result(b)


def test_replay_on_two_workers_is_byte_identical(cluster, single, tmp_path):
    run = replay(ReplayConfig(out=str(tmp_path / "ray"), **CONFIG), workers=Workers(n=2))
    assert_same_run(single.path, run.path)
    record = json.loads((run.path / "manifest.json").read_text())["workers"]
    assert record["n"] == 2 and record["jobs"] == 3  # 12 examples in batches of 4
    assert "workers" not in json.loads((single.path / "manifest.json").read_text())


def test_a_killed_worker_is_retried_and_changes_nothing(cluster, single, tmp_path, monkeypatch):
    marker = tmp_path / "killed"
    monkeypatch.setenv(KILL_ONCE_ENV, str(marker))
    run = replay(ReplayConfig(out=str(tmp_path / "ray"), **CONFIG), workers=Workers(n=2))
    assert marker.exists(), "no worker was killed: the test proves nothing"
    assert_same_run(single.path, run.path)


def test_patching_on_workers_equals_one_process(cluster, single):
    # One example at a time: the workers' rows are the single process's, bit for bit.
    config = PatchConfig(layer="all", round=2, n_boot=200, example_batch=1)
    alone = patch(single, config, write=False)
    spread = patch(single, config, write=False, workers=Workers(n=2))
    pd.testing.assert_frame_equal(alone.per_example, spread.per_example)
    pd.testing.assert_frame_equal(alone.summary_table, spread.summary_table)
    # more examples than one shard holds, so the rows came from several jobs
    assert alone.per_example["example_index"].nunique() > PATCH_SHARD
    # Packed (the default): which examples share a forward changes a float sum's last bits,
    # so the rows agree within the packed path's documented bound, not bit for bit.
    config = PatchConfig(layer="all", round=2, n_boot=200)
    alone = patch(single, config, write=False)
    spread = patch(single, config, write=False, workers=Workers(n=2))
    for column in ("clean", "source", "patched"):
        np.testing.assert_allclose(
            alone.per_example[column], spread.per_example[column], rtol=0, atol=1e-5
        )
    pd.testing.assert_frame_equal(
        alone.summary_table, spread.summary_table, check_exact=False, rtol=1e-3, atol=1e-5
    )


def test_no_ray_without_workers(tmp_path):
    code = (
        "import sys; from interp.cli import main; sys.argv=['interp','replay','--model','tiny',"
        f"'--limit','2','--rounds','1','--json','--out',{str(tmp_path / 'r')!r}]\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "print('RAY' if 'ray' in sys.modules else 'NO-RAY')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().endswith("NO-RAY")


def test_a_killed_driver_resumes_from_finished_batches(single, tmp_path):
    out = tmp_path / "ray"
    args = ["--model", "tiny", "--task", "builtin", "--rounds", "2", "--batch-size", "4"]
    args += ["--limit", "12", "--out", str(out), "--workers", "1", "--json"]
    cmd = [sys.executable, "-m", "interp.cli", "replay", *args]
    # Its own process group, killed whole as a job scheduler or Ctrl-C kills a job: the local
    # cluster the command started goes with it (killing the driver alone leaves Ray's agents).
    proc = subprocess.Popen(
        cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    partial = out / ".partial"
    deadline = time.monotonic() + 300
    while not list(partial.glob("batch-*.safetensors")):
        assert proc.poll() is None, "the replay ended before the test could kill it"
        assert time.monotonic() < deadline
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    kept = sorted(p.name for p in partial.glob("batch-*.safetensors"))
    assert kept and len(kept) < 3
    done = subprocess.run(cmd, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert json.loads((out / "manifest.json").read_text())["workers"]["jobs"] == 3 - len(kept)
    assert_same_run(single.path, out)


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--workers", "0"], "--workers must be at least 1"),
        (["--workers", "2", "--threads-per-worker", "0"], "--threads-per-worker must be"),
        (["--workers", "1", "--device", "cuda"], "--gpus-per-worker must be above 0"),
    ],
)
def test_bad_worker_flags_are_one_line_and_write_nothing(tmp_path, flags, message):
    from typer.testing import CliRunner

    from interp.cli import app

    out = tmp_path / "run"
    args = ["replay", "--model", "tiny", "--limit", "2", "--out", str(out), *flags]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2
    assert message in result.output and result.output.count("\n") == 1
    assert not out.exists()


def test_winogender_replay_on_two_workers_is_byte_identical(cluster, tmp_path):
    from unit.inputs.test_winogender import STATS, TEMPLATES

    if not TEMPLATES.exists():
        pytest.skip("shared Winogender data absent")
    wino = {"model": "tiny", "task": "winogender", "data": [str(TEMPLATES)], "stats": str(STATS)}
    wino |= {"rounds": 1, "batch_size": 4, "limit": 8}
    single_run = replay(ReplayConfig(out=str(tmp_path / "single"), **wino))
    run = replay(ReplayConfig(out=str(tmp_path / "ray"), **wino), workers=Workers(n=2))
    assert_same_run(single_run.path, run.path)
