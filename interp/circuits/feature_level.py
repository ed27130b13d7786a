"""Feature circuits between rounds: circuit-tracer's attribution graphs on our transcoders,
and interventions that check them.

For one example of a run, the attribution graph of the read-out's value (logit[correct option]
- logit[stereotyped option], `interp patch`'s value) is built for the target round (e.g. 0)
and the source round (e.g. 3) with circuit-tracer: transcoder features, error nodes and
tokens, edges = direct effects in the local replacement model (attention patterns and norm
scales frozen, as circuit-tracer linearises). The two graphs are compared feature by feature;
the read-out position's features are then checked by intervention: in the source round's
forward, the top-k of them (by the change of their total effect on the value) are set to
their target-round values (`intervene_features`) and the change of the value is reported.

The adapter (`replacement_model`) is the smallest one circuit-tracer 0.5.0 needs on this
stack: its ``TransformerLensReplacementModel.from_config`` builds a model from our model's
``HookedTransformerConfig`` (no hub, no model name), our weights are loaded into it (its MLP
and unembedding wrappers rename two keys), the tokenizer is attached, and its logits are
checked equal to ours. circuit-tracer imports ``HF_HUB_ENABLE_HF_TRANSFER`` from
``huggingface_hub.constants``, which huggingface-hub 1.x removed; `circuit_tracer` sets it
(False) before the import. Its graph-file writer reads the tokenizer by
``cfg.tokenizer_name``: a temporary copy of ours is named.
"""

from __future__ import annotations

import contextlib
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from transformer_lens import HookedTransformer

from interp.errors import InterpError
from interp.model.loading import check_run_model, load_run_model
from interp.options import check_at_least
from interp.patching.analysis import PatchConfig, check_config, select_items
from interp.patching.core import logit_gap
from interp.runs.lock import run_lock
from interp.runs.store import Run, safe_name
from interp.sae.transcoders import (
    CT_INPUT_HOOK,
    INPUT_HOOK,
    OUTPUT_HOOK,
    TranscoderSet,
    check_transcoder_folder,
    load_transcoders,
    mlp_input,
)

KIND = "feature_circuits"
CIRCUIT_TRACER = "circuit-tracer==0.5.0"
INSTALL = f"pip install --no-deps {CIRCUIT_TRACER}"
TARGET_LABEL = "logit(correct)-logit(stereotyped)"
K_GRID = (1, 2, 5, 10, 20, 50)
Letters = int | tuple[int, ...]


def circuit_tracer():
    """Import circuit-tracer on this stack (see the module docstring), or say how to get it."""
    import huggingface_hub.constants as hf_constants

    if not hasattr(hf_constants, "HF_HUB_ENABLE_HF_TRANSFER"):
        # huggingface-hub >= 1.0 dropped it; circuit-tracer only passes it on to downloads,
        # which never happen here (transcoders and model are local).
        hf_constants.HF_HUB_ENABLE_HF_TRANSFER = False
    try:
        import circuit_tracer as ct
        from circuit_tracer.replacement_model.replacement_model_transformerlens import (
            TransformerLensReplacementModel,
        )
    except ImportError as err:
        raise InterpError(
            f"feature circuits need circuit-tracer, which is not installed ({err}); run: "
            f"{INSTALL} (`make setup` installs it)"
        ) from None
    return ct, TransformerLensReplacementModel


