"""`interp.sae.transcoders` on the tiny model: training lowers the error, the folder round-trips
(identical outputs), circuit-tracer's layout, and the replacement-loss evaluation equals a
recomputation written independently (other hooks, TransformerLens' own path, explicit CE)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from interp.errors import InterpError
from interp.sae.corpus import CorpusConfig, build_corpus
from interp.sae.evals import scored_mask
from interp.sae.transcoders import (
    CT_INPUT_HOOK,
    OUTPUT_HOOK,
    TranscoderTrainConfig,
    check_transcoder_config,
    load_transcoders,
    replacement_hooks,
    replacement_loss,
    train_transcoders,
)

CORPUS = CorpusConfig(corpus=["concepts", "builtin"], context=32)


def _config(out: Path, **kw) -> TranscoderTrainConfig:
    base = dict(width=64, batch_tokens=128, tokens=6144, lr=3e-3, eval_tokens=512, l1=0.5)
    return TranscoderTrainConfig(out=str(out), corpus=CORPUS, **{**base, **kw})


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_model, one_torch_thread):
    out = tmp_path_factory.mktemp("tc") / "a"
    return train_transcoders(tiny_model, _config(out), progress=False)


def test_training_lowers_the_error_of_every_layer(trained):
    curve = trained.record["loss_curve"]
    assert len(curve) >= 10
    for layer in ("0", "1", "2"):
        first = sum(p["fvu"][layer] for p in curve[:3]) / 3
        last = sum(p["fvu"][layer] for p in curve[-3:]) / 3
        assert last < 0.9 * first, (layer, first, last)
    assert trained.record["layers"] == [0, 1, 2]


def test_folder_is_circuit_tracers_transcoder_set_layout(trained):
    folder = trained.path
    config = yaml.safe_load((folder / "config.yaml").read_text())
    assert config == {
        "model_kind": "transcoder_set",
        "feature_input_hook": CT_INPUT_HOOK,
        "feature_output_hook": OUTPUT_HOOK,
        "scan": "a",
    }
    state = load_file(str(folder / "layer_1.safetensors"))
    assert set(state) == {"W_enc", "W_dec", "b_enc", "b_dec"}
    assert state["W_enc"].shape == (64, 64) and state["W_dec"].shape == (64, 64)
    assert state["b_enc"].shape == (64,) and state["b_dec"].shape == (64,)
    assert sorted(p.name for p in folder.iterdir()) == sorted(trained.record["files"])
    assert not list(folder.parent.glob(".a.partial-*"))


def test_save_load_round_trip_gives_identical_outputs(trained, tiny_model, tmp_path):
    from interp.sae.transcoders import save_transcoders

    loaded = load_transcoders(trained.path, tiny_model)
    x = torch.randn(5, 7, 64)
    weights = {
        layer: load_file(str(trained.path / f"layer_{layer}.safetensors")) for layer in (0, 1, 2)
    }
    again = tmp_path / "again"
    again.mkdir()
    save_transcoders(again, weights, scan="again")
    reloaded = load_transcoders(again, tiny_model)
    for layer in (0, 1, 2):
        w = weights[layer]
        expected = torch.relu(x @ w["W_enc"].T + w["b_enc"]) @ w["W_dec"] + w["b_dec"]
        assert torch.equal(loaded.forward(layer, x), reloaded.forward(layer, x))
        torch.testing.assert_close(loaded.forward(layer, x), expected, rtol=1e-5, atol=1e-5)


def test_replacement_loss_equals_a_manual_recomputation(trained, tiny_model):
    model = tiny_model
    tcs = load_transcoders(trained.path, model)
    corpus = build_corpus(CORPUS, model)
    seqs = corpus.heldout[:3]
    got = replacement_loss(model, tcs, seqs, corpus.exclude_ids)
    mask = scored_mask(seqs, corpus.exclude_ids)

    # Independently: the MLP input from ln2.hook_normalized times the norm's weight (this
    # sends every block down TransformerLens' own path), CE by log_softmax and gather.
    def manual(replace: bool) -> float:
        seen: dict[int, torch.Tensor] = {}

        def keep(acts, hook):
            seen[int(hook.name.split(".")[1])] = acts
            return acts

        def swap(acts, hook):
            layer = int(hook.name.split(".")[1])
            x = seen[layer] * model.blocks[layer].ln2.w
            w = tcs.transcoders[layer]
            new = torch.relu(x @ w.W_enc + w.b_enc) @ w.W_dec + w.b_dec
            return torch.where(mask[..., None], new, acts)

        hooks = []
        for layer in range(3):
            hooks.append((f"blocks.{layer}.ln2.hook_normalized", keep))
            if replace:
                hooks.append((f"blocks.{layer}.hook_mlp_out", swap))
        with torch.no_grad():
            logits = model.run_with_hooks(seqs, fwd_hooks=hooks)
        logp = logits[:, :-1].log_softmax(-1)
        nll = -logp.gather(-1, seqs[:, 1:, None])[..., 0]
        return float(nll[mask[:, :-1]].mean())

    assert got["ce_loss_clean"] == pytest.approx(manual(False), rel=1e-5)
    assert got["ce_loss_replacement"] == pytest.approx(manual(True), rel=1e-5)
    assert got["ce_loss_replacement"] != pytest.approx(got["ce_loss_clean"], rel=1e-4)
    # with the error terms the replacement model is the model
    assert got["ce_loss_with_errors"] == pytest.approx(got["ce_loss_clean"], rel=1e-5)
    assert got["max_abs_logit_diff_with_errors"] < 1e-4
    assert got["scored_tokens"] == int(mask.sum())


def test_evals_json_is_the_evaluation_of_the_saved_folder(trained, tiny_model):
    stored = json.loads((trained.path / "evals.json").read_text())
    assert stored["layers"] == [0, 1, 2]
    assert {"ce_loss_clean", "ce_loss_replacement", "ce_loss_with_errors"} <= set(stored)
    assert len(stored["per_layer"]) == 3


def test_replacement_hooks_replace_only_the_masked_positions(trained, tiny_model):
    tcs = load_transcoders(trained.path, tiny_model)
    tokens = torch.tensor([[1, 5, 9, 13, 17, 21]])
    mask = torch.zeros(1, 6, dtype=torch.bool)
    mask[0, 4:] = True
    with torch.no_grad():
        clean = tiny_model(tokens)
        out = tiny_model.run_with_hooks(tokens, fwd_hooks=replacement_hooks(tiny_model, tcs, mask))
    assert torch.equal(out[0, :4], clean[0, :4])  # causal: positions before the first swap
    assert not torch.allclose(out[0, 4:], clean[0, 4:])


def test_a_subset_of_layers_trains_and_loads(tmp_path, tiny_model, one_torch_thread):
    result = train_transcoders(
        tiny_model, _config(tmp_path / "b", layers=[1], tokens=1024), progress=False
    )
    tcs = load_transcoders(result.path, tiny_model)
    assert tcs.layers == [1]
    assert result.evals["layers"] == [1]


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"layers": [3]}, "has layers 0..2"),
        ({"layers": [1, 1]}, "a layer twice"),
        ({"width": 0}, "--width"),
        ({"l1": -1.0}, "--l1"),
        ({"lr": 0.0}, "--lr"),
    ],
)
def test_bad_settings_are_refused_before_training(tmp_path, tiny_model, kw, message):
    with pytest.raises(InterpError, match=message):
        check_transcoder_config(_config(tmp_path / "c", **kw), tiny_model)
    assert not (tmp_path / "c").exists()


def test_a_folder_of_another_model_is_refused(trained, tmp_path):
    from interp.model.loading import load_model

    other = load_model("tiny")
    other.cfg.n_layers = 2  # a two-layer model: layer 2 of the folder does not fit
    with pytest.raises(InterpError, match="has layer 2"):
        load_transcoders(trained.path, other)
    with pytest.raises(InterpError, match="not a transcoder folder"):
        load_transcoders(tmp_path, None)
