"""``interp sae features``: what an SAE's latents do across the rounds of a run.

The run's stored read-out activations at the SAE's hook are encoded (no model forward), and
written to ``<run>/sae/<name>/`` through :class:`interp.runs.store.Run`:

- ``latents``     per latent x round: mean activation and firing rate (activation > 0), each
                  with a 95% cluster-bootstrap interval over examples; latents that never fire
                  in the run are left out (``summary.json`` counts them);
- ``changes``     per round r >= 1 the ``top`` latents whose mean activation moves most from
                  round 0 (signed mean of per-example ``act[r] - act[0]``, interval), with the
                  shuffled-round control: the same statistic with every example's round labels
                  permuted (``p_shuffled``: share of shuffles whose |change| of that latent is
                  at least the observed one; ``null_max_q95``: the 95th percentile over
                  shuffles of the largest |change| of any latent, a family-wise threshold);
- ``shuffled``    every shuffle's largest |change| per round (the null distribution);
- ``separation``  per round the latents whose mean activation differs most between examples
                  answered with the stereotyped option and the others (among examples with a
                  stereotyped option), and between correct and wrong answers;
- ``example_acts`` every example x round activation of the top latents;
- ``concepts``    cosine of each top latent's decoder direction with every concept direction
                  ``interp probe`` stored for the run at the SAE's layer (if any);
- ``contexts``    with a held-out corpus (``contexts=FILE``, needs a model forward): each top
                  latent's max-activating token windows, the activation on every token.

Intervals resample clusters of examples (``interp.stats``: by template by default), the same
resamples for every latent and round. A selection of the run's examples (``examples``,
``limit``, ``sample``) computes the tables over those examples and returns them unwritten.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from jaxtyping import Float

from interp.errors import InterpError
from interp.inputs.files import MAX_DATA_FILE_BYTES, jsonl_objects, read_text_bounded
from interp.inputs.selection import Selection, select_rows
from interp.options import check_at_least, check_n_boot, check_seed
from interp.runs.store import Run
from interp.sae.load import read_sae_config, sae_hook_name, sae_name
from interp.stats import (
    CI_LEVEL,
    DEFAULT_CLUSTER,
    bootstrap_weights,
    check_cluster_key,
    example_clusters,
    json_float,
    percentile_interval,
)

if TYPE_CHECKING:
    import torch
    from sae_lens import SAE
    from transformer_lens import HookedTransformer

    from interp.runs.distributed import Workers

KIND = "sae"
CONTEXT_BATCH = 16  # corpus chunks per forward
# Hooks whose width is the residual width (the ones a run stores and feature patching patches).
RESID_HOOKS = (
    "hook_resid_pre",
    "hook_resid_mid",
    "hook_resid_post",
    "hook_attn_out",
    "hook_mlp_out",
)

SELECTION_NOTE = (
    "the examples selected only (--examples, --limit, --sample): printed, not stored; the "
    "run's sae/<name>/ (every example) is left as it is"
)

DEFINITIONS: dict[str, str] = {
    "activation": "the SAE's encoding of the stored read-out activation (float16 in the run, "
    "encoded in float32)",
    "mean": "mean activation over examples at a round",
    "rate": "share of examples whose activation is > 0 at a round (the latent fires)",
    "change": "mean over examples of activation at round r minus at round 0 (paired)",
    "p_shuffled": "share of shuffles (round labels permuted within each example) whose change "
    "of this latent at round r is at least as large in absolute value as the observed one",
    "null_max_q95": "95th percentile over shuffles of the largest |change| of any latent at "
    "round r: a change above it stands out from round-label noise across all latents",
    "separation": "mean activation of examples answered one way minus the others at a round: "
    "stereotyped = the answer is the stereotyped option vs any other answer (examples with a "
    "stereotyped option only); correct = correct vs wrong",
    "cosine": "cosine of the latent's decoder row (W_dec) with the concept's unit direction",
    "ci": f"{CI_LEVEL:.0%} percentile bootstrap interval resampling clusters of examples",
}


@dataclass(frozen=True)
class FeaturesConfig:
    """One ``sae features`` analysis of a run; shared by :func:`sae_features` and the CLI."""

    sae: str
    """An sae-lens SAE folder (cfg.json + sae_weights.safetensors) at a hook the run stored."""
    top: int = 16
    """Latents kept per round in the change and separation tables."""
    contexts: str | None = None
    """A held-out corpus (plain text: paragraphs split at blank lines; or JSONL with a "text"
    field) for the top latents' max-activating contexts. Needs a model forward."""
    n_contexts: int = 8
    """Max-activating windows kept per top latent."""
    context_len: int = 64
    """Tokens per corpus chunk that the model reads (its first position is not searched: the
    attention sink's activations dominate)."""
    max_corpus_tokens: int = 100_000
    """At most this many corpus tokens are read (the rest of the file is ignored, said so)."""
    n_shuffles: int = 100
    """Shuffles of the round labels for the control."""
    n_boot: int = 1000
    """Bootstrap resamples for the intervals (0: no intervals)."""
    seed: int = 0
    """Seed of the bootstrap and of the shuffles."""
    cluster: str = DEFAULT_CLUSTER
    """What the bootstrap resamples: "template" or "example"."""
    examples: tuple[int | str, ...] | None = None
    """Encode only these run examples (ids or indices); None: every example."""
    limit: int | None = None
    """Only the first N (base) examples of the selection."""
    sample: int | None = None
    """A seeded random N (base) examples (drawn as replay draws, seeded by ``seed``)."""

    def __post_init__(self) -> None:
        if self.examples is not None and not isinstance(self.examples, tuple):
            object.__setattr__(self, "examples", tuple(self.examples))

    @property
    def selection(self) -> Selection:
        """The run examples read, as every verb that selects spells them."""
        return Selection(
            examples=self.examples, limit=self.limit, sample=self.sample, seed=self.seed
        )

    def to_dict(self) -> dict[str, Any]:
        """The settings as ``summary.json`` records them (the selection only when one is
        given, so a full analysis records what it always recorded).

        Returns:
            A JSON-ready dict.
        """
        out = asdict(self)
        if self.selection.is_all():
            for name in ("examples", "limit", "sample"):
                del out[name]
        elif out["examples"] is not None:
            out["examples"] = list(out["examples"])
        return out


