"""The run directory: the contract between replay and every analysis (DESIGN.md).

::

    <run>/manifest.json        schema version, model, task, plan + texts, rounds, seed, ...
    <run>/rounds.parquet       one row per example x round
    <run>/tokens.parquet       example_index, tokens: each example's final transcript
    <run>/activations/<hook>.safetensors   "activations": [example, round, d_model] float16
    <run>/metrics.json         per-round metrics
    <run>/<analysis>/          probes/, patching/, sae/: tables + a JSON summary each

Every write is atomic (temp file in the same folder, then rename), so a killed process never
leaves a file that looks complete. ``manifest.json`` is written last by a replay and carries
``"complete": true``; an analysis refuses a run without it.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from jaxtyping import Float

from interp.errors import InterpError

SCHEMA_VERSION = 1
ACTIVATION_KEY = "activations"


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp)`` on a temp path beside ``path``, then rename it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_json(path: Path, obj: Any) -> None:
    text = json.dumps(obj, indent=2, sort_keys=False, allow_nan=False) + "\n"
    atomic_write(path, lambda tmp: tmp.write_text(text))


def write_parquet(path: Path, frame: pd.DataFrame) -> None:
    atomic_write(path, lambda tmp: frame.to_parquet(tmp, index=False))


def write_activations(path: Path, acts: Float[torch.Tensor, "example round d_model"]) -> None:
    from safetensors.torch import save_file

    tensor = acts.detach().to("cpu", torch.float16).contiguous()
    atomic_write(path, lambda tmp: save_file({ACTIVATION_KEY: tensor}, str(tmp)))


def hook_file(hook: str) -> str:
    return f"{hook}.safetensors"


@dataclass
class Run:
    """A complete run directory, opened for reading."""

    path: Path
    manifest: dict[str, Any]
    _rounds: pd.DataFrame | None = field(default=None, repr=False)

    @classmethod
    def open(cls, path: str | Path) -> Run:
        path = Path(path)
        manifest_path = path / "manifest.json"
        if not path.is_dir():
            raise InterpError(f"no run directory at {path}")
        if not manifest_path.is_file() and (path / ".partial").is_dir():
            raise InterpError(
                f"{path} is an unfinished replay; run the same replay command again to resume it"
            )
        if not manifest_path.is_file():
            raise InterpError(
                f"{path} is not a run directory (no manifest.json); run interp replay"
            )
        try:
            manifest = json.loads(manifest_path.read_text())
        except json.JSONDecodeError as err:
            raise InterpError(f"{manifest_path}: not valid JSON ({err.msg})") from None
        if not manifest.get("complete"):
            raise InterpError(
                f"{path} is an unfinished replay; run the same replay again to finish it"
            )
        if manifest.get("schema_version") != SCHEMA_VERSION:
            raise InterpError(
                f"{path}: run schema {manifest.get('schema_version')}, this interp reads "
                f"{SCHEMA_VERSION}; replay again"
            )
        return cls(path, manifest)

    @property
    def n_rounds(self) -> int:
        """Rounds stored, 0..R: R + 1."""
        return int(self.manifest["rounds"]) + 1

    @property
    def hooks(self) -> list[str]:
        return list(self.manifest["hooks"])

    @property
    def n_layers(self) -> int:
        return int(self.manifest["model"]["n_layers"])

    def rounds(self) -> pd.DataFrame:
        if self._rounds is None:
            self._rounds = pd.read_parquet(self.path / "rounds.parquet")
        return self._rounds.copy()

    def tokens(self) -> list[list[int]]:
        """Final transcript token ids, indexed by example_index."""
        frame = pd.read_parquet(self.path / "tokens.parquet").sort_values("example_index")
        return [list(map(int, t)) for t in frame["tokens"]]

    def activations(self, hook: str) -> Float[torch.Tensor, "example round d_model"]:
        from safetensors.torch import load_file

        if hook not in self.hooks:
            raise InterpError(
                f"{self.path} stores no {hook}; stored: {', '.join(self.hooks)} "
                "(replay with --hooks to add it)"
            )
        return load_file(str(self.path / "activations" / hook_file(hook)))[ACTIVATION_KEY]

    def analysis_dir(self, name: str) -> Path:
        out = self.path / name
        out.mkdir(exist_ok=True)
        return out
