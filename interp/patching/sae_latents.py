"""Feature patching: the site kind that swaps SAE latents instead of a whole activation.

At the SAE's hook, at the patched positions, the recipient activation ``x_r`` is encoded to
``f_r`` and the donor's ``x_d`` to ``f_d``. The chosen latents of ``f_r`` are replaced by
``f_d``'s, and the activation becomes

    x_r + decode(f_new) - decode(f_r)

so the recipient's reconstruction error ``x_r - decode(f_r)`` is kept: with no latent chosen
``f_new`` is ``f_r`` and the activation is ``x_r`` bit for bit. With ``error=True`` the error
term is swapped too (``+ e_d - e_r``); with every latent chosen that is the donor activation
itself, i.e. residual-stream patching at the hook (the sanity check, up to float rounding).

Variants of the site: ``head`` -1 patches every chosen latent together; ``head`` i >= 0 the
latent i alone (the per-example rows keep the latent in the ``head`` column).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from jaxtyping import Bool, Float

from interp.errors import InterpError
from interp.patching.core import SAE_COMPONENT, Variant

if TYPE_CHECKING:
    from sae_lens import SAE
    from transformer_lens import HookedTransformer
    from transformer_lens.hook_points import HookPoint

    from interp.patching.analysis import PatchConfig
    from interp.runs.store import Run

# The block hooks a feature site can patch: the batch of a patched forward starts at the
# block's resid_pre, so the hook must sit inside a block, at the residual width.
SITE_ACTS = ("resid_pre", "resid_mid", "resid_post", "attn_out", "mlp_out")


def site_hook(hook: str) -> tuple[int, str]:
    """``blocks.12.hook_resid_post`` -> (12, "resid_post"); refused for other hooks."""
    parts = hook.split(".")
    if (
        len(parts) == 3
        and parts[0] == "blocks"
        and parts[1].isdigit()
        and parts[2].startswith("hook_")
        and parts[2][5:] in SITE_ACTS
    ):
        return int(parts[1]), parts[2][5:]
    raise InterpError(
        f"feature patching needs an SAE at a block's {', '.join(SITE_ACTS)} hook; "
        f"this one reads {hook}"
    )


def parse_features(text: str) -> tuple[int, ...] | int:
    """``"123,456"`` -> (123, 456); ``"top:8"`` -> 8 (the top changed latents); an empty
    text names no latent and is refused (patching none would change nothing)."""
    text = text.strip()
    if text.startswith("top:"):
        count = text[4:]
        if not count.isdigit() or int(count) < 1:
            raise InterpError(f"--features {text!r}: use top:K with K >= 1")
        return int(count)
    if not text:
        raise InterpError("--features '': names no latent; use latents like 123,456 or top:K")
    try:
        latents = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise InterpError(
            f"--features {text!r}: use latent indices like 123,456 or top:K"
        ) from None
    if any(i < 0 for i in latents) or len(set(latents)) != len(latents):
        raise InterpError(f"--features {text!r}: latent indices are distinct and >= 0")
    return latents


@dataclass(frozen=True)
class FeatureSite:
    """An SAE and the latents to patch at its hook."""

    sae: SAE
    latents: tuple[int, ...]
    error: bool = False  # also swap the reconstruction error (the sanity check)

    @property
    def hook(self) -> str:
        return self.sae.cfg.metadata.hook_name

    def check(self) -> None:
        d_sae = int(self.sae.cfg.d_sae)
        bad = [i for i in self.latents if not 0 <= i < d_sae]
        if bad:
            raise InterpError(
                f"--features: latent {bad[0]} is out of range: the SAE has latents 0..{d_sae - 1}"
            )

    def variants(self) -> list[Variant]:
        """All chosen latents together (head -1), then each alone when there are several."""
        layer, act = site_hook(self.hook)
        singles = list(self.latents) if len(self.latents) > 1 else []
        return [Variant(layer, SAE_COMPONENT, head, act) for head in [-1, *singles]]

    def mask(self, head: int) -> Bool[torch.Tensor, " d_sae"]:
        chosen = torch.zeros(int(self.sae.cfg.d_sae), dtype=torch.bool)
        chosen[list(self.latents) if head < 0 else [head]] = True
        return chosen

    def hook_fn(self, heads: Sequence[int], rows: list[int], value: torch.Tensor):
        """The forward hook for these batch rows (variants ``heads``) with donor ``value``."""
        masks = torch.stack([self.mask(h) for h in heads])
        errors = torch.tensor([self.error and h < 0 for h in heads])
        return partial(
            swap_latents,
            rows=torch.tensor(rows),
            masks=masks,
            errors=errors,
            value=value,
            sae=self.sae,
        )


def swap_latents(
    act: torch.Tensor,
    hook: HookPoint,
    *,
    rows: torch.Tensor,
    masks: Bool[torch.Tensor, "n d_sae"],
    errors: Bool[torch.Tensor, " n"],
    value: Float[torch.Tensor, "k d_model"] | Float[torch.Tensor, "n k d_model"],
    sae: SAE,
) -> torch.Tensor:
    """``act[rows, -k:]`` with each row's chosen latents taken from ``value`` (the donor; one
    for every row, or each row's own, as when examples share a batch)."""
    k = value.shape[-2]
    act = act.clone()
    rows = rows.to(act.device)
    x = act[rows, -k:]  # [n, k, d]
    with torch.no_grad():
        donor = value.to(act.device).float()
        donor = donor[None] if donor.dim() == 2 else donor  # [1 or n, k, d]
        f_rec = sae.encode(x.float())
        f_don = sae.encode(donor)  # [1 or n, k, d_sae]
        masks = masks.to(act.device)[:, None, :]
        f_new = torch.where(masks, f_don, f_rec)
        delta = sae.decode(f_new) - sae.decode(f_rec)  # exactly 0 where nothing is chosen
        if errors.any():
            e_rec = x.float() - sae.decode(f_rec)
            e_don = donor - sae.decode(f_don)
            delta = delta + errors.to(act.device)[:, None, None] * (e_don - e_rec)
    act[rows, -k:] = x + delta.to(act.dtype)
    return act


