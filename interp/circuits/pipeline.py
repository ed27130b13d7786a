"""``interp circuit``: per-example edge scores between two rounds of a run, aggregated with
cluster-bootstrap intervals, verified by exact edge patching, written into the run.

Examples, their option tokens, the filters and the bootstrap clusters are `interp patch`'s
(:func:`interp.patching.select_items` on an equivalent :class:`PatchConfig`), so a circuit and
a patching table of the same run describe the same examples and the same value. The
direction is denoise: the target round (TL's corrupted run) receives the source round's
activations along the patched edges.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import time
from collections.abc import Sequence
from dataclasses import MISSING, dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch
from transformer_lens import HookedTransformer

from interp.circuits.eap import EdgePair
from interp.circuits.export import write_graph_files
from interp.circuits.graph import Graph, split_inputs
from interp.errors import InterpError
from interp.model.loading import check_run_model, load_run_model, run_model_spec
from interp.options import check_at_least
from interp.patching.analysis import (
    PatchConfig,
    PatchItem,
    check_alignment,
    check_config,
    select_items,
)
from interp.runs.distributed import Workers, connected, run_jobs, single_process
from interp.runs.lock import run_lock
from interp.runs.store import Run
from interp.stats import (
    CI_LEVEL,
    CLUSTER_FLOOR,
    DEFAULT_CLUSTER,
    bootstrap_means,
    bootstrap_weights,
    example_clusters,
    interval_or_none,
    json_float,
)

if TYPE_CHECKING:
    from interp.circuits.feature_level import FeatureCircuitResult

METHODS = ("eap-ig", "eap")
KIND = "circuits"
# Faithfulness band: f within [1 - FAITHFUL_BAND, 1 + FAITHFUL_BAND] (|1 - f| <= 0.2). A curve
# that overshoots (f = 4 on a small gap) is as far from the full patch as one that undershoots,
# so reaching 0.8 from below is not enough; the headline N is the smallest from which every
# larger N of the grid stays inside the band.
FAITHFUL_BAND = 0.2
FAITHFUL = 1 - FAITHFUL_BAND  # the band's lower edge (older summaries' "faithful_threshold")

DEFINITIONS: dict[str, str] = {
    "value": (
        "logit[correct option] - logit[stereotyped option] at the read-out, as interp patch "
        "(each round's own option tokens)"
    ),
    "edge patching": (
        "in the target round's forward at the read-out, receiver v's input gets "
        "a_u(source) - a_u(current) added for each patched edge u->v; every edge patched "
        "gives the source round's value, none the target's"
    ),
    "score": (
        "EAP: (a_u(source) - a_u(target)) . d value / d input_v in the target's forward; "
        "EAP-IG: the gradient averaged over `steps` forwards with every edge patched by "
        "alpha = k/steps, k = 0..steps-1 (one step = EAP). Per example, then mean over "
        "examples with a cluster-bootstrap interval"
    ),
    "circuit": (
        "in_circuit: the top-N edges by |mean score| (N = top); significant: the edges whose "
        "interval excludes 0"
    ),
    "faithfulness": (
        "mean over examples of the value with only the top-N edges (by |mean score|) patched, "
        "normalised: (mean patched - mean none) / (mean full - mean none); full = every edge "
        "patched (= the source value), none = the target value. faithful_n (headline): the "
        f"smallest N of the grid from which every larger N stays within [{1 - FAITHFUL_BAND:g}, "
        f"{1 + FAITHFUL_BAND:g}] (|1 - f| <= {FAITHFUL_BAND:g}; overshoot counts as much as "
        "undershoot); faithful_n_first: the first N inside the band; faithful_monotone: whether "
        "the curve never falls as N grows. No headline (faithful_n null, faithful_refused says "
        "why) when the interval of the gap (full - none) covers 0 or there is none: the "
        f"normalisation divides by that gap. Below {CLUSTER_FLOOR} clusters no interval is given"
    ),
    "verify": (
        "exact patching of each of the top-K edges alone: Spearman's rank correlation between "
        "the mean score and the mean exact change (patched - target value) over the K edges, "
        "with a cluster-bootstrap interval"
    ),
}


LEVELS = ("components", "features")

# The fields of a component circuit, in the order its summary.json records them.
COMPONENT_FIELDS = (
    "round",
    "target_round",
    "method",
    "steps",
    "top",
    "verify_top",
    "examples",
    "categories",
    "context_condition",
    "limit",
    "sample",
    "batch_size",
    "n_boot",
    "seed",
    "cluster",
)
# Fields only the feature level reads, and the component fields it reads too.
FEATURE_ONLY = ("transcoders", "max_feature_nodes", "node_threshold", "edge_threshold")
FEATURE_READS = ("round", "target_round", "examples", "top", "batch_size")
# Defaults that differ by level (None in the config: the level's default).
LEVEL_DEFAULTS = {
    "components": {"top": 50, "batch_size": 32},
    "features": {"top": 10, "batch_size": 64},
}


@dataclass(frozen=True)
class CircuitConfig:
    """One circuit analysis of a run; shared by :func:`circuit` and ``interp circuit``.

    ``level="components"`` (the default): edges between attention heads and MLPs, scored by
    EAP or EAP-IG and verified by exact edge patching. ``level="features"``: circuit-tracer's
    attribution graphs of one example on a transcoder set (``transcoders``), compared between
    the rounds and checked by interventions (what ``interp circuit --level features`` computes).
    """

    round: int
    """The source round, e.g. 3 (after the instructions): TL's clean run."""
    target_round: int = 0
    """The target round, e.g. 0 (the question alone): TL's corrupted run."""
    method: str = "eap-ig"
    """eap-ig (integrated gradients along the edge-patching path) or eap (one gradient)."""
    steps: int = 5
    """EAP-IG: gradient evaluations per example (ignored by eap)."""
    top: int = None  # type: ignore[assignment]
    """Components: the circuit's size N (edges by |mean score|; default 50). Features: the
    read-out features set to their target-round values (the largest k; default 10)."""
    verify_top: int = 50
    """Exact edge patching of this many top edges (0: skip) for the rank agreement."""
    examples: tuple[str | int, ...] | None = None
    """Keep only these examples: example ids (str) or example indices (int). Features: the
    one example (default: index 0)."""
    categories: tuple[str, ...] | None = None
    """Keep only these categories."""
    context_condition: str | None = None
    """Keep only "ambig" or "disambig" examples."""
    limit: int | None = None
    """Use only the first N examples left after filters and exclusions (a permuted run: N
    base examples with all their option orders, as ``interp patch``)."""
    sample: int | None = None
    """A seeded random sample of N examples, before ``limit`` (a permuted run: N base
    examples with all their option orders)."""
    batch_size: int = None  # type: ignore[assignment]
    """Components: patched forwards per batch (exact verification and faithfulness; default
    32). Features: backward passes per batch in circuit-tracer (default 64)."""
    n_boot: int = 1000
    """Bootstrap resamples for the intervals (0: none)."""
    seed: int = 0
    """Seed of the bootstrap and of ``sample``."""
    cluster: str = DEFAULT_CLUSTER
    """What the bootstrap resamples: "template" or "example"."""
    level: str = "components"
    """"components" (heads and MLPs) or "features" (transcoder features, circuit-tracer)."""
    transcoders: str | None = None
    """Features: a transcoder folder (``interp sae train-transcoders``), every layer."""
    max_feature_nodes: int = 256
    """Features: the features circuit-tracer attributes backwards."""
    node_threshold: float = 0.8
    """Features: circuit-tracer's node pruning of the saved graph files, in (0, 1]."""
    edge_threshold: float = 0.98
    """Features: circuit-tracer's edge pruning of the saved graph files, in (0, 1]."""

    def __post_init__(self) -> None:
        defaults = LEVEL_DEFAULTS.get(self.level, LEVEL_DEFAULTS["components"])
        for key, value in defaults.items():
            if getattr(self, key) is None:
                object.__setattr__(self, key, value)

    def patch_config(self) -> PatchConfig:
        """The `interp patch` settings that choose the same examples and value."""
        return PatchConfig(
            layer="all",
            round=self.round,
            target_round=self.target_round,
            examples=self.examples,
            categories=self.categories,
            context_condition=self.context_condition,
            limit=self.limit,
            sample=self.sample,
            batch_size=self.batch_size,
            n_boot=self.n_boot,
            seed=self.seed,
            cluster=self.cluster,
        )

    def check(self) -> None:
        """Refuse settings that cannot run, before anything is read or loaded.

        Raises:
            InterpError: An unknown level or method, a number out of range, or a field the
                level does not read set away from its default.
        """
        if self.level not in LEVELS:
            raise InterpError(f"unknown level {self.level!r}; use one of {', '.join(LEVELS)}")
        if self.level == "features":
            self.feature_config().check()
            return
        for name in FEATURE_ONLY:
            if getattr(self, name) != _FIELD_DEFAULTS[name]:
                raise InterpError(f"{name} applies to level features only")
        if self.method not in METHODS:
            raise InterpError(f"unknown method {self.method!r}; use one of {', '.join(METHODS)}")
        check_at_least(self.steps, 1, "--steps")
        check_at_least(self.top, 1, "--top")
        check_at_least(self.verify_top, 0, "--verify-top")

    def feature_config(self) -> Any:
        """The feature level's settings
        (:class:`interp.circuits.feature_level.FeatureCircuitConfig`, what its summary.json
        records).

        Raises:
            InterpError: No transcoder folder, not exactly one example, or a component-only
                field set away from its default.
        """
        from interp.circuits.feature_level import FeatureCircuitConfig

        if self.transcoders is None:
            raise InterpError("level features needs transcoders (a transcoder folder)")
        for name in COMPONENT_FIELDS:
            if name not in FEATURE_READS and getattr(self, name) != _FIELD_DEFAULTS[name]:
                raise InterpError(f"{name} applies to level components only")
        examples = self.examples if self.examples is not None else (0,)
        if len(examples) != 1:
            raise InterpError("level features reads one example; give exactly one")
        return FeatureCircuitConfig(
            transcoders=str(self.transcoders),
            round=self.round,
            target_round=self.target_round,
            example=examples[0],
            max_feature_nodes=self.max_feature_nodes,
            batch_size=self.batch_size,
            top=self.top,
            node_threshold=self.node_threshold,
            edge_threshold=self.edge_threshold,
        )

    def n_steps(self) -> int:
        """Gradient evaluations per example (1 for eap)."""
        return 1 if self.method == "eap" else self.steps

    def name(self) -> str:
        """Folder name, e.g. ``r3-t0-eap-ig5`` (features: ``r3-t0-<example>-<transcoders>``)."""
        if self.level == "features":
            return self.feature_config().name()
        method = self.method if self.method == "eap" else f"eap-ig{self.steps}"
        parts = [f"r{self.round}", f"t{self.target_round}", method]
        selection: tuple[Any, ...] = (self.examples, self.categories, self.context_condition)
        selection += (self.limit, self.sample, self.seed if self.sample else None)
        if any(s is not None for s in selection):
            digest = hashlib.sha256(json.dumps(selection, default=str).encode()).hexdigest()
            parts.append(f"sel{digest[:8]}")
        return "-".join(parts)

    def to_dict(self) -> dict[str, Any]:
        """The component settings as summary.json records them (the feature level records
        :meth:`feature_config`)."""
        out = {name: getattr(self, name) for name in COMPONENT_FIELDS}
        for key in ("examples", "categories"):
            out[key] = list(out[key]) if out[key] is not None else None
        return out


