"""Activation patching between rounds of one example, exact and batched.

One *variant* is one activation to patch: a layer and a component (``resid_pre``,
``resid_post``, ``attn_out``, ``mlp_out``, or one head's ``z`` for ``heads``). The
*recipient* prompt is run with the variant's activation at its last ``k`` positions replaced
by the *donor* prompt's activation at the donor's last ``k`` positions (aligned from the end:
donor ``len_d - j`` <-> recipient ``len_r - j``). Denoising puts a later round (donor) into an
earlier one (recipient); noising is the reverse. :func:`patch_run` turns a run directory into
per-example and summary tables; the gradient approximation is in :mod:`interp.attribution`.

In TransformerLens' words (``transformer_lens.patching``: the model runs on the *corrupted*
tokens with activations from the *clean* cache): the source round (``--round``) plays TL's
**clean** run and the target round (``--target-round``) TL's **corrupted** run, in both
directions. Denoise = TL's usual patching (clean -> corrupted; recipient = target round);
noise = corrupted -> clean (recipient = source round). The tables' column ``clean`` is this
project's older name for the target round's unpatched value, i.e. TL's *corrupted* baseline.

Why it is fast:

- Everything before the recipient's last ``k`` positions is the same in every variant, so it
  is computed once: one plain forward fills a TransformerLens KV cache, and each variant runs
  only the last ``k`` tokens on top of that cache (expanded along the batch, a view).
- Variants run side by side along the batch dimension, ``batch_size`` per forward. A batch
  whose variants all patch layer ``L`` or later starts at layer ``L`` (``start_at_layer``)
  from the recipient's unpatched ``resid_pre``: the layers below are unchanged.
- When donor and recipient are prefixes of one transcript (every round of a run is), a single
  forward over the longer gives the donor's activations, both read-outs' logits and the
  recipient's prefix cache.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from jaxtyping import Float, Int
from transformer_lens import HookedTransformer
from transformer_lens.cache.key_value_cache import TransformerLensKeyValueCache
from transformer_lens.cache.key_value_cache_entry import TransformerLensKeyValueCacheEntry
from transformer_lens.hook_points import HookPoint
from transformer_lens.utils import get_act_name

from interp.controls import open_control
from interp.errors import InterpError
from interp.loading import load_model
from interp.lock import run_lock
from interp.options import check_n_boot, check_seed
from interp.stats import DEFAULT_CLUSTER, bootstrap_weights, check_cluster_key, example_clusters
from interp.store import Run, write_json, write_parquet

COMPONENTS = ("resid_pre", "resid_post", "attn_out", "mlp_out", "heads")
# The TransformerLens activation each component patches (``heads``: one head's slice of z).
_ACT = {
    "resid_pre": "resid_pre",
    "resid_post": "resid_post",
    "attn_out": "attn_out",
    "mlp_out": "mlp_out",
    "heads": "z",
}

Hook = tuple[str, Callable[..., torch.Tensor | None]]


@dataclass(frozen=True, order=True)
class Variant:
    """One activation to patch."""

    layer: int
    component: str  # one of COMPONENTS
    head: int = -1  # the head for "heads"; -1 otherwise

    @property
    def hook(self) -> str:
        """The TransformerLens hook name, e.g. ``blocks.12.hook_resid_post``."""
        return get_act_name(_ACT[self.component], self.layer)


def sweep(
    n_layers: int, n_heads: int, layers: Sequence[int], components: Sequence[str]
) -> list[Variant]:
    """Every variant of ``components`` at ``layers`` (all heads for ``heads``), layer-major."""
    for component in components:
        if component not in COMPONENTS:
            raise InterpError(
                f"unknown component {component!r}; use one of {', '.join(COMPONENTS)}"
            )
    for layer in layers:
        if not 0 <= layer < n_layers:
            raise InterpError(
                f"layer {layer} is out of range: the model has layers 0..{n_layers - 1}"
            )
    heads = {c: range(n_heads) if c == "heads" else [-1] for c in components}
    return [Variant(layer, c, h) for layer in layers for c in components for h in heads[c]]


# --- one unpatched forward -------------------------------------------------------------------


@dataclass
class Recording:
    """What one unpatched forward over a token sequence gave."""

    logits: Float[torch.Tensor, "n_read d_vocab"]  # at the requested read positions
    acts: dict[str, torch.Tensor]  # hook -> [n_positions, ...] at `positions`
    positions: list[int]
    kv: TransformerLensKeyValueCache  # keys and values of every position (batch 1)

    def at(self, hook: str, positions: Sequence[int]) -> torch.Tensor:
        rows = [self.positions.index(p) for p in positions]
        return self.acts[hook][rows]


def record(
    model: HookedTransformer,
    tokens: Int[torch.Tensor, " pos"],
    hooks: Sequence[str],
    positions: Sequence[int],
    reads: Sequence[int],
) -> Recording:
    """Run ``tokens`` once: ``hooks`` at ``positions``, logits at ``reads``, the KV cache."""
    positions = sorted(set(positions))
    acts: dict[str, torch.Tensor] = {}

    def save(act: torch.Tensor, hook: HookPoint) -> None:
        acts[hook.name] = act[0, positions].detach().clone()

    kv = TransformerLensKeyValueCache.init_cache(model.cfg, model.cfg.device, 1)
    mask = torch.ones(1, len(tokens), dtype=torch.long, device=tokens.device)
    with torch.no_grad(), model.hooks(fwd_hooks=[(h, save) for h in dict.fromkeys(hooks)]):
        resid = model(
            tokens[None], past_kv_cache=kv, attention_mask=mask, stop_at_layer=model.cfg.n_layers
        )
        logits = final_logits(model, resid[0, list(reads)])
    return Recording(logits, acts, positions, kv)


def final_logits(
    model: HookedTransformer, resid: Float[torch.Tensor, "n d_model"]
) -> Float[torch.Tensor, "n d_vocab"]:
    """The model's own final norm + unembedding on a few residual vectors (skipping the
    vocabulary matmul at every other position, ~10% of a forward)."""
    return model(resid[:, None], start_at_layer=model.cfg.n_layers)[:, 0]


# --- exact patching ---------------------------------------------------------------------------


@dataclass
class PairPatch:
    """Exact patching of one recipient/donor pair: logits at the recipient's last position."""

    recipient_logits: Float[torch.Tensor, " d_vocab"]  # unpatched recipient
    donor_logits: Float[torch.Tensor, " d_vocab"]  # unpatched donor, at its last position
    patched_logits: Float[torch.Tensor, "variant d_vocab"]


