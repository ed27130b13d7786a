"""Shared checks of the fault suite: a user error is one line and exit 2, and nothing on disk
changes. Imported by the test modules of this folder (``from faultkit import ...``)."""

from __future__ import annotations

import hashlib
from pathlib import Path

from typer.testing import CliRunner

from interp.cli import app


def invoke(*args: str):
    """Run the CLI in process, as ``main()`` would after argv expansion."""
    return CliRunner().invoke(app, list(args))


def tree_digest(root: Path) -> dict[str, str]:
    """Every file and folder below ``root`` (relative path -> sha256, or "dir"): equal digests
    before and after a command mean it wrote, removed and changed nothing there."""
    root = Path(root)
    if not root.exists():
        return {}
    digest: dict[str, str] = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        digest[rel] = "dir" if path.is_dir() else hashlib.sha256(path.read_bytes()).hexdigest()
    return digest


def assert_user_error(result, *, contains: str | None = None) -> str:
    """Exit code 2, nothing on stdout, exactly one stderr line starting with ``error:``."""
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.output
    if contains is not None:
        assert contains in lines[0], lines[0]
    return lines[0]


def assert_refused_without_trace(root: Path, *args: str, contains: str | None = None) -> str:
    """Run ``interp ARGS``; it must fail as a user error and leave ``root`` byte-identical."""
    before = tree_digest(root)
    line = assert_user_error(invoke(*args), contains=contains)
    assert tree_digest(root) == before, "a refused command changed files on disk"
    return line


def copy_run(source: Path, dest: Path) -> Path:
    """A private copy of a session run for a test to damage or interrupt."""
    import shutil

    shutil.copytree(source, dest)
    return dest


def small_config(out: Path, **overrides):
    """Three batches of one example, rounds 0..1 on the tiny model: every replay path, fast."""
    from interp.replay.loop import ReplayConfig

    fields = {"model": "tiny", "rounds": 1, "limit": 3, "batch_size": 1, **overrides}
    return ReplayConfig(out=str(out), **fields)