_FIELD_DEFAULTS: dict[str, Any] = {
    f.name: f.default for f in fields(CircuitConfig) if f.default is not MISSING
}


@dataclass
class CircuitResult:
    """What :func:`circuit` computed at the component level (and wrote unless ``write=False``).

    The feature level returns :class:`interp.circuits.feature_level.FeatureCircuitResult`.
    """

    edges: pd.DataFrame
    nodes: pd.DataFrame
    faithfulness: pd.DataFrame
    summary: dict[str, Any]
    scores: np.ndarray  # [example, edge] per-example scores, in ``edges`` order
    name: str
    paths: list[Path]
    graph_note: str | None = None  # whether the graph's SVG was drawn (None: nothing written)
    level: str = "components"

    @property
    def tables(self) -> dict[str, pd.DataFrame]:
        """The tables by the names they are written under."""
        return {"edges": self.edges, "nodes": self.nodes, "faithfulness": self.faithfulness}

    def __repr__(self) -> str:
        faithful = self.summary.get("faithful_n")
        return (
            f"CircuitResult({self.name!r}, {len(self.edges)} edges, "
            f"{self.summary.get('n_examples')} examples, faithful_n={faithful}, "
            f"{len(self.paths)} files written)"
        )

    def _repr_html_(self) -> str:
        """A small HTML card for notebooks (:func:`interp.runs.display.html_card`)."""
        from interp.runs.display import html_card

        facts = [
            ("level", self.level),
            ("edges", len(self.edges)),
            ("examples", self.summary.get("n_examples")),
            ("faithful_n", self.summary.get("faithful_n")),
            ("files written", len(self.paths)),
        ]
        return html_card(f"CircuitResult {self.name}", facts, self.tables)


