"""The fast block path against TransformerLens' own block forward: bitwise equal, and taken
only when it may be (see interp/model/fastpath.py)."""

from __future__ import annotations

import copy

import pytest
import torch
from transformer_lens import HookedTransformer, HookedTransformerConfig
from transformer_lens.cache.key_value_cache import TransformerLensKeyValueCache

from interp.errors import InterpError
from interp.model import fastpath
from interp.model.loading import load_model


@pytest.fixture
def models(tiny_model):
    """(fast, reference): a copy of the tiny model with the fast path, and one without."""
    fast = copy.deepcopy(tiny_model)
    ref = copy.deepcopy(tiny_model)
    fastpath.disable(ref)
    assert fastpath.is_enabled(fast) and not any(
        isinstance(b, fastpath.FastBlock) for b in ref.blocks
    )
    return fast, ref


def _batch(model, n=3, length=20, seed=0):
    tokens = torch.randint(
        0, model.cfg.d_vocab, (n, length), generator=torch.Generator().manual_seed(seed)
    )
    mask = torch.ones(n, length, dtype=torch.long)
    mask[1, :5] = 0  # left padding, of different lengths
    mask[2, :11] = 0
    return tokens, mask


def _steps(model, tokens, mask, n_steps=6):
    """A prompt through a fresh KV cache, then greedy single-token steps: every output."""
    cache = TransformerLensKeyValueCache.init_cache(model.cfg, model.cfg.device, tokens.shape[0])
    outs = [model(tokens, attention_mask=mask, past_kv_cache=cache)]
    for _ in range(n_steps):
        outs.append(model(outs[-1][:, -1:].argmax(-1), past_kv_cache=cache))
    return outs


def test_load_model_enables_it(tiny_model):
    assert fastpath.is_enabled(tiny_model)
    assert all(type(b) is fastpath.FastBlock for b in load_model("tiny").blocks)


@torch.no_grad()
def test_forward_is_bitwise_equal_and_takes_the_fast_path(models, tl_calls):
    fast, ref = models
    tokens, mask = _batch(fast)
    ones = torch.ones_like(mask)  # a mask without padding: rotary by slices, not gathers
    outputs = [
        fast(tokens),
        fast(tokens, attention_mask=mask),
        fast(tokens, attention_mask=ones),
        *_steps(fast, tokens, mask),
        *_steps(fast, tokens, ones),
    ]
    assert tl_calls == []  # not one block went down TransformerLens' path
    expected = [
        ref(tokens),
        ref(tokens, attention_mask=mask),
        ref(tokens, attention_mask=ones),
        *_steps(ref, tokens, mask),
        *_steps(ref, tokens, ones),
    ]
    assert len(outputs) == len(expected) == 17
    for ours, theirs in zip(outputs, expected, strict=True):
        assert torch.equal(ours, theirs)


@torch.no_grad()
@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_half_precision_is_bitwise_equal(dtype, tl_calls):
    """RMSNorm computes in float32 and casts back in half precision; the fast path too."""
    fast = load_model("tiny", dtype=dtype)
    ref = copy.deepcopy(fast)
    fastpath.disable(ref)
    tokens, mask = _batch(fast)
    ours = _steps(fast, tokens, mask, n_steps=2)
    assert tl_calls == [] and ours[0].dtype == getattr(torch, dtype)
    for a, b in zip(ours, _steps(ref, tokens, mask, n_steps=2), strict=True):
        assert torch.equal(a, b)


@torch.no_grad()
def test_generate_gives_identical_tokens(models):
    fast, ref = models
    tok = fast.tokenizer
    prompt = torch.tensor([tok("Who was not comfortable using the phone?")["input_ids"]])
    kwargs = dict(max_new_tokens=12, do_sample=False, verbose=False, stop_at_eos=False)
    assert torch.equal(fast.generate(prompt, **kwargs), ref.generate(prompt, **kwargs))


@torch.no_grad()
def test_an_edited_mask_is_not_served_from_the_memo(models):
    """The per-forward memo keys on the mask's values, not on the tensor object."""
    fast, ref = models
    tokens, mask = _batch(fast)
    fast(tokens, attention_mask=mask)
    mask[0, :7] = 0  # in place: same object, same shape
    assert torch.equal(fast(tokens, attention_mask=mask), ref(tokens, attention_mask=mask))