@dataclass
class FeaturesResult:
    """What :func:`sae_features` computed (and wrote, when ``paths`` is not empty)."""

    name: str
    hook: str
    tables: dict[str, pd.DataFrame]
    summary: dict[str, Any]
    paths: list[Path] = field(default_factory=list)

    def __repr__(self) -> str:
        s = self.summary
        return (
            f"FeaturesResult({self.name!r} at {self.hook}, {s.get('n_examples')} examples x "
            f"{s.get('n_rounds')} rounds, tables {', '.join(self.tables)}, "
            f"{len(self.paths)} files written)"
        )

    def _repr_html_(self) -> str:
        """A small HTML card for notebooks (:func:`interp.runs.display.html_card`)."""
        from interp.runs.display import html_card

        s = self.summary
        facts = [
            ("hook", self.hook),
            ("examples", s.get("n_examples")),
            ("rounds", s.get("n_rounds")),
            ("files written", len(self.paths)),
        ]
        return html_card(f"FeaturesResult {self.name}", facts, self.tables)


# --- checks (no model) ------------------------------------------------------------------------


def check_sae_run(cfg: dict, run: Run, path: str | Path = "") -> str:
    """Refuse an SAE that does not fit ``run``: its hook must be one the run stored, its d_in
    the run's d_model, its layer within the run model's layers (all from the manifest, without
    loading the model). Returns the hook name."""
    where = f"--sae {path}" if path else "the SAE"
    hook = sae_hook_name(cfg)
    if hook is None:
        raise InterpError(f"{where}: its config names no hook_name")
    model = run.manifest.get("model", {})
    n_layers, d_model = model.get("n_layers"), model.get("d_model")
    layer = hook_layer(hook)
    if layer is not None and n_layers is not None and layer >= int(n_layers):
        raise InterpError(
            f"{where} reads {hook}, but the run's model {model.get('model_id')} has "
            f"{n_layers} layers (0..{int(n_layers) - 1})"
        )
    if hook not in run.hooks:
        raise InterpError(
            f"{where} reads {hook}, which run {run.path} did not store; stored: "
            f"{', '.join(run.hooks)} (replay with --hooks {hook}, or use an SAE of a stored hook)"
        )
    if d_model is not None and hook.endswith(RESID_HOOKS) and cfg["d_in"] != int(d_model):
        raise InterpError(
            f"{where} has d_in {cfg['d_in']}, but {hook} of the run's model "
            f"{model.get('model_id')} is {d_model} wide"
        )
    return hook


def hook_layer(hook: str) -> int | None:
    """12 for ``blocks.12.hook_resid_post``; None for a hook outside the blocks."""
    parts = hook.split(".")
    if len(parts) >= 3 and parts[0] == "blocks" and parts[1].isdigit():
        return int(parts[1])
    return None


def check_config(config: FeaturesConfig) -> None:
    check_at_least(config.top, 1, "--top")
    check_at_least(config.n_contexts, 1, "--n-contexts")
    check_at_least(config.context_len, 2, "--context-len")
    check_at_least(config.max_corpus_tokens, 1, "--max-corpus-tokens")
    check_at_least(config.n_shuffles, 0, "--n-shuffles")
    check_n_boot(config.n_boot)
    check_seed(config.seed)
    check_cluster_key(config.cluster)
    config.selection  # noqa: B018 (a bad limit, sample or example list is refused here)


