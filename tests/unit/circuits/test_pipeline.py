"""Component circuits (issue 17): EAP against exact edge patching on the tiny model, the
run-level pipeline's files, and the graph export."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from interp.circuits import CircuitConfig, EdgePair, Graph, circuit, split_inputs
from interp.circuits.export import graph_data, graph_figure
from interp.runs.store import Run


def post_norm_model(seed: int = 0):
    """The tiny model's shape with Gemma 3's block (issue 27): norms after attention and MLP
    as well as before, qk-norm, one key/value head, random weights and norm weights."""
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    from interp.model.tiny import TINY_CONFIG

    fields = {
        **TINY_CONFIG,
        "n_key_value_heads": 1,
        "act_fn": "gelu_pytorch_tanh",
        "use_normalization_before_and_after": True,
        "use_qk_norm": True,
        "original_architecture": "Gemma3ForCausalLM",
        "model_name": "tiny-post-norm",
    }
    cfg = HookedTransformerConfig(**fields, d_vocab=600, seed=seed, init_weights=True)
    model = HookedTransformer(cfg, tokenizer=None)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith(".w"):
                param.add_(0.3 * torch.randn(param.shape, generator=gen))
    return model.eval().requires_grad_(False)


@pytest.fixture(scope="module", params=["tiny", "post-norm"])
def model64(request, tiny_model):
    """A float64 copy: finite differences of exact patching to ~1e-9. Also a model with
    Gemma's post-sublayer norms, whose heads' outputs are scaled by the attention post-norm."""
    model = tiny_model if request.param == "tiny" else post_norm_model()
    return copy.deepcopy(model).to(torch.float64)


@pytest.fixture(scope="module")
def pair(model64):
    """Round-like pair: the target is a prefix of the source (they share its tokens)."""
    graph = Graph.of(model64)
    seq = torch.randint(0, model64.cfg.d_vocab, (14,), generator=torch.Generator().manual_seed(1))
    with split_inputs(model64):
        yield EdgePair.record(model64, graph, seq[:8], seq, (3, 3), (5, 5))


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, tiny_model) -> Path:
    from faultkit import small_config

    from interp.replay.loop import replay

    out = tmp_path_factory.mktemp("circuits") / "run"
    replay(small_config(out, limit=6, rounds=2), model=tiny_model)
    return out


def test_split_inputs_change_no_number_and_are_restored(tiny_model):
    tokens = torch.arange(1, 12)[None]
    plain = tiny_model(tokens)
    with split_inputs(tiny_model):
        assert tiny_model.cfg.use_split_qkv_input and tiny_model.cfg.use_attn_result
        split = tiny_model(tokens)
    assert not tiny_model.cfg.use_split_qkv_input and not tiny_model.cfg.use_attn_result
    assert not tiny_model.cfg.use_hook_mlp_in
    torch.testing.assert_close(split, plain, atol=1e-5, rtol=1e-5)


def test_graph_edges_follow_the_forward_order(tiny_model):
    graph = Graph.of(tiny_model)
    edges = graph.edges()
    assert len(edges) == graph.mask().sum()
    # a head never feeds its own layer's q/k/v; it feeds its own layer's MLP and the logits
    names = set(zip(edges["sender"], edges["receiver"], strict=True))
    assert ("a1.h0", "a1.h0.q") not in names and ("a1.h0", "a1.g0.k") not in names
    assert ("a1.h0", "m1.in") in names and ("m2", "logits") in names
    assert ("embed", "a0.h0.q") in names and ("m1", "m1.in") not in names


def test_eap_scores_are_the_derivative_of_exact_edge_patching(model64, pair):
    """d/d eps of the value with a fraction eps of one edge's difference patched in."""
    graph = pair.graph
    with split_inputs(model64):
        scores = pair.scores(1)
        s_idx, r_idx = np.nonzero(graph.mask())
        picks = list(range(0, len(s_idx), 11))  # every kind of receiver, logits included
        assert any(r_idx[i] == graph.logits_receiver for i in picks + [len(s_idx) - 1])
        picks.append(len(s_idx) - 1)
        eps = 1e-6
        coeffs = torch.zeros(2 * len(picks), graph.n_senders, graph.n_receivers)
        for j, i in enumerate(picks):
            coeffs[2 * j, s_idx[i], r_idx[i]] = eps
            coeffs[2 * j + 1, s_idx[i], r_idx[i]] = -eps
        values = pair.values(coeffs.double())
    numeric = (values[0::2] - values[1::2]) / (2 * eps)
    np.testing.assert_allclose(scores[s_idx[picks], r_idx[picks]], numeric, atol=1e-7, rtol=1e-6)
    assert np.abs(numeric).max() > 1e-3  # not all trivially zero