@torch.no_grad()
@pytest.mark.parametrize(
    "hook", ["hook_resid_pre", "hook_attn_out", "hook_resid_mid", "hook_mlp_out", "hook_resid_post"]
)
def test_residual_hooks_run_on_the_fast_path(models, tl_calls, hook):
    """A hook that replaces a residual-stream value (as patching does) is applied by the fast
    path exactly where TransformerLens applies it."""
    fast, ref = models
    tokens, _ = _batch(fast)
    seen = []

    def scale(x, hook):
        seen.append(hook.name)
        return x * 1.5

    name = f"blocks.1.{hook}"
    ours = fast.run_with_hooks(tokens, fwd_hooks=[(name, scale)])
    assert tl_calls == [] and seen == [name]
    theirs = ref.run_with_hooks(tokens, fwd_hooks=[(name, scale)])
    assert torch.equal(ours, theirs)
    assert not torch.equal(ours, ref(tokens))  # the hook did change the output


@torch.no_grad()
def test_a_hook_inside_a_block_sends_only_that_block_to_transformerlens(models, tl_calls):
    fast, ref = models
    tokens, mask = _batch(fast)

    def zero_head(z, hook):
        z[:, :, 0] = 0.0
        return z

    hooks = [("blocks.1.attn.hook_z", zero_head)]
    ours = fast.run_with_hooks(tokens, attention_mask=mask, fwd_hooks=hooks)
    assert tl_calls == [fast.blocks[1]]
    assert torch.equal(ours, ref.run_with_hooks(tokens, attention_mask=mask, fwd_hooks=hooks))


@torch.no_grad()
def test_run_with_cache_matches_transformerlens(models):
    fast, ref = models
    tokens, mask = _batch(fast)
    logits, cache = fast.run_with_cache(tokens, attention_mask=mask)
    ref_logits, ref_cache = ref.run_with_cache(tokens, attention_mask=mask)
    assert torch.equal(logits, ref_logits) and torch.equal(
        logits, fast(tokens, attention_mask=mask)
    )
    names = sorted(ref_cache.keys())
    assert sorted(cache.keys()) == names
    for name in names:
        assert torch.equal(cache[name], ref_cache[name]), name
    # only the residual stream cached: the fast path, and the same values
    resid = lambda name: name.endswith("hook_resid_post")  # noqa: E731
    _, small = fast.run_with_cache(tokens, attention_mask=mask, names_filter=resid)
    assert len(small.keys()) == fast.cfg.n_layers
    for name in list(small.keys()):
        assert torch.equal(small[name], ref_cache[name])


def test_autograd_takes_transformerlens_path(models, tl_calls):
    fast, ref = models
    tokens, _ = _batch(fast)
    embed = fast.embed(tokens).detach().requires_grad_(True)
    fast(embed, start_at_layer=0).sum().backward()
    assert len(tl_calls) == fast.cfg.n_layers
    ref_embed = embed.detach().clone().requires_grad_(True)
    ref(ref_embed, start_at_layer=0).sum().backward()
    assert torch.equal(embed.grad, ref_embed.grad)


@pytest.mark.parametrize("hook", ["hook_resid_pre", "hook_attn_out", "hook_resid_mid"])
def test_gradients_from_a_hook_are_transformerlens_own(models, hook):
    """A hook on a residual hook point may hand the block a tensor that requires grad (the
    block's input did not): the gradients are still bitwise TransformerLens' own."""
    fast, ref = models
    tokens, mask = _batch(fast)
    grads = []
    for model in (fast, ref):
        leaf = []

        def make_leaf(x, hook, leaf=leaf):
            leaf.append(x.detach().clone().requires_grad_(True))
            return leaf[-1]

        logits = model.run_with_hooks(
            tokens, attention_mask=mask, fwd_hooks=[(f"blocks.1.{hook}", make_leaf)]
        )
        logits.log_softmax(-1)[:, -1].sum().backward()
        grads.append(leaf[0].grad)
    assert grads[0] is not None and torch.equal(grads[0], grads[1])