def open_sae(path: str | Path, run: Run, device: str = "cpu") -> SAE:
    """The SAE at ``path``, checked against the run's model record first, in float32."""
    cfg = read_sae_config(path)
    check_sae_run(cfg, run, path)
    import torch  # after the checks: a refusal needs neither torch nor sae-lens
    from sae_lens import SAE

    try:
        sae = SAE.load_from_disk(str(path), device=device)
    except Exception as err:  # read_sae_config checked it; anything else is one line too
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise InterpError(f"--sae {path}: sae-lens cannot load it ({first})") from None
    return sae.to(dtype=torch.float32)


# --- encoding ---------------------------------------------------------------------------------


def encode(sae: SAE, acts: torch.Tensor, chunk: int = 4096) -> torch.Tensor:
    """``sae.encode`` over the last dimension of ``acts`` (any leading shape), in float32."""
    import torch

    flat = acts.reshape(-1, acts.shape[-1]).to(torch.float32)
    with torch.no_grad():
        parts = [sae.encode(flat[i : i + chunk]) for i in range(0, len(flat), chunk)]
    out = torch.cat(parts) if parts else flat.new_zeros(0, sae.cfg.d_sae)
    return out.reshape(*acts.shape[:-1], -1)


def encode_run(
    run: Run, sae: SAE, hook: str | None = None
) -> Float[torch.Tensor, "example round d_sae"]:
    """The SAE's latent activations of every stored read-out activation at its hook."""
    hook = hook or sae.cfg.metadata.hook_name
    return encode(sae, run.activations(hook))


# --- the analysis -----------------------------------------------------------------------------


def sae_features(
    run: Run | str | Path,
    config: FeaturesConfig,
    *,
    model: HookedTransformer | None = None,
    progress: bool = True,
    workers: Workers | None = None,
    device: str = "cpu",
    dtype: str = "float32",
    write: bool = True,
) -> FeaturesResult:
    """Encode ``run``'s read-out activations with the SAE of ``config`` and write the tables
    (see the module docstring) to ``<run>/sae/<name>/``.

    With a selection (``config.examples``, ``limit``, ``sample``; on a permuted run whole base
    examples) the tables read the selected examples only, each example's activations exactly
    those of the full analysis; the result is returned with ``summary["selection"]`` and
    never written (no lock is taken), so ``sae/<name>/`` keeps every example.

    Args:
        run: A run or its directory.
        config: The SAE folder, the analysis settings and the selection of run examples.
        model: The run's model, loaded; needed (and loaded when None) only for
            ``config.contexts``.
        progress: Unused (no bar); part of the verb shape.
        workers: Not supported (one process); must be None.
        device: Where a model loaded here runs.
        dtype: The dtype of a model loaded here.
        write: False computes without writing into the run (a selection never writes).

    Returns:
        The tables (latents per round, changes, separations, example activations, concept
        cosines, contexts) and the summary.

    Raises:
        InterpError: Settings out of range, an SAE folder that does not fit the run, an
            example the run lacks, or a sample larger than its examples.
    """
    from interp.runs.distributed import single_process
    from interp.runs.lock import run_lock

    single_process(workers, "sae_features")

    started = time.perf_counter()
    run = run if isinstance(run, Run) else Run.open(run)
    check_config(config)
    if not write or not config.selection.is_all():  # a selection is never stored
        return _sae_features(run, config, model, device, dtype, started, write=False)
    # One writer per run, from the start (as replay): a second `sae features` into this run
    # is refused at once instead of computing everything and failing at the write.
    with run_lock(run.path):
        return _sae_features(run, config, model, device, dtype, started, write=True)