def patch_pair(
    model: HookedTransformer,
    recipient: Int[torch.Tensor, " pos_r"],
    donor: Int[torch.Tensor, " pos_d"],
    variants: Sequence[Variant],
    *,
    n_positions: int = 1,
    batch_size: int = 32,
    reuse_prefix: bool = True,
) -> PairPatch:
    """Patch each variant from ``donor`` into ``recipient`` at their last ``n_positions``.

    ``reuse_prefix=False`` runs every variant over the whole recipient prompt (the reference
    the KV-prefix path is tested against).
    """
    k = _check_positions(n_positions, len(recipient), len(donor))
    rec, don = _recordings(model, recipient, donor, variants, k)
    donor_acts = {v.hook: don.at(v.hook, _tail(len(donor), k)) for v in variants}
    patched = []
    for chunk in _chunks(sorted(range(len(variants)), key=lambda i: variants[i]), batch_size):
        batch = [variants[i] for i in chunk]
        if reuse_prefix:
            logits = _patched_tail(model, recipient, rec, donor_acts, batch, k)
        else:
            logits = _patched_full(model, recipient, donor_acts, batch, k)
        patched.extend(zip(chunk, logits, strict=True))
    patched.sort(key=lambda pair: pair[0])
    out = torch.stack([logits for _, logits in patched]) if patched else rec.logits[:0]
    return PairPatch(rec.logits[0], don.logits[-1], out)


def _check_positions(k: int, len_recipient: int, len_donor: int) -> int:
    if k < 1:
        raise InterpError(f"positions: need at least one position to patch (got {k})")
    if k > min(len_recipient, len_donor):
        raise InterpError(
            f"positions last:{k} reaches before the start of a prompt "
            f"({min(len_recipient, len_donor)} tokens); use a smaller K"
        )
    return k


def _tail(length: int, k: int) -> list[int]:
    return list(range(length - k, length))


def _recordings(
    model: HookedTransformer,
    recipient: Int[torch.Tensor, " pos_r"],
    donor: Int[torch.Tensor, " pos_d"],
    variants: Sequence[Variant],
    k: int,
) -> tuple[Recording, Recording]:
    """The recipient's and donor's recordings; one forward when one is a prefix of the other.

    The recipient part holds ``resid_pre`` at its tail (the start of a batch that skips the
    unchanged lower layers); the donor part holds every variant's activation at its tail.
    """
    start_hooks = [get_act_name("resid_pre", v.layer) for v in variants]
    donor_hooks = [v.hook for v in variants]
    seq = shared_sequence(recipient, donor)
    if seq is not None:
        rec = record(
            model,
            seq,
            start_hooks + donor_hooks,
            _tail(len(recipient), k) + _tail(len(donor), k),
            [len(recipient) - 1, len(donor) - 1],
        )
        return rec, rec
    rec = record(model, recipient, start_hooks, _tail(len(recipient), k), [len(recipient) - 1])
    don = record(model, donor, donor_hooks, _tail(len(donor), k), [len(donor) - 1])
    return rec, don


def shared_sequence(
    recipient: Int[torch.Tensor, " pos_r"], donor: Int[torch.Tensor, " pos_d"]
) -> Int[torch.Tensor, " pos"] | None:
    """The longer prompt when the other is a prefix of it (rounds of one transcript), else
    None."""
    longer, shorter = (recipient, donor) if len(recipient) >= len(donor) else (donor, recipient)
    return longer if torch.equal(longer[: len(shorter)], shorter) else None


def _chunks(items: Sequence[int], size: int) -> list[list[int]]:
    if size < 1:
        raise InterpError(f"batch size must be at least 1 (got {size})")
    return [list(items[i : i + size]) for i in range(0, len(items), size)]


def _patched_tail(
    model: HookedTransformer,
    recipient: Int[torch.Tensor, " pos"],
    rec: Recording,
    donor_acts: dict[str, torch.Tensor],
    batch: list[Variant],
    k: int,
) -> Float[torch.Tensor, "batch d_vocab"]:
    """Run only the recipient's last ``k`` tokens on its cached prefix, from the lowest patched
    layer up, one variant per batch row."""
    start = min(v.layer for v in batch)
    prefix = len(recipient) - k
    resid = rec.at(get_act_name("resid_pre", start), _tail(len(recipient), k))
    resid = resid[None].expand(len(batch), -1, -1).contiguous()
    cache = _expanded_prefix(rec.kv, prefix, len(batch)) if prefix > 0 else None
    # No attention mask: nothing is padded, and without one TransformerLens slices the rotary
    # tables and builds a plain causal mask instead of gathering per batch row.
    with torch.no_grad(), model.hooks(fwd_hooks=_patch_hooks(batch, donor_acts)):
        out = model(
            resid, start_at_layer=start, past_kv_cache=cache, stop_at_layer=model.cfg.n_layers
        )
        return final_logits(model, out[:, -1])


def _patched_full(
    model: HookedTransformer,
    recipient: Int[torch.Tensor, " pos"],
    donor_acts: dict[str, torch.Tensor],
    batch: list[Variant],
    k: int,
) -> Float[torch.Tensor, "batch d_vocab"]:
    tokens = recipient[None].expand(len(batch), -1)
    with torch.no_grad(), model.hooks(fwd_hooks=_patch_hooks(batch, donor_acts)):
        out = model(tokens, stop_at_layer=model.cfg.n_layers)
        return final_logits(model, out[:, -1])


def _expanded_prefix(
    kv: TransformerLensKeyValueCache, length: int, batch: int
) -> TransformerLensKeyValueCache:
    """The first ``length`` cached positions, repeated ``batch`` times (views), frozen so that
    the forward does not store the variants' own keys."""
    entries = [
        TransformerLensKeyValueCacheEntry(
            e.past_keys[:, :length].expand(batch, -1, -1, -1),
            e.past_values[:, :length].expand(batch, -1, -1, -1),
            frozen=True,
        )
        for e in kv.entries
    ]
    mask = kv.previous_attention_mask[:, :length].expand(batch, -1)
    return TransformerLensKeyValueCache(entries, mask, frozen=True)


