"""Open an sae-lens SAE folder and check that it fits a model.

sae-lens' own on-disk format is the contract: a folder with ``cfg.json`` and
``sae_weights.safetensors`` (what ``SAE.save_model`` writes), whether we trained it or a user
copied a pretrained one from elsewhere. An SAE only means something at one hook of one model:
its ``hook_name`` must be a hook of the model and its ``d_in`` the width of that hook's
activations (``d_model`` for the residual stream). A folder that fails either check is refused
with one line naming what differs, before any activation is encoded.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from interp.errors import InterpError

if TYPE_CHECKING:  # sae-lens imports torch and TransformerLens: load it only when used
    from sae_lens import SAE
    from transformer_lens import HookedTransformer

SAE_CONFIG = "cfg.json"
SAE_WEIGHTS = "sae_weights.safetensors"


def sae_name(path: str | Path) -> str:
    """The name an SAE's outputs are filed under in a run: its folder's name (made safe and
    short by ``interp.runs.store.safe_name`` when it is not)."""
    from interp.runs.store import safe_name

    return safe_name(Path(path).resolve().name)


def read_sae_config(path: str | Path) -> dict:
    """``cfg.json`` of an SAE folder, checked to be one sae-lens can load."""
    folder = Path(path)
    if not folder.is_dir():
        raise InterpError(
            f"--sae {path}: no such folder (an sae-lens SAE folder holds {SAE_CONFIG} "
            f"and {SAE_WEIGHTS})"
        )
    for name in (SAE_CONFIG, SAE_WEIGHTS):
        if not (folder / name).is_file():
            raise InterpError(f"--sae {path}: no {name}; not an sae-lens SAE folder")
    try:
        cfg = json.loads((folder / SAE_CONFIG).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise InterpError(f"--sae {path}: {SAE_CONFIG} is not readable JSON ({err})") from None
    if not isinstance(cfg, dict) or not _is_int(cfg.get("d_in")):
        raise InterpError(f"--sae {path}: {SAE_CONFIG} has no integer d_in")
    check_sae_config(cfg, folder / SAE_CONFIG)
    check_sae_weights(cfg, folder / SAE_WEIGHTS)
    return cfg


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_sae_config(cfg: dict, file: Path) -> None:
    """Refuse config values sae-lens would accept and then fail on (or compute nonsense with):
    widths below 1, a top-k ``k`` outside 1..d_sae."""
    for key in ("d_in", "d_sae"):
        if not _is_int(cfg.get(key)) or not 1 <= cfg[key] <= MAX_SAE_DIM:
            raise InterpError(
                f"--sae {file}: {key} is {cfg.get(key)!r}; an integer 1..{MAX_SAE_DIM} expected"
            )
    arch = cfg.get("architecture")
    if arch is not None and not isinstance(arch, str):
        raise InterpError(f"--sae {file}: architecture is {arch!r}, not a name")
    if "k" in cfg or arch in ("topk", "batchtopk"):
        k = cfg.get("k")
        if not _is_int(k) or not 1 <= k <= cfg["d_sae"]:
            raise InterpError(
                f"--sae {file}: k is {k!r}; a top-k SAE keeps 1..d_sae ({cfg['d_sae']}) latents"
            )


def check_sae_weights(cfg: dict, file: Path) -> None:
    """Refuse a weights file that is no complete safetensors file, or whose tensors do not
    have the shapes the config's ``d_in``/``d_sae`` say (read from its header, no torch)."""
    d_in, d_sae = cfg["d_in"], cfg["d_sae"]
    tensors = safetensors_header(file, "--sae ")
    expected = {
        "W_enc": (d_in, d_sae),
        "W_dec": (d_sae, d_in),
        "b_enc": (d_sae,),
        "b_dec": (d_in,),
        "threshold": (d_sae,),
        "b_gate": (d_sae,),
        "b_mag": (d_sae,),
        "r_mag": (d_sae,),
    }
    missing = [key for key in ("W_enc", "W_dec", "b_dec") if key not in tensors]
    if missing:
        raise InterpError(f"--sae {file}: no tensor {missing[0]} (not an sae-lens SAE's weights)")
    for key, shape in expected.items():
        if key in tensors and tensors[key][0] not in FLOAT_DTYPES:
            raise InterpError(f"--sae {file}: {key} is {tensors[key][0]}, not a float tensor")
        if key in tensors and tensors[key][1] != shape:
            raise InterpError(
                f"--sae {file}: {key} has shape {list(tensors[key][1])}, but d_in {d_in} and "
                f"d_sae {d_sae} (cfg.json) make it {list(shape)}"
            )


# Bounds of what is read as an SAE or transcoder: no real one is near them, and a file that
# claims more is damaged (or hostile) rather than large.
MAX_SAE_DIM = 1 << 24
MAX_HEADER_BYTES = 100 << 20  # safetensors' own limit on its JSON header
FLOAT_DTYPES = {"F16": 2, "BF16": 2, "F32": 4, "F64": 8}
DTYPE_BYTES = FLOAT_DTYPES | {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1, "I16": 2, "U16": 2,
    "I32": 4, "U32": 4, "I64": 8, "U64": 8,
}  # fmt: skip