def to_circuit_tracer(transcoders: TranscoderSet, n_layers: int, scan: str):
    """Our transcoders as circuit-tracer's ``TranscoderSet`` (ReLU, every layer)."""
    import torch.nn.functional as F

    circuit_tracer()
    from circuit_tracer.transcoder import SingleLayerTranscoder
    from circuit_tracer.transcoder import TranscoderSet as CTSet

    if transcoders.layers != list(range(n_layers)):
        raise InterpError(
            f"circuit-tracer needs a transcoder for every layer (0..{n_layers - 1}); the folder "
            f"has layers {transcoders.layers}"
        )
    out = {}
    for layer, tc in transcoders.transcoders.items():
        d_model, width = tc.W_enc.shape
        with torch.device("meta"):
            slt = SingleLayerTranscoder(d_model, width, F.relu, layer)
        state = {
            "W_enc": tc.W_enc.T.contiguous(),  # circuit-tracer: [width, d_model]
            "W_dec": tc.W_dec,
            "b_enc": tc.b_enc,
            "b_dec": tc.b_dec,
        }
        slt.load_state_dict({k: v.detach().clone().float() for k, v in state.items()}, assign=True)
        out[layer] = slt
    return CTSet(out, feature_input_hook=CT_INPUT_HOOK, feature_output_hook=OUTPUT_HOOK, scan=scan)


def replacement_model(model: HookedTransformer, transcoders: TranscoderSet, scan: str = "interp"):
    """circuit-tracer's replacement model with our model's weights and our transcoders."""
    import copy

    _, RM = circuit_tracer()
    cfg = copy.deepcopy(model.cfg)
    cfg.tokenizer_name = None  # never fetch a tokenizer by name
    ct_set = to_circuit_tracer(transcoders, cfg.n_layers, scan)
    rm = RM.from_config(cfg, ct_set)
    state = {}
    for key, value in model.state_dict().items():
        if ".mlp." in key:
            key = key.replace(".mlp.", ".mlp.old_mlp.")
        elif key.startswith("unembed."):
            key = key.replace("unembed.", "unembed.old_unembed.")
        state[key] = value.detach().clone().contiguous()
    missing = rm.load_state_dict(state, strict=False)
    left = [k for k in missing.missing_keys if not k.startswith("transcoders.")]
    if left or missing.unexpected_keys:
        raise InterpError(
            "circuit-tracer's replacement model does not take this model's weights "
            f"(missing {left[:3]}, unexpected {missing.unexpected_keys[:3]})"
        )
    rm.tokenizer = model.tokenizer
    rm.eval()
    probe = torch.arange(1, 9, device=cfg.device)[None] % cfg.d_vocab
    with torch.no_grad():
        diff = float((rm(probe) - model(probe)).abs().max())
    if diff > 1e-3:
        raise InterpError(f"circuit-tracer's copy of the model differs from it (|dlogit| {diff})")
    return rm


def value_direction(model: HookedTransformer, good: Letters, bad: Letters) -> torch.Tensor:
    """The unembedding direction of logit[good] - logit[bad] (each the mean of its tokens)."""
    goods = [good] if isinstance(good, int) else list(good)
    bads = [bad] if isinstance(bad, int) else list(bad)
    w_u = model.W_U.detach()
    return w_u[:, goods].mean(-1) - w_u[:, bads].mean(-1)


def attribution_graph(
    rm, tokens: torch.Tensor, direction: torch.Tensor, *, max_feature_nodes: int, batch_size: int
):
    """circuit-tracer's graph of ``tokens`` (1-D, starting with a special token) attributing
    the read-out's value (one custom target along ``direction``)."""
    ct, _ = circuit_tracer()
    from circuit_tracer.attribution.targets import CustomTarget

    target = CustomTarget(TARGET_LABEL, 1.0, direction.to(rm.cfg.device, rm.cfg.dtype))
    return ct.attribute(
        tokens,
        rm,
        attribution_targets=[target],
        max_feature_nodes=max_feature_nodes,
        batch_size=batch_size,
        verbose=False,
    )


def total_effects(
    adjacency: torch.Tensor, n_layers: int, activations: torch.Tensor
) -> torch.Tensor:
    """Signed total effect of every node on the (single, last) value node.

    circuit-tracer's ``adjacency[t, s]`` is s's contribution to node t: to the value for the
    value node, to the *pre-activation* of a feature t (its ReLU passes the change on 1:1
    while active), while t's own outgoing edges are scaled by its activation. So a path goes
    on through feature t with weight ``adjacency[t, s] / activation[t]``:
    ``x = a + (x / act) A``, with ``a`` the value row and ``act`` 1 for nodes that are not
    features (their rows are empty). Paths are at most n_layers + 2 edges long."""
    a = adjacency.double()
    act = activations.double().clone()
    act[act == 0] = 1.0
    row = a[-1]
    x = row.clone()
    for _ in range(n_layers + 2):
        x = row + (x / act) @ a
    return x