def _patch_hooks(batch: Sequence[Variant], donor_acts: dict[str, torch.Tensor]) -> list[Hook]:
    """One hook per hook name; each overwrites the last positions of its own batch rows."""
    rows: dict[str, list[int]] = {}
    heads: dict[str, list[int]] = {}
    for i, v in enumerate(batch):
        rows.setdefault(v.hook, []).append(i)
        heads.setdefault(v.hook, []).append(v.head)
    return [
        (
            hook,
            partial(
                _overwrite,
                rows=torch.tensor(rows[hook]),
                heads=torch.tensor(heads[hook]) if heads[hook][0] >= 0 else None,
                value=donor_acts[hook],
            ),
        )
        for hook in rows
    ]


def _overwrite(
    act: torch.Tensor,
    hook: HookPoint,
    *,
    rows: Int[torch.Tensor, " n"],
    heads: Int[torch.Tensor, " n"] | None,
    value: torch.Tensor,
) -> torch.Tensor:
    """``act[rows, -k:] = value`` ([batch, pos, d]); for z ([batch, pos, head, d_head]) only
    each row's own head."""
    k = value.shape[0]
    act = act.clone()
    rows = rows.to(act.device)
    value = value.to(act.dtype)
    if heads is None:
        act[rows, -k:] = value
    else:
        heads = heads.to(act.device)
        # Advanced indices split by a slice put their dimension first: [n, k, d_head].
        act[rows, -k:, heads] = value[:, heads].transpose(0, 1)
    return act


# --- a run directory: rounds -> tables ---------------------------------------------------------

DIRECTIONS = ("denoise", "noise")
METHODS = ("exact", "attribution")
CI_LEVEL = 0.95
# |source - clean| below this makes a per-example normalised effect undefined (NaN).
EFFECT_EPS = 1e-6

DEFINITIONS: dict[str, str] = {
    "value": (
        "logit[correct option] - logit[stereotyped option] at a round's read-out position "
        "(the option tokens scored there); examples without a stereotyped option, or whose "
        "stereotyped option is the correct one, are excluded"
    ),
    "clean": (
        "the value at --target-round, unpatched (the target round plays TransformerLens' "
        "*corrupted* run: despite its name this is TL's corrupted baseline, not TL's clean)"
    ),
    "source": "the value at --round, unpatched (the source round plays TL's *clean* run)",
    "patched": (
        "denoise: the target round's value with the activation patched in from the source "
        "round; noise: the source round's value with the target round's activation patched in"
    ),
    "effect": (
        "HEADLINE. Ratio of means: denoise mean(patched - clean) / mean(source - clean); noise "
        "mean(patched - source) / mean(clean - source). 1 = the patch carries the whole "
        "difference between the rounds, 0 = nothing. Per-example rows hold the per-example "
        f"ratio (NaN where |source - clean| < {EFFECT_EPS})"
    ),
    "delta": (
        "mean(patched - clean) for denoise, mean(patched - source) for noise: the patch's "
        "change of the value in logit units. The numerator of effect; read it when the rounds "
        "barely differ on average and effect's denominator is near zero"
    ),
    "gap": (
        "mean(source - clean) for denoise, mean(clean - source) for noise: effect's "
        "denominator, the same for every row. When its interval contains 0 the rounds do not "
        "differ reliably on this measure, and delta is the number to read"
    ),
    "effect_mean": (
        "mean of the per-example ratios over examples where it is defined; unstable when some "
        "examples barely differ between rounds, hence not the headline"
    ),
    "positions": (
        "readout: the read-out position only; last:K: the last K positions of each prompt, "
        "aligned from the end (source readout-j <-> target readout-j); refused unless the two "
        "rounds' aligned tokens are identical in every example (their shared tail)"
    ),
    "alignment": (
        "positions: K patched per example; shared_tail_min/max: over the examples used, how "
        "many tokens the two rounds' prompts share at their end (identical tokens, aligned "
        "from the end); K never exceeds shared_tail_min"
    ),
    "method": (
        "exact: activation patching; attribution: first-order gradient estimate "
        "(patched = value + (donor act - recipient act) . d value / d act)"
    ),
    "ci": (
        f"{CI_LEVEL:.0%} percentile bootstrap interval, resampling clusters of examples with "
        "replacement (the same resamples for every row; 'cluster' says which)"
    ),
    "control": (
        "with --control-run: the same patching on a replay of the same examples under another "
        "plan; <value>_diff = run - control with a paired cluster-bootstrap interval (both runs "
        "resampled with the same clusters)"
    ),
}


