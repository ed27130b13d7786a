"""A hook-free fast path through TransformerLens' blocks, bitwise equal to the hooked one.

Why: on a small model (SmolLM2-135M) a generation step is one token through 30 blocks, and
TransformerLens 3.9's block spends about as long in Python as in matrix products. For a
Llama-style block it runs ``ln1`` three times (once each for the query, key and value
inputs), calls ~14 ``HookPoint`` modules, parses ~10 einops patterns, and rebuilds the causal
mask and the rotary position ids in every layer. With no hook attached, none of that changes
a single number.

How: :func:`enable` switches every supported block of a loaded model to :class:`FastBlock`,
a ``TransformerBlock`` subclass. Its ``forward`` runs the same tensor operations, on the same
operands, in the same order as TransformerLens' forward, without the Python around them:
``ln1`` once, the causal mask and the rotary position ids once per forward for all layers
(memoised on the attention mask's contents), hook points without hooks not called. The
results are bitwise equal to TransformerLens' path; tests assert ``torch.equal``, not
``allclose``, on logits, KV-cached steps, left-padded batches and generated tokens. Where
the config asks for something this path does not implement (``use_attn_result``,
``use_split_qkv_input``, ...) or a PyTorch global module hook is registered, the block runs
TransformerLens' forward.

Hooks on the residual-stream hook points (``hook_resid_pre``, ``hook_attn_out``,
``hook_resid_mid``, ``hook_mlp_out``, ``hook_resid_post``) keep the fast path: it calls those
hook points where TransformerLens does, so caching or patching them works as usual. A hook
anywhere else in a block (``attn.hook_z``, ``ln1.hook_normalized``, ...) sends that block,
and only that block, down TransformerLens' path. So does a block whose input or parameters
autograd tracks. When a residual hook hands the block a tracked tensor midway, the fast path
computes ``ln1`` once per input, as TransformerLens does, so gradients sum in the same order
and are bitwise its own (tested). :func:`disable` switches a model back.

Attention: exact by default (above). ``set_attention(model, "sdpa")`` (or ``enable(model,
attention="sdpa")``) computes it instead in one ``torch.nn.functional.scaled_dot_product_attention``
call per block, the grouped key-value heads shared by the kernel rather than repeated: equal to
the exact path up to floating-point rounding (logits within 1e-5 on the tiny model, greedy tokens
identical to HF transformers' on the embedded one), faster in generation
(``benchmarks/load_and_generate.py``), not bitwise, so not the default. A hook on an attention
hook point (``hook_pattern``, ``hook_attn_scores``, ...) sends its block to TransformerLens'
exact path either way.
"""

from __future__ import annotations

import warnings
from importlib import metadata

import torch
import torch.nn.functional as F
from jaxtyping import Bool, Float, Shaped
from torch.nn.modules import module as torch_module
from transformer_lens import HookedTransformer
from transformer_lens.components import Attention, GroupedQueryAttention, RMSNorm
from transformer_lens.components.mlps.gated_mlp import GatedMLP
from transformer_lens.components.transformer_block import TransformerBlock
from transformer_lens.utilities.activation_functions import softcap_enabled
from transformer_lens.utilities.architectures import POST_NORM_ARCHITECTURES
from transformer_lens.utilities.tensors import get_offset_position_ids

from interp.errors import InterpError

_FLOAT_DTYPES = (torch.float32, torch.float64)

# The fast path repeats TransformerLens 3.9's block forward and reads its private attributes
# (``attn._W_K``, ``attn._attention_dir_override``, ``attn._extend_rotary_embeddings``), which
# another release may change without notice. Kept equal to the pin in pyproject.toml.
SUPPORTED_TRANSFORMER_LENS = ">=3.9,<3.10"
_SUPPORTED_MINOR = (3, 9)


def unsupported_transformer_lens(version: str | None = None) -> str | None:
    """Why TransformerLens ``version`` (default: the installed one) cannot take the fast path,
    or None when it is in the supported range.

    Args:
        version: A TransformerLens version string such as ``"3.9.1"``; None reads the installed
            package's version.

    Returns:
        None for a 3.9.x version (``SUPPORTED_TRANSFORMER_LENS``), else the reason blocks keep
        TransformerLens' own forward.
    """
    if version is None:
        version = metadata.version("transformer-lens")
    parts = version.split(".")
    try:
        minor = (int(parts[0]), int(parts[1]))
    except (IndexError, ValueError):
        minor = None
    if minor == _SUPPORTED_MINOR:
        return None
    return (
        f"transformer-lens {version} is outside the range the fast path supports "
        f"({SUPPORTED_TRANSFORMER_LENS}); blocks run TransformerLens' own forward"
    )


