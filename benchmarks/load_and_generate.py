"""Loading and generation speed of the embedded model: ours vs Hugging Face transformers.

Measures, in one process on the same prompts:
- first load (GGUF -> TransformerLens conversion into an empty cache) vs cached load;
- greedy generation with the KV cache (48 new tokens): ``ours_sdpa``, the fast path's sdpa
  attention (``fastpath.set_attention(model, "sdpa")``: one ``scaled_dot_product_attention``
  call per block) generating with ``interp.model.kvcache.greedy_generate`` (the prompt's
  logits at its last position only, as HF computes them; TransformerLens' ``generate``
  unembeds every prompt position, ~10% more arithmetic here); ``ours_greedy``, the same
  with the exact attention; ``ours``, the model as loaded (weights re-laid,
  interp/model/layout.py, and the fast block path, interp/model/fastpath.py) through
  TransformerLens' ``model.generate``; ours with the re-laid weights only and plain
  TransformerLens (neither), both through ``model.generate``; and HF ``generate`` -> ratios.
  They run in turn, ROUNDS times (sdpa, HF, ..., sdpa, HF, ...), so that a slow spell of the
  machine hits them alike; the JSON has every round's ratio, their median and the ratio of
  the fastest runs, in wall-clock and process CPU time, whether every round's tokens equal
  HF's, and the load average (``os.getloadavg``) before and after;
- forward tokens/s at batch 1 and 8 (256 tokens), ours vs HF -> ratios, the same way.
Writes benchmarks/results/load_and_generate.json. Usage: python benchmarks/load_and_generate.py
(torch's default thread count; OMP_NUM_THREADS=1 for one thread, steadier on a shared machine);
``--generate-only`` times the generation comparison only, without the two slow references
(re-laid only, plain TransformerLens), the first load and the forward passes, and writes
benchmarks/results/generate_sdpa.json instead (for a loaded machine: a few minutes, not ten).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import torch

warnings.filterwarnings("ignore")
OUT = Path(__file__).parent / "results" / "load_and_generate.json"
NEW_TOKENS = 48
ROUNDS = 7


CPU_TIMES: dict[str, list[float]] = {}  # process CPU seconds of the last interleaved call


def interleaved(fns: dict, rounds: int = ROUNDS) -> tuple[dict, dict]:
    """Seconds of each of ``fns`` per round, the functions run in turn within a round (after
    one untimed warm-up each), and each function's result in every round. The process CPU
    seconds of each run go to ``CPU_TIMES`` (with one thread, what the run itself cost,
    however loaded the machine)."""
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    results: dict[str, list] = {name: [] for name in fns}
    CPU_TIMES.clear()
    CPU_TIMES.update({name: [] for name in fns})
    for _ in range(rounds):
        for name, fn in fns.items():
            start, cpu = time.perf_counter(), time.process_time()
            results[name].append(fn())
            times[name].append(time.perf_counter() - start)
            CPU_TIMES[name].append(time.process_time() - cpu)
    return times, results


def ratio(times: dict, ours: str, theirs: str) -> dict:
    """Speed of ``ours`` relative to ``theirs`` (> 1: ours is faster), per round and overall."""
    per_round = [t / o for o, t in zip(times[ours], times[theirs], strict=True)]
    return {
        "per_round": [round(r, 3) for r in per_round],
        "median": statistics.median(per_round),
        "min_max": [min(per_round), max(per_round)],
        "of_fastest_runs": min(times[theirs]) / min(times[ours]),
    }


def before_eos(tokens: list[int], eos: int) -> list[int]:
    """The tokens before the first EOS."""
    return tokens[: tokens.index(eos)] if eos in tokens else tokens


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--generate-only", action="store_true", help="the generation comparison only"
    )
    args = parser.parse_args()
    args.no_plain = args.generate_only
    out = OUT.with_name("generate_sdpa.json") if args.generate_only else OUT
    from transformers import AutoModelForCausalLM

    from interp.model import fastpath
    from interp.model.kvcache import greedy_generate
    from interp.model.layout import is_relaid
    from interp.model.loading import embedded_gguf_path, load_model

    results: dict = {
        "machine": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "threads": torch.get_num_threads(),
    }
    if args.generate_only:
        model = load_model("smollm2")
    else:
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
    sdpa = copy.deepcopy(model)
    fastpath.set_attention(sdpa, "sdpa")
    relaid_only = copy.deepcopy(model)
    fastpath.disable(relaid_only)
    plain = copy.deepcopy(relaid_only)
    for p in plain.parameters():  # the layout TransformerLens itself would leave
        p.data = p.data.contiguous()
    assert fastpath.is_enabled(model) and is_relaid(model) and not is_relaid(plain)

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

    def greedy(m):
        return greedy_generate(m, prompt, NEW_TOKENS)[0].tolist()

    def hf_generate():
        with torch.no_grad():
            out = hf.generate(
                prompt, max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS, do_sample=False
            )
        return out[0, prompt.shape[1] :].tolist()

    eos = tok.eos_token_id
    load_before = os.getloadavg()
    times, runs = interleaved(
        {
            "ours_sdpa": lambda: greedy(sdpa),
            "hf": hf_generate,
            "ours_greedy": lambda: greedy(model),
            "ours": lambda: tl_generate(model),
            **(
                {}
                if args.no_plain
                else {
                    "relaid_only": lambda: tl_generate(relaid_only),
                    "plain": lambda: tl_generate(plain),
                }
            ),
        }
    )
    load_after = os.getloadavg()
    tokens = {name: values[-1] for name, values in runs.items()}
    ours_before_eos = before_eos(tokens["ours"], eos)

    def same_as_hf(name: str) -> list[bool]:
        """Per round: the tokens before the first EOS equal HF's."""
        out = []
        for ours, theirs in zip(runs[name], runs["hf"], strict=True):
            kept = before_eos(ours, eos)
            out.append(kept == theirs[: len(kept)])
        return out

    results["generate"] = {
        "new_tokens": NEW_TOKENS,
        "prompt_tokens": prompt.shape[1],
        "rounds": ROUNDS,
        "tok_s_median": {k: NEW_TOKENS / statistics.median(v) for k, v in times.items()},
        "load_average_1_5_15min": {"before": list(load_before), "after": list(load_after)},
        "ratio_ours_sdpa_vs_hf": ratio(times, "ours_sdpa", "hf"),
        "ratio_ours_greedy_vs_hf": ratio(times, "ours_greedy", "hf"),
        "ratio_ours_vs_hf": ratio(times, "ours", "hf"),
        "speedup_sdpa_vs_exact_attention": ratio(times, "ours_sdpa", "ours_greedy"),
        "cpu_time_ratio_ours_sdpa_vs_hf": ratio(CPU_TIMES, "ours_sdpa", "hf"),
        "cpu_time_ratio_ours_greedy_vs_hf": ratio(CPU_TIMES, "ours_greedy", "hf"),
        "cpu_time_ratio_ours_vs_hf": ratio(CPU_TIMES, "ours", "hf"),
        **(
            {"plain_references": "skipped (--generate-only)"}
            if args.no_plain
            else {
                "ratio_relaid_only_vs_hf": ratio(times, "relaid_only", "hf"),
                "ratio_plain_transformerlens_vs_hf": ratio(times, "plain", "hf"),
                "speedup_vs_plain_transformerlens": ratio(times, "ours", "plain"),
            }
        ),
        # HF's min_new_tokens (which makes it run all NEW_TOKENS steps, as ours does) forbids
        # EOS, so from the model's first EOS on the two differ by construction.
        "identical_tokens_ours_hf_before_eos": ours_before_eos
        == tokens["hf"][: len(ours_before_eos)],
        "tokens_before_eos": len(ours_before_eos),
        "identical_tokens_ours_sdpa_hf_before_eos_per_round": same_as_hf("ours_sdpa"),
        "identical_tokens_ours_hf_before_eos_per_round": same_as_hf("ours"),
        # after EOS the continuation is noise: rounding may tip a near tie there
        "identical_tokens_ours_sdpa_ours_before_eos": all(
            before_eos(a, eos) == before_eos(b, eos) == before_eos(c, eos)
            for a, b, c in zip(runs["ours_sdpa"], runs["ours"], runs["ours_greedy"], strict=True)
        ),
        "identical_tokens_ours_plain": None
        if args.no_plain
        else tokens["ours"] == tokens["plain"] == tokens["relaid_only"],
    }
    print(json.dumps(results["generate"], indent=2), flush=True)

    for batch in () if args.generate_only else (1, 8):
        tokens = torch.randint(
            0, model.cfg.d_vocab, (batch, 256), generator=torch.Generator().manual_seed(0)
        )
        with torch.no_grad():
            times, _ = interleaved(
                {
                    "ours_sdpa": lambda t=tokens: sdpa(t),
                    "ours": lambda t=tokens: model(t),
                    "hf": lambda t=tokens: hf(t).logits,
                },
                rounds=5,
            )
        results[f"forward_batch{batch}"] = {
            "tok_s_median": {k: tokens.numel() / statistics.median(v) for k, v in times.items()},
            "ratio_ours_sdpa_vs_hf": ratio(times, "ours_sdpa", "hf"),
            "ratio_ours_vs_hf": ratio(times, "ours", "hf"),
            "cpu_time_ratio_ours_sdpa_vs_hf": ratio(CPU_TIMES, "ours_sdpa", "hf"),
        }
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