def _sae_features(
    run: Run,
    config: FeaturesConfig,
    model: HookedTransformer | None,
    device: str,
    dtype: str,
    started: float,
    *,
    write: bool,
) -> FeaturesResult:
    sae = open_sae(config.sae, run)
    hook = sae.cfg.metadata.hook_name
    corpus = read_corpus(config.contexts) if config.contexts else None
    name = sae_name(config.sae)
    rounds = run.rounds()
    kept = None
    if not config.selection.is_all():  # every example encoded, then the selected ones kept
        rows = select_rows(rounds, config.selection)
        kept = sorted(int(i) for i in rows["example_index"].unique())
    acts = encode_run(run, sae, hook).numpy().astype(np.float64)
    if kept is not None:
        acts, rounds = acts[kept], _renumbered(rounds, kept)
    clusters = example_clusters(rounds, config.cluster)
    tables = latent_tables(acts, rounds, clusters.ids, config)
    top = top_latents(tables["changes"], config.top)
    tables["example_acts"] = _example_acts(acts, top)
    if kept is not None:  # positions in the selection back to the run's example_index
        example_acts = tables["example_acts"]
        example_acts["example_index"] = np.asarray(kept)[example_acts["example_index"].to_numpy()]
    tables["concepts"], concept_notes = concept_cosines(run, sae, hook, top)
    notes = list(concept_notes)
    if corpus is not None:
        if model is None:
            from interp.model.loading import load_run_model

            model = load_run_model(run.manifest["model"], device=device, dtype=dtype)
        from interp.model.loading import check_run_model

        check_run_model(model, run.manifest["model"])
        sae = sae.to(device=str(model.cfg.device))
        tables["contexts"], corpus_note = max_contexts(model, sae, hook, corpus, top, config)
        notes += [corpus_note] if corpus_note else []
    summary = _summary(run, config, name, hook, sae, acts, tables, top, clusters, notes)
    summary["timing"] = {"total_s": round(time.perf_counter() - started, 3)}
    if kept is not None:
        summary["selection"] = {"example_index": kept, "note": SELECTION_NOTE}
    paths: list[Path] = []
    weaker = weaker_than_stored(run, name, config) if write else None
    if weaker is not None:
        summary["notes"].append(
            f"not stored: {weaker}; this result is printed only, {run.path / KIND / name} is "
            "unchanged (to keep both, copy the SAE folder under another name)"
        )
    elif write:
        paths = run.write_analysis(KIND, name, tables, summary)
    return FeaturesResult(name, hook, tables, summary, paths)


def _renumbered(rounds: pd.DataFrame, kept: list[int]) -> pd.DataFrame:
    """The rows of the ``kept`` examples, their ``example_index`` renumbered 0..len(kept)-1 in
    order (the row of each in the selected activations, as the tables index them)."""
    position = {old: new for new, old in enumerate(kept)}
    rows = rounds[rounds["example_index"].isin(position)]
    return rows.assign(example_index=rows["example_index"].map(position)).reset_index(drop=True)


def weaker_than_stored(run: Run, name: str, config: FeaturesConfig) -> str | None:
    """Why a new analysis must not replace the one stored under ``name`` (None: it may): fewer
    shuffles or bootstrap resamples than the stored result had (its p-values or intervals
    would be lost or coarser), or no --contexts where the stored one has contexts. As
    ``interp metrics`` does with --n-boot, a weaker result is printed, not stored."""
    if name not in run.analyses(KIND):
        return None
    try:
        stored = run.read_analysis(KIND, name, tables=[]).summary.get("config", {})
        shuffles, boots = int(stored.get("n_shuffles", 0)), int(stored.get("n_boot", 0))
        contexts = stored.get("contexts")
    except (InterpError, ValueError, TypeError, AttributeError):
        return None  # damaged: this result replaces it
    if config.n_shuffles < shuffles:
        return f"--n-shuffles {config.n_shuffles} is fewer than the stored result's {shuffles}"
    if config.n_boot < boots:
        return f"--n-boot {config.n_boot} is fewer than the stored result's {boots}"
    if contexts and not config.contexts:
        return "the stored result has --contexts tables, this one has none"
    return None


def latent_tables(
    acts: Float[np.ndarray, "example round latent"],
    rounds: pd.DataFrame,
    clusters: np.ndarray,
    config: FeaturesConfig,
) -> dict[str, pd.DataFrame]:
    """The tables that need no model: latents, changes, shuffled, separation."""
    n_examples, n_rounds, _ = acts.shape
    weights = (
        bootstrap_weights(np.asarray(clusters), config.n_boot, config.seed)
        if config.n_boot and len(np.unique(clusters)) >= 2
        else None
    )
    active = np.flatnonzero((acts > 0).any(axis=(0, 1)))
    latents = _latent_round_table(acts, active, weights)
    shuffled, null = shuffled_changes(acts, config.n_shuffles, config.seed)
    changes = _change_table(acts, weights, null, config.top)
    separation = _separation_table(acts, rounds, weights, config.top)
    return {
        "latents": latents,
        "changes": changes,
        "shuffled": shuffled,
        "separation": separation,
    }


