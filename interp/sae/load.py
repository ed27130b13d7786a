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
    short by ``interp.store.safe_name`` when it is not)."""
    from interp.store import safe_name

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
    if not isinstance(cfg, dict) or not isinstance(cfg.get("d_in"), int):
        raise InterpError(f"--sae {path}: {SAE_CONFIG} has no integer d_in")
    return cfg


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
    import torch
    from sae_lens import SAE

    cfg = read_sae_config(path)
    check_sae_fits(cfg, model, path)
    dev = device or str(model.cfg.device)
    try:
        sae = SAE.load_from_disk(str(path), device=dev)
    except (OSError, ValueError, KeyError, TypeError, RuntimeError) as err:
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise InterpError(f"--sae {path}: sae-lens cannot load it ({first})") from None
    return sae.to(dtype=torch.float32)
