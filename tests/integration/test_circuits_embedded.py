"""Circuits on the embedded SmolLM2 (small: 2 examples, 1 round): grouped-query attention's
key/value inputs, every edge patched gives round 1's value, the top edges' scores rank like
their exact effects, and the model's flags are restored (the fast path back)."""

from __future__ import annotations

import pytest

from interp.circuits import CircuitConfig, Graph, circuit
from interp.replay.loop import ReplayConfig, replay

pytestmark = pytest.mark.integration


def test_circuit_on_smollm2(embedded_model, tmp_path):
    model = embedded_model
    run = replay(
        ReplayConfig(task="builtin", rounds=1, limit=3, out=str(tmp_path / "run")), model=model
    )
    graph = Graph.of(model)
    assert (graph.n_heads, graph.n_kv_heads) == (model.cfg.n_heads, model.cfg.n_key_value_heads)
    config = CircuitConfig(round=1, method="eap", verify_top=10, n_boot=20, limit=2)
    result = circuit(run, config, model=model)
    s = result.summary
    assert s["n_edges"] == int(graph.mask().sum()) == len(result.edges)
    assert s["full_value"] == pytest.approx(s["source_value"], abs=1e-3)
    assert s["verify"]["spearman"] > 0.5
    assert not (model.cfg.use_split_qkv_input or model.cfg.use_attn_result)
    assert not model.cfg.use_hook_mlp_in