def circuit(
    run: Run | str | Path,
    config: CircuitConfig,
    *,
    model: HookedTransformer | None = None,
    progress: bool = True,
    workers: Workers | None = None,
    device: str = "cpu",
    dtype: str = "float32",
    write: bool = True,
) -> CircuitResult | FeatureCircuitResult:
    """Compute the circuit between two rounds of a run and (``write``) store it in the run.

    Components: score every edge per example (EAP or EAP-IG), aggregate with cluster-bootstrap
    intervals, verify the top edges by exact edge patching, measure faithfulness, and write
    ``<run>/circuits/<name>/`` with its graph files. Features: circuit-tracer's attribution
    graphs of one example for both rounds on ``config.transcoders``, their comparison and the
    intervention check, written to ``<run>/feature_circuits/<name>/``.

    ``workers`` (components only) spreads both per-example passes (edge scores; exact
    patching for the verification and the faithfulness curve) over Ray actors in shards of
    ``CIRCUIT_SHARD`` examples. Each example's numbers are computed from its own inputs alone
    and put back in example order, and the aggregation (means, bootstrap, ranks) stays here,
    so the tables and the summary are a single process's (``timing`` aside, which also records
    how the work was spread).

    Args:
        run: A run or its directory.
        config: The rounds, the level and its settings.
        model: The run's model, loaded (None: loaded from the run's manifest).
        progress: Show progress bars (components).
        workers: Ray workers (components only; the feature level refuses them).
        device: Where a model loaded here runs.
        dtype: The dtype of a model loaded here (components).
        write: False computes without writing into the run.

    Returns:
        :class:`CircuitResult` (edges, nodes, faithfulness) for components;
        :class:`~interp.circuits.feature_level.FeatureCircuitResult` (comparison, nodes,
        interventions) for features.

    Raises:
        InterpError: Settings out of range, a round or example the run lacks, a model or a
            transcoder folder that does not fit the run, or circuit-tracer missing (features).
    """
    run = run if isinstance(run, Run) else Run.open(run)
    if config.level == "features":
        from interp.circuits.feature_level import feature_circuit_of

        single_process(workers, "circuit at level features")
        config.check()
        return feature_circuit_of(
            run, config.feature_config(), model=model, device=device, write=write
        )
    started = time.perf_counter()
    config.check()
    if workers is not None:
        workers.check(device)
    pconfig = config.patch_config()
    check_config(pconfig, run)
    items, counts = select_items(run.rounds(), pconfig)
    clusters = example_clusters(run.rounds(), config.cluster)
    used = np.array([item.index for item in items])
    ids = clusters.subset(used)
    tokens = run.tokens()
    # As interp patch: the read-out tokens of the two rounds must be the same token.
    alignment = check_alignment(items, tokens, pconfig)
    with connected(workers), run_lock(run.path) if write else contextlib.nullcontext():
        if model is None:
            model = load_run_model(run.manifest["model"], device=device, dtype=dtype)
        check_run_model(model, run.manifest["model"])
        graph = Graph.of(model)
        spec = run_model_spec(run.manifest["model"])
        spread = None if workers is None else (workers, spec, dtype)
        with split_inputs(model):
            result = _compute(model, graph, config, items, tokens, ids.ids, progress, spread)
        edges, nodes, faith, summary, scores = result
        summary.update(
            name=config.name(),
            run=str(run.path),
            config=config.to_dict(),
            model=run.manifest["model"],
            examples=counts,
            n_examples=counts["used"],
            cluster=ids.to_dict(),
            alignment=alignment,
            bootstrap={"n_boot": config.n_boot, "seed": config.seed, "level": CI_LEVEL},
            definitions=DEFINITIONS,
        )
        summary["timing"]["total_s"] = round(time.perf_counter() - started, 3)
        tables = {"edges": edges, "nodes": nodes, "faithfulness": faith}
        paths, note = [], None
        if write:
            paths = run.write_analysis(KIND, config.name(), tables, summary)
            # The drawings, from the tables as written (what `interp export` reads too).
            graph_paths, note = write_graph_files(run, config.name())
            paths += graph_paths
    return CircuitResult(edges, nodes, faith, summary, scores, config.name(), paths, note)


