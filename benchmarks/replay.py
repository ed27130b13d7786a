"""Replay with a KV cache reused across rounds vs the obvious alternatives, in one run.

On the same examples of the embedded model (real BBQ files if ../shared is there, else the
built-in set), self-correct plan, 5 rounds, read-out activations of every layer:
- tokens run through the model per example / final transcript length (target <= 1.1);
- wall clock vs re-encoding every round's whole prompt from scratch with run_with_cache
  reading the same hooks (target >= 2.5x faster at 5 rounds);
- replay tokens/s vs a bare forward of the same model over the final transcripts, same
  batch size and padding (target >= 0.9x);
- bytes of stored activations vs the formula examples x rounds x d_model x 2 x hooks;
- peak RSS of the process.
Writes benchmarks/results/replay.json. Usage: python benchmarks/replay.py [--examples 32]
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
import warnings
from pathlib import Path

import torch

warnings.filterwarnings("ignore")
OUT = Path(__file__).parent / "results" / "replay.json"
BBQ = Path(__file__).resolve().parents[2] / "shared" / "data" / "bbq"


def left_pad(seqs: list[list[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(s) for s in seqs)
    tokens = torch.full((len(seqs), width), pad)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        tokens[i, width - len(s) :] = torch.tensor(s)
        mask[i, width - len(s) :] = 1
    return tokens, mask


def main() -> None:
    from interp.model.loading import load_model
    from interp.replay.loop import ReplayConfig, replay

    parser = argparse.ArgumentParser()
    parser.add_argument("--examples", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=8)
    args = parser.parse_args()

    model = load_model("smollm2")
    files = [str(BBQ / "Age.jsonl"), str(BBQ / "Religion.jsonl")] if BBQ.is_dir() else []
    with tempfile.TemporaryDirectory() as tmp:
        config = ReplayConfig(
            out=f"{tmp}/run",
            task="bbq" if files else "builtin",
            data=files,
            plan="self-correct",
            rounds=args.rounds,
            limit=args.examples,
            batch_size=args.batch_size,
        )
        start = time.perf_counter()
        run = replay(config, model=model)
        t_replay = time.perf_counter() - start
        timing = run.manifest["timing"]
        rounds = run.rounds()
        transcripts = run.tokens()
        act_bytes = sum(f.stat().st_size for f in (run.path / "activations").iterdir())
        n_hooks = len(run.hooks)

    hooks = set(run.hooks)
    pad = model.tokenizer.pad_token_id
    readouts = rounds.pivot(index="example_index", columns="round", values="readout_pos")

    # The alternative: every round's prompt encoded from scratch, same hooks read.
    start = time.perf_counter()
    reencoded_tokens = 0
    for r in range(args.rounds + 1):
        prompts = [t[: readouts.loc[e, r] + 1] for e, t in enumerate(transcripts)]
        reencoded_tokens += sum(len(p) for p in prompts)
        for i in range(0, len(prompts), args.batch_size):
            tokens, mask = left_pad(prompts[i : i + args.batch_size], pad)
            with torch.no_grad():
                model.run_with_cache(tokens, attention_mask=mask, names_filter=hooks.__contains__)
    t_reencode = time.perf_counter() - start

    # A bare forward over the final prompts (up to the last read-out): the model's own speed.
    finals = [t[: readouts.loc[e, args.rounds] + 1] for e, t in enumerate(transcripts)]
    start = time.perf_counter()
    for i in range(0, len(finals), args.batch_size):
        tokens, mask = left_pad(finals[i : i + args.batch_size], pad)
        with torch.no_grad():
            model(tokens, attention_mask=mask)
    t_bare = time.perf_counter() - start
    bare_tokens = sum(len(f) for f in finals)

    n = len(transcripts)
    formula = n * (args.rounds + 1) * model.cfg.d_model * 2 * n_hooks
    results = {
        "examples": n,
        "rounds": args.rounds,
        "batch_size": args.batch_size,
        "task": config.task,
        "hooks": n_hooks,
        "tokens_run_per_transcript_token": timing["tokens_run"] / timing["final_transcript_tokens"],
        "positions_run_per_transcript_token": timing["positions_run"]
        / timing["final_transcript_tokens"],
        "replay_s": t_replay,
        "reencode_every_round_s": t_reencode,
        "speedup_vs_reencode": t_reencode / t_replay,
        "reencoded_tokens_per_transcript_token": reencoded_tokens
        / timing["final_transcript_tokens"],
        "replay_tok_s": timing["tokens_run"] / t_replay,
        "bare_forward_tok_s": bare_tokens / t_bare,
        "replay_vs_bare_forward": (timing["tokens_run"] / t_replay) / (bare_tokens / t_bare),
        "activation_bytes": act_bytes,
        "activation_bytes_formula": formula,
        "activation_bytes_overhead": act_bytes / formula - 1,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "threads": torch.get_num_threads(),
    }
    OUT.parent.mkdir(exist_ok=True)
    OUT.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