def graph_table(graph, n_layers: int, readout: int) -> pd.DataFrame:
    """One row per node of the graph: kind, layer, position, feature, activation, direct and
    total effect on the value."""
    adj = graph.adjacency_matrix
    sel = graph.selected_features
    feats = graph.active_features[sel].numpy()
    acts = graph.activation_values[sel].double().numpy()
    n_f, n_pos = len(sel), int(graph.n_pos)
    node_acts = torch.ones(adj.shape[0], dtype=torch.float64)
    node_acts[:n_f] = torch.as_tensor(acts)
    direct = adj[-1].double().numpy()
    total = total_effects(adj, n_layers, node_acts).numpy()
    rows: dict[str, list[Any]] = {
        "kind": ["feature"] * n_f + ["error"] * (n_layers * n_pos) + ["token"] * n_pos,
        "layer": list(feats[:, 0]) + [i // n_pos for i in range(n_layers * n_pos)] + [-1] * n_pos,
        "position": list(feats[:, 1])
        + [i % n_pos for i in range(n_layers * n_pos)]
        + list(range(n_pos)),
        "feature": list(feats[:, 2]) + [-1] * (n_layers * n_pos + n_pos),
        "activation": list(acts) + [np.nan] * (n_layers * n_pos + n_pos),
    }
    n = n_f + n_layers * n_pos + n_pos
    frame = pd.DataFrame(rows).astype({"layer": "int64", "position": "int64", "feature": "int64"})
    frame["direct_effect"] = direct[:n]
    frame["total_effect"] = total[:n]
    frame["at_readout"] = frame["position"] == readout
    return frame


def compare_graphs(target: pd.DataFrame, source: pd.DataFrame, prefix: int) -> pd.DataFrame:
    """Features of the two graphs matched by (layer, feature, place): the read-out position
    of each round is "readout"; a position before ``prefix`` (the tokens both transcripts
    share) is itself ("12"); any other position is its round's own ("source:140")."""

    def keyed(frame: pd.DataFrame, readout_pos: int, label: str) -> pd.DataFrame:
        f = frame[frame["kind"] == "feature"].copy()
        pos = f["position"].astype(str)
        f["place"] = np.where(
            f["position"] == readout_pos,
            "readout",
            np.where(f["position"] < prefix, pos, label + ":" + pos),
        )
        return f[["layer", "feature", "place", "activation", "direct_effect", "total_effect"]]

    t = keyed(target, int(target.loc[target["at_readout"], "position"].max()), "target")
    s = keyed(source, int(source.loc[source["at_readout"], "position"].max()), "source")
    merged = t.merge(s, on=["layer", "feature", "place"], how="outer", suffixes=("_t", "_s"))
    merged = merged.fillna(0.0)
    merged["change_total_effect"] = merged["total_effect_s"] - merged["total_effect_t"]
    merged["change_activation"] = merged["activation_s"] - merged["activation_t"]
    order = np.lexsort(
        (merged["feature"], merged["layer"], -merged["change_total_effect"].abs().to_numpy())
    )
    merged = merged.iloc[order].reset_index(drop=True)
    merged["rank"] = np.arange(1, len(merged) + 1)
    return merged


# --- interventions ------------------------------------------------------------------------


def feature_values(
    model: HookedTransformer, transcoders: TranscoderSet, tokens: torch.Tensor, position: int
) -> dict[int, torch.Tensor]:
    """Every transcoder layer's feature activations at ``position`` of ``tokens`` (1-D)."""
    inputs: dict[int, torch.Tensor] = {}

    def keep(acts, hook):
        inputs[int(hook.name.split(".")[1])] = acts[0, position]
        return acts

    hooks = [(f"blocks.{layer}.{INPUT_HOOK}", keep) for layer in transcoders.layers]
    with torch.no_grad():
        model.run_with_hooks(tokens[None], fwd_hooks=hooks, return_type=None)
        return {
            layer: transcoders.encode(layer, mlp_input(model, layer, x))
            for layer, x in inputs.items()
        }


def intervene_features(
    model: HookedTransformer,
    transcoders: TranscoderSet,
    tokens: torch.Tensor,
    position: int,
    values: dict[tuple[int, int], float],
    good: Letters,
    bad: Letters,
) -> float:
    """The value (logit[good] - logit[bad] at the last position) of ``tokens`` (1-D) with
    feature ``f`` of layer ``L`` set to ``values[(L, f)]`` at ``position``: that layer's MLP
    output there gets (value - current activation) x the feature's decoder row, the current
    activation computed in this forward (so an earlier layer's change reaches later
    features, as circuit-tracer's unfrozen ``feature_intervention``)."""
    by_layer: dict[int, list[tuple[int, float]]] = {}
    for (layer, feat), v in values.items():
        if layer not in transcoders.transcoders:
            raise InterpError(f"no transcoder for layer {layer}")
        by_layer.setdefault(layer, []).append((feat, float(v)))
    inputs: dict[int, torch.Tensor] = {}

    def keep(acts, hook):
        inputs[int(hook.name.split(".")[1])] = acts[:, position]
        return acts

    def shift(acts, hook):
        layer = int(hook.name.split(".")[1])
        current = transcoders.encode(layer, mlp_input(model, layer, inputs.pop(layer)))
        feats = torch.tensor([f for f, _ in by_layer[layer]], device=acts.device)
        wanted = torch.tensor([v for _, v in by_layer[layer]], device=acts.device)
        delta = (wanted - current[:, feats]) @ transcoders.decoder(layer)[feats]
        acts = acts.clone()
        acts[:, position] += delta.to(acts.dtype)
        return acts

    hooks = []
    for layer in sorted(by_layer):
        hooks += [(f"blocks.{layer}.{INPUT_HOOK}", keep), (f"blocks.{layer}.{OUTPUT_HOOK}", shift)]
    with torch.no_grad():
        logits = model.run_with_hooks(tokens[None], fwd_hooks=hooks)
    return float(logit_gap(logits[0, -1].double(), good, bad))


def intervention_curve(
    model: HookedTransformer,
    transcoders: TranscoderSet,
    source: torch.Tensor,
    target: torch.Tensor,
    ranked: Sequence[tuple[int, int]],
    goods: tuple[Letters, Letters],
    bads: tuple[Letters, Letters],
    ks: Sequence[int] = K_GRID,
) -> pd.DataFrame:
    """Source round's value with its top-k read-out features (``ranked``, (layer, feature))
    set to their target-round values at the read-out, for each k in ``ks`` (and all)."""
    t_vals = feature_values(model, transcoders, target, len(target) - 1)
    with torch.no_grad():
        s_value = float(logit_gap(model(source[None])[0, -1].double(), goods[0], bads[0]))
        t_value = float(logit_gap(model(target[None])[0, -1].double(), goods[1], bads[1]))
    rows = []
    grid = sorted({k for k in ks if k < len(ranked)} | {len(ranked)})
    for k in grid:
        chosen = {(la, f): float(t_vals[la][f]) for la, f in ranked[:k]}
        value = intervene_features(
            model, transcoders, source, len(source) - 1, chosen, goods[0], bads[0]
        )
        gap = t_value - s_value
        rows.append(
            {
                "k": k,
                "value": value,
                "change": value - s_value,
                "source_value": s_value,
                "target_value": t_value,
                "share_of_gap": (value - s_value) / gap if gap else float("nan"),
            }
        )
    return pd.DataFrame(rows)


# --- the command's library verb -----------------------------------------------------------


@dataclass
class FeatureCircuitConfig:
    """The feature level's settings, as its summary.json records them.

    Built by :meth:`interp.circuits.CircuitConfig.feature_config` from a
    ``CircuitConfig(level="features")``; :func:`interp.circuits.circuit` is the verb.
    """

    transcoders: str  # a transcoder folder (interp sae train-transcoders), every layer
    round: int  # the source round (e.g. 3)
    target_round: int = 0
    example: str | int = 0  # an example id (builtin/3) or index
    max_feature_nodes: int = 256  # features circuit-tracer attributes backwards (rows)
    batch_size: int = 64  # backward passes per batch in circuit-tracer
    top: int = 10  # read-out features set to their target-round values (the largest k)
    node_threshold: float = 0.8  # circuit-tracer's pruning of the saved graph files
    edge_threshold: float = 0.98

    def check(self) -> None:
        """Refuse numbers out of range.

        Raises:
            InterpError: A size below 1 or a threshold outside (0, 1].
        """
        check_at_least(self.max_feature_nodes, 1, "--max-feature-nodes")
        check_at_least(self.batch_size, 1, "--batch-size")
        check_at_least(self.top, 1, "--top")
        for name in ("node_threshold", "edge_threshold"):
            if not 0 < getattr(self, name) <= 1:
                raise InterpError(f"--{name.replace('_', '-')} must be in (0, 1]")

    def name(self) -> str:
        """Folder name, e.g. ``r3-t0-builtin_3-tc``."""
        ex = safe_name(str(self.example).replace("/", "_"))
        tc = safe_name(Path(self.transcoders).name)
        return f"r{self.round}-t{self.target_round}-{ex}-{tc}"


@dataclass
class FeatureCircuitResult:
    """What ``circuit(run, CircuitConfig(level="features", ...))`` computed."""

    comparison: pd.DataFrame
    nodes: pd.DataFrame
    interventions: pd.DataFrame
    summary: dict[str, Any]
    name: str
    paths: list[Path]
    level: str = "features"

    @property
    def tables(self) -> dict[str, pd.DataFrame]:
        """The tables by the names they are written under."""
        return {
            "comparison": self.comparison,
            "nodes": self.nodes,
            "interventions": self.interventions,
        }

    def __repr__(self) -> str:
        return (
            f"FeatureCircuitResult({self.name!r}, {len(self.nodes)} nodes, "
            f"{len(self.interventions)} interventions, {len(self.paths)} files written)"
        )

    def _repr_html_(self) -> str:
        """A small HTML card for notebooks (:func:`interp.runs.display.html_card`)."""
        from interp.runs.display import html_card

        facts = [("level", self.level), ("files written", len(self.paths))]
        return html_card(f"FeatureCircuitResult {self.name}", facts, self.tables)


def feature_circuit_of(
    run: Run,
    config: FeatureCircuitConfig,
    *,
    model: HookedTransformer | None = None,
    device: str = "cpu",
    write: bool = True,
) -> FeatureCircuitResult:
    """The feature level of :func:`interp.circuits.circuit` (which checks the settings).

    Both rounds' attribution graphs, their comparison and the intervention check; written to
    ``<run>/feature_circuits/<name>/`` (tables, summary.json, circuit-tracer's graph files).

    Args:
        run: The run.
        config: The feature level's settings.
        model: The run's model, loaded (None: loaded from the run's manifest).
        device: Where a model loaded here runs.
        write: False computes without writing into the run.

    Returns:
        The comparison, the nodes of both graphs, the intervention curve and the summary.

    Raises:
        InterpError: A transcoder folder that does not fit the run, circuit-tracer missing,
            or an example without both rounds.
    """
    started = time.perf_counter()
    config.check()
    sizes = [run.manifest.get("model", {}).get(key) for key in ("d_model", "n_layers")]
    d_model, n_layers = (v if isinstance(v, int) else None for v in sizes)
    # damaged files, another model's widths or layers: refused before any model loads
    check_transcoder_folder(config.transcoders, d_model, n_layers)
    circuit_tracer()  # refuse before any model loads when it is missing
    pconfig = PatchConfig(
        layer="all",
        round=config.round,
        target_round=config.target_round,
        examples=(config.example,),
    )
    check_config(pconfig, run)
    items, _ = select_items(run.rounds(), pconfig)
    if not items:
        raise InterpError(
            f"example {config.example!r} has no usable rounds {config.round} and "
            f"{config.target_round} in this run"
        )
    item = items[0]
    with run_lock(run.path) if write else contextlib.nullcontext():
        if model is None:
            model = load_run_model(run.manifest["model"], device=device)
        check_run_model(model, run.manifest["model"])
        transcoders = load_transcoders(config.transcoders, model)
        rm = replacement_model(model, transcoders, scan=Path(config.transcoders).name)
        seq = torch.tensor(run.tokens()[item.index], dtype=torch.long, device=model.cfg.device)
        rs, rt = config.round, config.target_round
        source, target = seq[: item.readout[rs] + 1], seq[: item.readout[rt] + 1]
        prefix = _shared_prefix(source, target)
        graphs, tables, timing = {}, {}, {}
        for label, toks, r in (("target", target, rt), ("source", source, rs)):
            t0 = time.perf_counter()
            direction = value_direction(model, item.good[r], item.bad[r])
            graphs[label] = attribution_graph(
                rm,
                toks,
                direction,
                max_feature_nodes=config.max_feature_nodes,
                batch_size=config.batch_size,
            )
            timing[f"graph_{label}_s"] = round(time.perf_counter() - t0, 2)
            tables[label] = graph_table(graphs[label], model.cfg.n_layers, len(toks) - 1)
            tables[label].insert(0, "round", r)
        comparison = compare_graphs(tables["target"], tables["source"], prefix)
        at_readout = comparison[comparison["place"] == "readout"].head(config.top)
        ranked = list(
            zip(at_readout["layer"].astype(int), at_readout["feature"].astype(int), strict=True)
        )
        t0 = time.perf_counter()
        curve = intervention_curve(
            model,
            transcoders,
            source,
            target,
            ranked,
            (item.good[rs], item.good[rt]),
            (item.bad[rs], item.bad[rt]),
            ks=[k for k in K_GRID if k <= config.top],
        )
        timing["interventions_s"] = round(time.perf_counter() - t0, 2)
        check = _cross_check(rm, model, transcoders, source, target, ranked, item, rs)
        nodes = pd.concat([tables["target"], tables["source"]], ignore_index=True)
        summary = {
            "name": config.name(),
            "run": str(run.path),
            "config": asdict(config),
            "example": {"index": item.index, "id": item.example_id},
            "positions": {
                "target_readout": len(target) - 1,
                "source_readout": len(source) - 1,
                "shared_prefix": prefix,
            },
            "graphs": {label: _graph_summary(g, tables[label]) for label, g in graphs.items()},
            "top_changes": _records(comparison.head(20)),
            "interventions": _records(curve),
            "circuit_tracer_cross_check": check,
            "definitions": DEFINITIONS,
            "timing": {**timing, "total_s": round(time.perf_counter() - started, 2)},
            "versions": _versions(),
        }
        paths: list[Path] = []
        if write:
            folder = run.path / KIND / config.name()
            folder.mkdir(parents=True, exist_ok=True)
            paths += _graph_files(graphs, model, folder, config)
            paths += run.write_analysis(
                KIND,
                config.name(),
                {"comparison": comparison, "nodes": nodes, "interventions": curve},
                summary,
            )
            # the figure the report shows, as one offline page beside the tables
            from interp.circuits.feature_export import write_feature_graph_files

            paths += write_feature_graph_files(run, config.name())
    return FeatureCircuitResult(comparison, nodes, curve, summary, config.name(), paths)


DEFINITIONS = {
    "value": "logit[correct option] - logit[stereotyped option] at the read-out (interp patch)",
    "direct_effect": (
        "circuit-tracer's edge weight from the node to the value node: the node's "
        "contribution along direct paths (attention patterns and norm scales frozen)"
    ),
    "total_effect": "sum over all paths of products of direct effects (signed)",
    "change_total_effect": "source round's total effect minus the target round's",
    "interventions": (
        "source round's forward with its top-k read-out features (by |change_total_effect|) "
        "set to their target-round activations at the read-out; share_of_gap = change / "
        "(target value - source value)"
    ),
}


def _shared_prefix(a: torch.Tensor, b: torch.Tensor) -> int:
    n = min(len(a), len(b))
    same = (a[:n] == b[:n]).cpu().numpy()
    return int(n if same.all() else np.argmin(same))


def _graph_summary(graph, table: pd.DataFrame) -> dict[str, Any]:
    from circuit_tracer.graph import compute_graph_scores

    replacement, completeness = compute_graph_scores(graph)
    feats = table[table["kind"] == "feature"]
    return {
        "n_tokens": int(graph.n_pos),
        "active_features": int(graph.active_features.shape[0]),
        "attributed_features": int(len(graph.selected_features)),
        "replacement_score": float(replacement),
        "completeness_score": float(completeness),
        "direct_effect_sums": {
            kind: float(table.loc[table["kind"] == kind, "direct_effect"].sum())
            for kind in ("feature", "error", "token")
        },
        "readout_features_total_effect": float(
            feats.loc[feats["at_readout"], "total_effect"].sum()
        ),
    }


def _cross_check(rm, model, transcoders, source, target, ranked, item, rs) -> dict[str, Any]:
    """Our intervention of the top feature vs circuit-tracer's ``feature_intervention`` (not
    frozen: the same definition) on the same forward."""
    if not ranked:
        return {"checked": False}
    layer, feat = ranked[0]
    value = float(feature_values(model, transcoders, target, len(target) - 1)[layer][feat])
    ours = intervene_features(
        model,
        transcoders,
        source,
        len(source) - 1,
        {(layer, feat): value},
        item.good[rs],
        item.bad[rs],
    )
    logits, _ = rm.feature_intervention(
        source,
        [(layer, len(source) - 1, feat, value)],
        freeze_attention=False,
        return_activations=False,
    )
    theirs = float(logit_gap(logits[0, -1].double(), item.good[rs], item.bad[rs]))
    return {
        "checked": True,
        "layer": layer,
        "feature": feat,
        "ours": ours,
        "circuit_tracer": theirs,
        "abs_diff": abs(ours - theirs),
    }


def _graph_files(graphs, model, folder: Path, config) -> list[Path]:
    """circuit-tracer's own graph JSON files (its viewer opens them) and graph-metadata.json."""
    from circuit_tracer.utils.create_graph_files import create_graph_files

    written = []
    with (
        tempfile.TemporaryDirectory(prefix="interp-tok-") as tok,
        tempfile.TemporaryDirectory(prefix="interp-ct-", dir=folder) as tmp,
    ):
        model.tokenizer.save_pretrained(tok)
        for label, graph in graphs.items():
            graph.cfg.tokenizer_name = tok
            slug = f"{config.name()}-{label}"
            create_graph_files(
                graph,
                slug,
                tmp,
                scan=Path(config.transcoders).name,
                node_threshold=config.node_threshold,
                edge_threshold=config.edge_threshold,
            )
        for file in sorted(Path(tmp).iterdir()):
            dest = folder / file.name
            file.replace(dest)
            written.append(dest)
    return written


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    def clean(v):
        if isinstance(v, np.integer):
            return int(v)
        if isinstance(v, float | np.floating):
            return float(v) if np.isfinite(v) else None
        return v

    return [{k: clean(v) for k, v in row.items()} for row in frame.to_dict("records")]


def _versions() -> dict[str, str]:
    from importlib import metadata

    import circuit_tracer as ct

    out = {"circuit-tracer": str(getattr(ct, "__version__", "unknown"))}
    for p in ("transformer-lens", "transformers", "huggingface-hub", "torch"):
        out[p] = metadata.version(p)
    return out