def _pair(model, graph, item: PatchItem, transcript: Sequence[int], config) -> EdgePair:
    seq = torch.tensor(transcript, dtype=torch.long, device=model.cfg.device)
    rt, rs = config.target_round, config.round
    target, source = seq[: item.readout[rt] + 1], seq[: item.readout[rs] + 1]
    good, bad = (item.good[rt], item.good[rs]), (item.bad[rt], item.bad[rs])
    return EdgePair.record(model, graph, target, source, good, bad)


def faithfulness_grid(n_edges: int) -> list[int]:
    """1, 2, 5, 10, 20, 50, ... below ``n_edges``, then ``n_edges``."""
    grid, base = [], 1
    while base < n_edges:
        grid += [n for n in (base, 2 * base, 5 * base) if n < n_edges]
        base *= 10
    return [0, *grid, n_edges]


def _compute(model, graph, config, items, tokens, cluster_ids, progress, spread=None):
    edge_frame = graph.edges()
    n_ex, n_edges = len(items), len(edge_frame)
    t0 = time.perf_counter()
    scored = _per_example(
        model, config, items, tokens, _score_job, (), "edge scores", progress, spread
    )
    target_v, source_v, scores = scored[:, 0], scored[:, 1], scored[:, 2:]
    scoring_s = time.perf_counter() - t0
    mean, lo, hi = _aggregate(scores, config, cluster_ids)
    order = np.lexsort((np.arange(n_edges), -np.abs(mean)))  # |mean| descending, stable
    rank = np.empty(n_edges, dtype=np.int64)
    rank[order] = np.arange(1, n_edges + 1)
    edges = edge_frame.assign(
        score=mean,
        ci_lo=lo,
        ci_hi=hi,
        rank=rank,
        in_circuit=rank <= config.top,
        significant=(lo > 0) | (hi < 0),
    )
    with_intervals = bool(np.isfinite(lo).any() or np.isfinite(hi).any())
    # Verification and faithfulness: exact edge patching, a second pass over the examples.
    t1 = time.perf_counter()
    k = min(config.verify_top, n_edges)
    grid = faithfulness_grid(n_edges)
    patched = _per_example(
        model, config, items, tokens, _exact_job, (order, k, grid), "exact edges", progress, spread
    )
    exact = patched[:, :k] - target_v[:, None]
    curve = patched[:, k:]
    verify_s = time.perf_counter() - t1
    edges["exact_delta"] = np.nan
    if k:
        edges.loc[order[:k], "exact_delta"] = exact.mean(0)
    faith, reading = _faithfulness(curve, grid, config, cluster_ids)
    verify = _verify(scores[:, order[:k]], exact, config, cluster_ids) if k >= 3 else None
    nodes = _nodes(graph, edges)
    summary = {
        "method": config.method,
        "steps": config.n_steps(),
        "n_edges": n_edges,
        "n_nodes": len(nodes),
        "target_value": json_float(float(target_v.mean())),
        "source_value": json_float(float(source_v.mean())),
        "full_value": json_float(float(curve[:, -1].mean())),
        # None where no edge has an interval (n_boot 0, or below CLUSTER_FLOOR clusters)
        "n_significant": int(edges["significant"].sum()) if with_intervals else None,
        "top": config.top,
        **reading,
        "verify": verify,
        "top_edges": _records(edges.loc[order[:20]]),
        "timing": {
            "scoring_s": round(scoring_s, 3),
            "scoring_per_example_s": round(scoring_s / n_ex, 4),
            "verify_s": round(verify_s, 3),
        },
    }
    if spread is not None:  # how the work was spread: not part of the result
        summary["timing"]["workers"] = spread[0].record(2 * len(_shards(items)))
    return edges, nodes, faith, summary, scores


