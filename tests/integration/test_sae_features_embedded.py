"""SAE features and feature patching on the embedded SmolLM2 (small: 3 examples, 1 round)."""

from __future__ import annotations

import pytest
import torch
from sae_lens import TopKSAE, TopKSAEConfig
from sae_lens.saes.sae import SAEMetadata

from interp.patching import Variant, patch_pair
from interp.patching.sae_latents import FeatureSite
from interp.replay.loop import ReplayConfig, replay
from interp.sae.latent_changes import FeaturesConfig, encode, sae_features

pytestmark = pytest.mark.integration

LAYER = 12
HOOK = f"blocks.{LAYER}.hook_resid_post"


def test_sae_features_and_feature_patching_on_smollm2(embedded_model, tmp_path):
    model = embedded_model
    config = ReplayConfig(task="builtin", rounds=1, limit=3, out=str(tmp_path / "run"))
    run = replay(config, model=model)
    torch.manual_seed(0)
    cfg = TopKSAEConfig(
        d_in=model.cfg.d_model, d_sae=256, k=16, metadata=SAEMetadata(hook_name=HOOK)
    )
    sae = TopKSAE(cfg)
    sae.save_model(tmp_path / "sae")

    result = sae_features(run, FeaturesConfig(sae=str(tmp_path / "sae"), n_boot=50, n_shuffles=20))
    # the stored read-out activations, encoded, equal a fresh forward's (rounded like the store)
    rounds = run.rounds()
    example = rounds[rounds["example_index"] == 0].sort_values("round")
    tokens = torch.tensor([run.tokens()[0]])
    _, cache = model.run_with_cache(tokens, names_filter=HOOK, stop_at_layer=LAYER + 1)
    fresh = encode(sae, cache[HOOK][0, example["readout_pos"].tolist()].to(torch.float16))
    acts = result.tables["example_acts"]
    for latent in result.summary["top_latents"]:
        got = acts[(acts["example_index"] == 0) & (acts["latent"] == latent)].sort_values("round")
        assert got["activation"].to_numpy() == pytest.approx(fresh[:, latent].numpy(), abs=1e-3)

    # feature patching between the two rounds of example 0: nothing, and everything + error
    recipient = tokens[0, : int(example["readout_pos"].iloc[0]) + 1]
    donor = tokens[0, : int(example["readout_pos"].iloc[1]) + 1]
    none = FeatureSite(sae, ())
    res = patch_pair(model, recipient, donor, none.variants(), site=none)
    assert torch.allclose(res.patched_logits[0], res.recipient_logits, atol=1e-4)
    every = FeatureSite(sae, tuple(range(cfg.d_sae)), error=True)
    res = patch_pair(model, recipient, donor, every.variants()[:1], site=every)
    resid = patch_pair(model, recipient, donor, [Variant(LAYER, "resid_post")])
    assert torch.allclose(res.patched_logits, resid.patched_logits, atol=1e-4)