_INF = float("inf")
ATTENTION_KINDS = ("exact", "sdpa")  # the fast path's attention: see set_attention


class _Memo:
    """Per-forward values every layer shares, keyed on the attention mask's contents.

    One entry per kind. The key is compared by value (a copy of the mask, ``torch.equal``),
    so an edited or reallocated mask can never hit a stale entry; inference tensors (as
    ``generate`` makes them) have no version counter to go by.
    """

    def __init__(self, attention: str = "exact") -> None:
        self.attention = attention  # "exact" or "sdpa" (ATTENTION_KINDS), for every block
        self.position_ids: tuple[tuple, torch.Tensor | None, torch.Tensor] | None = None
        self.causal: tuple[tuple, torch.Tensor | None, torch.Tensor] | None = None

    @staticmethod
    def _hit(entry, key: tuple, mask: torch.Tensor | None) -> bool:
        if entry is None or entry[0] != key:
            return False
        if mask is None or entry[1] is None:
            return mask is None and entry[1] is None
        return torch.equal(entry[1], mask)

    def offset_position_ids(
        self, mask: Shaped[torch.Tensor, "batch key_pos"]
    ) -> Shaped[torch.Tensor, "batch key_pos"] | None:
        """``get_offset_position_ids(0, mask)``: position ids of every cached and new token;
        None when the mask has no padding, so that the ids are 0, 1, 2, ... in every row."""
        key = (tuple(mask.shape), mask.dtype, mask.device)
        if not self._hit(self.position_ids, key, mask):
            ids = None if bool(mask.all()) else get_offset_position_ids(0, mask)
            self.position_ids = (key, mask.clone(), ids)
        return self.position_ids[2]

    def causal_mask(
        self,
        q_len: int,
        k_len: int,
        offset: int,
        mask: Shaped[torch.Tensor, "batch key_pos"] | None,
        device: torch.device | str,
    ) -> Bool[torch.Tensor, "mask_batch 1 q_pos key_pos"]:
        """TransformerLens' ``apply_causal_mask`` mask (global attention), as a bool tensor
        ``[batch or 1, 1, q_len, k_len]``."""
        shape = None if mask is None else (tuple(mask.shape), mask.dtype, mask.device)
        key = (shape, q_len, k_len, offset, str(device))
        if not self._hit(self.causal, key, mask):
            query = torch.arange(offset, offset + q_len, device=device)
            keys = torch.arange(k_len, device=device)
            final = (keys[None, :] <= query[:, None])[None, None, :, :]
            if mask is not None:
                final = final & mask[:, None, None, :].bool()
            self.causal = (key, None if mask is None else mask.clone(), final)
        return self.causal[2]


def _static_support(block: torch.nn.Module) -> str | None:
    """Why ``block`` cannot take the fast path whatever the runtime flags, or None."""
    if type(block) not in (TransformerBlock, FastBlock):
        return f"block is a {type(block).__name__}"
    if type(block.attn) not in (Attention, GroupedQueryAttention):
        return f"attention is a {type(block.attn).__name__}"
    if type(block.mlp) is not GatedMLP:
        return f"MLP is a {type(block.mlp).__name__}, not a gated MLP"
    if type(block.ln1) is not RMSNorm or type(block.ln2) is not RMSNorm:
        return "normalisation is not RMSNorm"
    if block.attn.attn_type != "global":
        return "local attention"
    cfg = block.cfg
    if cfg.positional_embedding_type != "rotary" or cfg.rotary_dim is None:
        return f"positional embedding is {cfg.positional_embedding_type}, not rotary"
    unsupported = {
        "original_architecture in POST_NORM_ARCHITECTURES": cfg.original_architecture
        in POST_NORM_ARCHITECTURES,
        "use_normalization_before_and_after": cfg.use_normalization_before_and_after,
        "attn_only": cfg.attn_only,
        "parallel_attn_mlp": cfg.parallel_attn_mlp,
        "load_in_4bit": cfg.load_in_4bit,
        "use_qk_norm": cfg.use_qk_norm,
        "clip_qkv": cfg.clip_qkv is not None,
        "use_logn_attn": cfg.use_logn_attn,
        "use_dynamic_ntk_rope": cfg.use_dynamic_ntk_rope,
        "use_attention_sinks": cfg.use_attention_sinks,
        "attention_dir != causal": cfg.attention_dir != "causal",
        "layer-norm activation": cfg.is_layer_norm_activation(),
        "attention scores soft cap": softcap_enabled(cfg.attn_scores_soft_cap),
        "ungroup_grouped_query_attention": cfg.ungroup_grouped_query_attention,
        "n_devices > 1": cfg.n_devices != 1,
    }
    reasons = [name for name, bad in unsupported.items() if bad]
    return ", ".join(reasons) if reasons else None


