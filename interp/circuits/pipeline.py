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
import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from transformer_lens import HookedTransformer

from interp.circuits.eap import EdgePair
from interp.circuits.graph import Graph, split_inputs
from interp.errors import InterpError
from interp.loading import check_run_model, load_model
from interp.lock import run_lock
from interp.options import check_at_least
from interp.patching.analysis import (
    PatchConfig,
    PatchItem,
    check_alignment,
    check_config,
    select_items,
)
from interp.stats import (
    CI_LEVEL,
    DEFAULT_CLUSTER,
    bootstrap_means,
    bootstrap_weights,
    example_clusters,
    interval_or_none,
    json_float,
)
from interp.store import Run

METHODS = ("eap-ig", "eap")
KIND = "circuits"
# Faithfulness threshold reported as "the smallest N reaching it".
FAITHFUL = 0.8

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
        "patched (= the source value), none = the target value. faithful_n: the smallest N "
        "of the grid reaching 0.8; faithful_n_stable: the smallest N from which every larger "
        "N stays at or above 0.8"
    ),
    "verify": (
        "exact patching of each of the top-K edges alone: Spearman's rank correlation between "
        "the mean score and the mean exact change (patched - target value) over the K edges, "
        "with a cluster-bootstrap interval"
    ),
}


@dataclass(frozen=True)
class CircuitConfig:
    """One circuit analysis of a run; shared by :func:`circuit` and ``interp circuit``."""

    round: int
    """The source round, e.g. 3 (after the instructions): TL's clean run."""
    target_round: int = 0
    """The target round, e.g. 0 (the question alone): TL's corrupted run."""
    method: str = "eap-ig"
    """eap-ig (integrated gradients along the edge-patching path) or eap (one gradient)."""
    steps: int = 5
    """EAP-IG: gradient evaluations per example (ignored by eap)."""
    top: int = 50
    """The circuit's size N (edges by |mean score|)."""
    verify_top: int = 50
    """Exact edge patching of this many top edges (0: skip) for the rank agreement."""
    examples: tuple[str | int, ...] | None = None
    """Keep only these examples: example ids (str) or example indices (int)."""
    categories: tuple[str, ...] | None = None
    """Keep only these categories."""
    context_condition: str | None = None
    """Keep only "ambig" or "disambig" examples."""
    limit: int | None = None
    """Use only the first N examples left after filters and exclusions."""
    sample: int | None = None
    """A seeded random sample of N examples, before ``limit``."""
    batch_size: int = 32
    """Patched forwards per batch (exact verification and faithfulness)."""
    n_boot: int = 1000
    """Bootstrap resamples for the intervals (0: none)."""
    seed: int = 0
    """Seed of the bootstrap and of ``sample``."""
    cluster: str = DEFAULT_CLUSTER
    """What the bootstrap resamples: "template" or "example"."""

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
        if self.method not in METHODS:
            raise InterpError(f"unknown method {self.method!r}; use one of {', '.join(METHODS)}")
        check_at_least(self.steps, 1, "--steps")
        check_at_least(self.top, 1, "--top")
        check_at_least(self.verify_top, 0, "--verify-top")

    def n_steps(self) -> int:
        return 1 if self.method == "eap" else self.steps

    def name(self) -> str:
        """Folder name, e.g. ``r3-t0-eap-ig5``."""
        method = self.method if self.method == "eap" else f"eap-ig{self.steps}"
        parts = [f"r{self.round}", f"t{self.target_round}", method]
        selection: tuple[Any, ...] = (self.examples, self.categories, self.context_condition)
        selection += (self.limit, self.sample, self.seed if self.sample else None)
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
class CircuitResult:
    """What :func:`circuit` computed (and wrote unless ``write=False``)."""

    edges: pd.DataFrame
    nodes: pd.DataFrame
    faithfulness: pd.DataFrame
    summary: dict[str, Any]
    scores: np.ndarray  # [example, edge] per-example scores, in ``edges`` order
    name: str
    paths: list[Path]


def circuit(
    run: Run | str | Path,
    config: CircuitConfig,
    *,
    model: HookedTransformer | None = None,
    device: str = "cpu",
    dtype: str = "float32",
    write: bool = True,
    progress: bool = False,
) -> CircuitResult:
    """Score, aggregate, verify and (``write``) store the circuit between two rounds."""
    run = run if isinstance(run, Run) else Run.open(run)
    started = time.perf_counter()
    config.check()
    pconfig = config.patch_config()
    check_config(pconfig, run)
    items, counts = select_items(run.rounds(), pconfig)
    clusters = example_clusters(run.rounds(), config.cluster)
    used = np.array([item.index for item in items])
    ids = clusters.subset(used)
    tokens = run.tokens()
    # As interp patch: the read-out tokens of the two rounds must be the same token.
    alignment = check_alignment(items, tokens, pconfig)
    with run_lock(run.path) if write else contextlib.nullcontext():
        if model is None:
            model = load_model(run.manifest["model"]["model_id"], device=device, dtype=dtype)
        check_run_model(model, run.manifest["model"])
        graph = Graph.of(model)
        with split_inputs(model):
            result = _compute(model, graph, config, items, tokens, ids.ids, progress)
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
        paths = run.write_analysis(KIND, config.name(), tables, summary) if write else []
    return CircuitResult(edges, nodes, faith, summary, scores, config.name(), paths)


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


