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
from typing import TYPE_CHECKING, Any

import pandas as pd
from jaxtyping import Float

from interp.errors import InterpError

if TYPE_CHECKING:  # torch loads only where tensors are read or written: `interp metrics` needs none
    import torch

SCHEMA_VERSION = 1
ACTIVATION_KEY = "activations"


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp)`` on a temp path beside ``path``, then rename it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        # mkstemp makes the file 0600; a run file gets the mode any other tool would give it.
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _umask() -> int:
    mask = os.umask(0o022)  # reading the umask means setting it; put it straight back
    os.umask(mask)
    return mask


def write_json(path: Path, obj: Any) -> None:
    text = json.dumps(obj, indent=2, sort_keys=False, allow_nan=False) + "\n"
    atomic_write(path, lambda tmp: tmp.write_text(text))


def write_parquet(path: Path, frame: pd.DataFrame) -> None:
    atomic_write(path, lambda tmp: frame.to_parquet(tmp, index=False))


def write_activations(path: Path, acts: Float[torch.Tensor, "example round d_model"]) -> None:
    import torch
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
        run = cls(path, manifest)
        run.check()
        return run

    def check(self) -> None:
        """Refuse a run whose files do not fit together, naming the damaged file: the manifest's
        fields, rounds.parquet (columns, one row per example x round), tokens.parquet, and
        every activation file's key, dtype and shape ``[n_examples, n_rounds, d_model]``
        (read from the file headers only). Cheap, so every command runs it before its work."""
        manifest_path = self.path / "manifest.json"
        try:
            n_rounds = int(self.manifest["rounds"]) + 1
            hooks = [str(h) for h in self.manifest["hooks"]]
            d_model = self.manifest.get("model", {}).get("d_model")
            n_stated = self.manifest.get("task", {}).get("n_examples")
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            raise _damaged(manifest_path, f"missing or bad field {err}") from None
        rounds = self.rounds()
        n_examples = _check_rounds(self.path / "rounds.parquet", rounds, n_rounds)
        if n_stated is not None and int(n_stated) != n_examples:
            raise _damaged(
                self.path / "rounds.parquet",
                f"{n_examples} examples, the manifest says {n_stated}",
            )
        tokens = self.path / "tokens.parquet"
        # Checked when present; a missing one is named by tokens() (only patch and export's
        # attention views read it; hand-made test runs often have none).
        n_tokens = len(_read_parquet(tokens, ["example_index"])) if tokens.exists() else None
        if n_tokens is not None and n_tokens != n_examples:
            raise _damaged(tokens, f"{n_tokens} transcripts for {n_examples} examples")
        for hook in hooks:
            expected = (n_examples, n_rounds) + ((int(d_model),) if d_model is not None else ())
            _check_activation_file(self.path / "activations" / hook_file(hook), expected)

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
            self._rounds = _read_parquet(self.path / "rounds.parquet", ROUNDS_COLUMNS)
        return self._rounds.copy()

    def tokens(self) -> list[list[int]]:
        """Final transcript token ids, indexed by example_index."""
        path = self.path / "tokens.parquet"
        frame = _read_parquet(path, ["example_index", "tokens"]).sort_values("example_index")
        return [list(map(int, t)) for t in frame["tokens"]]

    def activations(self, hook: str) -> Float[torch.Tensor, "example round d_model"]:
        from safetensors.torch import load_file

        if hook not in self.hooks:
            raise InterpError(
                f"{self.path} stores no {hook}; stored: {', '.join(self.hooks)} "
                "(replay with --hooks to add it)"
            )
        path = self.path / "activations" / hook_file(hook)
        try:
            return load_file(str(path))[ACTIVATION_KEY]
        except Exception as err:  # (any failure to read it means it is damaged)
            raise _damaged(path, _reason(err)) from None

    def analysis_dir(self, name: str) -> Path:
        out = self.path / name
        out.mkdir(exist_ok=True)
        return out


# --- checking run files -----------------------------------------------------------------------

# The rounds.parquet columns every analysis reads.
ROUNDS_COLUMNS = ["example_index", "example_id", "round", "choice", "correct", "label"]


def _damaged(path: Path, reason: str) -> InterpError:
    run = path.parent.parent if path.parent.name == "activations" else path.parent
    return InterpError(
        f"{path} is damaged ({reason}); the run cannot be used: replay it again "
        f"(delete {run} first, or choose a new --out)"
    )


def _reason(err: BaseException) -> str:
    text = str(err).splitlines()[0] if str(err) else ""
    return f"{type(err).__name__}: {text}"[:200] if text else type(err).__name__


def _read_parquet(path: Path, columns: list[str]) -> pd.DataFrame:
    if not path.is_file():
        raise _damaged(path, "file missing")
    try:
        frame = pd.read_parquet(path)
    except Exception as err:  # (truncated, garbage, not parquet: all damage)
        raise _damaged(path, _reason(err)) from None
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise _damaged(path, f"no column {', '.join(missing)}")
    return frame


def _check_rounds(path: Path, rounds: pd.DataFrame, n_rounds: int) -> int:
    """One row per example x round 0..R, examples 0..n-1; return n."""
    n = rounds["example_index"].nunique()
    expected = {(e, r) for e in range(n) for r in range(n_rounds)}
    try:
        index, rnd = rounds["example_index"].astype(int), rounds["round"].astype(int)
        seen = set(zip(index, rnd, strict=True))
    except (TypeError, ValueError) as err:
        raise _damaged(path, _reason(err)) from None
    if len(rounds) != n * n_rounds or seen != expected:
        raise _damaged(
            path, f"{len(rounds)} rows are not {n} examples x {n_rounds} rounds (0..{n_rounds - 1})"
        )
    return n


def _check_activation_file(path: Path, shape: tuple[int, ...]) -> None:
    from safetensors import safe_open

    if not path.is_file():
        raise _damaged(path, "file missing")
    try:
        with safe_open(str(path), "np") as f:  # headers only: no torch for `interp metrics`
            keys = list(f.keys())
            if keys != [ACTIVATION_KEY]:
                raise _damaged(path, f"keys {keys}, expected [{ACTIVATION_KEY!r}]")
            tensor = f.get_slice(ACTIVATION_KEY)
            dtype, got = tensor.get_dtype(), tuple(tensor.get_shape())
    except InterpError:
        raise
    except Exception as err:  # (truncated or not safetensors)
        raise _damaged(path, _reason(err)) from None
    if dtype != "F16":
        raise _damaged(path, f"dtype {dtype}, expected float16")
    if got[: len(shape)] != shape or len(got) != 3:
        raise _damaged(
            path,
            f"shape {list(got)} does not match rounds.parquet: expected [{shape[0]} examples, "
            f"{shape[1]} rounds, {shape[2] if len(shape) > 2 else 'd_model'}]",
        )
