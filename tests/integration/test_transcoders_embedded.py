"""Transcoders on the embedded model: two layers train from one activation stream with the
fast block path on, the error terms restore the model, and (when circuit-tracer is installed)
its replacement model built by our adapter has SmolLM2's logits."""

from __future__ import annotations

import pytest
import torch

from interp.errors import InterpError
from interp.model import fastpath
from interp.sae.corpus import CorpusConfig
from interp.sae.transcoders import TranscoderTrainConfig, load_transcoders, train_transcoders

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def trained(embedded_model, tmp_path_factory):
    config = TranscoderTrainConfig(
        out=str(tmp_path_factory.mktemp("tc") / "tc"),
        layers=[0, 1],
        width=128,
        tokens=2048,
        batch_tokens=256,
        eval_tokens=256,
        corpus=CorpusConfig(corpus=["concepts"], context=64),
    )
    return train_transcoders(embedded_model, config, progress=False)


def test_two_layers_train_and_the_error_terms_restore_the_model(embedded_model, trained):
    assert fastpath.is_enabled(embedded_model)
    curve = trained.record["loss_curve"]
    for layer in ("0", "1"):
        assert curve[-1]["fvu"][layer] < curve[0]["fvu"][layer]
    evals = trained.evals
    assert evals["ce_loss_with_errors"] == pytest.approx(evals["ce_loss_clean"], rel=1e-4)
    assert evals["ce_loss_clean"] < evals["ce_loss_replacement"]


def test_circuit_tracers_replacement_model_has_smollm2s_logits(embedded_model, trained):
    from interp.circuits.feature_level import circuit_tracer, replacement_model
    from interp.sae.transcoders import save_transcoders

    try:
        circuit_tracer()
    except InterpError:
        pytest.skip("circuit-tracer is not installed")
    # circuit-tracer needs every layer: layers 0-1 trained, the rest zero (weights only matter
    # for the graph, not for the replacement model's logits, which keep the real MLPs)
    tcs = load_transcoders(trained.path, embedded_model)
    folder = trained.path.parent / "all"
    folder.mkdir()
    zero = {k: torch.zeros_like(v) for k, v in _state(tcs, 0).items()}
    weights = {
        layer: _state(tcs, layer) if layer in tcs.transcoders else zero
        for layer in range(embedded_model.cfg.n_layers)
    }
    save_transcoders(folder, weights, scan="all")
    rm = replacement_model(embedded_model, load_transcoders(folder, embedded_model))
    tokens = embedded_model.tokenizer("<|im_start|>user\nWho was late?", return_tensors="pt")
    ids = tokens.input_ids
    with torch.no_grad():
        assert (rm(ids) - embedded_model(ids)).abs().max() < 1e-3


def _state(tcs, layer):
    tc = tcs.transcoders[layer]
    return {"W_enc": tc.W_enc.T, "W_dec": tc.W_dec, "b_enc": tc.b_enc, "b_dec": tc.b_dec}