def safetensors_header(file: Path, flag: str = "") -> dict[str, tuple[str, tuple[int, ...]]]:
    """The tensors of a safetensors file (name -> dtype, shape), after checking that the file
    is whole: its header parses, every tensor's bytes match its dtype and shape,
    and the tensors cover the rest of the file exactly (as safetensors checks when it opens
    one). A file that fails is refused in one line naming it (``flag`` prefixes the line)."""

    def damaged(reason: str) -> InterpError:
        return InterpError(f"{flag}{file}: damaged, not a safetensors file ({reason})")

    try:
        size = file.stat().st_size
        with open(file, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise damaged("empty" if not head else f"{size} bytes, no header")
            n = int.from_bytes(head, "little")
            if n > min(size - 8, MAX_HEADER_BYTES):
                raise damaged(f"its header claims {n} bytes; the file has {size} (truncated?)")
            raw = f.read(n)
    except OSError as err:
        raise InterpError(f"{flag}{file}: unreadable ({err.strerror or err})") from None
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise damaged("its header is not JSON") from None
    if not isinstance(header, dict):
        raise damaged("its header is not a JSON object")
    header.pop("__metadata__", None)
    spans: list[tuple[int, int]] = []
    out: dict[str, tuple[str, tuple[int, ...]]] = {}
    for name, info in header.items():
        shape = info.get("shape") if isinstance(info, dict) else None
        offsets = info.get("data_offsets") if isinstance(info, dict) else None
        dtype = info.get("dtype") if isinstance(info, dict) else None
        if (
            not isinstance(shape, list)
            or not all(_is_int(d) and d >= 0 for d in shape)
            or not isinstance(offsets, list)
            or len(offsets) != 2
            or not all(_is_int(o) for o in offsets)
        ):
            raise damaged(f"tensor {name!r} has no valid shape and offsets")
        if dtype not in DTYPE_BYTES:
            raise damaged(f"tensor {name!r} has an unknown dtype {dtype!r}")
        count = 1
        for d in shape:
            count *= d
        begin, end = offsets
        if not 0 <= begin <= end or end - begin != count * DTYPE_BYTES[dtype]:
            raise damaged(f"tensor {name!r}: its bytes do not match its shape {shape}")
        spans.append((begin, end))
        out[str(name)] = (dtype, tuple(shape))
    data = size - 8 - n
    at = 0
    for begin, end in sorted(spans):
        if begin != at:
            raise damaged("its tensors overlap or leave gaps")
        at = end
    if at != data:
        what = "truncated" if at > data else "bytes after the last tensor"
        raise damaged(f"{what}: its tensors take {at} bytes of data, the file holds {data}")
    return out


def sae_hook_name(cfg: dict) -> str | None:
    """The hook an SAE reads, from its config (sae-lens 6 keeps it under ``metadata``)."""
    meta = cfg.get("metadata") if isinstance(cfg.get("metadata"), dict) else {}
    name = meta.get("hook_name", cfg.get("hook_name"))
    return name if isinstance(name, str) else None


def check_sae_fits(cfg: dict, model: HookedTransformer, path: str | Path = "") -> str:
    """Refuse an SAE whose hook the model lacks or whose d_in is not that hook's width.

    Returns the hook name. The width is the residual width for ``hook_resid_*`` hooks and
    ``d_mlp`` for ``mlp.hook_post``/``hook_pre``; other hooks are checked for presence only."""
    hook = sae_hook_name(cfg)
    where = f"--sae {path}" if path else "the SAE"
    if hook is None:
        raise InterpError(f"{where}: its config names no hook_name")
    if hook not in model.hook_dict:
        raise InterpError(
            f"{where} reads hook {hook!r}, which model {model.cfg.model_name} "
            f"({model.cfg.n_layers} layers) does not have"
        )
    width = None
    if "hook_resid" in hook or hook.endswith(("attn_out", "mlp_out", "hook_embed")):
        width = model.cfg.d_model
    elif hook.endswith(("mlp.hook_post", "mlp.hook_pre")):
        width = model.cfg.d_mlp
    if width is not None and cfg["d_in"] != width:
        raise InterpError(
            f"{where} has d_in {cfg['d_in']}, but {hook} of model {model.cfg.model_name} "
            f"is {width} wide"
        )
    return hook


def load_sae(path: str | Path, model: HookedTransformer, device: str | None = None) -> SAE:
    """Open the sae-lens SAE at ``path`` for ``model`` (checked first: hook and width), on the
    model's device unless ``device`` is given, in float32."""
    cfg = read_sae_config(path)
    check_sae_fits(cfg, model, path)
    import torch
    from sae_lens import SAE

    dev = device or str(model.cfg.device)
    try:
        sae = SAE.load_from_disk(str(path), device=dev)
    except Exception as err:  # checked above; whatever else sae-lens trips on is one line
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise InterpError(f"--sae {path}: sae-lens cannot load it ({first})") from None
    return sae.to(dtype=torch.float32)


def model_for(
    source: str | Path | HookedTransformer, model: HookedTransformer | None, device: str = "cpu"
) -> HookedTransformer:
    """The model a training or evaluation verb reads: ``model`` when given, else ``source``
    itself when it is a loaded model, else ``source`` loaded (a name or path `load_model`
    takes) on ``device``."""
    if model is not None:
        return model
    if isinstance(source, str | Path):
        from interp.model.loading import load_model

        return load_model(str(source), device=device)
    return source