# --- a run's feature patching request ---------------------------------------------------------


def check_feature_request(run: Run, config: PatchConfig) -> None:
    """Before any model loads: the SAE folder, its hook (a block hook of the run's model at the
    layer asked for), its width (the manifest's d_model), and ``--features``."""
    from interp.sae.load import read_sae_config, sae_hook_name

    cfg = read_sae_config(config.sae)
    hook = sae_hook_name(cfg)
    if hook is None:
        raise InterpError(f"--sae {config.sae}: its config names no hook_name")
    layer, _ = site_hook(hook)
    model = run.manifest.get("model", {})
    if layer >= run.n_layers:
        raise InterpError(
            f"--sae {config.sae} reads {hook}, but the run's model {model.get('model_id')} has "
            f"{run.n_layers} layers (0..{run.n_layers - 1})"
        )
    if config.layer != "all" and int(config.layer) != layer:
        raise InterpError(f"--layers {config.layer}: the SAE reads {hook} (layer {layer})")
    d_model = model.get("d_model")
    if d_model is not None and cfg["d_in"] != int(d_model):
        raise InterpError(
            f"--sae {config.sae} has d_in {cfg['d_in']}, but {hook} of the run's model "
            f"{model.get('model_id')} is {d_model} wide"
        )
    chosen = parse_features(config.features or "")
    if isinstance(chosen, tuple):
        bad = [i for i in chosen if i >= cfg["d_sae"]]
        if bad:
            raise InterpError(
                f"--features: latent {bad[0]} is out of range: the SAE has latents "
                f"0..{cfg['d_sae'] - 1}"
            )
    if isinstance(chosen, int):
        if chosen > cfg["d_sae"]:
            raise InterpError(
                f"--features top:{chosen}: the SAE has {cfg['d_sae']} latents; use top:K with "
                f"K <= {cfg['d_sae']}"
            )
        if 0 not in (config.round, config.target_round):
            raise InterpError(
                "--features top:K ranks latents by their change from round 0; patch to or "
                "from round 0, or name the latents"
            )
        if hook not in run.hooks:
            raise InterpError(
                f"--features top:K reads the run's stored {hook}, which it did not store; "
                f"stored: {', '.join(run.hooks)} (name the latents instead)"
            )


def feature_site(
    run: Run, config: PatchConfig, model: HookedTransformer
) -> tuple[FeatureSite, dict[str, Any]]:
    """The SAE (checked against the model) and the latents ``--features`` names, and what the
    summary says about them."""
    from interp.sae.latent_changes import top_changed
    from interp.sae.load import load_sae, sae_name

    sae = load_sae(config.sae, model)
    chosen = parse_features(config.features or "")
    source = "named"
    if isinstance(chosen, int):
        later = config.round if config.round != 0 else config.target_round
        latents, source = top_changed(run, sae, config.sae, later, chosen)
        chosen = tuple(latents)
    site = FeatureSite(sae, chosen)
    site.check()
    info = {
        "name": sae_name(config.sae),
        "path": str(Path(config.sae).resolve()),
        "hook": site.hook,
        "d_sae": int(sae.cfg.d_sae),
        "latents": list(chosen),
        "latents_from": source,
        "head_column": "the latent patched alone; -1: all chosen latents together",
        "definition": "at the SAE's hook, the recipient's chosen latents are replaced by the "
        "donor's and the activation becomes x + decode(f_new) - decode(f): the recipient's "
        "reconstruction error is kept, so patching no latent changes nothing",
    }
    return site, info