@dataclass(frozen=True)
class PatchConfig:
    """One patching analysis of a run; shared by :func:`patch_run` and ``interp patch``."""

    layer: int | str
    """A layer index, or "all" for every layer."""
    round: int
    """The source round, e.g. 3 (the corrected answer)."""
    target_round: int = 0
    """The target round, e.g. 0 (the question alone)."""
    component: str = "resid_post"
    """resid_pre, resid_post, attn_out, mlp_out, heads (every head), "all", or a comma list."""
    direction: str = "denoise"
    """denoise: source activation into the target run; noise: target activation into the
    source run (which components the correction needs)."""
    positions: str = "readout"
    """"readout", or "last:K" for the last K positions aligned from the end."""
    method: str = "exact"
    """exact activation patching, or "attribution" (gradient estimate, one pass per example)."""
    verify_top: int = 0
    """With attribution: re-run the K strongest variants exactly, report Spearman's rho."""
    examples: tuple[str | int, ...] | None = None
    """Keep only these examples: example ids (str) or example indices (int)."""
    categories: tuple[str, ...] | None = None
    """Keep only these categories (e.g. "Age")."""
    context_condition: str | None = None
    """Keep only "ambig" or "disambig" examples."""
    limit: int | None = None
    """Use only the first N examples left after filters and exclusions."""
    sample: int | None = None
    """A random sample of N examples left after filters and exclusions (seeded by ``seed``,
    kept in run order), before ``limit``."""
    batch_size: int = 32
    """Patch variants per forward pass."""
    n_boot: int = 1000
    """Bootstrap resamples for the intervals (0: no intervals)."""
    seed: int = 0
    """Seed of the bootstrap and of ``sample``."""
    cluster: str = DEFAULT_CLUSTER
    """What the bootstrap resamples: "template" (category + question_index) or "example"."""
    control_run: str | None = None
    """A replay of the same examples under another plan: patch it the same way and report
    run - control with paired intervals (its own result is written into it too)."""

    def components(self) -> list[str]:
        names = COMPONENTS if self.component == "all" else self.component.split(",")
        names = [c.strip() for c in names]
        for c in names:
            if c not in COMPONENTS:
                raise InterpError(
                    f"unknown component {c!r}; use one of {', '.join(COMPONENTS)}, 'all', or a "
                    "comma-separated list"
                )
        return list(dict.fromkeys(names))

    def n_positions(self) -> int:
        if self.positions == "readout":
            return 1
        head, _, count = self.positions.partition(":")
        if head != "last" or not count.isdigit() or int(count) < 1:
            raise InterpError(
                f"positions {self.positions!r}: use 'readout' or 'last:K' with K >= 1"
            )
        return int(count)

    def layers(self, n_layers: int) -> list[int]:
        if self.layer == "all":
            return list(range(n_layers))
        if isinstance(self.layer, str) and not self.layer.lstrip("-").isdigit():
            raise InterpError(f"--layer {self.layer!r}: use a layer index or 'all'")
        layer = int(self.layer)
        if not 0 <= layer < n_layers:
            raise InterpError(
                f"--layer {layer} is out of range: the model has {n_layers} layers "
                f"(0..{n_layers - 1}); use --layer all for every layer"
            )
        return [layer]

    def name(self) -> str:
        """File stem of the outputs, e.g. ``r3-t0-resid_post-denoise-L12``."""
        components = "all" if self.component == "all" else "+".join(self.components())
        parts = [f"r{self.round}", f"t{self.target_round}", components]
        parts.append(self.direction)
        if self.layer != "all":
            parts.append(f"L{self.layer}")
        if self.n_positions() > 1:
            parts.append(f"last{self.n_positions()}")
        if self.method != "exact":
            parts.append(self.method)
        selection: tuple[Any, ...] = (
            self.examples,
            self.categories,
            self.context_condition,
            self.limit,
        )
        if self.sample is not None:  # appended only when set: earlier names stay the same
            selection += (("sample", self.sample, self.seed),)
        if any(s is not None for s in selection):
            digest = hashlib.sha256(json.dumps(selection, default=str).encode()).hexdigest()
            parts.append(f"sel{digest[:8]}")
        return "-".join(parts)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        for key in ("examples", "categories"):
            out[key] = list(out[key]) if out[key] is not None else None
        return out


@dataclass
class PatchResult:
    """What :func:`patch_run` computed (and wrote, unless ``write=False``)."""

    per_example: pd.DataFrame
    """example_index, example_id, method, layer, component, head, clean, source, patched,
    effect: one row per example x variant."""
    summary_table: pd.DataFrame
    """One row per method x layer x component x head: means with bootstrap intervals."""
    summary: dict[str, Any]
    """JSON-ready: settings, example counts, definitions, top rows, verification, table."""
    name: str
    paths: list[Path]
    control_table: pd.DataFrame | None = None
    """With a control run: per variant, run and control value and run - control with a paired
    cluster-bootstrap interval, for effect, delta and gap (see :func:`control_difference`)."""


@dataclass(frozen=True)
class _Item:
    """One example's rows for the two rounds patched between."""

    index: int
    example_id: str
    readout: dict[int, int]  # round -> read-out position in the transcript
    good: dict[int, int]  # round -> token id of the correct option
    bad: dict[int, int]  # round -> token id of the stereotyped option


def patch_run(
    run_dir: str | Path,
    layer: int | str,
    round: int,
    target_round: int = 0,
    component: str = "resid_post",
    direction: str = "denoise",
    positions: str = "readout",
    method: str = "exact",
    verify_top: int = 0,
    examples: Sequence[str | int] | None = None,
    limit: int | None = None,
    model: HookedTransformer | None = None,
    batch_size: int = 32,
    progress: bool = False,
    *,
    sample: int | None = None,
    categories: Sequence[str] | None = None,
    context_condition: str | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    device: str = "cpu",
    dtype: str = "float32",
    write: bool = True,
    cluster: str = DEFAULT_CLUSTER,
    control_run: str | Path | None = None,
) -> PatchResult:
    """Patch between two rounds of every example of a run; see :class:`PatchConfig` and
    DESIGN.md ("Patching semantics"). Loads the run's model unless ``model`` is given."""
    config = PatchConfig(
        layer=layer,
        round=round,
        target_round=target_round,
        component=component,
        direction=direction,
        positions=positions,
        method=method,
        verify_top=verify_top,
        examples=_tuple(examples),
        categories=(categories,)
        if isinstance(categories, str)
        else tuple(categories)
        if categories is not None
        else None,
        context_condition=context_condition,
        limit=limit,
        sample=sample,
        batch_size=batch_size,
        n_boot=n_boot,
        seed=seed,
        cluster=cluster,
        control_run=str(control_run) if control_run is not None else None,
    )
    return run_patching(
        Run.open(run_dir),
        config,
        model=model,
        progress=progress,
        device=device,
        dtype=dtype,
        write=write,
    )


def _tuple(values: Sequence[Any] | str | None) -> tuple[Any, ...] | None:
    if values is None:
        return None
    return (values,) if isinstance(values, str) else tuple(values)


def run_patching(
    run: Run,
    config: PatchConfig,
    *,
    model: HookedTransformer | None = None,
    progress: bool = False,
    device: str = "cpu",
    dtype: str = "float32",
    write: bool = True,
) -> PatchResult:
    """:func:`patch_run` on an opened run with a :class:`PatchConfig`. Every check that does
    not need the model runs before the model is loaded."""
    started = time.perf_counter()
    _check_config(config, run)
    items, counts = select_examples(run.rounds(), config)
    clusters = example_clusters(run.rounds(), config.cluster)
    control = _control_selection(run, config, items) if config.control_run else None
    _check_prompt_lengths(items, config)
    tokens = run.tokens()
    alignment = check_alignment(items, tokens, config)
    if control is not None:  # the control's own checks, also before the model loads
        control_run, control_config, control_items, _ = control
        _check_prompt_lengths(control_items, control_config)
        check_alignment(control_items, control_run.tokens(), control_config)
    # One writer per run directory (interp.lock), refused before the model loads.
    with run_lock(run.path) if write else contextlib.nullcontext():
        args = (model, progress, device, dtype, write, started)
        return _run_checked(run, config, items, counts, tokens, alignment, clusters, control, *args)


