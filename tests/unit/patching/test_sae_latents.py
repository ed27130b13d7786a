"""Feature patching (interp.patching.sae_latents): SAE latents swapped between rounds at the hook.

Checked against the two references that must hold: no latent chosen changes nothing, and every
latent plus the reconstruction error is residual-stream patching at the SAE's hook.
"""

from __future__ import annotations

import pytest
import torch
from sae_lens import TopKSAE, TopKSAEConfig
from sae_lens.saes.sae import SAEMetadata

from interp.errors import InterpError
from interp.patching import Variant, patch_pair
from interp.patching.sae_latents import FeatureSite, parse_features, site_hook, swap_latents

HOOK = "blocks.1.hook_resid_post"


def make_sae(d_in: int, hook: str = HOOK, d_sae: int = 48, k: int = 6, seed: int = 0):
    torch.manual_seed(seed)
    sae = TopKSAE(TopKSAEConfig(d_in=d_in, d_sae=d_sae, k=k, metadata=SAEMetadata(hook_name=hook)))
    torch.nn.init.normal_(sae.W_enc)
    torch.nn.init.normal_(sae.b_dec, std=0.1)
    return sae


def _pair(model):
    gen = torch.Generator().manual_seed(1)
    seq = torch.randint(0, model.cfg.d_vocab, (30,), generator=gen)
    return seq[:20], seq  # recipient (a prefix), donor: the shape of two rounds of a transcript


def test_no_latents_changes_nothing(tiny_model):
    sae = make_sae(tiny_model.cfg.d_model)
    recipient, donor = _pair(tiny_model)
    site = FeatureSite(sae, ())
    res = patch_pair(tiny_model, recipient, donor, site.variants(), site=site)
    # the unpatched logits come from one full forward, the patched from the cached tail: equal
    # up to float rounding (the swap itself returns the activation bit for bit, below)
    assert torch.allclose(res.patched_logits[0], res.recipient_logits, atol=1e-5)


def test_swap_with_no_latent_returns_the_activation_bit_for_bit():
    sae = make_sae(8, d_sae=16, k=3)
    act = torch.randn(3, 5, 8)
    out = swap_latents(
        act,
        None,
        rows=torch.tensor([0, 2]),
        masks=torch.zeros(2, 16, dtype=torch.bool),
        errors=torch.zeros(2, dtype=torch.bool),
        value=torch.randn(2, 8),
        sae=sae,
    )
    assert torch.equal(out, act)


@pytest.mark.parametrize("positions", [1, 3])
def test_all_latents_and_error_equal_resid_patching(tiny_model, positions):
    sae = make_sae(tiny_model.cfg.d_model)
    recipient, donor = _pair(tiny_model)
    site = FeatureSite(sae, tuple(range(sae.cfg.d_sae)), error=True)
    variants = site.variants()[:1]  # all latents together
    res = patch_pair(tiny_model, recipient, donor, variants, site=site, n_positions=positions)
    resid = patch_pair(
        tiny_model, recipient, donor, [Variant(1, "resid_post")], n_positions=positions
    )
    assert torch.allclose(res.patched_logits, resid.patched_logits, atol=1e-5)
    # without the error term it is not resid patching (the SAE reconstructs imperfectly)
    plain = FeatureSite(sae, site.latents)
    res = patch_pair(tiny_model, recipient, donor, variants, site=plain, n_positions=positions)
    assert not torch.allclose(res.patched_logits, resid.patched_logits, atol=1e-3)


def test_single_latents_batch_like_one_at_a_time(tiny_model):
    sae = make_sae(tiny_model.cfg.d_model)
    recipient, donor = _pair(tiny_model)
    site = FeatureSite(sae, (3, 7, 11))
    together = patch_pair(tiny_model, recipient, donor, site.variants(), site=site)
    assert [v.head for v in site.variants()] == [-1, 3, 7, 11]
    for i, latent in enumerate((3, 7, 11)):
        alone = FeatureSite(sae, (latent,))
        one = patch_pair(tiny_model, recipient, donor, alone.variants(), site=alone)
        assert torch.allclose(together.patched_logits[i + 1], one.patched_logits[0], atol=1e-5)
    full = patch_pair(tiny_model, recipient, donor, site.variants(), site=site, reuse_prefix=False)
    assert torch.allclose(together.patched_logits, full.patched_logits, atol=1e-4)


def test_parse_features_and_hooks():
    assert parse_features("123,456") == (123, 456)
    assert parse_features("top:8") == 8
    for bad in ("top:0", "1,x", "3,3", "-1", "", " "):
        with pytest.raises(InterpError):
            parse_features(bad)
    assert site_hook("blocks.12.hook_resid_post") == (12, "resid_post")
    with pytest.raises(InterpError, match="block"):
        site_hook("hook_embed")


@pytest.fixture(scope="module")
def sae_run(tmp_path_factory, tiny_model):
    from interp.replay.loop import ReplayConfig, replay

    root = tmp_path_factory.mktemp("sae-patch")
    run = root / "run"
    config = ReplayConfig(model="tiny", task="builtin", rounds=2, limit=8, out=str(run))
    replay(config, model=tiny_model)
    make_sae(tiny_model.cfg.d_model).save_model(root / "sae")
    return run, str(root / "sae")


def test_patch_refuses_no_latents_and_top_k_beyond_the_sae(sae_run, tiny_model):
    # issue 22 item 10: "" patched 0 latents and wrote a table; top:K > d_sae patched every
    # latent under the name topK (that no latent changes nothing: test_no_latents_changes_nothing)
    from interp.patching import PatchConfig, patch

    run, sae = sae_run
    for features, message in (("", "names no latent"), ("top:49", "has 48 latents")):
        with pytest.raises(InterpError, match=message):
            patch(run, PatchConfig(layer=1, round=2, sae=sae, features=features), model=tiny_model)


def test_patch_top_k_reads_the_features_table(sae_run, tiny_model):
    from interp.patching import PatchConfig, patch
    from interp.sae.latent_changes import FeaturesConfig, sae_features

    run, sae = sae_run
    computed = patch(
        run,
        PatchConfig(layer=1, round=2, sae=sae, features="top:3", n_boot=20),
        model=tiny_model,
        write=False,
    )
    assert computed.summary["sae"]["latents_from"] == "computed from the stored activations"
    features = sae_features(run, FeaturesConfig(sae=sae, n_boot=20, n_shuffles=5))
    changes = features.tables["changes"]
    top3 = changes[changes["round"] == 2].sort_values("rank")["latent"][:3].tolist()
    result = patch(
        run, PatchConfig(layer=1, round=2, sae=sae, features="top:3", n_boot=20), model=tiny_model
    )
    assert result.summary["sae"]["latents"] == top3 == computed.summary["sae"]["latents"]
    assert result.summary["sae"]["latents_from"] == "sae/sae/changes.parquet"
    assert sorted(result.per_example["head"].unique()) == sorted([-1, *top3])
    assert result.name == "r2-t0-sae-denoise-L1-sae-top3"
    assert {"delta", "delta_lo", "gap", "effect"} <= set(result.summary_table.columns)