@torch.no_grad()
def test_unsupported_flags_and_global_hooks_fall_back(models, tl_calls):
    fast, ref = models
    tokens, _ = _batch(fast)
    fast.set_use_attn_result(True)
    ref.set_use_attn_result(True)
    assert not fast.blocks[0].fast_path_ready()
    ours = fast(tokens)
    assert len(tl_calls) == fast.cfg.n_layers
    assert torch.equal(ours, ref(tokens))
    fast.set_use_attn_result(False)
    handle = torch.nn.modules.module.register_module_forward_hook(lambda *args: None)
    try:
        tl_calls.clear()
        fast(tokens)
        assert len(tl_calls) == fast.cfg.n_layers
    finally:
        handle.remove()
    tl_calls.clear()
    fast(tokens)
    assert tl_calls == []


@torch.no_grad()
def test_a_replaced_submodule_is_checked_for_hooks(models, tl_calls):
    fast, ref = models
    tokens, _ = _batch(fast)
    block = fast.blocks[0]
    block.mlp = copy.deepcopy(block.mlp)  # a module the block has not seen
    block.mlp.hook_post.add_hook(lambda x, hook: x * 0.0)
    ref.blocks[0].mlp.hook_post.add_hook(lambda x, hook: x * 0.0)
    ours = fast(tokens)
    assert tl_calls == [block]
    assert torch.equal(ours, ref(tokens))


@torch.no_grad()
def test_a_replaced_nested_hook_point_is_checked(models, tl_calls):
    from transformer_lens.hook_points import HookPoint

    fast, _ = models
    tokens, _ = _batch(fast)
    block = fast.blocks[1]
    block.attn.hook_z = HookPoint()  # deeper than the block's own children
    block.attn.hook_z.add_hook(lambda z, hook: z * 0.0)
    fast(tokens)
    assert tl_calls == [block]


@torch.no_grad()
@pytest.mark.parametrize(
    "change",
    [
        {"n_key_value_heads": None},  # multi-head attention, not grouped
        {"rotary_adjacent_pairs": True},  # GPT-J-style pairs
        {"rotary_dim": 8},  # rotary over half of each head, the rest passed through
    ],
    ids=["mha", "adjacent-pairs", "partial-rotary"],
)
def test_other_llama_style_variants_are_bitwise_equal(change, tl_calls):
    """Branches the tiny and embedded models do not take (both are GQA, NeoX-style pairs,
    rotary over the whole head)."""
    from interp.model.loading import attach_tokenizer
    from interp.model.tiny import TINY_CONFIG, build_tiny_tokenizer

    tokenizer = build_tiny_tokenizer()
    cfg = HookedTransformerConfig(**{**TINY_CONFIG, **change, "d_vocab": len(tokenizer)})
    fast = HookedTransformer(cfg).eval()
    attach_tokenizer(fast, tokenizer)  # cached steps without a mask ask the tokenizer for one
    ref = copy.deepcopy(fast)
    assert fastpath.enable(fast) == {}
    tokens, mask = _batch(fast)
    ours = _steps(fast, tokens, mask, n_steps=3)
    assert tl_calls == []
    for a, b in zip(ours, _steps(ref, tokens, mask, n_steps=3), strict=True):
        assert torch.equal(a, b)


def test_unsupported_architectures_are_left_alone():
    cfg = HookedTransformerConfig(
        n_layers=2, d_model=32, n_heads=2, d_head=16, d_mlp=64, n_ctx=64, d_vocab=50,
        act_fn="gelu", normalization_type="LN",
    )  # fmt: skip
    model = HookedTransformer(cfg)
    skipped = fastpath.enable(model)
    assert set(skipped) == {0, 1} and "not a gated MLP" in skipped[0]
    assert not any(isinstance(b, fastpath.FastBlock) for b in model.blocks)


@pytest.mark.parametrize("version", ["3.9.0", "3.9.7"])
def test_supported_transformer_lens_versions(version):
    assert fastpath.unsupported_transformer_lens(version) is None


@pytest.mark.parametrize("version", ["3.8.2", "3.10.0", "4.0.0", "weird"])
def test_other_transformer_lens_versions_are_named_with_the_range(version):
    reason = fastpath.unsupported_transformer_lens(version)
    assert reason is not None and version in reason and ">=3.9,<3.10" in reason