def _run_checked(
    run,
    config,
    items,
    counts,
    tokens,
    alignment,
    clusters,
    control,
    model,
    progress,
    device,
    dtype,
    write,
    started,
) -> PatchResult:
    if model is None:
        model = load_model(run.manifest["model"]["model_id"], device=device, dtype=dtype)
    _check_model(model, run)
    variants = sweep(
        model.cfg.n_layers, model.cfg.n_heads, config.layers(run.n_layers), config.components()
    )
    patching_started = time.perf_counter()
    rows = _rows(model, config, items, tokens, variants, config.method, progress)
    patched_at = time.perf_counter()
    timing = {"patching_s": patched_at - patching_started}
    verify = None
    if config.method == "attribution" and config.verify_top > 0:
        verify, exact_rows = _verify(model, config, items, tokens, rows, progress)
        rows += exact_rows
        timing["verify_s"] = time.perf_counter() - patched_at
    per_example = pd.DataFrame(rows, columns=_ROW_COLUMNS)
    boot = {"n_boot": config.n_boot, "seed": config.seed, "clusters": clusters.ids}
    table = summarize(per_example, direction=config.direction, **boot)
    control_table, control_paths = None, []
    if control is not None:
        control_run, control_config, control_items, checks = control
        control_started = time.perf_counter()
        control_result = run_patching(
            control_run, control_config, model=model, progress=progress, write=write
        )
        control_paths = control_result.paths
        control_table = control_difference(
            per_example[per_example["method"] == config.method],
            control_result.per_example,
            direction=config.direction,
            **boot,
        )
        timing["control_s"] = time.perf_counter() - control_started
    timing["total_s"] = time.perf_counter() - started
    summary = _summary(run, config, model, counts, table, verify, timing)
    summary["alignment"] = alignment
    used = np.array([item.index for item in items])
    summary["cluster"] = clusters.subset(used).to_dict()
    if control is not None:
        summary["control"] = {
            **control[3],
            "written": [str(p) for p in control_paths],
            "table": _records(control_table),
        }
    name = config.name()
    paths = _write(run, name, per_example, summary) if write else []
    return PatchResult(per_example, table, summary, name, paths, control_table)


def _control_selection(
    run: Run, config: PatchConfig, items: Sequence[_Item]
) -> tuple[Run, PatchConfig, list[_Item], dict[str, Any]]:
    """Open and check the control run, and check that patching keeps the same examples of it
    (before any model is loaded)."""
    control, checks = open_control(run, config.control_run)
    control_config = replace(config, control_run=None, verify_top=0)
    _check_config(control_config, control)
    control_items, _ = select_examples(control.rounds(), control_config)
    if [i.example_id for i in control_items] != [i.example_id for i in items]:
        raise InterpError(
            f"control run {control.path}: patching keeps other examples of it than of the run "
            "(their targets or labels differ); it is not a replay of the same task data"
        )
    return control, control_config, control_items, checks


# --- checks and example selection ------------------------------------------------------------


def _check_config(config: PatchConfig, run: Run) -> None:
    check_cluster_key(config.cluster)
    last = run.n_rounds - 1
    for flag, r in (("--round", config.round), ("--target-round", config.target_round)):
        if r < 0:
            raise InterpError(f"{flag} {r}: rounds start at 0")
        if r > last:
            raise InterpError(
                f"run has rounds 0..{last}; {flag} {r} needs a replay with --rounds {r} or more"
            )
    if config.round == config.target_round:
        raise InterpError(
            f"--round and --target-round are both {config.round}; patch between two different "
            "rounds (e.g. --round 3 --target-round 0)"
        )
    if config.direction not in DIRECTIONS:
        raise InterpError(
            f"unknown direction {config.direction!r}; use one of {', '.join(DIRECTIONS)}"
        )
    if config.method not in METHODS:
        raise InterpError(f"unknown method {config.method!r}; use one of {', '.join(METHODS)}")
    if config.verify_top < 0 or (config.verify_top and config.method != "attribution"):
        raise InterpError("--verify-top K (K >= 1) only applies to --method attribution")
    if config.context_condition not in (None, "ambig", "disambig"):
        raise InterpError(
            f"context condition {config.context_condition!r}: use 'ambig' or 'disambig'"
        )
    if config.limit is not None and config.limit < 1:
        raise InterpError(f"--limit must be at least 1 (got {config.limit})")
    if config.sample is not None and config.sample < 1:
        raise InterpError(f"--sample must be at least 1 (got {config.sample})")
    if config.batch_size < 1:
        raise InterpError(f"--batch-size must be at least 1 (got {config.batch_size})")
    check_n_boot(config.n_boot)
    check_seed(config.seed)
    config.layers(run.n_layers)
    config.components()
    config.n_positions()


def _check_prompt_lengths(items: list[_Item], config: PatchConfig) -> None:
    """``--positions last:K`` within every chosen prompt, checked before the model runs."""
    shortest = min(min(item.readout.values()) + 1 for item in items)
    _check_positions(config.n_positions(), shortest, shortest)


def _check_model(model: HookedTransformer, run: Run) -> None:
    if model.cfg.n_layers != run.n_layers:
        raise InterpError(
            f"the model has {model.cfg.n_layers} layers but the run was replayed on one with "
            f"{run.n_layers}; pass the run's model"
        )
    source = getattr(model, "interp_source", None)
    want = run.manifest["model"].get("weights_hash")
    if source is not None and want and source.weights_hash != want:
        raise InterpError(
            f"the model's weights ({source.weights_hash[:16]}) are not the run's ({want[:16]}); "
            "pass the model the run was replayed with"
        )


