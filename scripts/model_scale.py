"""The model-scale table of issue 27 (item 4): the same 300 BBQ examples x 3 option orders,
both embedded models (SmolLM2-135M-Instruct, Gemma 3 270M base), raw and debiased accuracy,
baseline and self-correct, per round; with the self-correct - baseline difference of the
debiased change from round 0 (template-cluster bootstrap, 2,000 resamples, seed 0).

Four replays (2 models x 2 plans), each resumed if interrupted and reused once complete:

    python scripts/model_scale.py RUNS_DIR [--rounds 3] [--bbq ../shared/data/bbq]

Cost, measured 2026-12-08 on the 2-core machine at load average ~7 (12 permuted
conversations of rounds 0..3 per model, self-correct): 6.5 s per conversation on SmolLM2
(264 tokens each), 5.4 s on Gemma 3 270M (226 tokens: the plain template is shorter; 18 layers
against 30, but a 262k-token vocabulary), of which ~1 s of CPU each. The table is 4 x 900
conversations: ~6 h at that load, ~1-1.5 h on two free cores, plus ~2 min to convert Gemma
once. Not run yet.

Gemma 3 270M is a base model: its rounds are rendered with the plain-text template (the
manifests say so), so its numbers measure a base model reading a transcript, not a chat model
answering one; compare the two models' *changes* across rounds, not their levels, with that in
mind.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from interp import ReplayConfig, load_model, replay
from interp.metrics.debias import debiased_rounds
from interp.runs.store import Run
from interp.stats import bootstrap_weights, percentile_interval

MODELS = ("smollm2", "gemma3-270m")
PLANS = ("self-correct", "baseline")
CATEGORIES = ("Age", "Disability_status", "Physical_appearance", "Religion", "Sexual_orientation")


def make_runs(where: Path, bbq: Path, rounds: int, sample: int) -> dict[tuple[str, str], Run]:
    runs = {}
    for name in MODELS:
        model = load_model(name)
        for plan in PLANS:
            config = ReplayConfig(
                model=name,
                task="bbq",
                data=[str(bbq / f"{c}.jsonl") for c in CATEGORIES],
                sample=sample,
                rounds=rounds,
                permute="cyclic",
                plan=plan,
            )
            start = time.perf_counter()
            runs[name, plan] = replay(str(where / f"scale-{name}-{plan}"), config, model=model)
            print(f"{name} {plan}: {time.perf_counter() - start:.0f} s", flush=True)
    return runs


def table(runs: dict[tuple[str, str], Run]) -> None:
    deb = {key: debiased_rounds(run.rounds()) for key, run in runs.items()}
    raw = {key: run.rounds() for key, run in runs.items()}
    first = deb[MODELS[0], PLANS[0]]
    ids = first.groupby("example_index")["example_id"].first().to_numpy()
    for key, d in deb.items():
        other = d.groupby("example_index")["example_id"].first().to_numpy()
        assert (other == ids).all(), f"{key}: not the same examples as {MODELS[0], PLANS[0]}"
    firsts = first[first["round"] == 0].sort_values("example_index")
    templates = (firsts["category"].astype(str) + "/" + firsts["question_index"].astype(str)).values
    _, cluster = np.unique(templates, return_inverse=True)
    weights = bootstrap_weights(cluster, 2000, 0)

    def acc(d, r):
        x = d[d["round"] == r].sort_values("example_index")
        return (x["choice"].to_numpy() == x["label"].to_numpy()).astype(float)

    def raw_acc(d, r):
        x = d[d["round"] == r]
        return float((x["choice"] == x["label"]).mean())

    def ci(vec):
        lo, hi = percentile_interval(weights @ vec / weights.sum(1))
        return f"{vec.mean():+.3f} [{lo:+.2f}, {hi:+.2f}]"

    print("model | round | SC raw | SC debiased | BL raw | BL debiased | (SC - BL) change from r0")
    print("---|---|---|---|---|---|---")
    for name in MODELS:
        sc, bl = deb[name, "self-correct"], deb[name, "baseline"]
        for r in sorted(sc["round"].unique()):
            cells = [
                raw_acc(raw[name, "self-correct"], r),
                acc(sc, r).mean(),
                raw_acc(raw[name, "baseline"], r),
                acc(bl, r).mean(),
            ]
            did = (acc(sc, r) - acc(sc, 0)) - (acc(bl, r) - acc(bl, 0))
            print(" | ".join([name, str(r), *(f"{c:.3f}" for c in cells), ci(did)]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs_dir", type=Path)
    parser.add_argument("--bbq", type=Path, default=Path("../shared/data/bbq"))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--sample", type=int, default=300)
    args = parser.parse_args()
    table(make_runs(args.runs_dir, args.bbq, args.rounds, args.sample))


if __name__ == "__main__":
    main()
