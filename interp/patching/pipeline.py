"""Patching a run directory: rounds -> per-example rows -> summary tables and files.

:func:`patch` takes a run (or its directory) and a :class:`PatchConfig`. Every check that
needs no model (settings, example selection, prompt lengths, token alignment, the control
run's own checks) runs before the model is loaded, so a bad request fails in seconds and writes
nothing. The outputs go to the run directory only through :func:`write_result`.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from transformer_lens import HookedTransformer

from interp.errors import InterpError
from interp.model.loading import check_run_model, load_run_model, run_model_spec
from interp.patching.analysis import (
    DEFINITIONS,
    EFFECT_EPS,
    WINOGENDER_VALUE,
    PatchConfig,
    PatchItem,
    PatchResult,
    check_alignment,
    check_config,
    check_prompt_lengths,
    control_difference,
    json_records,
    select_items,
    summarize,
)
from interp.patching.attribution import attribute_pair
from interp.patching.core import Variant, logit_gap, sweep
from interp.patching.exact import patch_pair
from interp.patching.packed import EXAMPLE_BATCH, patch_examples
from interp.patching.sae_latents import (
    FeatureSite,
    check_feature_request,
    feature_site,
)
from interp.runs.controls import open_control
from interp.runs.distributed import Workers, connected, run_jobs
from interp.runs.lock import run_lock
from interp.runs.store import Run
from interp.stats import CI_LEVEL, example_clusters, json_float


def patch(
    run: Run | str | Path,
    config: PatchConfig | None = None,
    *,
    model: HookedTransformer | None = None,
    progress: bool = True,
    workers: Workers | None = None,
    device: str = "cpu",
    dtype: str = "float32",
    write: bool = True,
) -> PatchResult:
    """Patch between two rounds of every chosen example of ``run`` as ``config`` says.

    Every check that needs no model (settings, example selection, prompt lengths, token
    alignment, the control run's own checks) runs before the model is loaded. ``workers``
    spreads the examples over Ray actors in shards of ``PATCH_SHARD`` examples; their rows come
    back and are merged in example order, so the tables and their bootstrap are those of a
    single process.

    Args:
        run: A run or its directory.
        config: Rounds, layer(s), components, examples (``config.selection``) and method.
            Required: a patch has no default layer or round.
        model: The run's model, loaded; None loads it from the run's manifest.
        progress: Show a progress bar.
        workers: Ray workers (:class:`interp.runs.distributed.Workers`) to spread the
            examples over; None runs in this process.
        device: Where the model is loaded when ``model`` is None.
        dtype: The dtype it is loaded in.
        write: False computes without writing into the run.

    Returns:
        The per-example table and the summary with bootstrap intervals (``.control_table``
        with a control run), and the files written.

    Raises:
        InterpError: No config, a round or layer outside the run, no example left after the
            filters, or a control run that is not a control of ``run``.
    """
    if not isinstance(config, PatchConfig):
        raise InterpError(
            "patch needs a PatchConfig (at least its layer and round), e.g. "
            "patch(run, PatchConfig(layer='all', round=1))"
        )
    opened = run if isinstance(run, Run) else Run.open(run)
    return _patch(opened, config, model, progress, device, dtype, write, workers)


def _patch(
    run: Run,
    config: PatchConfig,
    model: HookedTransformer | None,
    progress: bool,
    device: str,
    dtype: str,
    write: bool,
    workers: Workers | None,
) -> PatchResult:
    """:func:`patch` on an opened run; also patches the control run of ``config``."""
    if workers is not None:
        workers.check(device)
        if config.sae is not None:  # the SAE would have to travel to every worker
            raise InterpError("--workers: feature patching (--sae) runs in one process")
    started = time.perf_counter()
    check_config(config, run)
    items, counts = select_items(run.rounds(), config)
    clusters = example_clusters(run.rounds(), config.cluster)
    control = _control_selection(run, config, items) if config.control_run else None
    check_prompt_lengths(items, config)
    if config.sae is not None:
        check_feature_request(run, config)
    tokens = run.tokens()
    alignment = check_alignment(items, tokens, config)
    if control is not None:  # the control's own checks, also before the model loads
        control_run, control_config, control_items, _ = control
        check_prompt_lengths(control_items, control_config)
        check_alignment(control_items, control_run.tokens(), control_config)
    # One writer per run directory (interp.runs.lock), refused before the model loads; the Ray
    # cluster joined and checked first (interp.runs.distributed.connected).
    with connected(workers), run_lock(run.path) if write else contextlib.nullcontext():
        checked = _Checked(run, config, items, counts, tokens, alignment, clusters, control)
        return _run_checked(
            checked,
            model=model,
            progress=progress,
            device=device,
            dtype=dtype,
            write=write,
            started=started,
            workers=workers,
        )


@dataclass
class _Checked:
    """What :func:`run_patching` checked before loading the model: the selection, the run's
    tokens and their alignment, the bootstrap clusters and the control run's selection."""

    run: Run
    config: PatchConfig
    items: list[PatchItem]
    counts: dict[str, Any]
    tokens: Any  # the run's final transcripts (Run.tokens)
    alignment: dict[str, Any]
    clusters: Any  # interp.stats.Clusters
    control: tuple[Run, PatchConfig, list[PatchItem], dict[str, Any]] | None


def _run_checked(
    checked: _Checked,
    *,
    model: HookedTransformer | None,
    progress: bool,
    device: str,
    dtype: str,
    write: bool,
    started: float,
    workers: Workers | None = None,
) -> PatchResult:
    run, config, items, counts = checked.run, checked.config, checked.items, checked.counts
    tokens, alignment, clusters, control = (
        checked.tokens,
        checked.alignment,
        checked.clusters,
        checked.control,
    )
    if model is None:
        model = load_run_model(run.manifest["model"], device=device, dtype=dtype)
    check_run_model(model, run.manifest["model"])
    site, site_info = None, None
    if config.sae is not None:
        site, site_info = feature_site(run, config, model)
        variants = site.variants()
    else:
        variants = sweep(
            model.cfg.n_layers, model.cfg.n_heads, config.layers(run.n_layers), config.components()
        )
    patching_started = time.perf_counter()
    spread = None if workers is None else (workers, run_model_spec(run.manifest["model"]), dtype)
    rows = _rows(model, config, items, tokens, variants, config.method, progress, spread, site)
    patched_at = time.perf_counter()
    timing = {"patching_s": patched_at - patching_started}
    verify = None
    if config.method == "attribution" and config.verify_top > 0:
        verify, exact_rows = _verify(model, config, items, tokens, rows, progress, spread)
        rows += exact_rows
        timing["verify_s"] = time.perf_counter() - patched_at
    per_example = pd.DataFrame(rows, columns=_ROW_COLUMNS)
    boot = {"n_boot": config.n_boot, "seed": config.seed, "clusters": clusters.ids}
    table = summarize(per_example, direction=config.direction, **boot)
    control_table, control_paths = None, []
    if control is not None:
        control_run, control_config, control_items, checks = control
        control_started = time.perf_counter()
        control_result = _patch(
            control_run, control_config, model, progress, device, dtype, write, workers
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
    if site_info is not None:
        summary["sae"] = site_info
    used = np.array([item.index for item in items])
    summary["cluster"] = clusters.subset(used).to_dict()
    if control is not None:
        summary["control"] = {
            **control[3],
            "written": [str(p) for p in control_paths],
            "table": json_records(control_table),
        }
    name = config.name()
    paths = write_result(run, name, per_example, summary) if write else []
    return PatchResult(per_example, table, summary, name, paths, control_table)


def _control_selection(
    run: Run, config: PatchConfig, items: Sequence[PatchItem]
) -> tuple[Run, PatchConfig, list[PatchItem], dict[str, Any]]:
    """Open and check the control run, and check that patching keeps the same examples of it
    (before any model is loaded)."""
    control, checks = open_control(run, config.control_run)
    control_config = replace(config, control_run=None, verify_top=0)
    check_config(control_config, control)
    control_items, _ = select_items(control.rounds(), control_config)
    if [i.example_id for i in control_items] != [i.example_id for i in items]:
        raise InterpError(
            f"control run {control.path}: patching keeps other examples of it than of the run "
            "(their targets or labels differ); it is not a replay of the same task data"
        )
    return control, control_config, control_items, checks


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
    items: Sequence[PatchItem],
    tokens: Sequence[Sequence[int]],
    variants: Sequence[Variant],
    method: str,
    progress: bool,
    spread: tuple[Workers, dict[str, Any], str] | None = None,  # workers, model spec, dtype
    site: FeatureSite | None = None,
) -> list[dict[str, Any]]:
    from tqdm.auto import tqdm

    desc = f"patching ({method}, {len(variants)} variants)"
    bar = tqdm(total=len(items), desc=desc, disable=not progress)
    if spread is None:
        rows: list[dict[str, Any]] = []
        if method == "exact" and example_batch(config) > 1:
            rows = _packed_rows(model, config, items, tokens, variants, site, bar.update)
        else:
            for item in items:
                transcript = tokens[item.index]
                rows += _example_rows(model, config, item, transcript, variants, method, site)
                bar.update(1)
        bar.close()
        return rows
    # Shards of consecutive examples; the rows are put back in example order, so the table is
    # the single process's whatever order the shards finish in.
    workers, model_spec, dtype = spread
    shards: dict[int, list[dict[str, Any]]] = {}
    jobs = []
    for k, start in enumerate(range(0, len(items), PATCH_SHARD)):
        chunk = list(items[start : start + PATCH_SHARD])
        jobs.append((k, (config, chunk, [tokens[i.index] for i in chunk], variants, method)))

    def store(k: int, shard_rows: list[dict[str, Any]]) -> None:
        shards[k] = shard_rows
        bar.update(len(jobs[k][1][1]))

    spec = {**model_spec, "device": str(model.cfg.device), "dtype": dtype}
    run_jobs(workers, spec, _shard_rows, jobs, store)
    bar.close()
    return [row for k in sorted(shards) for row in shards[k]]


# Examples per patching job on a Ray worker: small enough to balance two workers on a few
# dozen examples, large enough that a job outweighs its scheduling (~ms).
PATCH_SHARD = 4


def _shard_rows(model, config, items, transcripts, variants, method) -> list[dict[str, Any]]:
    """One shard of examples on a Ray worker (interp.runs.distributed): their rows."""
    if method == "exact" and example_batch(config) > 1:
        tokens = dict(zip([item.index for item in items], transcripts, strict=True))
        return _packed_rows(model, config, items, tokens, variants)
    rows: list[dict[str, Any]] = []
    for item, transcript in zip(items, transcripts, strict=True):
        rows += _example_rows(model, config, item, transcript, variants, method)
    return rows


def example_batch(config: PatchConfig) -> int:
    """Examples whose variants share forwards (``config.example_batch``, default
    :data:`~interp.patching.packed.EXAMPLE_BATCH`); 1 runs one example at a time."""
    return EXAMPLE_BATCH if config.example_batch is None else config.example_batch


def _packed_rows(
    model: HookedTransformer,
    config: PatchConfig,
    items: Sequence[PatchItem],
    tokens: Sequence[Sequence[int]] | dict[int, Sequence[int]],
    variants: Sequence[Variant],
    site: FeatureSite | None = None,
    done: Any = None,
) -> list[dict[str, Any]]:
    """Exact patching rows of ``items``, ``example_batch(config)`` examples at a time sharing
    forwards (:func:`interp.patching.packed.patch_examples`). Groups are made of examples of
    similar length (less padding); the rows come back in the items' order."""
    r_rec, r_don = _roles(config)
    pairs = [_pair(model, item, tokens[item.index], r_rec, r_don) for item in items]
    by_length = sorted(range(len(items)), key=lambda i: (len(pairs[i][0]), i))
    size = example_batch(config)
    found: dict[int, list[dict[str, Any]]] = {}
    for start in range(0, len(by_length), size):
        group = by_length[start : start + size]
        # Only the logits of the answer tokens the values compare are computed.
        columns = [_tokens(items[i], r_rec) + _tokens(items[i], r_don) for i in group]
        results = patch_examples(
            model,
            [pairs[i] for i in group],
            variants,
            n_positions=config.n_positions(),
            batch_size=config.batch_size,
            site=site,
            columns=columns,
        )
        for i, cols, res in zip(group, columns, results, strict=True):
            item = items[i]
            rec_value = float(_value_at(res.recipient_logits, cols, item, r_rec))
            don_value = float(_value_at(res.donor_logits, cols, item, r_don))
            patched = _value_at(res.patched, cols, item, r_rec).tolist()
            found[i] = _variant_rows(config, item, variants, "exact", rec_value, don_value, patched)
        if done is not None:
            done(len(group))
    return [row for i in range(len(items)) for row in found[i]]


def _tokens(item: PatchItem, r: int) -> list[int]:
    """The token ids round ``r``'s value compares (good, then bad)."""
    return [
        int(t)
        for side in (item.good[r], item.bad[r])
        for t in ([side] if isinstance(side, int) else side)
    ]


def _value_at(logits: torch.Tensor, columns: list[int], item: PatchItem, r: int) -> torch.Tensor:
    """:func:`_value` of logits computed only at ``columns`` (token ids, in that order)."""
    at = {c: j for j, c in enumerate(columns)}

    def mapped(side: int | Sequence[int]) -> int | list[int]:
        return at[int(side)] if isinstance(side, int) else [at[int(t)] for t in side]

    return logit_gap(logits.detach().double().cpu(), mapped(item.good[r]), mapped(item.bad[r]))


def _roles(config: PatchConfig) -> tuple[int, int]:
    """(recipient round, donor round): target <- source when denoising, else the reverse."""
    r_rec, r_don = (config.target_round, config.round)
    if config.direction == "noise":
        r_rec, r_don = r_don, r_rec
    return r_rec, r_don


def _pair(
    model: HookedTransformer, item: PatchItem, transcript: Sequence[int], r_rec: int, r_don: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The recipient's and the donor's prompts: the transcript up to each read-out."""
    seq = torch.tensor(transcript, dtype=torch.long, device=model.cfg.device)
    return seq[: item.readout[r_rec] + 1], seq[: item.readout[r_don] + 1]


def _example_rows(
    model: HookedTransformer,
    config: PatchConfig,
    item: PatchItem,
    transcript: Sequence[int],
    variants: Sequence[Variant],
    method: str,
    site: FeatureSite | None = None,
) -> list[dict[str, Any]]:
    r_rec, r_don = _roles(config)
    recipient, donor = _pair(model, item, transcript, r_rec, r_don)
    k = config.n_positions()
    if method == "attribution":
        good, bad = item.good[r_rec], item.bad[r_rec]
        res = attribute_pair(model, recipient, donor, variants, good=good, bad=bad, n_positions=k)
        rec_logits, don_logits = res.recipient_logits, res.donor_logits
        patched = (_value(rec_logits, item, r_rec) + res.deltas.double().cpu()).tolist()
    else:
        res = patch_pair(
            model,
            recipient,
            donor,
            variants,
            n_positions=k,
            batch_size=config.batch_size,
            site=site,
        )
        rec_logits, don_logits = res.recipient_logits, res.donor_logits
        patched = _value(res.patched_logits, item, r_rec).tolist()
    rec_value = float(_value(rec_logits, item, r_rec))
    don_value = float(_value(don_logits, item, r_don))
    return _variant_rows(config, item, variants, method, rec_value, don_value, patched)


def _variant_rows(
    config: PatchConfig,
    item: PatchItem,
    variants: Sequence[Variant],
    method: str,
    rec_value: float,
    don_value: float,
    patched: Sequence[float],
) -> list[dict[str, Any]]:
    """One example's rows, one per variant."""
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


def _value(logits: torch.Tensor, item: PatchItem, r: int) -> torch.Tensor:
    """logit[correct] - logit[stereotyped] (last dim), in float64 on the CPU (Winogender:
    log P(female) - log P(male), each pronoun's variant tokens summed)."""
    logits = logits.detach().double().cpu()
    return logit_gap(logits, item.good[r], item.bad[r])


def _ratio(num: float, den: float) -> float:
    return num / den if abs(den) >= EFFECT_EPS else float("nan")


def _verify(
    model: HookedTransformer,
    config: PatchConfig,
    items: Sequence[PatchItem],
    tokens: Sequence[Sequence[int]],
    rows: list[dict[str, Any]],
    progress: bool,
    spread: tuple[Workers, dict[str, Any], str] | None = None,  # workers, model spec, dtype
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
    exact_rows = _rows(model, config, items, tokens, variants, "exact", progress, spread)
    exact = pd.DataFrame(exact_rows)
    exact["delta"] = exact["patched"] - exact[recipient]
    exact_means = exact.groupby(["layer", "component", "head"])["delta"].mean()
    approx, truth = means.loc[list(top)].to_numpy(), exact_means.loc[list(top)].to_numpy()
    rho = float(spearmanr(approx, truth).statistic) if len(top) >= 3 else float("nan")
    verify = {
        "k": len(top),
        "spearman": json_float(rho),
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
                "estimated_delta": json_float(a),
                "exact_delta": json_float(t),
            }
            for v, a, t in zip(variants, approx, truth, strict=True)
        ],
    }
    return verify, exact_rows


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
        "result": json_records(main)[0] if len(main) == 1 else None,
        "top": json_records(top),
        "verify": verify,
        "definitions": DEFINITIONS
        if run.manifest.get("task", {}).get("name") != "winogender"
        else {**DEFINITIONS, "value": WINOGENDER_VALUE},
        "bootstrap": {
            "n_boot": config.n_boot,
            "seed": config.seed,
            "level": CI_LEVEL,
            "cluster": config.cluster,
        },
        "timing": {k: round(v, 3) for k, v in timing.items()},
        "table": json_records(table),
    }


def write_result(
    run: Run, name: str, per_example: pd.DataFrame, summary: dict[str, Any]
) -> list[Path]:
    """Write one result into the run's ``patching`` folder through ``Run``: NAME.parquet
    (per-example rows), then NAME.json (the summary, the completeness marker written last, so
    a killed patch never pairs a new table with an old summary); the only place patching
    writes files."""
    return run.write_analysis("patching", name, {"": per_example}, summary)