def _compute(model, graph, config, items, tokens, cluster_ids, progress):
    from tqdm.auto import tqdm

    edge_frame = graph.edges()
    s_idx, r_idx = edge_frame["sender_index"].to_numpy(), edge_frame["receiver_index"].to_numpy()
    n_ex, n_edges = len(items), len(edge_frame)
    scores = np.zeros((n_ex, n_edges))
    target_v, source_v = np.zeros(n_ex), np.zeros(n_ex)
    t0 = time.perf_counter()
    for i, item in enumerate(tqdm(items, desc="edge scores", disable=not progress)):
        pair = _pair(model, graph, item, tokens[item.index], config)
        scores[i] = pair.scores(config.n_steps())[s_idx, r_idx]
        target_v[i], source_v[i] = pair.target_value, pair.source_value
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
    # Verification and faithfulness: exact edge patching, a second pass over the examples.
    t1 = time.perf_counter()
    k = min(config.verify_top, n_edges)
    grid = faithfulness_grid(n_edges)
    exact = np.zeros((n_ex, k))
    curve = np.zeros((n_ex, len(grid)))
    dev = model.cfg.device
    for i, item in enumerate(tqdm(items, desc="exact edges", disable=not progress)):
        pair = _pair(model, graph, item, tokens[item.index], config)
        coeffs = torch.zeros(k + len(grid), graph.n_senders, graph.n_receivers, device=dev)
        for j, e in enumerate(order[:k]):
            coeffs[j, s_idx[e], r_idx[e]] = 1.0
        for j, n in enumerate(grid):
            chosen = order[:n]
            coeffs[k + j, s_idx[chosen], r_idx[chosen]] = 1.0
        values = pair.values(coeffs, config.batch_size)
        exact[i] = values[:k] - pair.target_value
        curve[i] = values[k:]
    verify_s = time.perf_counter() - t1
    edges["exact_delta"] = np.nan
    if k:
        edges.loc[order[:k], "exact_delta"] = exact.mean(0)
    faith, (reach, stable) = _faithfulness(curve, grid, config, cluster_ids)
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
        "n_significant": int(edges["significant"].sum()),
        "top": config.top,
        "faithful_threshold": FAITHFUL,
        "faithful_n": reach,
        "faithful_n_stable": stable,
        "verify": verify,
        "top_edges": _records(edges.loc[order[:20]]),
        "timing": {
            "scoring_s": round(scoring_s, 3),
            "scoring_per_example_s": round(scoring_s / n_ex, 4),
            "verify_s": round(verify_s, 3),
        },
    }
    return edges, nodes, faith, summary, scores


def _aggregate(scores, config, cluster_ids):
    """Mean and cluster-bootstrap interval of every edge, in chunks of edges (memory)."""
    n_edges = scores.shape[1]
    mean, lo, hi = np.zeros(n_edges), np.zeros(n_edges), np.zeros(n_edges)
    for start in range(0, n_edges, 4096):
        part = slice(start, start + 4096)
        m, a, b = bootstrap_means(
            scores[:, part], n_boot=config.n_boot, seed=config.seed, clusters=cluster_ids
        )
        mean[part], lo[part], hi[part] = m, a, b
    return mean, lo, hi


def _faithfulness(curve, grid, config, cluster_ids):
    """Normalised curve with intervals, and the smallest N reaching FAITHFUL."""
    weights = bootstrap_weights(cluster_ids, config.n_boot, config.seed)

    def norm(means: np.ndarray) -> np.ndarray:
        none, full = means[..., :1], means[..., -1:]
        with np.errstate(divide="ignore", invalid="ignore"):
            return (means - none) / (full - none)

    point = norm(curve.mean(0))
    rows = []
    for j, n in enumerate(grid):
        lo = hi = float("nan")
        if len(weights) and len(np.unique(cluster_ids)) >= 2:
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
    reach = next((n for n, f in zip(grid, point, strict=True) if f >= FAITHFUL), None)
    # The curve need not rise monotonically (edges of opposite sign): also the N from which
    # every larger N of the grid stays at or above the threshold.
    below = [n for n, f in zip(grid, point, strict=True) if not f >= FAITHFUL]
    stable = next((n for n in grid if n > max(below, default=-1)), None)
    return pd.DataFrame(rows), (reach, stable)


def _verify(estimated, exact, config, cluster_ids) -> dict[str, Any]:
    from scipy.stats import spearmanr

    rho = float(spearmanr(estimated.mean(0), exact.mean(0)).statistic)
    weights = bootstrap_weights(cluster_ids, config.n_boot, config.seed)
    boot = []
    if len(np.unique(cluster_ids)) >= 2:
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
