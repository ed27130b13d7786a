"""Patching analysis of a run: settings, which examples, and the tables with their intervals.

The source round (``PatchConfig.round``) plays TransformerLens' **clean** run and the target
round (``target_round``) its **corrupted** run, in both directions (``transformer_lens.patching``
runs the model on the corrupted tokens with activations from the clean cache). Denoise = TL's
usual patching (clean -> corrupted; recipient = target round); noise = corrupted -> clean
(recipient = source round). The tables' column ``clean`` is this project's older name for the
target round's unpatched value, i.e. TL's *corrupted* baseline.

Nothing here runs the model: the settings, example selection and alignment checks run before
a model is loaded, and the summaries work on per-example rows (also those read back from a
run directory, e.g. by the report).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from jaxtyping import Float, Int

from interp.errors import InterpError
from interp.inputs.selection import Selection, choose, example_mask, with_selection
from interp.options import check_n_boot, check_seed
from interp.patching.core import COMPONENTS, SAE_COMPONENT, check_positions
from interp.runs.store import Run, safe_name
from interp.stats import (
    CI_LEVEL,
    CLUSTER_FLOOR,
    DEFAULT_CLUSTER,
    FEW_CLUSTERS,
    bootstrap_weights,
    check_cluster_key,
    json_float,
    percentile_interval,
)

DIRECTIONS = ("denoise", "noise")
METHODS = ("exact", "attribution")
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
        "replacement (the same resamples for every row; 'cluster' says which; n_clusters "
        f"beside every row). Below {CLUSTER_FLOOR} clusters no interval is given (n/a), below "
        f"{FEW_CLUSTERS} the intervals are coarse and come with a warning"
    ),
    "control": (
        "with --control-run: the same patching on a replay of the same examples under another "
        "plan; <value>_diff = run - control with a paired cluster-bootstrap interval (both runs "
        "resampled with the same clusters)"
    ),
}


@dataclass(frozen=True)
class PatchConfig:
    """One patching analysis of a run; shared by :func:`~interp.patching.pipeline.patch` and
    ``interp patch``.

    The examples are chosen by ``examples``, ``categories``, ``context_condition``, then
    ``sample`` (seeded by ``seed``) and ``limit``; :attr:`selection` is the shared
    :class:`~interp.inputs.selection.Selection` of those (the flat fields stay the stored form,
    so summaries and file names are those of earlier patches). With ``sae`` the default
    component ``resid_post`` becomes ``sae`` (the SAE's latents), as on the command line.

    Raises:
        InterpError: (from :func:`check_config` and the methods) a bad setting.
    """

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
    examples: tuple[str | int, ...] | list[str | int] | None = None
    """Keep only these examples: example ids (str) or example indices (int)."""
    categories: tuple[str, ...] | list[str] | None = None
    """Keep only these categories (e.g. "Age")."""
    context_condition: str | None = None
    """Keep only "ambig" or "disambig" examples."""
    limit: int | None = None
    """Use only the first N examples left after filters and exclusions; on a permuted run
    (``--permute``) N counts base examples, each with all its option orders."""
    sample: int | None = None
    """A random sample of N examples left after filters and exclusions (seeded by ``seed``,
    kept in run order), before ``limit``; on a permuted run N base examples with all their
    option orders."""
    batch_size: int = 32
    """Patch variants per forward pass."""
    example_batch: int | None = None
    """Exact patching: examples whose variants share forward passes (None: 16, see
    :data:`interp.patching.packed.EXAMPLE_BATCH`); 1 patches one example at a time, each with
    its own forwards (the least memory)."""
    n_boot: int = 1000
    """Bootstrap resamples for the intervals (0: no intervals)."""
    seed: int = 0
    """Seed of the bootstrap and of ``sample``."""
    cluster: str = DEFAULT_CLUSTER
    """What the bootstrap resamples: "template" (category + question_index) or "example"."""
    control_run: str | Path | None = None
    """A replay of the same examples under another plan: patch it the same way and report
    run - control with paired intervals (its own result is written into it too)."""
    sae: str | Path | None = None
    """Feature patching: an sae-lens SAE folder; its latents are patched at its hook (the
    component is then "sae" and the layer the SAE's)."""
    features: str | None = None
    """With ``sae``: the latents to patch, "123,456", or "top:K" (the K latents that change
    most from round 0 to the source round, from ``interp sae features`` or computed here)."""

    def __post_init__(self) -> None:
        for name in ("examples", "categories"):  # lists (and one string) as tuples
            value = getattr(self, name)
            if value is not None and not isinstance(value, tuple):
                object.__setattr__(self, name, (value,) if isinstance(value, str) else tuple(value))
        if self.sae is not None and self.component == "resid_post":
            # the default names no choice: with an SAE the site is its latents
            object.__setattr__(self, "component", SAE_COMPONENT)
        for name in ("control_run", "sae"):  # paths are stored as text
            value = getattr(self, name)
            if value is not None and not isinstance(value, str):
                object.__setattr__(self, name, str(value))

    @property
    def selection(self) -> Selection:
        """The examples, sample (seeded by ``seed``) and limit, as every verb spells them."""
        return Selection(
            examples=self.examples, limit=self.limit, sample=self.sample, seed=self.seed
        )

    def with_selection(self, selection: Selection) -> PatchConfig:
        """This config choosing its examples as ``selection`` says (its ``seed`` also seeds
        the bootstrap); see :func:`interp.inputs.selection.with_selection`."""
        return with_selection(self, selection)

    def components(self) -> list[str]:
        if self.sae is not None:
            if self.component != SAE_COMPONENT:
                raise InterpError(
                    f"--sae patches SAE latents (component 'sae'), not {self.component!r}: "
                    "leave --component out"
                )
            return [SAE_COMPONENT]
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
            raise InterpError(f"--layers {self.layer!r}: use a layer index or 'all'")
        layer = int(self.layer)
        if not 0 <= layer < n_layers:
            raise InterpError(
                f"--layers {layer} is out of range: the model has {n_layers} layers "
                f"(0..{n_layers - 1}); use --layers all for every layer"
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
        if self.sae is not None:  # appended only for feature patching: other names unchanged
            features = (self.features or "").replace(":", "")
            if not re.fullmatch(r"[0-9,a-z]{1,40}", features):
                features = "f" + hashlib.sha256(features.encode()).hexdigest()[:8]
            sae = safe_name(Path(self.sae).resolve().name)
            parts.append(f"{sae}-{features.replace(',', '_')}")
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
        if out["example_batch"] is None:  # only when set: earlier summaries unchanged
            del out["example_batch"]
        for key in ("sae", "features"):  # only in feature patching's summaries
            if out[key] is None:
                del out[key]
        return out


def patching_value(table: pd.DataFrame) -> str:
    """``"effect"`` (normalised), or ``"delta"`` (logit change) when the rounds do not differ
    reliably: the interval of effect's shared denominator ``gap`` contains 0, so a ratio by
    it would be noise. The one rule the report's figures and the CLI's patch table share.

    Args:
        table: A patching summary table (``gap_lo``, ``gap_hi`` and ``delta`` columns; the
            interval is the same on every row).

    Returns:
        ``"effect"`` or ``"delta"``.
    """
    if not {"gap_lo", "gap_hi", "delta"} <= set(table.columns) or table.empty:
        return "effect"
    # None (read back from JSON) where no interval was given, e.g. below the cluster floor
    lo, hi = (float(pd.to_numeric(table[c], errors="coerce").iloc[0]) for c in ("gap_lo", "gap_hi"))
    return "delta" if np.isfinite(lo) and np.isfinite(hi) and lo <= 0 <= hi else "effect"


@dataclass
class PatchResult:
    """What :func:`~interp.patching.pipeline.patch` computed (and wrote, unless
    ``write=False``)."""

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

    def __repr__(self) -> str:
        control = "" if self.control_table is None else ", with control"
        return (
            f"PatchResult({self.name}: {self._n_examples()} examples, "
            f"{len(self.summary_table)} summary rows, {len(self.paths)} files{control})"
        )

    def _n_examples(self) -> Any:
        counts = self.summary.get("examples")
        return counts.get("used") if isinstance(counts, dict) else self.summary.get("n_examples")

    def _repr_html_(self) -> str:
        """A small HTML card for notebooks (:func:`interp.runs.display.html_card`)."""
        from interp.runs.display import html_card

        config = self.summary.get("config", {})
        facts = [
            ("rounds", f"source {config.get('round')} -> target {config.get('target_round')}"),
            ("direction", config.get("direction")),
            ("method", config.get("method")),
            ("examples", self._n_examples()),
            ("read", patching_value(self.summary_table)),
            ("files", len(self.paths)),
        ]
        tables = {"summary_table": self.summary_table}
        if self.control_table is not None:
            tables["control_table"] = self.control_table
        return html_card(f"PatchResult {self.name}", facts, tables)


@dataclass(frozen=True)
class PatchItem:
    """One example's rows for the two rounds patched between."""

    index: int
    example_id: str
    readout: dict[int, int]  # round -> read-out position in the transcript
    # round -> token id of the correct option (Winogender: the female pronoun's token ids)
    good: dict[int, int | tuple[int, ...]]
    # round -> token id of the stereotyped option (Winogender: the male pronoun's token ids)
    bad: dict[int, int | tuple[int, ...]]


# --- checks and example selection ------------------------------------------------------------


# The value on a Winogender run (replaces DEFINITIONS["value"] in its summaries).
WINOGENDER_VALUE = (
    "log P(female) - log P(male) at a round's read-out, each the log of the summed probabilities "
    "of the pronoun's single-token variants (rounds.parquet pronoun_token_ids): "
    "logsumexp(logits[female ids]) - logsumexp(logits[male ids]); every item is used"
)


def check_config(config: PatchConfig, run: Run) -> None:
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
        raise InterpError(f"limit must be at least 1 (got {config.limit})")
    if config.sample is not None and config.sample < 1:
        raise InterpError(f"--sample must be at least 1 (got {config.sample})")
    if config.batch_size < 1:
        raise InterpError(f"batch_size must be at least 1 (got {config.batch_size})")
    if config.example_batch is not None and config.example_batch < 1:
        raise InterpError(f"example_batch must be at least 1 (got {config.example_batch})")
    check_n_boot(config.n_boot)
    check_seed(config.seed)
    config.layers(run.n_layers)
    config.components()
    config.n_positions()
    if config.sae is not None:
        if config.method != "exact":
            raise InterpError("--sae: feature patching is exact only (leave --method out)")
        if config.control_run is not None:
            raise InterpError("--sae: feature patching has no --control-run yet")
    elif config.features is not None:
        raise InterpError("--features needs --sae (the SAE whose latents to patch)")


def check_prompt_lengths(items: list[PatchItem], config: PatchConfig) -> None:
    """``--positions last:K`` within every chosen prompt, checked before the model runs."""
    shortest = min(min(item.readout.values()) + 1 for item in items)
    check_positions(config.n_positions(), shortest, shortest)


def select_items(rounds: pd.DataFrame, config: PatchConfig) -> tuple[list[PatchItem], dict]:
    """The examples to patch (filters, then exclusions, then the limit) and the counts."""
    wanted = rounds[rounds["round"].isin([config.round, config.target_round])]
    firsts = wanted.sort_values("round").groupby("example_index", sort=True).first()
    counts: dict[str, Any] = {"in_run": int(rounds["example_index"].nunique())}
    keep = _filters(firsts, config)
    counts["after_filters"] = int(keep.sum())
    # Winogender rows have no correct or stereotyped option: every item compares the female
    # and the male pronoun (WINOGENDER_VALUE).
    wino = "pronoun_token_ids" in firsts.columns
    no_target = keep & (firsts["target"] < 0) & (not wino)
    target_is_label = keep & (firsts["target"] >= 0) & (firsts["target"] == firsts["label"])
    counts["excluded_no_target"] = int(no_target.sum())
    counts["excluded_target_is_label"] = int(target_is_label.sum())
    chosen = firsts.index[keep & ~no_target & ~target_is_label].tolist()
    chosen = _whole_examples(chosen, firsts, config, counts)
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


def _whole_examples(
    chosen: list[int], firsts: pd.DataFrame, config: PatchConfig, counts: dict[str, Any]
) -> list[int]:
    """``--sample`` then ``--limit`` over *base examples*: on a permuted run (a
    ``base_index`` column) every option order of a kept example is kept, so no example is cut
    to some of its orders (and a cluster to part of itself); elsewhere each row is its own
    base example. ``counts`` gets ``base_examples`` on a permuted run."""
    permuted = "base_index" in firsts.columns
    base = firsts.loc[chosen, "base_index"].tolist() if permuted else list(chosen)
    what = "base examples" if permuted else "examples"
    selection = config.selection
    kept = choose(list(dict.fromkeys(base)), selection, f"{what} left after filters and exclusions")
    if permuted:
        counts["base_examples"] = len(kept)
    wanted = set(kept)
    return [i for i, b in zip(chosen, base, strict=True) if b in wanted]


def _filters(firsts: pd.DataFrame, config: PatchConfig) -> pd.Series:
    keep = pd.Series(True, index=firsts.index)
    if config.examples is not None:
        named = example_mask(firsts["example_id"].tolist(), firsts.index.tolist(), config.selection)
        keep &= pd.Series(named, index=firsts.index)
    if config.categories is not None:
        keep &= firsts["category"].isin(config.categories)
    if config.context_condition is not None:
        keep &= firsts["context_condition"] == config.context_condition
    return keep


def _item(by_key: pd.DataFrame, index: int, config: PatchConfig) -> PatchItem:
    readout, good, bad = {}, {}, {}
    for r in (config.round, config.target_round):
        if (index, r) not in by_key.index:
            raise InterpError(f"example {index} has no row for round {r} in rounds.parquet")
        row = by_key.loc[(index, r)]
        options = list(row["option_token_ids"])
        readout[r] = int(row["readout_pos"])
        if "pronoun_token_ids" in row.index:  # Winogender: (male, female, neutral) variants
            ids = [tuple(int(t) for t in p) for p in row["pronoun_token_ids"]]
            if not ids[0] or not ids[1]:
                raise InterpError(
                    f"example {index}: no token tells the female and male pronouns apart"
                )
            good[r], bad[r] = ids[1], ids[0]
            continue
        good[r], bad[r] = int(options[int(row["label"])]), int(options[int(row["target"])])
    return PatchItem(
        index, str(by_key.loc[(index, config.round)]["example_id"]), readout, good, bad
    )


def check_alignment(
    items: Sequence[PatchItem], tokens: Sequence[Sequence[int]], config: PatchConfig
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
        check_positions(k, a, b)
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
    weights, k = _resample_weights(groups[0][1]["example_index"], n_boot, seed, clusters)
    boot = _stats(weights, cols, rec, don) if len(weights) else None
    out = pd.DataFrame([dict(zip(_GROUP, key, strict=True)) for key, _ in groups])
    out["n"] = n
    out["n_clusters"] = k
    for name, values in point.items():
        out[name] = values[0]
        lo, hi = percentile_interval(boot[name]) if boot else (np.nan, np.nan)
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
) -> tuple[Float[np.ndarray, "resample example"], int]:
    """How often each example is drawn in each resample (whole clusters at a time), and how
    many clusters the examples fall in; no resamples below ``CLUSTER_FLOOR`` clusters."""
    index = example_index.to_numpy(dtype=np.int64)
    ids = np.arange(len(index)) if clusters is None else np.asarray(clusters)[index]
    _, ids = np.unique(ids, return_inverse=True)
    k = int(ids.max()) + 1 if ids.size else 0
    if k < CLUSTER_FLOOR:
        return np.zeros((0, len(index))), k
    return bootstrap_weights(ids, n_boot, seed), k


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
    weights, k = _resample_weights(groups[0][1]["example_index"], n_boot, seed, clusters)
    out = pd.DataFrame([dict(zip(_GROUP, key, strict=True)) for key in keys])
    out["n"] = n
    out["n_clusters"] = k
    point = {
        k: _stats(np.ones((1, n)), c, rec, don)
        for k, c in (("run", cols), ("control", control_cols))
    }
    boot = None
    if len(weights):
        boot = {
            k: _stats(weights, c, rec, don) for k, c in (("run", cols), ("control", control_cols))
        }
    for name in _DIFF_VALUES:
        out[f"{name}_run"] = point["run"][name][0]
        out[f"{name}_control"] = point["control"][name][0]
        out[f"{name}_diff"] = point["run"][name][0] - point["control"][name][0]
        lo, hi = (
            percentile_interval(boot["run"][name] - boot["control"][name])
            if boot
            else (np.nan, np.nan)
        )
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


def json_records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    return [
        {k: json_float(v) if isinstance(v, float) else _plain(v) for k, v in row.items()}
        for row in frame.to_dict(orient="records")
    ]


def _plain(v: Any) -> Any:
    return v.item() if isinstance(v, np.generic) else v
