"""Defect 3 of issue 10: the file system refusing a write (--out below a file, a read-only or
full disk) is one error line and exit 2, with nothing half-written, for replay, probe, patch
and export. Root ignores permissions, so read-only folders are also simulated: the OS error is
raised where the OS would raise it."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import pytest
from faultkit import assert_refused_without_trace, assert_user_error, copy_run, invoke, tree_digest

from interp.report.run_page import load_patching, load_probes
from interp.runs.lock import LOCK_NAME
from interp.runs.store import Run

pytestmark = [pytest.mark.faults, pytest.mark.usefixtures("one_torch_thread")]

REPLAY_ARGS = ("--model", "tiny", "--rounds", "1", "--limit", "3", "--batch-size", "1")
ANALYSES = {
    "probe": lambda run: ("probe", "--run", str(run), "--concept", "stereotype"),
    "patch": lambda run: ("patch", "--run", str(run), "--layers", "1", "--round", "1"),
    "export": lambda run: ("export", "--run", str(run)),
}


def no_temp_files(root: Path) -> None:
    left = [p for p in root.rglob("*") if p.name.endswith(".tmp") or p.name == LOCK_NAME]
    assert not left, left


@pytest.mark.parametrize("below", ["file/run", "file/deeper/run"])
def test_replay_out_below_a_file(tmp_path, below):
    (tmp_path / "file").write_text("not a folder")
    line = assert_refused_without_trace(tmp_path, "replay", "--out", str(tmp_path / below))
    assert "file" in line


def deny(monkeypatch, match: str, err: int = errno.EACCES) -> None:
    """Make os.open / mkdir of a path ending in ``match`` fail as the OS would."""
    real_open, real_mkdir = os.open, os.mkdir

    def fake_open(path, *args, **kwargs):
        if str(path).endswith(match):
            raise OSError(err, os.strerror(err), str(path))
        return real_open(path, *args, **kwargs)

    def fake_mkdir(path, *args, **kwargs):
        if str(path).endswith(match):
            raise OSError(err, os.strerror(err), str(path))
        return real_mkdir(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", fake_open)
    monkeypatch.setattr(os, "mkdir", fake_mkdir)


@pytest.mark.parametrize("err", [errno.EACCES, errno.EROFS, errno.EPERM])
def test_replay_into_a_folder_it_cannot_create(tmp_path, monkeypatch, err):
    deny(monkeypatch, "/run", err)
    out = tmp_path / "parent" / "run"
    line = assert_refused_without_trace(tmp_path, "replay", "--out", str(out), *REPLAY_ARGS)
    assert os.strerror(err) in line


@pytest.mark.parametrize("err", [errno.EACCES, errno.EROFS, errno.EPERM])
def test_replay_into_a_read_only_folder(tmp_path, monkeypatch, err):
    out = tmp_path / "run"
    out.mkdir()
    deny(monkeypatch, LOCK_NAME, err)
    line = assert_refused_without_trace(tmp_path, "replay", "--out", str(out), *REPLAY_ARGS)
    assert os.strerror(err) in line and str(out) in line


@pytest.mark.parametrize("command", sorted(ANALYSES))
def test_analysis_of_a_read_only_run(tmp_path, base_run, monkeypatch, command):
    run = copy_run(base_run, tmp_path / "run")
    deny(monkeypatch, LOCK_NAME, errno.EROFS)
    line = assert_refused_without_trace(run, *ANALYSES[command](run))
    assert "Read-only file system" in line


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
@pytest.mark.parametrize("command", sorted(ANALYSES))
def test_analysis_of_a_chmod_read_only_run(tmp_path, base_run, command):
    run = copy_run(base_run, tmp_path / "run")
    run.chmod(0o555)
    try:
        line = assert_refused_without_trace(run, *ANALYSES[command](run))
    finally:
        run.chmod(0o755)
    assert "Permission denied" in line


def fill_disk_at(monkeypatch, k: int) -> None:
    """The k-th file to be committed (os.replace of an atomic write) finds the disk full."""
    real = os.replace
    calls = []

    def replace(src, dst, *args, **kwargs):
        calls.append(dst)
        if len(calls) == k:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(dst))
        return real(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", replace)


@pytest.mark.parametrize("k", [1, 3, 6, 9])
def test_replay_on_a_full_disk_then_again(tmp_path, monkeypatch, base_run, k):
    out = tmp_path / "run"
    fill_disk_at(monkeypatch, k)
    # --json: no progress bar on stderr, so stderr is the error line alone
    line = assert_user_error(invoke("replay", "--out", str(out), *REPLAY_ARGS, "--json"))
    assert "No space left on device" in line
    no_temp_files(tmp_path)
    with pytest.raises(Exception, match="unfinished|no run directory|not a run"):
        Run.open(out)
    monkeypatch.undo()
    result = invoke("replay", "--out", str(out), *REPLAY_ARGS, "--json")
    assert result.exit_code == 0, result.output
    expect = {k: v for k, v in tree_digest(base_run).items() if k != "manifest.json"}
    assert {k: v for k, v in tree_digest(out).items() if k != "manifest.json"} == expect


FULL_AT = [("probe", 2), ("probe", 6), ("patch", 1), ("export", 4)]


@pytest.mark.parametrize(("command", "k"), FULL_AT)
def test_analysis_on_a_full_disk_shows_no_half_result(tmp_path, base_run, monkeypatch, command, k):
    run = copy_run(base_run, tmp_path / "run")
    fill_disk_at(monkeypatch, k)
    result = invoke(*ANALYSES[command](run))
    # probe shows its encoding progress on stderr first: the error is the last line
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    last = result.stderr.splitlines()[-1]
    assert last.startswith("error: ") and "No space left on device" in last, result.stderr
    no_temp_files(run)
    opened = Run.open(run)
    assert load_probes(opened) == {} and load_patching(opened) == {}
    assert not (run / "index.html").exists()


# --- what export may delete, and file modes ---------------------------------------------------


def test_export_removes_only_files_it_wrote(tmp_path, tiny_model, analysed_run):
    from interp.report.export import export
    from interp.report.html import OWN_FILES

    run = copy_run(analysed_run, tmp_path / "run")
    figures = run / "figures"
    (figures / "my-notes.html").write_text("<p>mine</p>")
    (figures / "photo.png").write_bytes(b"\x89PNG mine")
    # A figure an earlier export wrote and this one will not (its analysis was removed).
    (figures / "probe-gone-accuracy.html").write_text("old")
    own = json.loads((figures / OWN_FILES).read_text())
    (figures / OWN_FILES).write_text(json.dumps([*own, "probe-gone-accuracy.html"]))
    export([run], model=tiny_model)
    assert (figures / "my-notes.html").read_text() == "<p>mine</p>"
    assert (figures / "photo.png").read_bytes() == b"\x89PNG mine"
    assert not (figures / "probe-gone-accuracy.html").exists()
    assert "probe-gone-accuracy.html" not in json.loads((figures / OWN_FILES).read_text())


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o027, 0o640), (0o002, 0o664)])
def test_run_files_follow_the_umask(tmp_path, tiny_model, umask, mode):
    from faultkit import small_config

    from interp.replay.loop import replay

    old = os.umask(umask)
    try:
        replay(small_config(tmp_path / "run", limit=1), model=tiny_model)
    finally:
        os.umask(old)
    files = [p for p in (tmp_path / "run").rglob("*") if p.is_file()]
    assert files and {oct(p.stat().st_mode & 0o777) for p in files} == {oct(mode)}