# --- per-example passes, in this process or sharded over Ray workers ---------------------------

# Examples per job on a Ray worker: as interp patch (a few per job balances two workers on a
# few dozen examples; one example's EAP-IG outweighs a job's scheduling by far).
CIRCUIT_SHARD = 4


def _shards(items: Sequence[PatchItem]) -> list[list[PatchItem]]:
    return [list(items[i : i + CIRCUIT_SHARD]) for i in range(0, len(items), CIRCUIT_SHARD)]


def _per_example(model, config, items, tokens, job, extra, desc, progress, spread):
    """``job(model, config, items, transcripts, *extra)`` over all examples: one float64 row
    per example, in example order, whether computed here or by shards on Ray workers."""
    from tqdm.auto import tqdm

    bar = tqdm(total=len(items), desc=desc, disable=not progress)
    shards = _shards(items)
    parts: dict[int, np.ndarray] = {}
    if spread is None:
        for key, chunk in enumerate(shards):
            parts[key] = _decode(
                job(model, config, chunk, [tokens[i.index] for i in chunk], *extra)
            )
            bar.update(len(chunk))
    else:
        workers, model_spec, dtype = spread
        jobs = [
            (key, (config, chunk, [tokens[i.index] for i in chunk], *extra))
            for key, chunk in enumerate(shards)
        ]

        def store(key: int, value: bytes) -> None:
            parts[key] = _decode(value)
            bar.update(len(shards[key]))

        spec = {**model_spec, "device": str(model.cfg.device), "dtype": dtype}
        run_jobs(workers, spec, job, jobs, store)
    bar.close()
    return np.concatenate([parts[key] for key in sorted(parts)])