def test_all_edges_give_the_source_value_and_none_the_target(model64, pair):
    mask = torch.from_numpy(pair.graph.mask()).double()
    with split_inputs(model64):
        none, full = pair.values(torch.stack([torch.zeros_like(mask), mask]))
    assert none == pytest.approx(pair.target_value, abs=1e-9)
    assert full == pytest.approx(pair.source_value, abs=1e-9)
    assert abs(pair.source_value - pair.target_value) > 1e-3


def test_eap_ig_with_one_step_is_eap_and_more_steps_differ(model64, pair):
    with split_inputs(model64):
        eap, ig1, ig4 = pair.scores(1), pair.scores(1), pair.gradients([0.0])
        ig3 = pair.scores(3)
    np.testing.assert_array_equal(eap, ig1)
    assert ig4.shape == (pair.graph.n_receivers, model64.cfg.d_model)
    assert not np.allclose(ig3, eap)


def test_run_circuit_writes_its_tables_and_eap_ig1_equals_eap(tiny_run, tiny_model):
    eap = circuit(tiny_run, CircuitConfig(round=2, method="eap", n_boot=20), model=tiny_model)
    ig1 = circuit(
        tiny_run, CircuitConfig(round=2, steps=1, n_boot=20), model=tiny_model, write=False
    )
    np.testing.assert_array_equal(eap.scores, ig1.scores)
    folder = tiny_run / "circuits" / "r2-t0-eap"
    names = {p.name for p in folder.iterdir()}
    assert names - {"graph.svg"} == {
        "edges.parquet",
        "faithfulness.parquet",
        "nodes.parquet",
        "summary.json",
        "graph.json",
        "graph.dot",
        "graph.html",
    }
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["full_value"] == pytest.approx(summary["source_value"], abs=1e-4)
    faith = pd.read_parquet(folder / "faithfulness.parquet")
    assert faith["faithfulness"].iloc[0] == 0.0 and faith["faithfulness"].iloc[-1] == 1.0
    assert faith["n_edges"].iloc[-1] == summary["n_edges"]
    if summary["faithful_refused"] is None:  # a headline only when the gap differs from 0
        assert summary["faithful_n"] == summary["faithful_n_stable"] <= summary["n_edges"]
    else:
        assert summary["faithful_n"] is None
    assert summary["faithful_n_first"] <= summary["n_edges"]
    edges = pd.read_parquet(folder / "edges.parquet")
    assert edges["in_circuit"].sum() == 50 and edges["exact_delta"].notna().sum() == 50
    assert summary["verify"]["k"] == 50 and -1 <= summary["verify"]["spearman"] <= 1


def test_graph_export_is_deterministic(tiny_run, tiny_model):
    from interp.report.export import export

    circuit(tiny_run, CircuitConfig(round=2, method="eap", n_boot=20), model=tiny_model)
    found = Run.open(tiny_run)
    analysis = found.read_analysis("circuits", "r2-t0-eap")
    a = graph_data(analysis.tables["edges"], analysis.tables["nodes"], analysis.summary)
    b = graph_data(analysis.tables["edges"], analysis.tables["nodes"], analysis.summary)
    assert a == b and len(a["edges"]) > 0
    html = [graph_figure(a, "t").to_html(include_plotlyjs=False, div_id="c") for _ in range(2)]
    assert html[0] == html[1]
    pages = []
    for _ in range(2):
        export([tiny_run], model=tiny_model)
        figures = tiny_run / "figures"
        pages.append({p.name: p.read_bytes() for p in sorted(figures.glob("circuit-r2-t0-eap.*"))})
    assert set(pages[0]) >= {"circuit-r2-t0-eap.html", "circuit-r2-t0-eap.json"}
    assert pages[0] == pages[1]
    assert "Circuits between rounds" in (tiny_run / "index.html").read_text()


def test_export_removes_a_removed_circuits_graph_files(tmp_path, tiny_run, tiny_model):
    """The graph's .json is export's own file: gone when its circuit is, the list kept."""
    import shutil

    from interp.report.export import export

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    circuit(run, CircuitConfig(round=2, method="eap", n_boot=0, verify_top=0), model=tiny_model)
    export([run], model=tiny_model)
    assert (run / "figures" / "circuit-r2-t0-eap.json").is_file()
    shutil.rmtree(run / "circuits")
    export([run], model=tiny_model)
    assert not list((run / "figures").glob("circuit-*"))
    assert (run / "figures" / ".export-files.json").is_file()
    assert "Circuits between rounds" not in (run / "index.html").read_text()
