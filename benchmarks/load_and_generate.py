"""Loading and generation speed of the embedded model: ours vs Hugging Face transformers.

Measures, in one process on the same prompts:
- first load (GGUF -> TransformerLens conversion into an empty cache) vs cached load;
- greedy generation with the KV cache: ours (weights re-laid, see interp/layout.py), plain
  TransformerLens (weights in the layout it loads them), and HF ``generate`` -> ratios;
- forward tokens/s at batch 1 and 8 (256 tokens), ours vs HF -> ratios.
Writes benchmarks/results/load_and_generate.json. Usage: python benchmarks/load_and_generate.py
"""

from __future__ import annotations

import copy
import json
import os
import platform
import tempfile
import time
import warnings
from pathlib import Path

import torch

warnings.filterwarnings("ignore")
OUT = Path(__file__).parent / "results" / "load_and_generate.json"
NEW_TOKENS = 48
REPEATS = 3


def best_of(fn, repeats: int = REPEATS) -> tuple[float, object]:
    """Fastest of several runs (machines are noisy; the minimum is the least disturbed)."""
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return min(times), result


def before_eos(tokens: list[int], eos: int) -> list[int]:
    """The tokens before the first EOS."""
    return tokens[: tokens.index(eos)] if eos in tokens else tokens


def main() -> None:
    from transformers import AutoModelForCausalLM

    from interp.loading import embedded_gguf_path, load_model

    results: dict = {
        "machine": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
    }
    with tempfile.TemporaryDirectory() as cache:
        os.environ["INTERP_CACHE"] = cache
        start = time.perf_counter()
        load_model("smollm2")
        results["first_load_s"] = time.perf_counter() - start
        start = time.perf_counter()
        model = load_model("smollm2")
        results["cached_load_s"] = time.perf_counter() - start
    results["load_speedup"] = results["first_load_s"] / results["cached_load_s"]

    path = embedded_gguf_path()
    hf = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
    hf.eval()
    plain = copy.deepcopy(model)
    for p in plain.parameters():  # the layout TransformerLens itself would leave
        p.data = p.data.contiguous()

    tok = model.tokenizer
    chat = [{"role": "user", "content": "Tell me about the history of Paris in a few sentences."}]
    text = tok.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
    prompt = torch.tensor([tok(text, add_special_tokens=False)["input_ids"]])

    def tl_generate(m):
        with torch.no_grad():
            out = m.generate(
                prompt, max_new_tokens=NEW_TOKENS, do_sample=False, verbose=False, stop_at_eos=False
            )
        return out[0, prompt.shape[1] :].tolist()

    def hf_generate():
        with torch.no_grad():
            out = hf.generate(
                prompt, max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS, do_sample=False
            )
        return out[0, prompt.shape[1] :].tolist()

    eos = tok.eos_token_id
    t_ours, toks_ours = best_of(lambda: tl_generate(model))
    t_plain, toks_plain = best_of(lambda: tl_generate(plain))
    t_hf, toks_hf = best_of(hf_generate)
    results["generate"] = {
        "new_tokens": NEW_TOKENS,
        "prompt_tokens": prompt.shape[1],
        "ours_tok_s": NEW_TOKENS / t_ours,
        "transformerlens_plain_tok_s": NEW_TOKENS / t_plain,
        "hf_tok_s": NEW_TOKENS / t_hf,
        "ratio_ours_vs_hf": t_hf / t_ours,
        "speedup_vs_plain_transformerlens": t_plain / t_ours,
        # HF's min_new_tokens (which makes it run all NEW_TOKENS steps, as ours does) forbids
        # EOS, so from the model's first EOS on the two differ by construction.
        "identical_tokens_ours_hf_before_eos": before_eos(toks_ours, eos)
        == toks_hf[: len(before_eos(toks_ours, eos))],
        "tokens_before_eos": len(before_eos(toks_ours, eos)),
        "identical_tokens_ours_plain": toks_ours == toks_plain,
    }

    for batch in (1, 8):
        tokens = torch.randint(
            0, model.cfg.d_vocab, (batch, 256), generator=torch.Generator().manual_seed(0)
        )
        with torch.no_grad():
            t_ours, _ = best_of(lambda tokens=tokens: model(tokens))
            t_hf, _ = best_of(lambda tokens=tokens: hf(tokens))
        results[f"forward_batch{batch}"] = {
            "ours_tok_s": tokens.numel() / t_ours,
            "hf_tok_s": tokens.numel() / t_hf,
            "ratio_ours_vs_hf": t_hf / t_ours,
        }
    OUT.parent.mkdir(exist_ok=True)
    OUT.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