def _encode(rows: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(rows, dtype=np.float64), allow_pickle=False)
    return buffer.getvalue()


def _decode(data: bytes) -> np.ndarray:
    return np.load(io.BytesIO(data), allow_pickle=False)


def _score_job(model, config, items, transcripts) -> bytes:
    """Per example: [target value, source value, score of every edge (graph.edges() order)]."""
    with split_inputs(model):  # re-entrant: on the driver the flags are already on
        graph = Graph.of(model)
        edge_frame = graph.edges()
        s_idx = edge_frame["sender_index"].to_numpy()
        r_idx = edge_frame["receiver_index"].to_numpy()
        rows = np.zeros((len(items), 2 + len(edge_frame)))
        for i, (item, transcript) in enumerate(zip(items, transcripts, strict=True)):
            pair = _pair(model, graph, item, transcript, config)
            rows[i, 0], rows[i, 1] = pair.target_value, pair.source_value
            rows[i, 2:] = pair.scores(config.n_steps())[s_idx, r_idx]
    return _encode(rows)


def _exact_job(model, config, items, transcripts, order, k, grid) -> bytes:
    """Per example: the target's value with each of the top ``k`` edges patched alone, then
    with the top N patched together for each N of ``grid``."""
    with split_inputs(model):
        graph = Graph.of(model)
        edge_frame = graph.edges()
        s_idx = edge_frame["sender_index"].to_numpy()
        r_idx = edge_frame["receiver_index"].to_numpy()
        dev = model.cfg.device
        rows = np.zeros((len(items), k + len(grid)))
        for i, (item, transcript) in enumerate(zip(items, transcripts, strict=True)):
            pair = _pair(model, graph, item, transcript, config)
            coeffs = torch.zeros(k + len(grid), graph.n_senders, graph.n_receivers, device=dev)
            for j, e in enumerate(order[:k]):
                coeffs[j, s_idx[e], r_idx[e]] = 1.0
            for j, n in enumerate(grid):
                chosen = order[:n]
                coeffs[k + j, s_idx[chosen], r_idx[chosen]] = 1.0
            rows[i] = pair.values(coeffs, config.batch_size)
    return _encode(rows)


