"""One writer per run directory: an exclusive OS lock held while a command writes into it.

``replay``, ``probe``, ``patch``, ``export`` and ``metrics`` (when it rewrites metrics.json)
take :func:`run_lock` on the directory they write. A second writer does not wait: it fails at
once with an :class:`InterpError` saying the directory is in use, before it has computed or
written anything.

The lock is ``fcntl.flock`` on ``<dir>/.interp.lock``. The kernel drops it when its holder
exits, however it exits (kill -9 included), so a crashed writer never leaves the directory
locked. The holder removes the file while still holding the lock, so a finished command
leaves no trace; a process that opened the file just before it was removed sees that its
lock is on a file no longer in the folder and tries again (the usual remove-under-lock dance).
Acquiring the lock also shows early that the directory can be written at all: a read-only
folder, or ``--out`` below a file, fails here with one clear line.

A folder built beside its destination (``sae train``, ``sae train-transcoders``) is guarded the
same way by :func:`output_lock`, on ``.<name>.lock`` beside it; its holder also removes the
``.<name>.partial-*`` folders that killed writers left.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

from interp.errors import InterpError

LOCK_NAME = ".interp.lock"


def fs_error(path: Path | str, err: OSError, doing: str = "cannot write into") -> InterpError:
    """An OS error on ``path`` as one line a user can act on.

    Args:
        path: The file or folder the operation was on.
        err: The OS error raised.
        doing: What was being done, as the message's opening words.

    Returns:
        The error (not raised): ``"{doing} {path}: {reason}"``.
    """
    reason = err.strerror or type(err).__name__
    if err.errno == errno.ENOTDIR or isinstance(err, FileExistsError):
        reason = "a file is in the way (a path component is not a directory)"
    return InterpError(f"{doing} {path}: {reason}")


def make_dir(path: Path) -> list[Path]:
    """``mkdir -p path``; return the folders it created (outermost first), so that a command
    that fails before writing anything can remove exactly those again.

    Args:
        path: The folder to create, with any missing parents.

    Returns:
        The folders created, outermost first (empty when ``path`` existed).

    Raises:
        InterpError: A file is in the way, or the OS refuses (the folders made so far are
            removed again).
    """
    missing: list[Path] = []
    probe = path
    while not probe.exists():
        missing.append(probe)
        if probe.parent == probe:
            break
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        raise InterpError(f"cannot create {path}: {probe} is a file, not a directory")
    created: list[Path] = []
    for folder in reversed(missing):
        try:
            folder.mkdir()
        except FileExistsError:
            if not folder.is_dir():
                raise InterpError(f"cannot create {path}: {folder} is a file") from None
            continue
        except OSError as err:
            remove_empty(created)
            raise fs_error(path, err, "cannot create") from None
        created.append(folder)
    return created


def remove_empty(folders: list[Path]) -> None:
    """Remove the folders (created by :func:`make_dir`) that are still empty, innermost first.

    Args:
        folders: Folders as :func:`make_dir` returned them; those not empty are kept.
    """
    for folder in reversed(folders):
        with contextlib.suppress(OSError):
            folder.rmdir()


@contextlib.contextmanager
def run_lock(directory: str | Path) -> Iterator[Path]:
    """Hold the exclusive write lock of ``directory`` (which must exist) for the block.

    Args:
        directory: The run directory (or other folder) to lock.

    Yields:
        The lock file's path.

    Raises:
        InterpError: ``directory`` does not exist, the lock file cannot be made, or another
            command holds the lock.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise InterpError(f"no directory at {directory}")
    with _file_lock(directory / LOCK_NAME, directory) as path:
        _remove_dead_temp_files(directory)
        yield path


# A folder built beside its destination and renamed into place at the end (``sae train``,
# ``sae train-transcoders``): ".<name>.partial-<8 random chars>" (tempfile.mkdtemp).
_PARTIAL_DIR = re.compile(r"\.(.+)\.partial-[A-Za-z0-9_]{8}")


@contextlib.contextmanager
def output_lock(out: str | Path) -> Iterator[Path]:
    """Hold the write lock of the folder ``out`` that a command builds beside itself (in a
    ``.<name>.partial-*`` folder, renamed to ``out`` at the end), on ``.<name>.lock`` in its
    parent (created if missing, and removed again if the block fails leaving it empty).

    A second writer of the same ``out`` is refused at once. With the lock held no one else
    builds ``out``, so the ``.<name>.partial-*`` folders there are the remains of writers
    killed mid-way (kill -9, power loss): they are removed.

    Args:
        out: The output folder the command will build.

    Yields:
        The lock file's path.

    Raises:
        InterpError: ``out``'s parent cannot be created or locked, or another command holds
            the lock.
    """
    out = Path(out)
    created = make_dir(out.parent)
    try:
        with _file_lock(out.parent / f".{out.name}.lock", out) as path:
            for folder in out.parent.iterdir():
                match = _PARTIAL_DIR.fullmatch(folder.name)
                if match and match.group(1) == out.name and folder.is_dir():
                    shutil.rmtree(folder, ignore_errors=True)
            yield path
    finally:
        remove_empty(created)


def public_modes(folder: Path) -> None:
    """Give ``folder`` and the files in it the modes any other tool would give them (0777 and
    0666 less the umask): tempfile.mkdtemp makes a folder 0700, safetensors files are 0600.

    Args:
        folder: The folder whose modes (and those of everything under it) are set.
    """
    mask = os.umask(0o022)  # reading the umask means setting it; put it straight back
    os.umask(mask)
    for path in folder.rglob("*"):
        path.chmod((0o777 if path.is_dir() else 0o666) & ~mask)
    folder.chmod(0o777 & ~mask)


@contextlib.contextmanager
def _file_lock(path: Path, what: Path) -> Iterator[Path]:
    """Hold ``flock`` on ``path`` for the block (``what``: the folder it guards, for errors);
    the file is removed at the end while still locked."""
    directory = path.parent
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as err:
            raise fs_error(directory, err) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise InterpError(
                f"{what} is in use by another interp command (it holds {path}); "
                "wait for it to finish, or write elsewhere"
            ) from None
        except OSError as err:
            os.close(fd)
            raise fs_error(directory, err, "cannot lock") from None
        # The previous holder may have removed the file between our open and our lock: then
        # we hold a lock on a file nobody else will see, and must take the new one.
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(path))
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    try:
        yield path
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)  # while still locked: nobody can hold a lock on it now
        os.close(fd)


# interp.runs.store.atomic_write's temp files: ".<name>.<8 random chars>.tmp" (tempfile.mkstemp).
_TEMP_FILE = re.compile(r"\..+\.[A-Za-z0-9_]{8}\.tmp")


def _remove_dead_temp_files(directory: Path) -> None:
    """With the lock held nobody else is writing here, so an atomic write's temp file is the
    remains of a writer killed mid-write (kill -9, power loss): remove it."""
    for path in directory.rglob(".*.tmp"):
        if _TEMP_FILE.fullmatch(path.name) and path.is_file():
            with contextlib.suppress(OSError):
                path.unlink()