def _bounds(
    weights: np.ndarray | None, num: np.ndarray, den: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Percentile bounds of weighted means: ``weights @ num / weights @ den`` (den: counts)."""
    if weights is None:
        nan = np.full(num.shape[1:], np.nan)
        return nan, nan.copy()
    total = weights.sum(axis=1, keepdims=True) if den is None else weights @ den
    with np.errstate(invalid="ignore", divide="ignore"):
        boot = (weights @ num.reshape(num.shape[0], -1)) / np.reshape(total, (len(weights), -1))
    lo, hi = percentile_interval(boot)
    return np.reshape(lo, num.shape[1:]), np.reshape(hi, num.shape[1:])


def _latent_round_table(
    acts: np.ndarray, active: np.ndarray, weights: np.ndarray | None
) -> pd.DataFrame:
    n_rounds = acts.shape[1]
    chunk = 2048  # the bootstrap matrix of every latent at once can be large; same resamples
    frames = []
    for start in range(0, len(active), chunk):
        ids = active[start : start + chunk]
        values = acts[:, :, ids]  # [example, round, latent]
        fires = (values > 0).astype(np.float64)
        mean_lo, mean_hi = _bounds(weights, values)
        rate_lo, rate_hi = _bounds(weights, fires)
        frames.append(
            pd.DataFrame(
                {
                    "latent": np.tile(ids, n_rounds),
                    "round": np.repeat(np.arange(n_rounds), len(ids)),
                    "mean": values.mean(axis=0).ravel(),
                    "mean_lo": mean_lo.ravel(),
                    "mean_hi": mean_hi.ravel(),
                    "rate": fires.mean(axis=0).ravel(),
                    "rate_lo": rate_lo.ravel(),
                    "rate_hi": rate_hi.ravel(),
                }
            )
        )
    if not frames:
        return pd.DataFrame(
            columns=["latent", "round", "mean", "mean_lo", "mean_hi", "rate", "rate_lo", "rate_hi"]
        )
    out = pd.concat(frames, ignore_index=True)
    out["latent"] = out["latent"].astype("int64")
    out["round"] = out["round"].astype("int64")
    return out.sort_values(["latent", "round"], kind="stable").reset_index(drop=True)


def permute_rounds(n_examples: int, n_rounds: int, rng: np.random.Generator) -> np.ndarray:
    """One shuffle: for every example a random permutation of its round labels
    ([example, round] -> the round whose activation is read there)."""
    return rng.permuted(np.tile(np.arange(n_rounds), (n_examples, 1)), axis=1)


def shuffled_changes(
    acts: Float[np.ndarray, "example round latent"], n_shuffles: int, seed: int
) -> tuple[pd.DataFrame, Float[np.ndarray, "shuffle round latent"]]:
    """The change statistic (mean of act[r] - act[0] per latent) with the round labels permuted
    within each example, ``n_shuffles`` times: the table of each shuffle's largest |change| per
    round, and every shuffle's change of every latent ([shuffle, round, latent]; round 0 is 0).
    """
    n_examples, n_rounds, n_latents = acts.shape
    rng = np.random.default_rng([seed, 7])  # its own stream: not the bootstrap's draws
    null = np.zeros((n_shuffles, n_rounds, n_latents))
    rows = np.arange(n_examples)[:, None]
    for s in range(n_shuffles):
        order = permute_rounds(n_examples, n_rounds, rng)
        means = acts[rows, order].mean(axis=0)  # [round, latent] under the shuffled labels
        null[s] = means - means[0]
    table = pd.DataFrame(
        {
            "shuffle": np.repeat(np.arange(n_shuffles), max(n_rounds - 1, 0)),
            "round": np.tile(np.arange(1, n_rounds), n_shuffles),
            "max_abs_change": np.abs(null[:, 1:]).max(axis=2).ravel()
            if n_latents
            else np.zeros(n_shuffles * max(n_rounds - 1, 0)),
        }
    )
    return table, null


def _change_table(
    acts: np.ndarray, weights: np.ndarray | None, null: np.ndarray, top: int
) -> pd.DataFrame:
    n_rounds = acts.shape[1]
    diffs = acts - acts[:, :1]  # [example, round, latent]: paired with round 0
    change = diffs.mean(axis=0)
    rows = []
    for r in range(1, n_rounds):
        order = np.argsort(-np.abs(change[r]), kind="stable")[:top]
        lo, hi = _bounds(weights, diffs[:, r, order])
        if len(null):
            p = (np.abs(null[:, r, order]) >= np.abs(change[r, order]) - 1e-12).mean(axis=0)
            q95 = float(np.quantile(np.abs(null[:, r]).max(axis=1), 0.95))
        else:
            p, q95 = np.full(len(order), np.nan), float("nan")
        for rank, latent in enumerate(order):
            rows.append(
                {
                    "round": r,
                    "rank": rank,
                    "latent": int(latent),
                    "change": change[r, latent],
                    "change_lo": lo[rank],
                    "change_hi": hi[rank],
                    "mean_round0": acts[:, 0, latent].mean(),
                    "mean_round": acts[:, r, latent].mean(),
                    "p_shuffled": p[rank],
                    "null_max_q95": q95,
                }
            )
    columns = ["round", "rank", "latent", "change", "change_lo", "change_hi", "mean_round0"]
    columns += ["mean_round", "p_shuffled", "null_max_q95"]
    return pd.DataFrame(rows, columns=columns)


CONTRASTS = {
    "stereotyped": "answer is the stereotyped option (1) vs any other answer (0)",
    "correct": "answer is correct (1) vs wrong (0)",
}


def _contrast_groups(rounds: pd.DataFrame, contrast: str, r: int, n: int) -> np.ndarray:
    """[example] 1 / 0 / NaN (not in the contrast) at round ``r``."""
    rows = rounds[rounds["round"] == r].set_index("example_index").reindex(range(n))
    if contrast == "stereotyped":
        ok = (rows["target"] >= 0) & (rows["choice"] >= 0)
        group = (rows["choice"] == rows["target"]).astype(float)
    else:
        ok = pd.Series(True, index=rows.index)
        group = rows["correct"].astype(bool).astype(float)
    return np.where(ok.to_numpy(), group.to_numpy(), np.nan)


def _separation_table(
    acts: np.ndarray, rounds: pd.DataFrame, weights: np.ndarray | None, top: int
) -> pd.DataFrame:
    n_examples, n_rounds, _ = acts.shape
    rows = []
    for contrast in CONTRASTS:
        for r in range(n_rounds):
            group = _contrast_groups(rounds, contrast, r, n_examples)
            a, b = (group == 1).astype(float), (group == 0).astype(float)
            if a.sum() == 0 or b.sum() == 0:
                continue  # one answer class only: no contrast at this round
            values = acts[:, r]
            diff = a @ values / a.sum() - b @ values / b.sum()
            order = np.argsort(-np.abs(diff), kind="stable")[:top]
            if weights is not None:
                with np.errstate(invalid="ignore", divide="ignore"):
                    boot = (weights * a) @ values[:, order] / (weights @ a)[:, None] - (
                        weights * b
                    ) @ values[:, order] / (weights @ b)[:, None]
                lo, hi = percentile_interval(boot)
            else:
                lo = hi = np.full(len(order), np.nan)
            for rank, latent in enumerate(order):
                rows.append(
                    {
                        "contrast": contrast,
                        "round": r,
                        "rank": rank,
                        "latent": int(latent),
                        "diff": diff[latent],
                        "diff_lo": lo[rank],
                        "diff_hi": hi[rank],
                        "mean_1": a @ values[:, latent] / a.sum(),
                        "mean_0": b @ values[:, latent] / b.sum(),
                        "n_1": int(a.sum()),
                        "n_0": int(b.sum()),
                    }
                )
    columns = ["contrast", "round", "rank", "latent", "diff", "diff_lo", "diff_hi"]
    return pd.DataFrame(rows, columns=[*columns, "mean_1", "mean_0", "n_1", "n_0"])


def top_latents(changes: pd.DataFrame, k: int) -> list[int]:
    """The latents with the largest |change| at any round, strongest first (at most ``k``)."""
    if changes.empty:
        return []
    strongest = changes.assign(size=changes["change"].abs()).groupby("latent")["size"].max()
    order = strongest.sort_values(ascending=False, kind="stable")
    return [int(i) for i in order.index[:k]]


def _example_acts(acts: np.ndarray, latents: list[int]) -> pd.DataFrame:
    n_examples, n_rounds, _ = acts.shape
    e, r, j = np.meshgrid(
        np.arange(n_examples), np.arange(n_rounds), np.arange(len(latents)), indexing="ij"
    )
    ids = np.asarray(latents, dtype=np.int64)
    return pd.DataFrame(
        {
            "example_index": e.ravel(),
            "round": r.ravel(),
            "latent": ids[j.ravel()] if len(ids) else np.zeros(0, dtype=np.int64),
            "activation": acts[:, :, ids].ravel() if len(ids) else np.zeros(0),
        }
    )


# --- concept directions -----------------------------------------------------------------------


def concept_cosines(
    run: Run, sae: SAE, hook: str, latents: list[int]
) -> tuple[pd.DataFrame, list[str]]:
    """Cosine of each latent's decoder row with every concept direction ``interp probe``
    stored for the run at the SAE's layer (probe directions live at ``hook_resid_post``)."""
    import torch

    columns = ["concept", "layer", "latent", "cosine", "rank_in_sae"]
    concepts = run.analyses("probes")
    layer = hook_layer(hook)
    if not concepts:
        return pd.DataFrame(columns=columns), ["concepts: no probe results in the run"]
    if layer is None or not hook.endswith("hook_resid_post"):
        return pd.DataFrame(columns=columns), [
            f"concepts: probe directions are at hook_resid_post, the SAE reads {hook}"
        ]
    with torch.no_grad():
        w_dec = sae.W_dec.detach().double().cpu()
        w_dec = w_dec / w_dec.norm(dim=1, keepdim=True).clamp_min(1e-12)
    rows, notes = [], []
    for concept in concepts:
        stored = run.analysis_tensors("probes", concept, "directions")
        layers = [int(x) for x in stored.metadata.get("layers", "").split(",") if x != ""]
        if layer not in layers:
            notes.append(f"concepts: {concept} has no direction at layer {layer}")
            continue
        direction = stored.tensors["directions"][layers.index(layer)].double()
        direction = direction / direction.norm().clamp_min(1e-12)
        cos = (w_dec @ direction).numpy()
        rank = np.empty(len(cos), dtype=np.int64)  # 0 = the latent most aligned (|cosine|)
        rank[np.argsort(-np.abs(cos), kind="stable")] = np.arange(len(cos))
        for latent in dict.fromkeys([*latents, int(np.argmax(np.abs(cos)))]):
            rows.append(
                {
                    "concept": concept,
                    "layer": layer,
                    "latent": int(latent),
                    "cosine": float(cos[latent]),
                    "rank_in_sae": int(rank[latent]),
                }
            )
    return pd.DataFrame(rows, columns=columns), notes


# --- max-activating contexts (a model forward over a held-out corpus) -------------------------


def read_corpus(path: str | Path) -> list[str]:
    """Documents of a held-out corpus: JSONL (``.jsonl``: a "text" field per line) or plain text
    (paragraphs separated by blank lines), read within interp.inputs.files' bounds."""
    text = read_text_bounded(path, MAX_DATA_FILE_BYTES, "--contexts file")
    if str(path).endswith(".jsonl"):
        docs = []
        for _, where, obj in jsonl_objects(text.splitlines(), str(path)):
            value = obj.get("text")
            if not isinstance(value, str):
                raise InterpError(f"{where}: no string field 'text'")
            docs.append(value)
    else:
        docs = [p.strip() for p in text.replace("\r\n", "\n").split("\n\n")]
    docs = [d for d in docs if d.strip()]
    if not docs:
        raise InterpError(f"--contexts {path}: no text in it")
    return docs


def corpus_chunks(
    model: HookedTransformer, docs: list[str], length: int, budget: int
) -> tuple[list[list[int]], bool]:
    """Token chunks of at most ``length`` tokens (documents are not joined), at most ``budget``
    tokens in all; True when the budget cut the corpus."""
    chunks: list[list[int]] = []
    used = 0
    for doc in docs:
        ids = model.tokenizer(doc, add_special_tokens=False)["input_ids"]
        for start in range(0, len(ids), length):
            piece = ids[start : start + length]
            if len(piece) < 2:
                continue
            if used + len(piece) > budget:
                return chunks, True
            chunks.append(piece)
            used += len(piece)
    return chunks, False


def max_contexts(
    model: HookedTransformer,
    sae: SAE,
    hook: str,
    docs: list[str],
    latents: list[int],
    config: FeaturesConfig,
    window: tuple[int, int] = (16, 4),
) -> tuple[pd.DataFrame, str | None]:
    """For each latent its ``n_contexts`` max-activating token windows in ``docs``, at most one
    per chunk (tokens before and after the position, the latent's activation on each token)."""
    import torch

    chunks, cut = corpus_chunks(model, docs, config.context_len, config.max_corpus_tokens)
    layer = hook_layer(hook)
    stop = None if layer is None else layer + 1
    ids = torch.tensor(latents, dtype=torch.long)
    found: list[tuple[float, int, int, int]] = []  # (activation, latent, chunk, position)
    per_chunk: list[torch.Tensor] = [torch.zeros(0)] * len(chunks)
    # Chunks of similar length run together, right-padded: attention is causal, so the pad
    # tokens after a chunk change none of its positions' activations.
    order = sorted(range(len(chunks)), key=lambda c: len(chunks[c]))
    for start in range(0, len(order), CONTEXT_BATCH):
        batch = order[start : start + CONTEXT_BATCH]
        width = max(len(chunks[c]) for c in batch)
        tokens = torch.zeros(len(batch), width, dtype=torch.long)
        for i, c in enumerate(batch):
            tokens[i, : len(chunks[c])] = torch.tensor(chunks[c])
        store: dict[str, torch.Tensor] = {}

        def grab(act: torch.Tensor, hook: Any, store: dict = store) -> None:
            store["act"] = act.detach()

        with torch.no_grad(), model.hooks(fwd_hooks=[(hook, grab)]):
            model(tokens.to(model.cfg.device), stop_at_layer=stop)
        encoded = encode(sae, store["act"])[:, :, ids].cpu()  # [chunk, pos, latent]
        for i, c in enumerate(batch):
            lat = encoded[i, : len(chunks[c])].clone()
            lat[0] = 0.0  # position 0 (the attention sink) is not searched
            per_chunk[c] = lat
            # one window per chunk and latent (its strongest position): overlapping windows
            # of one passage would fill a dashboard with the same text
            values, positions = lat.max(dim=0)
            for j, (value, pos) in enumerate(zip(values.tolist(), positions.tolist(), strict=True)):
                if value > 0:
                    found.append((value, j, c, pos))
    rows = []
    before, after = window
    for j, latent in enumerate(latents):
        mine = sorted((f for f in found if f[1] == j), key=lambda f: (-f[0], f[2], f[3]))
        for rank, (value, _, c, pos) in enumerate(mine[: config.n_contexts]):
            lo, hi = max(0, pos - before), min(len(chunks[c]), pos + after + 1)
            rows.append(
                {
                    "latent": latent,
                    "rank": rank,
                    "chunk": c,
                    "position": pos,
                    "activation": value,
                    "tokens": model.to_str_tokens(torch.tensor(chunks[c][lo:hi])),
                    "values": [float(v) for v in per_chunk[c][lo:hi, j]],
                    "focus": pos - lo,
                }
            )
    columns = ["latent", "rank", "chunk", "position", "activation", "tokens", "values", "focus"]
    note = (
        f"contexts: the corpus was cut at --max-corpus-tokens {config.max_corpus_tokens}"
        if cut
        else None
    )
    return pd.DataFrame(rows, columns=columns), note


# --- summary ----------------------------------------------------------------------------------


def _summary(
    run: Run,
    config: FeaturesConfig,
    name: str,
    hook: str,
    sae: SAE,
    acts: np.ndarray,
    tables: dict[str, pd.DataFrame],
    top: list[int],
    clusters: Any,
    notes: list[str],
) -> dict[str, Any]:
    changes = tables["changes"]
    per_round = {}
    for r, group in changes.groupby("round"):
        best = group.iloc[0]
        per_round[str(int(r))] = {
            "latent": int(best["latent"]),
            "change": json_float(best["change"]),
            "ci": [json_float(best["change_lo"]), json_float(best["change_hi"])],
            "p_shuffled": json_float(best["p_shuffled"]),
            "null_max_q95": json_float(best["null_max_q95"]),
            "n_above_null": int((group["change"].abs() > group["null_max_q95"]).sum()),
        }
    fired = (acts > 0).any(axis=(0, 1))
    return {
        "name": name,
        "run": str(run.path),
        "sae": {
            "path": str(Path(config.sae).resolve()),
            "hook": hook,
            "architecture": sae.cfg.architecture(),
            "d_in": int(sae.cfg.d_in),
            "d_sae": int(sae.cfg.d_sae),
            "config_sha256": _sha256(Path(config.sae) / "cfg.json"),
            "weights_sha256": _sha256(Path(config.sae) / "sae_weights.safetensors"),
        },
        "config": config.to_dict(),
        "n_examples": int(acts.shape[0]),
        "n_rounds": int(acts.shape[1]),
        "latents_active": int(fired.sum()),
        "latents_never_fire": int((~fired).sum()),
        "mean_l0": [json_float(x) for x in (acts > 0).sum(axis=2).mean(axis=0)],
        "top_latents": top,
        "strongest_change": per_round,
        "tables": sorted(tables),
        "notes": notes,
        "definitions": DEFINITIONS | {"contrasts": json.dumps(CONTRASTS)},
        "cluster": clusters.to_dict(),
        "bootstrap": {"n_boot": config.n_boot, "seed": config.seed, "level": CI_LEVEL},
    }


def _sha256(path: Path) -> str:
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def top_changed(run: Run, sae: SAE, path: str | Path, round: int, k: int) -> tuple[list[int], str]:
    """The ``k`` latents whose mean activation changes most from round 0 to ``round`` (by
    |change|, as the ``changes`` table ranks them): read from ``sae/<name>/`` when ``interp sae
    features`` wrote it with these very SAE weights and at least ``k`` latents per round,
    computed from the stored activations otherwise. Returns them and where they came from."""
    name = sae_name(path)
    weights = _sha256(Path(path) / "sae_weights.safetensors")
    if name in run.analyses(KIND):
        stored = run.read_analysis(KIND, name, tables=["changes"])
        changes = stored.tables.get("changes")
        same = stored.summary.get("sae", {}).get("weights_sha256") == weights
        if same and changes is not None and stored.summary["config"]["top"] >= k:
            rows = changes[changes["round"] == round].sort_values("rank")
            return [int(i) for i in rows["latent"][:k]], f"sae/{name}/changes.parquet"
    acts = encode_run(run, sae).numpy().astype(np.float64)
    change = (acts[:, round] - acts[:, 0]).mean(axis=0)
    order = np.argsort(-np.abs(change), kind="stable")[:k]
    return [int(i) for i in order], "computed from the stored activations"
