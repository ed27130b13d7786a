"""Patching several examples in shared forwards (interp.patching.packed) against the
per-example path (interp.patching.exact.patch_pair) and against one full forward per patch
with a hand-written hook; the pipeline's ``example_batch`` knob.

Everything runs on the tiny model (Llama-style: rotary, GQA with 4 heads over 2 key/value
heads, RMSNorm, gated MLP), with prompts of different lengths in one group, so that padding,
per-row rotary positions and per-row donor values are all exercised.
"""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from interp.errors import InterpError
from interp.model import fastpath
from interp.patching import COMPONENTS, PatchConfig, Variant, patch, patch_pair, sweep
from interp.patching.packed import group_bytes, packable, patch_examples
from interp.patching.sae_latents import FeatureSite
from tests.unit.patching.test_pipeline import _write_fake_run
from tests.unit.patching.test_sae_latents import make_sae

ATOL = 1e-5


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _pairs(model) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Five (recipient, donor) pairs of different lengths: four where the recipient is a
    prefix of the donor (two rounds of a transcript), one of unrelated prompts."""
    gen = torch.Generator().manual_seed(0)
    pairs = []
    for length in (30, 45, 38, 52):
        seq = torch.randint(0, model.cfg.d_vocab, (length + 12,), generator=gen)
        pairs.append((seq[:length], seq))
    recipient = torch.randint(0, model.cfg.d_vocab, (33,), generator=gen)
    donor = torch.randint(0, model.cfg.d_vocab, (41,), generator=gen)
    return [*pairs, (recipient, donor)]


def _all_variants(model) -> list[Variant]:
    return sweep(model.cfg.n_layers, model.cfg.n_heads, range(model.cfg.n_layers), COMPONENTS)


def test_the_tiny_model_takes_the_packed_path(tiny_model):
    assert packable(tiny_model)


@pytest.mark.parametrize(("k", "batch_size"), [(1, 32), (1, 5), (3, 32), (3, 7)])
def test_packed_equals_the_per_example_path(tiny_model, k, batch_size):
    pairs, variants = _pairs(tiny_model), _all_variants(tiny_model)
    packed = patch_examples(tiny_model, pairs, variants, n_positions=k, batch_size=batch_size)
    assert len(packed) == len(pairs)
    for (recipient, donor), got in zip(pairs, packed, strict=True):
        want = patch_pair(tiny_model, recipient, donor, variants, n_positions=k)
        assert got.patched.shape == want.patched_logits.shape
        torch.testing.assert_close(got.patched, want.patched_logits, atol=ATOL, rtol=0)
        torch.testing.assert_close(got.recipient_logits, want.recipient_logits, atol=ATOL, rtol=0)
        torch.testing.assert_close(got.donor_logits, want.donor_logits, atol=ATOL, rtol=0)


def _plain_patch(model, recipient, donor, variant: Variant, k: int) -> torch.Tensor:
    """One variant, one full forward over the recipient, one hand-written hook (the donor's
    activation from its own full forward)."""
    _, cache = model.run_with_cache(donor[None], names_filter=lambda name: name == variant.hook)
    value = cache[variant.hook][0, -k:]

    def hook(act, hook):
        act = act.clone()
        if variant.head >= 0:
            act[0, -k:, variant.head] = value[:, variant.head]
        else:
            act[0, -k:] = value
        return act

    with torch.no_grad():
        return model.run_with_hooks(recipient[None], fwd_hooks=[(variant.hook, hook)])[0, -1]


@pytest.mark.parametrize("k", [1, 2])
def test_packed_equals_one_full_forward_per_patch(tiny_model, k):
    pairs, variants = _pairs(tiny_model), _all_variants(tiny_model)
    packed = patch_examples(tiny_model, pairs, variants, n_positions=k)
    for (recipient, donor), got in zip(pairs, packed, strict=True):
        for i, variant in enumerate(variants):
            want = _plain_patch(tiny_model, recipient, donor, variant, k)
            torch.testing.assert_close(got.patched[i], want, atol=ATOL, rtol=0)


def test_patching_the_last_layer_gives_the_donor_logits_bit_for_bit(tiny_model):
    """DESIGN's sanity check, exactly: the patched and the unpatched read-outs are unembedded
    alike, whatever the number of rows in a batch."""
    last = Variant(tiny_model.cfg.n_layers - 1, "resid_post")
    pairs = _pairs(tiny_model)
    for batch_size in (1, 3, 32):
        for columns in (None, [[5, 9, 1]] * len(pairs)):
            packed = patch_examples(
                tiny_model, pairs, [last], batch_size=batch_size, columns=columns
            )
            for got in packed:
                assert torch.equal(got.patched[0], got.donor_logits)


def test_columns_are_the_full_logits_at_those_tokens(tiny_model):
    pairs, variants = _pairs(tiny_model), _all_variants(tiny_model)
    columns = [[5, 9], [3], [100, 5, 7], [1, 2], [8]]
    full = patch_examples(tiny_model, pairs, variants)
    picked = patch_examples(tiny_model, pairs, variants, columns=columns)
    for f, p, cols in zip(full, picked, columns, strict=True):
        assert p.patched.shape == (len(variants), len(cols))
        torch.testing.assert_close(p.patched, f.patched[:, cols], atol=1e-6, rtol=0)
        torch.testing.assert_close(p.donor_logits, f.donor_logits[cols], atol=1e-6, rtol=0)


def test_one_group_equals_groups_of_one(tiny_model):
    """A row's result does not depend on which other examples share its forwards (beyond
    float rounding: a padded recording or a larger matmul sums in another order, ~1e-6)."""
    pairs, variants = _pairs(tiny_model), _all_variants(tiny_model)
    together = patch_examples(tiny_model, pairs, variants)
    for pair, got in zip(pairs, together, strict=True):
        alone = patch_examples(tiny_model, [pair], variants)[0]
        torch.testing.assert_close(got.patched, alone.patched, atol=ATOL, rtol=0)


def test_feature_patching_packs_like_the_per_example_path(tiny_model):
    sae = make_sae(tiny_model.cfg.d_model)
    pairs = _pairs(tiny_model)
    for site in (FeatureSite(sae, (3, 7, 11)), FeatureSite(sae, tuple(range(48)), error=True)):
        variants = site.variants()
        packed = patch_examples(tiny_model, pairs, variants, site=site, batch_size=6)
        for (recipient, donor), got in zip(pairs, packed, strict=True):
            want = patch_pair(tiny_model, recipient, donor, variants, site=site)
            torch.testing.assert_close(got.patched, want.patched_logits, atol=ATOL, rtol=0)
    # all latents plus the error term is residual-stream patching at the SAE's hook
    resid = patch_examples(tiny_model, pairs, [Variant(1, "resid_post")])
    for got, want in zip(packed, resid, strict=True):
        torch.testing.assert_close(got.patched[0], want.patched[0], atol=ATOL, rtol=0)


def test_a_model_without_the_fast_blocks_runs_one_example_at_a_time(tiny_model):
    pairs, variants = _pairs(tiny_model)[:2], _all_variants(tiny_model)[:6]
    fastpath.disable(tiny_model)
    try:
        assert not packable(tiny_model)
        packed = patch_examples(tiny_model, pairs, variants)
        for (recipient, donor), got in zip(pairs, packed, strict=True):
            want = patch_pair(tiny_model, recipient, donor, variants)
            assert torch.equal(got.patched, want.patched_logits)
    finally:
        fastpath.enable(tiny_model)
    assert packable(tiny_model)


def test_group_bytes_counts_the_cache_and_the_tables(tiny_model):
    cfg = tiny_model.cfg
    per_position = cfg.n_key_value_heads * cfg.d_head * cfg.n_layers * 2 * 4  # k + v, float32
    assert group_bytes(tiny_model, 3, 100) == 2 * 3 * 100 * per_position


# --- the pipeline's knob -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fake_run(tiny_model, tmp_path_factory):
    return _write_fake_run(tmp_path_factory.mktemp("packed") / "run", tiny_model)


@pytest.mark.parametrize(
    "config", [{"component": "all"}, {"component": "heads", "positions": "last:2"}]
)
def test_run_tables_equal_one_example_at_a_time(tiny_model, fake_run, config):
    base = {"layer": "all", "round": 2, "n_boot": 0, **config}
    packed = patch(fake_run.path, PatchConfig(**base), model=tiny_model, write=False)
    alone = patch(
        fake_run.path, PatchConfig(**base, example_batch=1), model=tiny_model, write=False
    )
    small = patch(
        fake_run.path, PatchConfig(**base, example_batch=2), model=tiny_model, write=False
    )
    keys = ["example_index", "example_id", "method", "layer", "component", "head"]
    for other in (alone, small):
        pd.testing.assert_frame_equal(packed.per_example[keys], other.per_example[keys])
        a, b = packed.per_example, other.per_example
        for column in ("clean", "source", "patched"):
            assert (a[column] - b[column]).abs().max() <= ATOL, column
        # effect = (patched - clean) / (source - clean): logit errors divided by the gap
        bound = 3 * ATOL / (a["source"] - a["clean"]).abs()
        assert ((a["effect"] - b["effect"]).abs() <= bound).all()
    assert "example_batch" not in packed.summary["config"]  # earlier summaries unchanged
    assert alone.summary["config"]["example_batch"] == 1


def test_example_batch_below_one_is_refused(tiny_model, fake_run):
    with pytest.raises(InterpError, match="example_batch must be at least 1"):
        patch(fake_run.path, PatchConfig(layer=1, round=1, example_batch=0), model=tiny_model)
