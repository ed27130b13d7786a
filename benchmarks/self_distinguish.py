"""Self-distinguish scoring: one forward pass per (example, round, order) from scratch vs one KV
cache per example grown over the rounds with both orders scored on it, in one run.

On the embedded model, a seeded sample of BBQ examples from the five category files in
../shared/data/bbq (the built-in set if that is absent), self-correct plan, rounds 0..R: the
replay is made first (not timed), then the letter log-probs of every eligible example, round and
order are computed both ways on the same examples, in turn, REPEATS times; reported: the best
wall clock of each, their ratio, the max |difference| of the log-probs, whether the
per-example picks agree, and how many (example, round) the cached path had to cut back.
Writes benchmarks/results/self_distinguish.json.

Usage: OMP_NUM_THREADS=1 python benchmarks/self_distinguish.py [--sample 12] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

warnings.filterwarnings("ignore")
OUT = Path(__file__).parent / "results" / "self_distinguish.json"
BBQ = Path(__file__).resolve().parents[2] / "shared" / "data" / "bbq"
CATEGORIES = [
    "Age",
    "Disability_status",
    "Physical_appearance",
    "Religion",
    "Sexual_orientation",
]


def eligible(run, examples) -> tuple[list[int], list[tuple[str, str]]]:
    """As the experiment's analyse picks them: examples whose correct answer is not the target."""
    from interp.experiments.self_distinguish import unbiased_option

    firsts = run.rounds().sort_values(["example_index", "round"]).drop_duplicates("example_index")
    keep, options = [], []
    for row in firsts.itertuples():
        unbiased = unbiased_option(int(row.label), int(row.target))
        if unbiased is not None:
            texts = examples[str(row.example_id)].options
            keep.append(int(row.example_index))
            options.append((texts[unbiased], texts[int(row.target)]))
    return keep, options


def main() -> None:
    from interp.experiments.common import ExperimentConfig, selected_examples
    from interp.experiments.self_distinguish import (
        _cached_logprobs,
        _full_pass_logprobs,
        score_orders,
    )
    from interp.model.loading import load_model
    from interp.replay.loop import ReplayConfig, replay

    parser = argparse.ArgumentParser()
    parser.add_argument("--sample", type=int, default=12)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()

    model = load_model("smollm2")
    real = BBQ.is_dir()
    files = [str(BBQ / f"{c}.jsonl") for c in CATEGORIES] if real else []
    templates = str(BBQ / "official" / "templates") if (BBQ / "official").is_dir() else None
    config = ExperimentConfig(
        model="smollm2",
        task="bbq" if real else "builtin",
        data=files,
        bbq_templates=templates if real else None,
        sample=args.sample,
        rounds=args.rounds,
    )
    examples = selected_examples(config)
    with tempfile.TemporaryDirectory() as tmp:
        run = replay(
            ReplayConfig(
                out=f"{tmp}/run",
                task=config.task,
                data=files,
                bbq_templates=config.bbq_templates,
                sample=args.sample,
                plan="self-correct",
                rounds=args.rounds,
            ),
            model=model,
        )
        keep, options = eligible(run, {ex.example_id: ex for ex in examples})
        times: dict[str, list[float]] = {"full_pass": [], "cached": []}
        for _ in range(args.repeats):
            start = time.perf_counter()
            full = _full_pass_logprobs(run, model, keep, options)
            times["full_pass"].append(time.perf_counter() - start)
            start = time.perf_counter()
            cached, cut_back = _cached_logprobs(run, model, keep, options)
            times["cached"].append(time.perf_counter() - start)
        transcript = float(np.mean([len(run.tokens()[e]) for e in keep]))
    picks_agree = all(
        np.array_equal(score_orders(full[:, r])["both"], score_orders(cached[:, r])["both"])
        and np.array_equal(
            score_orders(full[:, r])["picks_a"], score_orders(cached[:, r])["picks_a"]
        )
        for r in range(full.shape[1])
    )
    best = {k: min(v) for k, v in times.items()}
    result = {
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "model": "smollm2 (embedded)",
        "data": "bbq, five categories" if real else "builtin",
        "sample": args.sample,
        "eligible_examples": len(keep),
        "rounds": f"0..{args.rounds}",
        "forward_passes_full": len(keep) * (args.rounds + 1) * 2,
        "mean_final_transcript_tokens": round(transcript, 1),
        "seconds": {k: [round(x, 2) for x in v] for k, v in times.items()},
        "best_seconds": {k: round(v, 2) for k, v in best.items()},
        "speedup": round(best["full_pass"] / best["cached"], 2),
        "max_abs_logprob_diff": float(np.abs(full - cached).max()),
        "picks_agree": picks_agree,
        "cut_back": cut_back,
        "torch_threads": torch.get_num_threads(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores (shared with other work)",
    }
    OUT.parent.mkdir(exist_ok=True)
    OUT.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