def select_examples(rounds: pd.DataFrame, config: PatchConfig) -> tuple[list[_Item], dict]:
    """The examples to patch (filters, then exclusions, then the limit) and the counts."""
    wanted = rounds[rounds["round"].isin([config.round, config.target_round])]
    firsts = wanted.sort_values("round").groupby("example_index", sort=True).first()
    counts: dict[str, Any] = {"in_run": int(rounds["example_index"].nunique())}
    keep = _filters(firsts, config)
    counts["after_filters"] = int(keep.sum())
    no_target = keep & (firsts["target"] < 0)
    target_is_label = keep & (firsts["target"] >= 0) & (firsts["target"] == firsts["label"])
    counts["excluded_no_target"] = int(no_target.sum())
    counts["excluded_target_is_label"] = int(target_is_label.sum())
    chosen = firsts.index[keep & ~no_target & ~target_is_label].tolist()
    if config.sample is not None and chosen:
        if config.sample > len(chosen):
            raise InterpError(
                f"--sample {config.sample} exceeds the {len(chosen)} examples left after "
                "filters and exclusions"
            )
        # Seeded as replay's --sample: a uniform subset, kept in run order.
        gen = torch.Generator().manual_seed(config.seed)
        keep_at = sorted(torch.randperm(len(chosen), generator=gen)[: config.sample].tolist())
        chosen = [chosen[i] for i in keep_at]
    if config.limit is not None:
        chosen = chosen[: config.limit]
    counts["used"] = len(chosen)
    if not chosen:
        raise InterpError(
            f"no examples left to patch: {counts['in_run']} in the run, "
            f"{counts['after_filters']} after filters, {counts['excluded_no_target']} without a "
            f"stereotyped option, {counts['excluded_target_is_label']} whose stereotyped option "
            "is the correct answer"
        )
    by_key = wanted.set_index(["example_index", "round"])
    return [_item(by_key, int(i), config) for i in chosen], counts


def _filters(firsts: pd.DataFrame, config: PatchConfig) -> pd.Series:
    keep = pd.Series(True, index=firsts.index)
    if config.examples is not None:
        ids = {str(e) for e in config.examples if isinstance(e, str)}
        indices = {int(e) for e in config.examples if not isinstance(e, str)}
        known = set(firsts["example_id"]) | set(firsts.index)
        missing = [e for e in config.examples if e not in known]
        if missing:
            raise InterpError(f"no such examples in the run: {', '.join(map(str, missing))}")
        keep &= firsts["example_id"].isin(ids) | firsts.index.isin(indices)
    if config.categories is not None:
        keep &= firsts["category"].isin(config.categories)
    if config.context_condition is not None:
        keep &= firsts["context_condition"] == config.context_condition
    return keep


def _item(by_key: pd.DataFrame, index: int, config: PatchConfig) -> _Item:
    readout, good, bad = {}, {}, {}
    for r in (config.round, config.target_round):
        if (index, r) not in by_key.index:
            raise InterpError(f"example {index} has no row for round {r} in rounds.parquet")
        row = by_key.loc[(index, r)]
        options = list(row["option_token_ids"])
        readout[r] = int(row["readout_pos"])
        good[r], bad[r] = int(options[int(row["label"])]), int(options[int(row["target"])])
    return _Item(index, str(by_key.loc[(index, config.round)]["example_id"]), readout, good, bad)


def check_alignment(
    items: Sequence[_Item], tokens: Sequence[Sequence[int]], config: PatchConfig
) -> dict[str, int]:
    """Refuse positions whose aligned tokens differ between the two rounds.

    ``last:K`` pairs source position ``readout - j`` with target position ``readout - j``.
    That pairs the same token only within the prompts' shared tail (answer prefix, assistant
    header, end of the user turn); beyond it the two rounds hold different text, and swapping
    activations there would mix unrelated positions without a word. Returns the shared tails'
    extent over the examples.
    """
    k = config.n_positions()
    tails: list[int] = []
    worst: tuple[int, int, str] | None = None  # (identical of K, shared tail, example id)
    for item in items:
        seq = tokens[item.index]
        a, b = item.readout[config.round] + 1, item.readout[config.target_round] + 1
        _check_positions(k, a, b)
        source, target = seq[:a][::-1], seq[:b][::-1]  # reversed: aligned from the end
        same = [x == y for x, y in zip(source, target, strict=False)]
        tail = same.index(False) if False in same else len(same)
        tails.append(tail)
        identical = sum(same[:k])
        if tail < k and (worst is None or tail < worst[1]):
            worst = (identical, tail, item.example_id)
    if worst is not None:
        n_bad = sum(t < k for t in tails)
        identical, tail, example = worst
        rounds = f"rounds {config.round} and {config.target_round}"
        if min(tails) == 0:
            raise InterpError(
                f"positions last:{k}: the read-out tokens of {rounds} differ (e.g. {example}); "
                "no position aligns"
            )
        raise InterpError(
            f"positions last:{k}: {rounds} differ in their last {k} tokens in {n_bad} of "
            f"{len(items)} examples (e.g. {example}: {identical} of {k} aligned tokens "
            f"identical, shared tail {tail}); beyond the shared tail, aligned positions hold "
            f"different text. Use --positions last:{min(tails)} or fewer"
        )
    return {"positions": k, "shared_tail_min": min(tails), "shared_tail_max": max(tails)}


# --- per-example rows --------------------------------------------------------------------------

_ROW_COLUMNS = [
    "example_index",
    "example_id",
    "method",
    "layer",
    "component",
    "head",
    "clean",
    "source",
    "patched",
    "effect",
]


def _rows(
    model: HookedTransformer,
    config: PatchConfig,
    items: Sequence[_Item],
    tokens: Sequence[Sequence[int]],
    variants: Sequence[Variant],
    method: str,
    progress: bool,
) -> list[dict[str, Any]]:
    from tqdm.auto import tqdm

    rows: list[dict[str, Any]] = []
    desc = f"patching ({method}, {len(variants)} variants)"
    for item in tqdm(items, desc=desc, disable=not progress):
        rows += _example_rows(model, config, item, tokens[item.index], variants, method)
    return rows


