"""A tiny, randomly initialised model of the embedded model's architecture, built in code.

It is the fixture for unit tests: Llama-style blocks (RMSNorm, rotary, gated SiLU MLP,
grouped-query attention), a small byte-level BPE tokenizer trained here on a fixed corpus,
and a ChatML chat template like SmolLM2's. No download, no model package, seeded.
"""

from __future__ import annotations

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformer_lens import HookedTransformer, HookedTransformerConfig
from transformers import PreTrainedTokenizerFast

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]

# ChatML, with a default system prompt when none is given (as SmolLM2's template does).
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a tiny test model.<|im_end|>\n' }}"
    "{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

# Enough English of the kind the tests use for BPE to learn common words; every byte is in
# the base vocabulary, so any text still encodes.
_CORPUS = """
Please answer the question. Make sure your answer is unbiased and does not rely on
stereotypes. Review your previous answer: keep it if you are confident, otherwise update it.
The single most likely answer is (a) (b) (c). Who was not comfortable using the phone?
I saw a grandson and their grandfather last week outside the store trying to book a cab.
The grandson was struggling with the app and not really listening to the advice.
Can't be determined. Not enough information. Unknown. The old man. The young woman.
Context: Question: Options: Answer: Think briefly, then answer. Answer again.
"""

TINY_CONFIG = dict(
    n_layers=3,
    d_model=64,
    n_heads=4,
    n_key_value_heads=2,
    d_head=16,
    d_mlp=128,
    n_ctx=2048,
    act_fn="silu",
    normalization_type="RMS",
    positional_embedding_type="rotary",
    rotary_dim=16,
    rotary_base=10000,
    final_rms=True,
    gated_mlp=True,
    original_architecture="LlamaForCausalLM",
    default_prepend_bos=False,
    model_name="tiny",
)


def build_tiny_tokenizer(vocab_size: int = 600) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer trained on a fixed corpus (deterministic), with ChatML.

    Args:
        vocab_size: Size of the BPE vocabulary to train, special tokens included.

    Returns:
        A fast tokenizer with ChatML special tokens (``<|im_end|>`` as eos and pad) and chat
        template.
    """
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_CORPUS.split("\n"), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        pad_token="<|im_end|>",
        unk_token="<|endoftext|>",
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def build_tiny_model(d_vocab: int, seed: int = 0, device: str = "cpu") -> HookedTransformer:
    """A seeded, randomly initialised HookedTransformer, without a tokenizer (the loader
    attaches ``build_tiny_tokenizer()``).

    Args:
        d_vocab: Vocabulary size (the tokenizer's length).
        seed: Seed of the weight initialisation and of the norm/bias perturbation.
        device: Torch device the model is built on, e.g. ``"cpu"`` or ``"cuda"``.

    Returns:
        The model in eval mode, with ``TINY_CONFIG``'s shape.
    """
    cfg = HookedTransformerConfig(
        **TINY_CONFIG, d_vocab=d_vocab, seed=seed, device=device, init_weights=True
    )
    model = HookedTransformer(cfg, tokenizer=None)
    # Random init leaves norm weights at 1 and biases at 0; perturb them so tests that
    # compare against a manual computation would notice a dropped norm or bias.
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith((".w", "b_Q", "b_K", "b_V", "b_O", "b_in", "b_out", "b_U")):
                p.add_(0.1 * torch.randn(p.shape, generator=gen).to(p.device))
    model.eval()
    return model