def test_enable_outside_the_range_warns_and_keeps_transformerlens_blocks(tiny_model, monkeypatch):
    model = copy.deepcopy(tiny_model)
    fastpath.disable(model)
    monkeypatch.setattr(fastpath.metadata, "version", lambda name: "4.0.0")
    with pytest.warns(RuntimeWarning, match=r"transformer-lens 4\.0\.0 .*>=3\.9,<3\.10"):
        skipped = fastpath.enable(model)
    assert sorted(skipped) == list(range(len(model.blocks)))
    assert not any(isinstance(b, fastpath.FastBlock) for b in model.blocks)


def test_the_supported_range_is_the_pyproject_pin():
    import tomllib
    from pathlib import Path

    pyproject = Path(__file__).resolve().parents[3] / "pyproject.toml"
    deps = tomllib.loads(pyproject.read_text())["project"]["dependencies"]
    assert f"transformer-lens{fastpath.SUPPORTED_TRANSFORMER_LENS}" in deps


# ---------------------------------------------------------------------------------------------
# The sdpa attention (fastpath.set_attention): equal to the exact path up to rounding


@pytest.fixture
def sdpa_calls(monkeypatch):
    """Counts calls of torch's scaled_dot_product_attention (the sdpa path's kernel)."""
    calls = []
    original = torch.nn.functional.scaled_dot_product_attention

    def counted(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", counted)
    return calls


def _sdpa_copy(model):
    sdpa = copy.deepcopy(model)
    assert fastpath.set_attention(sdpa, "sdpa") == "exact"
    assert fastpath.attention_kind(sdpa) == "sdpa" and fastpath.attention_kind(model) == "exact"
    return sdpa


def _assert_close_same_argmax(ours, theirs):
    assert len(ours) == len(theirs)
    for a, b in zip(ours, theirs, strict=True):
        assert (a - b).abs().max().item() <= 1e-5
        assert torch.equal(a.argmax(-1), b.argmax(-1))


@torch.no_grad()
def test_sdpa_logits_equal_the_exact_path_with_and_without_kv_cache(models, tl_calls, sdpa_calls):
    fast, _ = models
    sdpa = _sdpa_copy(fast)
    tokens, mask = _batch(fast)
    ones = torch.ones_like(mask)

    def outputs(model):
        return [
            model(tokens),
            model(tokens, attention_mask=mask),
            model(tokens, attention_mask=ones),
            *_steps(model, tokens, mask),
            *_steps(model, tokens, ones),
            *_steps(model, tokens, None),
        ]

    ours = outputs(sdpa)
    assert tl_calls == [] and len(sdpa_calls) == len(ours) * fast.cfg.n_layers
    sdpa_calls.clear()
    exact = outputs(fast)
    assert sdpa_calls == [] and tl_calls == []
    _assert_close_same_argmax(ours, exact)
    assert not all(torch.equal(a, b) for a, b in zip(ours, exact, strict=True))  # another kernel


@torch.no_grad()
def test_sdpa_generate_gives_the_exact_paths_tokens(models, sdpa_calls):
    fast, ref = models
    sdpa = _sdpa_copy(fast)
    tok = fast.tokenizer
    prompt = torch.tensor([tok("Who was not comfortable using the phone?")["input_ids"]])
    kwargs = dict(max_new_tokens=12, do_sample=False, verbose=False, stop_at_eos=False)
    assert torch.equal(sdpa.generate(prompt, **kwargs), ref.generate(prompt, **kwargs))
    assert len(sdpa_calls) == 12 * fast.cfg.n_layers


@torch.no_grad()
@pytest.mark.parametrize("hook", ["hook_pattern", "hook_attn_scores"])
def test_sdpa_falls_back_to_the_exact_path_where_attention_hooks_are_active(
    models, tl_calls, sdpa_calls, hook
):
    """SDPA never forms the scores or the pattern: a block with such a hook runs
    TransformerLens' path (the hook sees the real pattern), the others keep sdpa; with the
    hook on every block nothing runs on sdpa and the outputs, prompt and cached steps, are
    bitwise TransformerLens' own."""
    fast, ref = models
    sdpa = _sdpa_copy(fast)
    tokens, mask = _batch(fast)
    seen = {}

    def keep(x, hook):
        seen[hook.name] = x.clone()

    one = [(f"blocks.1.attn.{hook}", keep)]
    ours = sdpa.run_with_hooks(tokens, attention_mask=mask, fwd_hooks=one)
    assert tl_calls == [sdpa.blocks[1]] and len(sdpa_calls) == fast.cfg.n_layers - 1
    ours_seen = seen.pop(one[0][0])
    theirs = ref.run_with_hooks(tokens, attention_mask=mask, fwd_hooks=one)
    # block 0 ran on sdpa, so block 1's input (and pattern) is the reference's up to rounding
    torch.testing.assert_close(ours_seen, seen.pop(one[0][0]), rtol=0, atol=1e-5)
    _assert_close_same_argmax([ours], [theirs])

    every = [(lambda name: name.endswith(hook), keep)]
    tl_calls.clear()
    sdpa_calls.clear()
    with sdpa.hooks(fwd_hooks=every):
        hooked = _steps(sdpa, tokens, mask, n_steps=3)
    assert sdpa_calls == [] and len(tl_calls) == 4 * fast.cfg.n_layers
    with ref.hooks(fwd_hooks=every):
        expected = _steps(ref, tokens, mask, n_steps=3)
    for a, b in zip(hooked, expected, strict=True):
        assert torch.equal(a, b)
    tl_calls.clear()
    sdpa(tokens)  # the hooks are gone: sdpa again
    assert tl_calls == [] and len(sdpa_calls) == fast.cfg.n_layers


@torch.no_grad()
def test_sdpa_on_multi_head_attention(tl_calls):
    """The tiny model is grouped-query; plain multi-head attention takes the other branch."""
    from interp.model.loading import attach_tokenizer
    from interp.model.tiny import TINY_CONFIG, build_tiny_tokenizer

    tokenizer = build_tiny_tokenizer()
    cfg = HookedTransformerConfig(
        **{**TINY_CONFIG, "n_key_value_heads": None, "d_vocab": len(tokenizer)}
    )
    exact = HookedTransformer(cfg).eval()
    attach_tokenizer(exact, tokenizer)
    assert fastpath.enable(exact) == {}
    sdpa = copy.deepcopy(exact)
    fastpath.disable(sdpa)
    assert fastpath.enable(sdpa, attention="sdpa") == {}
    tokens, mask = _batch(exact)
    ours = _steps(sdpa, tokens, mask, n_steps=3)
    assert tl_calls == []
    _assert_close_same_argmax(ours, _steps(exact, tokens, mask, n_steps=3))


def test_unknown_attention_is_refused(models):
    fast, _ = models
    with pytest.raises(InterpError, match="unknown attention 'flash'; use one of exact, sdpa"):
        fastpath.set_attention(fast, "flash")
    with pytest.raises(InterpError, match="unknown attention"):
        fastpath.enable(copy.deepcopy(fast), attention="flash")
    ref = copy.deepcopy(fast)
    fastpath.disable(ref)
    assert fastpath.attention_kind(ref) is None
    with pytest.raises(InterpError, match="no block of this model takes the fast path"):
        fastpath.set_attention(ref, "sdpa")


@torch.no_grad()
def test_sdpa_sees_weights_edited_or_replaced_after_a_forward(models):
    """The sdpa path stacks q, k, v weights into one matrix, kept between forwards: an
    in-place edit or a replaced parameter must not be served from the stale copy."""
    fast, _ = models
    sdpa = _sdpa_copy(fast)
    tokens, mask = _batch(fast)
    before = sdpa(tokens, attention_mask=mask)
    for model in (fast, sdpa):
        model.blocks[1].attn._W_K.mul_(3.0)
        model.blocks[0].attn.b_Q.add_(0.5)
        w_v = model.blocks[2].attn._W_V
        model.blocks[2].attn._W_V = torch.nn.Parameter(w_v * -1.0)
    after = sdpa(tokens, attention_mask=mask)
    assert (after - before).abs().max() > 1e-2
    _assert_close_same_argmax([after], [fast(tokens, attention_mask=mask)])