def _example_rows(
    model: HookedTransformer,
    config: PatchConfig,
    item: _Item,
    transcript: Sequence[int],
    variants: Sequence[Variant],
    method: str,
) -> list[dict[str, Any]]:
    r_rec, r_don = (config.target_round, config.round)
    if config.direction == "noise":
        r_rec, r_don = r_don, r_rec
    seq = torch.tensor(transcript, dtype=torch.long, device=model.cfg.device)
    recipient, donor = seq[: item.readout[r_rec] + 1], seq[: item.readout[r_don] + 1]
    k = config.n_positions()
    if method == "attribution":
        # interp.attribution builds on this module's primitives, hence the late import.
        from interp.attribution import attribute_pair

        good, bad = item.good[r_rec], item.bad[r_rec]
        res = attribute_pair(model, recipient, donor, variants, good=good, bad=bad, n_positions=k)
        rec_logits, don_logits = res.recipient_logits, res.donor_logits
        patched = (_value(rec_logits, item, r_rec) + res.deltas.double().cpu()).tolist()
    else:
        res = patch_pair(
            model, recipient, donor, variants, n_positions=k, batch_size=config.batch_size
        )
        rec_logits, don_logits = res.recipient_logits, res.donor_logits
        patched = _value(res.patched_logits, item, r_rec).tolist()
    rec_value = float(_value(rec_logits, item, r_rec))
    don_value = float(_value(don_logits, item, r_don))
    clean, source = (
        (rec_value, don_value) if config.direction == "denoise" else (don_value, rec_value)
    )
    return [
        {
            "example_index": item.index,
            "example_id": item.example_id,
            "method": method,
            "layer": v.layer,
            "component": v.component,
            "head": v.head,
            "clean": clean,
            "source": source,
            "patched": p,
            "effect": _ratio(p - rec_value, don_value - rec_value),
        }
        for v, p in zip(variants, patched, strict=True)
    ]


def _value(logits: torch.Tensor, item: _Item, r: int) -> torch.Tensor:
    """logit[correct] - logit[stereotyped] (last dim), in float64 on the CPU."""
    logits = logits.detach().double().cpu()
    return logits[..., item.good[r]] - logits[..., item.bad[r]]


def _ratio(num: float, den: float) -> float:
    return num / den if abs(den) >= EFFECT_EPS else float("nan")


