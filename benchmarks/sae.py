"""SAE training on the embedded model at layer 12: activation speed, training speed, quality.

Measures, in one process:
- activation generation tokens/s through sae-lens' own ``ActivationsStore.get_activations``
  (``run_with_cache`` of one hook, ``stop_at_layer``) on our loaded model (re-laid weights and
  the fast block path) vs. on a plain TransformerLens copy of it (fast path off, weights in
  TransformerLens' own layout), the same batches in turn, ROUNDS times; the activations are
  compared (max |diff|);
- `interp.sae.train.train_sae` end to end (sae-lens' runner: activations + SAE steps) ->
  training tokens/s, and the quality on held-out tokens (`interp.sae.evals`): explained
  variance, mean L0, dead fraction, CE loss recovered, KL.
Corpus: the five BBQ categories in ../shared/data/bbq (round-0 prompts as replay renders them)
plus the concept statements, context 128. Writes benchmarks/results/sae.json.

Usage: python benchmarks/sae.py [TOKENS] [EVAL_TOKENS]   (defaults 200000 and 4096; the
stored result used fewer, see its "training.tokens": the machine was shared)
"""

from __future__ import annotations

import copy
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

warnings.filterwarnings("ignore")
OUT = Path(__file__).parent / "results" / "sae.json"
BBQ = Path(__file__).resolve().parents[2] / "shared" / "data" / "bbq"
HOOK = "blocks.12.hook_resid_post"
ROUNDS = 2
GEN_BATCHES = 1  # batches of 8 x 128 tokens per round and model


def main() -> None:
    from sae_lens.training.activations_store import ActivationsStore

    from interp.model import fastpath
    from interp.model.layout import is_relaid
    from interp.model.loading import load_model
    from interp.sae.corpus import CorpusConfig, build_corpus
    from interp.sae.train import TrainConfig, corpus_dataset, runner_config, train_sae

    tokens = int(sys.argv[1]) if len(sys.argv) > 1 else 200_000
    eval_tokens = int(sys.argv[2]) if len(sys.argv) > 2 else 4096
    started = time.perf_counter()
    load_before = os.getloadavg()
    model = load_model("smollm2")
    plain = copy.deepcopy(model)
    fastpath.disable(plain)
    for p in plain.parameters():  # the layout TransformerLens itself would leave
        p.data = p.data.contiguous()
    assert fastpath.is_enabled(model) and is_relaid(model) and not is_relaid(plain)

    files = sorted(str(p) for p in BBQ.glob("*.jsonl"))
    corpus_cfg = CorpusConfig(corpus=["bbq", "concepts"], data=files, context=128, seed=0)
    t0 = time.perf_counter()
    corpus = build_corpus(corpus_cfg, model)
    corpus_s = time.perf_counter() - t0

    # activation generation: sae-lens' store on each model, the same batches in turn
    config = TrainConfig(
        out="unused",
        hook=HOOK,
        width=1024,
        k=32,
        lr=2e-3,
        batch_tokens=256,
        tokens=tokens,
        eval_tokens=eval_tokens,
        corpus=corpus_cfg,
    )
    cfg = runner_config(config, model, corpus, model.cfg.d_model, tokens)
    batches = corpus.train[: 8 * GEN_BATCHES].view(GEN_BATCHES, 8, -1)
    stores = {
        name: ActivationsStore.from_config(m, cfg, override_dataset=corpus_dataset(batches[0]))
        for name, m in (("ours", model), ("plain", plain))
    }
    times: dict[str, list[float]] = {"ours": [], "plain": []}
    acts = {}
    for name, store in stores.items():  # warm-up
        acts[name] = store.get_activations(batches[0])
    max_diff = float((acts["ours"] - acts["plain"]).abs().max())
    for _ in range(ROUNDS):
        for name, store in stores.items():
            t = time.perf_counter()
            for b in batches:
                store.get_activations(b)
            times[name].append(time.perf_counter() - t)
    n_gen = batches.numel()
    per_round = [p / o for o, p in zip(times["ours"], times["plain"], strict=True)]
    generation = {
        "tokens_per_round": n_gen,
        "ours_tokens_per_s": n_gen / statistics.median(times["ours"]),
        "plain_tokens_per_s": n_gen / statistics.median(times["plain"]),
        "speedup_per_round": [round(r, 3) for r in per_round],
        "speedup_median": statistics.median(per_round),
        "max_abs_diff_activations": max_diff,
    }
    del plain, stores

    with tempfile.TemporaryDirectory() as tmp:
        config.out = str(Path(tmp) / "sae")
        result = train_sae(config, model, progress=True)
    t = result.training
    e = result.evals
    report = {
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "load_average_before": load_before,
            "load_average_after": os.getloadavg(),
            "note": "2 shared cores; other jobs ran at the same time (load average above)",
        },
        "model": "smollm2 (embedded SmolLM2-135M-Instruct)",
        "hook": HOOK,
        "corpus": {
            "kinds": corpus_cfg.corpus,
            "bbq_files": [Path(f).name for f in files],
            "context": corpus.context,
            "train_sequences": int(corpus.train.shape[0]),
            "heldout_sequences": int(corpus.heldout.shape[0]),
            "documents": corpus.documents,
            "build_seconds": round(corpus_s, 1),
        },
        "activation_generation": generation,
        "training": {
            "architecture": "topk",
            "width": config.width,
            "k": config.k,
            "lr": config.lr,
            "batch_tokens": config.batch_tokens,
            "tokens": t["tokens"]["trained"],
            "seconds": t["seconds"]["train"],
            "tokens_per_s": t["train_tokens_per_s"],
            "mse_first_last": [t["loss_curve"][0]["mse_loss"], t["loss_curve"][-1]["mse_loss"]],
        },
        "quality_heldout": {
            k: e[k]
            for k in (
                "explained_variance",
                "mean_l0",
                "dead_fraction",
                "dense_fraction",
                "ce_loss_clean",
                "ce_loss_with_sae",
                "ce_loss_zero_ablated",
                "ce_loss_recovered",
                "kl_with_sae",
                "kl_zero_ablated",
                "scored_tokens",
            )
        },
        "targets": {
            "explained_variance": ">= 0.7",
            "mean_l0": "<= 64",
            "ce_loss_recovered": ">= 0.8",
        },
        "total_seconds": round(time.perf_counter() - started, 1),
    }
    OUT.parent.mkdir(exist_ok=True)
    OUT.write_text(json.dumps(report, indent=2) + "\n")
    keys = ("activation_generation", "training", "quality_heldout")
    print(json.dumps({k: report[k] for k in keys}, indent=2))


if __name__ == "__main__":
    main()
