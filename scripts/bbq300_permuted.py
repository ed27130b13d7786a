"""The README's paired control table for the 300 permuted BBQ examples: per round, debiased
accuracy of self-correct and baseline, their paired difference, each plan's change from round 0
and the difference of those changes (template-cluster bootstrap, 2,000 resamples, seed 0).

Make the two runs first (the README's commands), then:
    python scripts/bbq300_permuted.py RUNS_DIR   # holds bbq300c-self-correct, bbq300c-baseline
    interp replay --model smollm2 --task bbq --data ../shared/data/bbq/{Age,Disability_status,\
        Physical_appearance,Religion,Sexual_orientation}.jsonl --sample 300 --rounds 5 \
        --permute cyclic --plan self-correct --out RUNS_DIR/bbq300c-self-correct  (and baseline)
"""

import sys

import numpy as np

from interp.metrics.debias import debiased_rounds
from interp.runs.store import Run
from interp.stats import bootstrap_weights, percentile_interval

where = sys.argv[1] if len(sys.argv) > 1 else "artifacts/runs"
runs = {p: Run.open(f"{where}/bbq300c-{p}") for p in ("self-correct", "baseline")}
deb = {p: debiased_rounds(r.rounds()) for p, r in runs.items()}
raw = {p: r.rounds() for p, r in runs.items()}
sc, bl = deb["self-correct"], deb["baseline"]


def ids_of(d):
    return d.groupby("example_index")["example_id"].first().to_numpy()


assert (ids_of(sc) == ids_of(bl)).all(), "the two runs are not replays of the same examples"
firsts = sc[sc["round"] == 0].sort_values("example_index")
templates = (firsts["category"].astype(str) + "/" + firsts["question_index"].astype(str)).values
_, cluster = np.unique(templates, return_inverse=True)
W = bootstrap_weights(cluster, 2000, 0)  # resample x example


def acc(d, r):
    x = d[d["round"] == r].sort_values("example_index")
    return (x["choice"].to_numpy() == x["label"].to_numpy()).astype(float)


def raw_acc(d, r):
    x = d[d["round"] == r]
    return float((x["choice"] == x["label"]).mean())


def ci(vec):
    lo, hi = percentile_interval(W @ vec / W.sum(1))
    return f"{vec.mean():+.3f} [{lo:+.2f}, {hi:+.2f}]"


rounds = sorted(sc["round"].unique())
print(
    "round | SC raw | SC debiased | BL raw | BL debiased | SC-BL debiased | SC r-0 | BL r-0 | DiD"
)
for r in rounds:
    a_sc, a_bl = acc(sc, r), acc(bl, r)
    d_sc, d_bl = a_sc - acc(sc, 0), a_bl - acc(bl, 0)
    cells = [raw_acc(raw["self-correct"], r), a_sc.mean(), raw_acc(raw["baseline"], r), a_bl.mean()]
    diffs = [ci(a_sc - a_bl), ci(d_sc), ci(d_bl), ci(d_sc - d_bl)]
    print(" | ".join([str(r), *(f"{c:.3f}" for c in cells), *diffs]))
for p, d in deb.items():
    ch = d.pivot(index="example_index", columns="round", values="choice")
    changed = [int((ch[r] != ch[r - 1]).sum()) for r in rounds[1:]]
    agree = d.groupby("round")["agree"].mean().round(3).tolist()
    print(f"{p}: debiased answers changed from the round before: {changed}; agreement: {agree}")