# Hook points the fast path calls itself, exactly where TransformerLens' block does.
_CALLED_HOOKS = (
    "hook_resid_pre",
    "hook_attn_out",
    "hook_resid_mid",
    "hook_mlp_out",
    "hook_resid_post",
)


def _hooked(block: torch.nn.Module) -> bool:
    """True when a hook sits on a module the fast path does not call: any submodule of the
    block but the residual hook points (hooks on the block itself run either way), or a
    PyTorch global module hook. Walked on every forward, so a replaced submodule counts."""
    if (
        torch_module._global_forward_hooks
        or torch_module._global_forward_pre_hooks
        or torch_module._global_backward_hooks
        or torch_module._global_backward_pre_hooks
    ):
        return True
    stack = [m for name, m in block._modules.items() if m is not None and name not in _CALLED_HOOKS]
    while stack:
        m = stack.pop()
        if m._forward_hooks or m._forward_pre_hooks or m._backward_hooks or m._backward_pre_hooks:
            return True
        stack.extend(child for child in m._modules.values() if child is not None)
    return False


class FastBlock(TransformerBlock):
    """A ``TransformerBlock`` that skips the hook machinery when no hook is attached.

    Instances are made by :func:`enable` (class switch of a loaded block); the parameters,
    buffers, hook points and ``state_dict`` are the block's own, unchanged.
    """

    _fast_memo: _Memo
    _fast_children: tuple

    def fast_path_ready(
        self, resid_pre: Float[torch.Tensor, "batch pos d_model"] | None = None
    ) -> bool:
        """True when a forward (of ``resid_pre``, if given) takes the fast path.

        Args:
            resid_pre: The residual stream about to enter the block; None checks only the block
                (its options, submodules and hooks).

        Returns:
            False when autograd would record the forward, when the config asks for split or
            per-head inputs or results, when a submodule was replaced by an unsupported kind, or
            when any hook is attached; True otherwise.
        """
        cfg = self.cfg
        if torch.is_grad_enabled() and (
            (resid_pre is not None and resid_pre.requires_grad)
            or any(p.requires_grad for p in self.parameters())
        ):
            # Autograd would record the graph: TransformerLens' path, so that gradients are
            # its own (computing ln1 once would sum the three gradient paths in another order).
            return False
        if cfg.use_attn_result or cfg.use_split_qkv_input or cfg.use_attn_in:
            return False
        if cfg.use_hook_mlp_in or self.attn._attention_dir_override not in (None, "causal"):
            return False
        children = (self.attn, self.mlp, self.ln1, self.ln2)
        if children != self._fast_children:  # a submodule was replaced: check its kind
            if _static_support(self) is not None:
                return False
            self._fast_children = children
        return not _hooked(self)

    def forward(
        self,
        resid_pre: Float[torch.Tensor, "batch pos d_model"],
        shortformer_pos_embed: Float[torch.Tensor, "batch pos d_model"] | None = None,
        past_kv_cache_entry=None,
        attention_mask: Shaped[torch.Tensor, "batch key_pos"] | None = None,
    ) -> Float[torch.Tensor, "batch pos d_model"]:
        """The block's forward: the fast path when ready, else TransformerLens' own.

        Args:
            resid_pre: The residual stream entering the block.
            shortformer_pos_embed: Shortformer positional embedding; when given, TransformerLens'
                forward runs.
            past_kv_cache_entry: This layer's key-value cache entry, or None.
            attention_mask: 1 for real tokens, 0 for padding, over all key positions (cached
                ones included); None when nothing is padded.

        Returns:
            The residual stream after the block (``resid_post``), equal to what
            ``TransformerBlock.forward`` returns.
        """
        if shortformer_pos_embed is not None or not self.fast_path_ready(resid_pre):
            return super().forward(
                resid_pre,
                shortformer_pos_embed=shortformer_pos_embed,
                past_kv_cache_entry=past_kv_cache_entry,
                attention_mask=attention_mask,
            )
        # The residual-stream hook points are called as TransformerLens calls them (a hook
        # there may read or replace the value); the rest are skipped, having no hooks.
        resid_pre = self.hook_resid_pre(resid_pre)
        # TransformerLens adds the (absent) shortformer embedding to the query and key inputs
        # as ``+ 0.0``; kept, since it turns a -0.0 into +0.0.
        if torch.is_grad_enabled() and resid_pre.requires_grad:
            # The hook handed us a tensor autograd tracks: ln1 once per input, in
            # TransformerLens' order, so that the gradients sum as they do there.
            q_input = _rms_norm(self.ln1, resid_pre) + 0.0
            k_input = _rms_norm(self.ln1, resid_pre) + 0.0
            v_input = _rms_norm(self.ln1, resid_pre)
        else:
            v_input = _rms_norm(self.ln1, resid_pre)
            q_input = k_input = v_input + 0.0
        attn_out = self._attention(q_input, k_input, v_input, past_kv_cache_entry, attention_mask)
        attn_out = self.hook_attn_out(attn_out)
        resid_mid = self.hook_resid_mid(resid_pre + attn_out)
        mlp_out = self.hook_mlp_out(_gated_mlp(self.mlp, _rms_norm(self.ln2, resid_mid)))
        return self.hook_resid_post(resid_mid + mlp_out)

    def _attention(
        self,
        q_input: Float[torch.Tensor, "batch pos d_model"],
        k_input: Float[torch.Tensor, "batch pos d_model"],
        v_input: Float[torch.Tensor, "batch pos d_model"],
        cache_entry,
        attention_mask: Shaped[torch.Tensor, "batch key_pos"] | None,
    ) -> Float[torch.Tensor, "batch pos d_model"]:
        """``AbstractAttention.forward`` for global causal rotary attention, MHA or GQA."""
        attn = self.attn
        grouped = isinstance(attn, GroupedQueryAttention)
        sdpa = self._fast_memo.attention == "sdpa"
        if sdpa and q_input is k_input:  # one input (no autograd): one matmul for q, k, v
            q, k, v = self._fused_qkv(q_input, grouped)
        else:
            q = _attn_linear(q_input, attn.W_Q, attn.b_Q)
            if grouped:
                k = _attn_linear(k_input, attn._W_K, attn._b_K)
                v = _attn_linear(v_input, attn._W_V, attn._b_V)
            else:
                k = _attn_linear(k_input, attn.W_K, attn.b_K)
                v = _attn_linear(v_input, attn.W_V, attn.b_V)
        if cache_entry is not None:
            offset = cache_entry.past_keys.size(1)
            k, v = cache_entry.append(k, v)
        else:
            offset = 0
        q = self._rotary(q, offset, attention_mask)
        k = self._rotary(k, 0, attention_mask)  # keys are cached unrotated
        if sdpa:
            z = self._sdpa(q, k, v, offset, attention_mask, grouped)
            return _attn_out(attn, z)
        if grouped:
            k = torch.repeat_interleave(k, dim=2, repeats=attn.repeat_kv_heads)
        scores = q.permute(0, 2, 1, 3) @ k.permute(0, 2, 3, 1) / attn.attn_scale
        q_len, k_len = scores.size(-2), scores.size(-1)
        if q_len + offset != k_len:
            raise ValueError(f"query length {q_len} + cache offset {offset} != key length {k_len}")
        device = attention_mask.device if attention_mask is not None else scores.device
        final_mask = self._fast_memo.causal_mask(q_len, k_len, offset, attention_mask, device)
        scores = torch.where(final_mask, scores.to(final_mask.device), attn.IGNORE.to(device))
        pattern = F.softmax(scores, dim=-1)
        # TransformerLens: where(isnan(p), 0, p). Softmax output is never infinite, so
        # nan_to_num with infinities kept is the same map in one operation.
        pattern = torch.nan_to_num(pattern, nan=0.0, posinf=_INF, neginf=-_INF)
        pattern = pattern.to(device=v.device, dtype=v.dtype)
        if grouped:
            v = torch.repeat_interleave(v, dim=2, repeats=attn.repeat_kv_heads)
        z = (pattern @ v.permute(0, 2, 1, 3)).permute(0, 2, 1, 3)
        return _attn_out(attn, z)

    def _fused_qkv(
        self, x: Float[torch.Tensor, "batch pos d_model"], grouped: bool
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Queries, keys and values from one ``F.linear`` on the three weights stacked (the
        sdpa path only: the same products, summed in another blocking). The stacked copy is
        kept on the block and rebuilt when a weight or bias is replaced (another parameter
        object or storage) or edited in place (its version counter moves)."""
        attn = self.attn
        if grouped:
            params = (attn.W_Q, attn._W_K, attn._W_V, attn.b_Q, attn._b_K, attn._b_V)
        else:
            params = (attn.W_Q, attn.W_K, attn.W_V, attn.b_Q, attn.b_K, attn.b_V)
        key = [(p.data_ptr(), p._version) for p in params]
        fused = self.__dict__.get("_fast_qkv")
        if (
            fused is None
            or fused[0] != key
            or any(a is not b for a, b in zip(fused[1], params, strict=True))
        ):
            weights, biases = params[:3], params[3:]
            with torch.no_grad():
                weight = torch.cat(
                    [
                        w.permute(0, 2, 1).reshape(w.shape[0] * w.shape[2], w.shape[1])
                        for w in weights
                    ]
                )
                bias = torch.cat([b.reshape(-1) for b in biases])
            fused = (key, params, weight, bias, [b.shape for b in biases])
            self.__dict__["_fast_qkv"] = fused
        _, _, weight, bias, shapes = fused
        out = F.linear(x, weight, bias)
        parts = out.split([n * d for n, d in shapes], dim=-1)
        return tuple(
            part.view(x.shape[0], x.shape[1], n, d)
            for part, (n, d) in zip(parts, shapes, strict=True)
        )

    def _sdpa(
        self,
        q: Float[torch.Tensor, "batch q_pos head d_head"],
        k: Float[torch.Tensor, "batch k_pos kv_head d_head"],
        v: Float[torch.Tensor, "batch k_pos kv_head d_head"],
        offset: int,
        attention_mask: Shaped[torch.Tensor, "batch key_pos"] | None,
        grouped: bool,
    ) -> Float[torch.Tensor, "batch q_pos head d_head"]:
        """Softmax attention in one ``F.scaled_dot_product_attention`` call (grouped heads
        shared by the kernel, not repeated), the mask as in the exact path: equal to it up to
        floating-point rounding. A query that sees no key (a left-padding position) gets
        zeros, as TransformerLens' NaN-to-zero gives."""
        q_len, k_len = q.size(1), k.size(1)
        if q_len + offset != k_len:
            raise ValueError(f"query length {q_len} + cache offset {offset} != key length {k_len}")
        mask, causal = None, False
        if attention_mask is not None:
            mask = self._fast_memo.causal_mask(
                q_len, k_len, offset, attention_mask, attention_mask.device
            )
        elif q_len > 1:  # without padding, a single query sees every key
            if offset == 0:
                causal = True
            else:
                mask = self._fast_memo.causal_mask(q_len, k_len, offset, None, q.device)
        if v.dtype != q.dtype:
            v = v.to(q.dtype)
        z = F.scaled_dot_product_attention(
            q.transpose(1, 2),
            k.transpose(1, 2),
            v.transpose(1, 2),
            attn_mask=mask,
            is_causal=causal,
            scale=1.0 / self.attn.attn_scale,
            enable_gqa=grouped,
        )
        return z.transpose(1, 2)

    def _rotary(
        self,
        x: Float[torch.Tensor, "batch pos head d_head"],
        offset: int,
        attention_mask: Shaped[torch.Tensor, "batch key_pos"] | None,
    ) -> Float[torch.Tensor, "batch pos head d_head"]:
        """``AbstractAttention.apply_rotary`` (no dynamic NTK)."""
        attn, cfg = self.attn, self.cfg
        rotary_dim = cfg.rotary_dim
        x_pos = x.size(1)
        x_rot, x_pass = x[..., :rotary_dim], x[..., rotary_dim:]
        if cfg.rotary_adjacent_pairs:  # [x0, x1] -> [-x1, x0]
            x_flip = torch.stack((-x_rot[..., 1::2], x_rot[..., ::2]), dim=-1).flatten(-2)
        else:
            half = rotary_dim // 2
            x_flip = torch.cat((-x_rot[..., half:], x_rot[..., :half]), dim=-1)
        if offset + x_pos > attn.rotary_cos.shape[0]:
            attn._extend_rotary_embeddings(
                min(cfg.n_ctx, max(offset + x_pos, 2 * attn.rotary_cos.shape[0]))
            )
        # TransformerLens gathers cos/sin rows by position id when there is a mask and slices
        # them when there is none; rows are copied either way, so the products are the same.
        ids = None
        if attention_mask is not None:
            ids = self._fast_memo.offset_position_ids(attention_mask)
        if ids is None:  # positions offset, offset + 1, ... in every row
            cos = attn.rotary_cos[None, offset : offset + x_pos, None, :]
            sin = attn.rotary_sin[None, offset : offset + x_pos, None, :]
        else:
            ids = ids[:, offset:].to(attn.rotary_cos.device)
            flat = ids.reshape(-1)
            shape = (*ids.shape, 1, attn.rotary_cos.shape[-1])
            cos = attn.rotary_cos.index_select(0, flat).view(shape)
            sin = attn.rotary_sin.index_select(0, flat).view(shape)
        rotated = x_rot * cos + x_flip * sin
        if x_pass.shape[-1] == 0:  # rotary over the whole head: the cat would only copy
            return rotated
        return torch.cat([rotated, x_pass], dim=-1)


def _attn_out(
    attn: torch.nn.Module, z: Float[torch.Tensor, "batch pos head d_head"]
) -> Float[torch.Tensor, "batch pos d_model"]:
    """The heads' outputs through ``W_O`` (and ``b_O``), as ``AbstractAttention.forward``."""
    w_o = attn.W_O
    w = w_o.permute(2, 0, 1).reshape(w_o.shape[2], -1).contiguous()
    if z.dtype != w.dtype:
        z = z.to(w.dtype)
    z = z.reshape(z.shape[0], z.shape[1], w.shape[1])
    return F.linear(z, w, attn.b_O)


def _rms_norm(
    ln: RMSNorm, x: Float[torch.Tensor, "*batch d_model"]
) -> Float[torch.Tensor, "*batch d_model"]:
    """``RMSNorm.forward`` without its hook points."""
    dtype = ln.cfg.dtype
    if dtype not in _FLOAT_DTYPES:
        x = x.to(torch.float32)
    scale = (x.pow(2).mean(-1, keepdim=True) + ln.eps).sqrt()
    return (x / scale).to(dtype) * ln.w


def _attn_linear(
    x: Float[torch.Tensor, "batch pos d_model"],
    w: Float[torch.Tensor, "head d_model d_head"],
    b: Float[torch.Tensor, "head d_head"],
) -> Float[torch.Tensor, "batch pos head d_head"]:
    """``simple_attn_linear``: [batch, pos, d_model] -> [batch, pos, head, d_head]."""
    weight = w.permute(0, 2, 1).reshape(w.shape[0] * w.shape[2], w.shape[1])
    out = F.linear(x, weight, b.reshape(-1))
    return out.reshape(x.shape[0], x.shape[1], b.shape[0], b.shape[1])


def _gated_mlp(
    mlp: GatedMLP, x: Float[torch.Tensor, "batch pos d_model"]
) -> Float[torch.Tensor, "batch pos d_model"]:
    """``GatedMLP.forward`` without its hook points."""
    pre_act = F.linear(x, mlp.W_gate.T.contiguous())
    pre_linear = F.linear(x, mlp.W_in.T.contiguous())
    post_act = (mlp.act_fn(pre_act) * pre_linear) + mlp.b_in
    return F.linear(post_act, mlp.W_out.T.contiguous(), mlp.b_out)


def enable(model: HookedTransformer, *, attention: str = "exact") -> dict[int, str]:
    """Switch every supported block to :class:`FastBlock`; returns {layer: reason} for the
    blocks left as they were (empty when all switched). Outside the supported TransformerLens
    range no block is switched, with a warning naming the range (the results stay right, only
    slower).

    Args:
        model: A loaded model; its blocks are switched in place.
        attention: The fast path's attention (``ATTENTION_KINDS``): ``"exact"`` (bitwise
            TransformerLens' own) or ``"sdpa"`` (see :func:`set_attention`).

    Returns:
        ``{layer: reason}`` for every block left unswitched (every block, with the version
        reason, outside the supported TransformerLens range); empty when all switched.
    """
    _check_attention(attention)
    version_reason = unsupported_transformer_lens()
    if version_reason is not None:
        warnings.warn(version_reason, RuntimeWarning, stacklevel=2)
        return dict.fromkeys(range(len(model.blocks)), version_reason)
    memo = _Memo(attention)
    skipped: dict[int, str] = {}
    for layer, block in enumerate(model.blocks):
        reason = _static_support(block)
        if reason is not None:
            skipped[layer] = reason
            continue
        block.__class__ = FastBlock
        block._fast_memo = memo
        block._fast_children = (block.attn, block.mlp, block.ln1, block.ln2)
    return skipped


def set_attention(model: HookedTransformer, attention: str) -> str:
    """Choose how the fast path computes attention, for every fast block of ``model``.

    - ``"exact"`` (the default): scores, mask, softmax and weighted sum as TransformerLens
      computes them, bitwise its results.
    - ``"sdpa"``: one ``torch.nn.functional.scaled_dot_product_attention`` call per block
      (PyTorch's fused kernel; grouped key-value heads shared, not repeated). The same
      numbers up to floating-point rounding (logits within 1e-5 of the exact path on the
      tiny model, greedy tokens identical to HF transformers' on the embedded one), not
      bitwise: what generation uses when speed matters more than bitwise replay.

    Either way a hook on an attention hook point (``attn.hook_pattern``,
    ``attn.hook_attn_scores``, ``attn.hook_z``, ...) sends its block down TransformerLens'
    own path, which computes that activation, and residual-stream hooks stay on the fast
    path, as :class:`FastBlock` says.

    Args:
        model: A model whose blocks :func:`enable` switched.
        attention: ``"exact"`` or ``"sdpa"``.

    Returns:
        The attention the model used before the call.

    Raises:
        InterpError: ``attention`` is not one of ``ATTENTION_KINDS``, or no block of
            ``model`` takes the fast path.
    """
    _check_attention(attention)
    memos = {id(b._fast_memo): b._fast_memo for b in model.blocks if type(b) is FastBlock}
    if not memos:
        raise InterpError("no block of this model takes the fast path (fastpath.enable)")
    before = next(iter(memos.values())).attention
    for memo in memos.values():
        memo.attention = attention
    return before


def attention_kind(model: HookedTransformer) -> str | None:
    """The fast path's attention in ``model`` (``"exact"`` or ``"sdpa"``), or None when no
    block takes the fast path.

    Args:
        model: A loaded model.

    Returns:
        What :func:`set_attention` last set (``"exact"`` unless changed), or None.
    """
    for block in model.blocks:
        if type(block) is FastBlock:
            return block._fast_memo.attention
    return None


def _check_attention(attention: str) -> None:
    if attention not in ATTENTION_KINDS:
        raise InterpError(
            f"unknown attention {attention!r}; use one of {', '.join(ATTENTION_KINDS)}"
        )


def disable(model: HookedTransformer) -> None:
    """Switch every :class:`FastBlock` back to TransformerLens' ``TransformerBlock``.

    Args:
        model: A model whose blocks may have been switched by :func:`enable`; changed in place.
    """
    for block in model.blocks:
        if type(block) is FastBlock:
            block.__class__ = TransformerBlock
            for name in ("_fast_memo", "_fast_children", "_fast_qkv"):
                block.__dict__.pop(name, None)


def is_enabled(model: HookedTransformer) -> bool:
    """True when every block of ``model`` is a :class:`FastBlock`.

    Args:
        model: A loaded model.

    Returns:
        True when every block is a :class:`FastBlock` (False if any block was skipped).
    """
    return all(type(block) is FastBlock for block in model.blocks)