def _aggregate(scores, config, cluster_ids):
    """Mean and cluster-bootstrap interval of every edge, in chunks of edges (memory)."""
    n_edges = scores.shape[1]
    mean, lo, hi = np.zeros(n_edges), np.zeros(n_edges), np.zeros(n_edges)
    for start in range(0, n_edges, 4096):
        part = slice(start, start + 4096)
        m, a, b = bootstrap_means(
            scores[:, part],
            n_boot=config.n_boot,
            seed=config.seed,
            clusters=cluster_ids,
            floor=CLUSTER_FLOOR,
        )
        mean[part], lo[part], hi[part] = m, a, b
    return mean, lo, hi


def _faithfulness(curve, grid, config, cluster_ids):
    """Normalised curve with intervals, and its reading (:func:`faithfulness_reading`)."""
    weights = bootstrap_weights(cluster_ids, config.n_boot, config.seed)
    if len(np.unique(cluster_ids)) < CLUSTER_FLOOR:
        weights = weights[:0]

    def norm(means: np.ndarray) -> np.ndarray:
        none, full = means[..., :1], means[..., -1:]
        with np.errstate(divide="ignore", invalid="ignore"):
            return (means - none) / (full - none)

    point = norm(curve.mean(0))
    rows = []
    for j, n in enumerate(grid):
        lo = hi = float("nan")
        if len(weights):
            boot = norm(weights @ curve / weights.sum(1, keepdims=True))[:, j]
            interval = interval_or_none(boot)
            lo, hi = interval if interval is not None else (lo, hi)
        rows.append(
            {
                "n_edges": n,
                "value": float(curve[:, j].mean()),
                "faithfulness": float(point[j]),
                "ci_lo": lo,
                "ci_hi": hi,
            }
        )
    gap = curve[:, -1] - curve[:, 0]  # full - none per example: the normaliser
    gap_ci = None
    if len(weights):
        gap_ci = interval_or_none(weights @ gap / weights.sum(1))
    return pd.DataFrame(rows), faithfulness_reading(grid, point, float(gap.mean()), gap_ci)


