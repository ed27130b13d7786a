"""Defect 6 of issue 10: one writer per run directory. A second replay, probe, patch, export or
metrics writing into a directory in use says so in one line (exit 2) and changes nothing; the
lock dies with its holder, even under kill -9, and leaves no file behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from faultkit import (
    assert_refused_without_trace,
    assert_user_error,
    copy_run,
    invoke,
    small_config,
    tree_digest,
)

from interp.errors import InterpError
from interp.runs.lock import LOCK_NAME, run_lock

pytestmark = [pytest.mark.faults, pytest.mark.usefixtures("one_torch_thread")]

REPLAY_ARGS = ("--model", "tiny", "--rounds", "1", "--limit", "3", "--batch-size", "1")
WRITERS = {
    "replay": lambda run: ("replay", "--out", str(run), *REPLAY_ARGS),
    "probe": lambda run: ("probe", "--run", str(run), "--concept", "stereotype"),
    "patch": lambda run: ("patch", "--run", str(run), "--layers", "1", "--round", "1"),
    "export": lambda run: ("export", "--run", str(run)),
    "metrics": lambda run: ("metrics", "--run", str(run)),
}


def test_two_acquisitions_in_one_process(tmp_path):
    with run_lock(tmp_path):
        assert (tmp_path / LOCK_NAME).is_file()
        with pytest.raises(InterpError, match="in use"), run_lock(tmp_path):
            pass
    assert not (tmp_path / LOCK_NAME).exists()
    with run_lock(tmp_path):  # free again
        pass
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("command", sorted(WRITERS))
def test_second_writer_is_refused(tmp_path, base_run, command):
    run = copy_run(base_run, tmp_path / "run")
    with run_lock(run):
        line = assert_refused_without_trace(run, *WRITERS[command](run), contains="in use")
    assert str(run) in line
    assert not (run / LOCK_NAME).exists()


def test_second_replay_into_a_new_directory_is_refused(tmp_path):
    out = tmp_path / "new"
    out.mkdir()
    with run_lock(out):  # a replay that has just started there
        assert_refused_without_trace(tmp_path, *WRITERS["replay"](out), contains="in use")


def test_readers_are_not_blocked(tmp_path, base_run):
    run = copy_run(base_run, tmp_path / "run")
    with run_lock(run):
        result = invoke("metrics", "--run", str(run), "--n-boot", "7")  # prints, writes nothing
    assert result.exit_code == 0, result.output


# --- real processes ---------------------------------------------------------------------------

# Another process taking the lock as interp.runs.lock does (open, flock), without importing interp
# (which would load torch: seconds per process on a busy machine).
HOLDER = (
    "import fcntl, os, sys\n"
    "fd = os.open(os.path.join(sys.argv[1], sys.argv[2]), os.O_RDWR | os.O_CREAT, 0o644)\n"
    "fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)\n"
    "print('locked', flush=True)\n"
    "sys.stdin.read()\n"
)


def hold_in_another_process(directory: Path) -> subprocess.Popen:
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(directory), LOCK_NAME],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout.readline().strip() == "locked"
    return holder


def test_another_process_holding_the_lock(tmp_path, base_run):
    run = copy_run(base_run, tmp_path / "run")
    holder = hold_in_another_process(run)
    try:
        for command in ("replay", "probe", "metrics"):
            assert_refused_without_trace(run, *WRITERS[command](run), contains="in use")
    finally:
        holder.communicate("", timeout=60)  # closes its stdin: it exits, the lock with it
    assert holder.returncode == 0
    assert invoke(*WRITERS["metrics"](run)).exit_code == 0
    assert not (run / LOCK_NAME).exists()


def test_a_killed_holder_leaves_the_directory_usable(tmp_path, base_run):
    run = copy_run(base_run, tmp_path / "run")
    before = tree_digest(run)
    holder = hold_in_another_process(run)
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait(timeout=60)
    assert (run / LOCK_NAME).exists()  # kill -9 leaves the file, but not the lock
    result = invoke(*WRITERS["metrics"](run))
    assert result.exit_code == 0, result.output
    assert tree_digest(run) == before  # and the next writer removes the file


def test_second_replay_arriving_mid_replay(tmp_path, tiny_model, base_run, monkeypatch):
    # The audit's case, two identical replays into one --out at once: the second used to exit 1
    # with FileNotFoundError and leave a stray .partial batch inside the finished run. Here the
    # second arrives (deterministically) while the first is between two batches.
    import interp.replay.loop as replay_module

    out = tmp_path / "run"
    real = replay_module._replay_batch
    second = []

    def batch_then_second_writer(*args, **kwargs):
        if len(second) == 0 and (out / ".partial" / "batch-00000.safetensors").exists():
            second.append(invoke(*WRITERS["replay"](out), "--json"))
        return real(*args, **kwargs)

    monkeypatch.setattr(replay_module, "_replay_batch", batch_then_second_writer)
    replay_module.replay(small_config(out), model=tiny_model)

    assert_user_error(second[0], contains="in use")
    digest = tree_digest(out)
    assert not any(name.startswith(".") for name in digest), sorted(digest)
    expect = {k: v for k, v in tree_digest(base_run).items() if k != "manifest.json"}
    assert {k: v for k, v in digest.items() if k != "manifest.json"} == expect