def _verify(
    model: HookedTransformer,
    config: PatchConfig,
    items: Sequence[_Item],
    tokens: Sequence[Sequence[int]],
    rows: list[dict[str, Any]],
    progress: bool,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Exact patching of the ``verify_top`` variants with the largest estimated mean change,
    and Spearman's rank correlation between estimated and exact mean changes."""
    from scipy.stats import spearmanr

    frame = pd.DataFrame(rows)
    recipient = "clean" if config.direction == "denoise" else "source"
    frame["delta"] = frame["patched"] - frame[recipient]
    means = frame.groupby(["layer", "component", "head"], sort=True)["delta"].mean()
    top = means.abs().sort_values(ascending=False, kind="stable").index[: config.verify_top]
    variants = [Variant(int(layer), str(comp), int(head)) for layer, comp, head in top]
    exact_rows = _rows(model, config, items, tokens, variants, "exact", progress)
    exact = pd.DataFrame(exact_rows)
    exact["delta"] = exact["patched"] - exact[recipient]
    exact_means = exact.groupby(["layer", "component", "head"])["delta"].mean()
    approx, truth = means.loc[list(top)].to_numpy(), exact_means.loc[list(top)].to_numpy()
    rho = float(spearmanr(approx, truth).statistic) if len(top) >= 3 else float("nan")
    verify = {
        "k": len(top),
        "spearman": _json_float(rho),
        "definition": (
            "Spearman's rank correlation, over the k variants with the largest |mean estimated "
            "change|, between the attribution estimate and exact patching of mean(patched - "
            "unpatched recipient value)"
        ),
        "variants": [
            {
                "layer": v.layer,
                "component": v.component,
                "head": v.head,
                "estimated_delta": _json_float(a),
                "exact_delta": _json_float(t),
            }
            for v, a, t in zip(variants, approx, truth, strict=True)
        ],
    }
    return verify, exact_rows


# --- summaries with bootstrap intervals --------------------------------------------------------

_GROUP = ["method", "layer", "component", "head"]
_MEANS = ("clean", "source", "patched")


def summarize(
    per_example: pd.DataFrame,
    *,
    direction: str = "denoise",
    n_boot: int = 1000,
    seed: int = 0,
    clusters: Int[np.ndarray, " run_example"] | None = None,
) -> pd.DataFrame:
    """One row per method x layer x component x head: n, mean clean/source/patched, the
    headline ``effect`` (ratio of means), ``delta`` (its numerator: the mean change the patch
    makes), ``gap`` (its denominator) and ``effect_mean`` (mean of per-example ratios), each
    with ``_lo``/``_hi`` percentile bootstrap bounds (NaN when ``n_boot`` is 0). The bootstrap
    resamples clusters: ``clusters`` holds the cluster number of every example of the run,
    indexed by ``example_index`` (None: every example alone)."""
    groups, cols = _variant_columns(per_example)
    if not groups:
        return pd.DataFrame(columns=[*_GROUP, "n"])
    n = len(groups[0][1])
    rec, don = ("clean", "source") if direction == "denoise" else ("source", "clean")
    point = _stats(np.ones((1, n)), cols, rec, don)
    weights = _resample_weights(groups[0][1]["example_index"], n_boot, seed, clusters)
    boot = _stats(weights, cols, rec, don) if n_boot else None
    out = pd.DataFrame([dict(zip(_GROUP, key, strict=True)) for key, _ in groups])
    out["n"] = n
    for name, values in point.items():
        out[name] = values[0]
        lo, hi = _intervals(boot[name]) if boot else (np.nan, np.nan)
        out[f"{name}_lo"], out[f"{name}_hi"] = lo, hi
    return out


def _component_order(column: pd.Series) -> pd.Series:
    """Components in COMPONENTS order (residual stream first), other columns as they are."""
    if column.name != "component":
        return column
    return column.map({c: i for i, c in enumerate(COMPONENTS)}).fillna(len(COMPONENTS))


def _variant_columns(
    per_example: pd.DataFrame,
) -> tuple[list[tuple[Any, pd.DataFrame]], dict[str, Float[np.ndarray, "example group"]]]:
    """The per-example rows grouped by variant (in COMPONENTS order), and the value columns as
    [example, variant] arrays."""
    frame = per_example.sort_values([*_GROUP, "example_index"], key=_component_order, kind="stable")
    groups = list(frame.groupby(_GROUP, sort=False))
    if not groups:
        return [], {}
    n = len(groups[0][1])
    if any(len(g) != n for _, g in groups):
        raise ValueError("summarize: every variant needs the same examples")
    cols = {
        c: np.stack([g[c].to_numpy(float) for _, g in groups], axis=1)
        for c in frame
        if c in (*_MEANS, "effect")
    }
    return groups, cols


def _resample_weights(
    example_index: pd.Series,
    n_boot: int,
    seed: int,
    clusters: Int[np.ndarray, " run_example"] | None,
) -> Float[np.ndarray, "resample example"]:
    """How often each example is drawn in each resample (whole clusters at a time)."""
    index = example_index.to_numpy(dtype=np.int64)
    ids = np.arange(len(index)) if clusters is None else np.asarray(clusters)[index]
    _, ids = np.unique(ids, return_inverse=True)
    return bootstrap_weights(ids, n_boot, seed)


_DIFF_VALUES = ("effect", "delta", "gap")


def control_difference(
    run: pd.DataFrame,
    control: pd.DataFrame,
    *,
    direction: str = "denoise",
    n_boot: int = 1000,
    seed: int = 0,
    clusters: Int[np.ndarray, " run_example"] | None = None,
) -> pd.DataFrame:
    """Run - control per variant (one method's per-example rows of each), for effect, delta
    and gap: columns ``<value>_run``, ``<value>_control``, ``<value>_diff`` and its
    ``_diff_lo``/``_diff_hi`` bounds. Paired: every resample weighs both runs' examples alike,
    so the interval is that of the difference, not of two independent means."""
    groups, cols = _variant_columns(run)
    control_groups, control_cols = _variant_columns(control)
    keys = [key for key, _ in groups]
    if keys != [key for key, _ in control_groups] or any(
        not np.array_equal(g["example_index"], h["example_index"])
        for (_, g), (_, h) in zip(groups, control_groups, strict=True)
    ):
        raise InterpError("the control run's patching covers other variants or examples")
    if not groups:
        return pd.DataFrame(columns=[*_GROUP, "n"])
    n = len(groups[0][1])
    rec, don = ("clean", "source") if direction == "denoise" else ("source", "clean")
    weights = _resample_weights(groups[0][1]["example_index"], n_boot, seed, clusters)
    out = pd.DataFrame([dict(zip(_GROUP, key, strict=True)) for key in keys])
    out["n"] = n
    point = {
        k: _stats(np.ones((1, n)), c, rec, don)
        for k, c in (("run", cols), ("control", control_cols))
    }
    boot = None
    if n_boot:
        boot = {
            k: _stats(weights, c, rec, don) for k, c in (("run", cols), ("control", control_cols))
        }
    for name in _DIFF_VALUES:
        out[f"{name}_run"] = point["run"][name][0]
        out[f"{name}_control"] = point["control"][name][0]
        out[f"{name}_diff"] = point["run"][name][0] - point["control"][name][0]
        lo, hi = _intervals(boot["run"][name] - boot["control"][name]) if boot else (np.nan, np.nan)
        out[f"{name}_diff_lo"], out[f"{name}_diff_hi"] = lo, hi
    return out


def _stats(
    weights: Float[np.ndarray, "resample example"],
    cols: dict[str, Float[np.ndarray, "example group"]],
    rec: str,
    don: str,
) -> dict[str, Float[np.ndarray, "resample group"]]:
    total = weights.sum(axis=1, keepdims=True)
    out = {c: weights @ cols[c] / total for c in _MEANS}
    finite = np.isfinite(cols["effect"])
    out["delta"] = weights @ (cols["patched"] - cols[rec]) / total
    out["gap"] = weights @ (cols[don] - cols[rec]) / total
    with np.errstate(invalid="ignore", divide="ignore"):
        out["effect"] = (weights @ (cols["patched"] - cols[rec])) / (
            weights @ (cols[don] - cols[rec])
        )
        out["effect_mean"] = (weights @ np.where(finite, cols["effect"], 0.0)) / (
            weights @ finite.astype(float)
        )
    return out


def _intervals(samples: Float[np.ndarray, "resample group"]) -> tuple[np.ndarray, np.ndarray]:
    tail = 100 * (1 - CI_LEVEL) / 2
    masked = np.where(np.isfinite(samples), samples, np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns give NaN bounds
        lo, hi = np.nanpercentile(masked, [tail, 100 - tail], axis=0)
    return lo, hi


# --- the JSON summary and the files --------------------------------------------------------------


def _summary(
    run: Run,
    config: PatchConfig,
    model: HookedTransformer,
    counts: dict[str, Any],
    table: pd.DataFrame,
    verify: dict[str, Any] | None,
    timing: dict[str, float],
) -> dict[str, Any]:
    main = table[table["method"] == config.method]
    top = main.reindex(main["effect"].abs().sort_values(ascending=False).index).head(10)
    source = getattr(model, "interp_source", None)
    return {
        "name": config.name(),
        "run": str(run.path),
        "config": config.to_dict(),
        "model": source.to_dict() if source is not None else run.manifest["model"],
        "examples": counts,
        "n_examples": counts["used"],
        "headline": "effect",
        "result": _records(main)[0] if len(main) == 1 else None,
        "top": _records(top),
        "verify": verify,
        "definitions": DEFINITIONS,
        "bootstrap": {
            "n_boot": config.n_boot,
            "seed": config.seed,
            "level": CI_LEVEL,
            "cluster": config.cluster,
        },
        "timing": {k: round(v, 3) for k, v in timing.items()},
        "table": _records(table),
    }


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    return [
        {k: _json_float(v) if isinstance(v, float) else _plain(v) for k, v in row.items()}
        for row in frame.to_dict(orient="records")
    ]


def _plain(v: Any) -> Any:
    return v.item() if isinstance(v, np.generic) else v


def _json_float(x: float) -> float | None:
    x = float(x)
    return x if math.isfinite(x) else None


def _write(run: Run, name: str, per_example: pd.DataFrame, summary: dict[str, Any]) -> list[Path]:
    out = run.analysis_dir("patching")
    table, meta = out / f"{name}.parquet", out / f"{name}.json"
    # NAME.json is the result's completeness marker, written last: readers (export) skip a
    # table without it, so a killed patch never pairs a new table with an old summary.
    meta.unlink(missing_ok=True)
    write_parquet(table, per_example)
    write_json(meta, summary)
    return [table, meta]
