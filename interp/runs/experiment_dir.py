"""The experiment directory: a run store of its own kind, holding an experiment's arms (each a
run directory under ``runs/``), its tables and its manifest.

::

    <experiment>/manifest.json        experiment name, config, replay settings, arms, inputs,
                                      sizes, versions, command (rewritten after each arm)
    <experiment>/runs/<arm>/          each arm's run directory (interp.runs.store.Run)
    <experiment>/tables/<name>.parquet
    <experiment>/summary.json         written last: the experiment is complete
    <experiment>/.experiment-started.json   until the first arm's manifest: what a killed
                                      start was, and how to finish it

:class:`ExperimentStore` holds the directory's lock, refuses a folder that holds something
else, and writes the manifest and results (with :mod:`interp.runs.store`'s atomic writers).
Replaying and probing an arm is above this layer: :class:`interp.experiments.common.ExperimentDir`
adds it.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pandas as pd

from interp.errors import InterpError
from interp.runs.lock import make_dir, remove_empty, run_lock
from interp.runs.store import EXPERIMENT_STARTED, package_versions, write_json, write_parquet

EXPERIMENT_SCHEMA = 1
# The packages whose versions an experiment's manifest records.
EXPERIMENT_PACKAGES = ("interp", "torch", "transformer-lens", "numpy", "pandas", "scipy")
# What an experiment directory may hold before its first manifest (a killed start).
_START_LEFTOVERS = (".interp.lock", EXPERIMENT_STARTED, "runs", "plans", "data", "encodings")


def experiment_versions() -> dict[str, str]:
    """The versions an experiment's manifest records.

    Returns:
        Package name -> installed version ("not installed" for one that is not).
    """
    return package_versions(EXPERIMENT_PACKAGES)


class ExperimentStore:
    """An experiment directory being written (hold its lock with ``with``).

    Args:
        name: The experiment's name (stored; another experiment's folder is refused).
        config: The experiment's settings, a dataclass with ``out`` (the directory) and
            ``seed``; stored whole as the manifest's ``config``.
        replay_fields: The config fields that decide the replays (the manifest's ``replay``;
            a folder written with other values of them is refused).
        command: The command line to record; None records ``sys.argv``.

    Attributes:
        arms: Arm name -> what the manifest records of it (filled by the caller).
        inputs: Templates and files the experiment made (filled by the caller).
    """

    def __init__(
        self, name: str, config: Any, replay_fields: Sequence[str], command: str | None
    ) -> None:
        self.name = name
        self.config = config
        self.replay_fields = tuple(replay_fields)
        self.path = Path(config.out)
        self.command = command or " ".join(sys.argv)
        self.arms: dict[str, dict[str, Any]] = {}
        self.inputs: dict[str, Any] = {}  # templates and files an experiment made
        self.started = time.perf_counter()
        self._created: list[Path] = []
        self._lock: Any = None
        self._marker = False  # this call wrote EXPERIMENT_STARTED

    def replay_settings(self) -> dict[str, Any]:
        """The config's fields that decide the replays.

        Returns:
            Field name -> value, in ``replay_fields`` order.
        """
        settings = asdict(self.config)
        return {k: settings[k] for k in self.replay_fields}

    def __enter__(self) -> ExperimentStore:
        if self.path.exists() and not self.path.is_dir():
            raise InterpError(f"--out {self.path} is a file, not a directory")
        self._check_existing()
        self._created = make_dir(self.path)
        self._lock = run_lock(self.path)
        try:
            self._lock.__enter__()
        except BaseException:
            remove_empty(self._created)
            raise
        marker = self.path / EXPERIMENT_STARTED
        if not (self.path / "manifest.json").exists() and not marker.exists():
            # Until the first arm's manifest: what a killed start was, and how to finish it.
            write_json(marker, {"experiment": self.name, "command": self.command})
            self._marker = True
        return self

    def __exit__(self, *exc: Any) -> None:
        if exc[0] is not None:
            # A replay that fails before writing removes its own folder; an empty runs/
            # goes too, so a refused first call leaves nothing behind.
            with contextlib.suppress(OSError):
                (self.path / "runs").rmdir()
            if not (self.path / "manifest.json").exists():  # no arm finished: these are ours
                if self._marker:  # (one an earlier, killed start left stays)
                    (self.path / EXPERIMENT_STARTED).unlink(missing_ok=True)
                shutil.rmtree(self.path / "plans", ignore_errors=True)
                shutil.rmtree(self.path / "data", ignore_errors=True)
                shutil.rmtree(self.path / "encodings", ignore_errors=True)
        self._lock.__exit__(*exc)
        if exc[0] is not None:
            remove_empty(self._created)

    def _check_existing(self) -> None:
        """Another experiment, or other replay settings, in the same folder: refuse before
        anything is written (the replays would refuse too, but with less helpful words)."""
        manifest = self.path / "manifest.json"
        if not manifest.is_file():
            if self.path.is_dir() and any(
                p.name not in _START_LEFTOVERS for p in self.path.iterdir()
            ):
                raise InterpError(
                    f"{self.path} is not empty and holds no experiment; choose another --out"
                )
            return
        try:
            info = json.loads(manifest.read_text())
        except ValueError:
            raise InterpError(f"{manifest} is corrupt; delete {self.path} and run again") from None
        if not isinstance(info, dict):
            raise InterpError(
                f"{manifest} holds {type(info).__name__}, not an experiment's manifest (a JSON "
                f"object); delete {self.path} and run again, or choose another --out"
            )
        if "experiment" not in info:
            raise InterpError(
                f"{self.path} is a run directory, not an experiment; analyse it with --run "
                f"{self.path}, or choose another --out"
            )
        if info.get("experiment") != self.name:
            raise InterpError(
                f"{self.path} holds the experiment {info.get('experiment')!r}, not "
                f"{self.name!r}; choose another --out"
            )
        stored = info.get("replay") or {}
        if not isinstance(stored, dict):
            raise InterpError(f"{manifest} is corrupt; delete {self.path} and run again")
        # Settings added since the folder was written (control, stats) are not compared: the
        # arms they decide are replayed or reused by their own fingerprints.
        if {k: v for k, v in self.replay_settings().items() if k in stored} != stored:
            raise InterpError(
                f"{self.path} holds this experiment with other replay settings (model, task, "
                "data, sample, rounds, seed, plan, ...); choose another --out or delete it"
            )

    def manifest(self, complete: bool, sizes: dict[str, Any]) -> dict[str, Any]:
        """The experiment's manifest as it stands.

        Args:
            complete: Whether every arm and table is written.
            sizes: The experiment's sizes (examples, arms, ...) for the manifest.

        Returns:
            The manifest.
        """
        return {
            "schema_version": EXPERIMENT_SCHEMA,
            "experiment": self.name,
            "complete": complete,
            "config": asdict(self.config),
            "replay": self.replay_settings(),
            "seed": self.config.seed,
            "arms": self.arms,
            "inputs": self.inputs,
            "sizes": sizes,
            "versions": experiment_versions(),
            "command": self.command,
            "seconds": round(time.perf_counter() - self.started, 1),
        }

    def write_manifest(self, complete: bool, sizes: dict[str, Any] | None = None) -> None:
        """Write ``manifest.json`` (and drop the start marker: the manifest says it now).

        Args:
            complete: Whether every arm and table is written.
            sizes: The experiment's sizes; None records none.
        """
        write_json(self.path / "manifest.json", self.manifest(complete, sizes or {}))
        (self.path / EXPERIMENT_STARTED).unlink(missing_ok=True)  # the manifest says it now

    def write_tables(
        self, tables: dict[str, pd.DataFrame], summary: dict[str, Any], sizes: dict[str, Any]
    ) -> dict[str, Any]:
        """Tables, then the manifest, then ``summary.json`` last (the completeness marker).

        Args:
            tables: Table name -> frame (``tables/<name>.parquet``; stale tables are removed).
            summary: The experiment's summary.
            sizes: The experiment's sizes for the manifest.

        Returns:
            The summary as written (``experiment`` first).
        """
        (self.path / "summary.json").unlink(missing_ok=True)
        for stale in (self.path / "tables").glob("*.parquet"):
            if stale.stem not in tables:
                stale.unlink()
        for key, frame in tables.items():
            write_parquet(self.path / "tables" / f"{key}.parquet", frame)
        self.write_manifest(True, sizes)
        summary = {"experiment": self.name, **summary}
        write_json(self.path / "summary.json", summary)
        return summary
