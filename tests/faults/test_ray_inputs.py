"""``--workers`` on a cluster that cannot serve them (issue 22, item 7): a bad or unreachable
``--ray-address`` and workers the cluster has no resources for are one ``error:`` line before
anything exists (no run directory, no progress bar, no Ray warnings), never a hang."""

from __future__ import annotations

import os
import socket

import pytest
from faultkit import assert_refused_without_trace

ray = pytest.importorskip("ray", reason="the Ray extra is not installed (pip install interp[ray])")
pytestmark = [pytest.mark.faults, pytest.mark.ray]


def _replay(out, *args: str) -> tuple[str, ...]:
    return ("replay", "--model", "tiny", "--out", str(out), "--limit", "2", "--rounds", "1",
            "--workers", "1", *args)  # fmt: skip


def _closed_port() -> int:
    with socket.socket() as s:  # bound, then closed: nothing listens there
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize(
    ("address", "words"),
    [
        ("not a host", "is not HOST:PORT"),
        ("localhost", "is not HOST:PORT"),
        ("127.0.0.1:CLOSED", "cannot connect to Ray at 127.0.0.1:"),
    ],
)
def test_a_bad_or_unreachable_address_is_refused_before_anything_exists(tmp_path, address, words):
    assert not ray.is_initialized()  # (a joined cluster is reused without looking at addresses)
    address = address.replace("CLOSED", str(_closed_port()))
    assert_refused_without_trace(tmp_path, *_replay(tmp_path / "r", "--ray-address", address),
                                 contains=words)  # fmt: skip
    assert not (tmp_path / "r").exists()


@pytest.fixture(scope="module")
def cpu_cluster():
    """A local two-CPU cluster without GPUs, joined by the commands below."""
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    ray.init(num_cpus=2, num_gpus=0, include_dashboard=False, log_to_driver=False,
             logging_level="ERROR")  # fmt: skip
    yield
    ray.shutdown()


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (("--gpus-per-worker", "1"), "--gpus-per-worker 1: the Ray cluster has 0 GPUs"),
        (("--threads-per-worker", "3"), "--threads-per-worker 3: the Ray cluster has 2 CPUs"),
    ],
)
def test_workers_the_cluster_cannot_hold_are_refused(cpu_cluster, tmp_path, args, words):
    assert_refused_without_trace(tmp_path, *_replay(tmp_path / "r", *args), contains=words)
    assert not (tmp_path / "r").exists()


def test_patch_workers_the_cluster_cannot_hold_are_refused(cpu_cluster, base_run):
    args = ("patch", "--run", str(base_run), "--layers", "1", "--round", "1", "--workers", "1")
    assert_refused_without_trace(
        base_run, *args, "--gpus-per-worker", "1", contains="the Ray cluster has 0 GPUs"
    )