def faithfulness_reading(
    grid: Sequence[int],
    curve: Sequence[float] | np.ndarray,
    gap: float,
    gap_ci: Sequence[float] | None,
    band: float = FAITHFUL_BAND,
) -> dict[str, Any]:
    """What the faithfulness curve says, as summary fields.

    ``faithful_n``: the smallest N of ``grid`` from which every larger N has |1 - f| <=
    ``band`` (overshoot is as unfaithful as undershoot; the curve need not be monotone when
    edges of opposite sign enter); None, with ``faithful_refused`` saying why, when ``gap_ci``
    (the interval of full - none, the normaliser) covers 0 or is missing.
    ``faithful_n_first``: the first N inside the band, ``faithful_monotone``: whether f never
    falls as N grows, ``faithful_max``: the largest f and its N (an overshoot shows there)."""
    f = np.asarray(curve, dtype=float)
    inside = np.isfinite(f) & (np.abs(1 - f) <= band + 1e-12)
    outside = [n for n, ok in zip(grid, inside, strict=True) if not ok]
    stable = next((n for n in grid if n > max(outside, default=-1)), None)
    first = next((n for n, ok in zip(grid, inside, strict=True) if ok), None)
    finite = f[np.isfinite(f)]
    top = int(np.nanargmax(f)) if finite.size else None
    refused = None
    if gap_ci is None:
        refused = "the gap (full - none) has no interval, so whether it differs from 0 is unknown"
    elif gap_ci[0] <= 0 <= gap_ci[1]:
        refused = (
            f"the gap (full - none) {gap:+.3f} has an interval [{gap_ci[0]:.3f}, {gap_ci[1]:.3f}] "
            "covering 0: the rounds do not differ reliably, and the normalised curve divides by "
            "noise"
        )
    return {
        "faithful_band": [1 - band, 1 + band],
        "faithful_threshold": 1 - band,
        "faithful_n": None if refused else stable,
        "faithful_n_stable": None if refused else stable,  # older readers' key: the same N
        "faithful_n_first": first,
        "faithful_monotone": bool(finite.size and np.all(np.diff(finite) >= 0)),
        "faithful_max": None
        if top is None
        else {"n_edges": int(grid[top]), "value": float(f[top])},
        "faithful_refused": refused,
        "gap": {"value": json_float(gap), "ci": None if gap_ci is None else list(gap_ci)},
    }


def _verify(estimated, exact, config, cluster_ids) -> dict[str, Any]:
    from scipy.stats import spearmanr

    rho = float(spearmanr(estimated.mean(0), exact.mean(0)).statistic)
    weights = bootstrap_weights(cluster_ids, config.n_boot, config.seed)
    boot = []
    if len(np.unique(cluster_ids)) >= CLUSTER_FLOOR and len(weights):
        w = weights / weights.sum(1, keepdims=True)
        est, ex = w @ estimated, w @ exact
        boot = [float(spearmanr(a, b).statistic) for a, b in zip(est, ex, strict=True)]
    return {
        "k": int(exact.shape[1]),
        "spearman": json_float(rho),
        "ci": interval_or_none(np.array(boot)) if boot else None,
    }


def _nodes(graph: Graph, edges: pd.DataFrame) -> pd.DataFrame:
    """Senders and receivers with the summed |score| of their edges (and circuit edges)."""
    rows = []
    for role, names, key in (
        ("sender", graph.senders(), "sender_index"),
        ("receiver", graph.receivers(), "receiver_index"),
    ):
        total = edges.groupby(key)["score"].apply(lambda s: float(np.abs(s).sum()))
        inside = edges[edges["in_circuit"]].groupby(key).size()
        for i, (name, layer, kind, head) in enumerate(names):
            rows.append(
                {
                    "role": role,
                    "index": i,
                    "name": name,
                    "layer": layer,
                    "kind": kind,
                    "head": head,
                    "abs_score": float(total.get(i, 0.0)),
                    "circuit_edges": int(inside.get(i, 0)),
                }
            )
    return pd.DataFrame(rows)


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    out = []
    for row in frame.to_dict("records"):
        out.append(
            {
                k: (json_float(float(v)) if isinstance(v, float | np.floating) else v)
                for k, v in row.items()
            }
        )
    return json.loads(json.dumps(out, default=lambda v: v.item()))
