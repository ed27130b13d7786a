"""Feature circuits (issue 17, part 2) on the tiny model: interventions on transcoder features
against an independent recomputation, total effects on a hand-made graph, and (when
circuit-tracer is installed) the attribution graphs of a run, written with circuit-tracer's
files, whose replacement model is our model and whose intervention agrees with ours."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from interp.circuits.feature_level import (
    intervene_features,
    total_effects,
)
from interp.errors import InterpError
from interp.patching.core import logit_gap
from interp.sae.corpus import CorpusConfig
from interp.sae.transcoders import TranscoderTrainConfig, load_transcoders, train_transcoders

TOKENS = torch.tensor([1, 7, 12, 19, 23, 31, 40, 52, 60, 77])


@pytest.fixture(scope="module")
def tc_folder(tmp_path_factory, tiny_model, one_torch_thread) -> Path:
    config = TranscoderTrainConfig(
        out=str(tmp_path_factory.mktemp("fc") / "tc"),
        width=64,
        tokens=4096,
        batch_tokens=256,
        eval_tokens=256,
        l1=0.5,
        lr=3e-3,
        corpus=CorpusConfig(corpus=["builtin", "concepts"], context=32),
    )
    return train_transcoders(tiny_model, config, progress=False).path


@pytest.fixture(scope="module")
def tcs(tc_folder, tiny_model):
    return load_transcoders(tc_folder, tiny_model)


def _value(model, tokens, good=3, bad=5, hooks=()):
    with torch.no_grad():
        logits = model.run_with_hooks(tokens[None], fwd_hooks=list(hooks))
    return float(logit_gap(logits[0, -1].double(), good, bad))


def test_no_intervention_is_the_plain_value(tiny_model, tcs):
    assert intervene_features(tiny_model, tcs, TOKENS, 9, {}, 3, 5) == _value(tiny_model, TOKENS)


def test_setting_features_to_their_own_values_changes_nothing(tiny_model, tcs):
    from interp.circuits.feature_level import feature_values

    acts = feature_values(tiny_model, tcs, TOKENS, 9)
    same = {(layer, f): float(acts[layer][f]) for layer in (0, 1, 2) for f in range(0, 64, 7)}
    got = intervene_features(tiny_model, tcs, TOKENS, 9, same, 3, 5)
    assert got == pytest.approx(_value(tiny_model, TOKENS), abs=1e-5)


def test_one_feature_intervention_equals_adding_its_decoder_row(tiny_model, tcs):
    # Independently: the activation from ln2.hook_normalized x the norm weight on a clean
    # forward, then one hook adding (v - a) W_dec[f] to that layer's MLP output.
    layer, feat, value, pos = 1, 11, 2.5, 6
    seen = {}

    def keep(acts, hook):
        seen["x"] = acts[0, pos] * tiny_model.blocks[layer].ln2.w
        return acts

    tiny_model.run_with_hooks(
        TOKENS[None], fwd_hooks=[(f"blocks.{layer}.ln2.hook_normalized", keep)]
    )
    tc = tcs.transcoders[layer]
    a = torch.relu(seen["x"] @ tc.W_enc + tc.b_enc)[feat]

    def add(acts, hook):
        acts = acts.clone()
        acts[0, pos] += (value - a) * tc.W_dec[feat]
        return acts

    expected = _value(tiny_model, TOKENS, hooks=[(f"blocks.{layer}.hook_mlp_out", add)])
    got = intervene_features(tiny_model, tcs, TOKENS, pos, {(layer, feat): value}, 3, 5)
    assert got == pytest.approx(expected, abs=1e-5)
    assert got != pytest.approx(_value(tiny_model, TOKENS), abs=1e-4)


def test_an_intervention_on_a_missing_layer_is_refused(tiny_model, tcs):
    with pytest.raises(InterpError, match="no transcoder for layer 7"):
        intervene_features(tiny_model, tcs, TOKENS, 9, {(7, 0): 1.0}, 3, 5)


def test_total_effects_follow_every_path_through_feature_activations():
    # nodes: token 0 -> feature 1 (activation 2) -> feature 2 (activation 4) -> value 3, and
    # 0 -> 2, 0 -> value; adjacency[target, source]: into a feature, the contribution to its
    # pre-activation; out of a feature, its activation-scaled effect
    a = torch.zeros(4, 4)
    a[1, 0], a[2, 1], a[3, 2], a[2, 0], a[3, 0] = 2.0, 3.0, 0.5, -1.0, 0.25
    acts = torch.tensor([1.0, 2.0, 4.0, 1.0])
    total = total_effects(a, n_layers=2, activations=acts)
    per_unit_2 = 0.5 / 4.0  # value per unit of feature 2's activation
    per_unit_1 = 3.0 / 2.0 * per_unit_2  # feature 1's unit moves feature 2 by 3 / 2
    assert total[2] == pytest.approx(0.5)  # = its activation x per_unit_2
    assert total[1] == pytest.approx(2.0 * per_unit_1)
    assert total[0] == pytest.approx(0.25 + (-1.0) * per_unit_2 + 2.0 * per_unit_1)
    assert total[0] == pytest.approx(0.5)


# --- with circuit-tracer ------------------------------------------------------------------


@pytest.fixture(scope="module")
def ct_result(tmp_path_factory, tiny_model, tc_folder, one_torch_thread):
    from interp.circuits.feature_level import circuit_tracer

    try:
        circuit_tracer()
    except InterpError:
        pytest.skip("circuit-tracer is not installed (pip install --no-deps circuit-tracer)")
    from faultkit import small_config

    from interp.circuits import CircuitConfig, circuit
    from interp.replay.loop import replay

    out = tmp_path_factory.mktemp("fc-run") / "run"
    replay(small_config(out, limit=2, rounds=2), model=tiny_model)
    config = CircuitConfig(
        level="features",
        transcoders=str(tc_folder),
        round=1,
        examples=(0,),
        max_feature_nodes=32,
        top=5,
    )
    return out, circuit(out, config, model=tiny_model)


def test_circuit_tracers_replacement_model_is_our_model(tiny_model, tcs):
    from interp.circuits.feature_level import circuit_tracer, replacement_model

    try:
        circuit_tracer()
    except InterpError:
        pytest.skip("circuit-tracer is not installed")
    rm = replacement_model(tiny_model, tcs)
    with torch.no_grad():
        assert torch.allclose(rm(TOKENS[None]), tiny_model(TOKENS[None]), atol=1e-5)


def test_feature_circuit_writes_both_graphs_and_agrees_with_circuit_tracer(ct_result):
    run, result = ct_result
    folder = run / "feature_circuits" / result.name
    names = {p.name for p in folder.iterdir()}
    assert {"summary.json", "comparison.parquet", "nodes.parquet", "interventions.parquet"} <= names
    assert f"{result.name}-target.json" in names and f"{result.name}-source.json" in names
    assert {"graph.json", "graph.html"} <= names  # the report's figure, standalone
    meta = json.loads((folder / "graph-metadata.json").read_text())
    assert sorted(g["slug"] for g in meta["graphs"]) == sorted(
        f"{result.name}-{x}" for x in ("source", "target")
    )
    s = result.summary
    assert s["circuit_tracer_cross_check"]["abs_diff"] < 1e-4
    assert set(result.nodes["round"]) == {0, 1}
    assert (result.comparison["place"] == "readout").any()
    ks = [row["k"] for row in s["interventions"]]
    assert ks == sorted(ks) and ks[-1] <= 5
    assert not list(folder.glob("interp-ct-*"))  # the temporary folder is gone


def test_a_transcoder_set_without_every_layer_is_refused(tiny_model, tmp_path, tc_folder):
    import shutil

    from interp.circuits.feature_level import circuit_tracer, replacement_model

    try:
        circuit_tracer()
    except InterpError:
        pytest.skip("circuit-tracer is not installed")
    part = tmp_path / "part"
    shutil.copytree(tc_folder, part)
    (part / "layer_1.safetensors").unlink()
    with pytest.raises(InterpError, match="every layer"):
        replacement_model(tiny_model, load_transcoders(part, tiny_model))


def test_graphs_are_compared_by_layer_feature_and_place():
    import pandas as pd

    from interp.circuits.feature_level import compare_graphs

    def frame(rows, readout):
        f = pd.DataFrame(rows, columns=["layer", "position", "feature", "total_effect"])
        f["kind"], f["activation"], f["direct_effect"] = "feature", 1.0, f["total_effect"]
        f["at_readout"] = f["position"] == readout
        return f

    # target: 5 tokens (read-out 4); source: 9 tokens sharing the first 5 (read-out 8)
    target = frame([(0, 4, 7, 0.5), (1, 2, 3, 0.1)], readout=4)
    source = frame([(0, 8, 7, 2.0), (1, 2, 3, 0.1), (0, 4, 7, 0.3), (2, 6, 1, -1.0)], readout=8)
    got = compare_graphs(target, source, prefix=5).set_index(["layer", "feature", "place"])
    assert got.loc[(0, 7, "readout"), "change_total_effect"] == pytest.approx(1.5)
    assert got.loc[(1, 3, "2"), "change_total_effect"] == pytest.approx(0.0)
    assert got.loc[(0, 7, "4"), "total_effect_t"] == 0.0  # the target's 4 is its read-out
    assert got.loc[(2, 1, "source:6"), "change_total_effect"] == pytest.approx(-1.0)
    assert list(got["rank"]) == [1, 2, 3, 4]
    assert got.index[0] == (0, 7, "readout")


def test_circuit_tracers_own_loader_opens_the_folder(tc_folder, tcs):
    from interp.circuits.feature_level import circuit_tracer

    try:
        circuit_tracer()
    except InterpError:
        pytest.skip("circuit-tracer is not installed")
    from circuit_tracer.utils.caching import load_transcoders_from_cache

    theirs, config = load_transcoders_from_cache(
        tc_folder.name, cache_dir=tc_folder.parent, device=torch.device("cpu")
    )
    assert config["model_kind"] == "transcoder_set" and len(theirs) == 3
    x = torch.randn(6, 64)
    for layer in range(3):
        assert torch.equal(theirs[layer](x), tcs.forward(layer, x))
