"""Benchmark: one batched all-layer logistic probe vs a per-layer scikit-learn loop.

Data: the embedded model's (SmolLM2-135M, 30 layers, d_model 576) last-token encodings of
the ``stereotype`` concept, split by pair (``split_pairs``, seed 0). Both sides fit the same
objective (standardise with training statistics, L2 logistic regression with C = 1, intercept
unpenalised) and predict the held-out items:

- batched: ``probes.logistic.fit_logistic`` on [layer, item, d_model] at once (Newton);
- loop: ``make_pipeline(StandardScaler(), LogisticRegression(C=1))`` per layer (lbfgs).

Timings are wall-clock, fit + predict, interleaved over ``--repeats`` rounds; the minimum and
median are reported (the minimum is the least disturbed by other processes), in wall-clock
and in process CPU time (with one thread, CPU time is what the fit itself costs, whatever
else runs on the machine). Each is taken twice: with the default thread count, and with
one thread for torch, MKL and scikit-learn's BLAS, which is steadier when other processes
load the CPU (threads of a parallel region then wait for each other). The load average is
recorded beside the numbers. Encodings are cached under ``$INTERP_CACHE/probe-encodings``
and are not part of the timing.

    .venv/bin/python benchmarks/probe_fit.py [--repeats 5] [--out benchmarks/results/probe_fit.json]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
import warnings
from pathlib import Path

import numpy as np  # noqa: E402
import torch  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

from interp.model.loading import cache_root, load_model  # noqa: E402
from interp.runs.store import write_json  # noqa: E402
from probes.concepts import load_concept, split_pairs  # noqa: E402
from probes.encode import cached_encodings, weights_hash  # noqa: E402
from probes.logistic import fit_logistic  # noqa: E402

AGREE_POINTS = 0.02  # "within a couple of points" of held-out accuracy, per layer


def batched(x_train, y_train, x_test, y_test) -> np.ndarray:
    fit = fit_logistic(x_train, torch.from_numpy(y_train))
    predicted = (fit.logits(x_test) > 0).numpy()
    return (predicted == y_test[None]).mean(axis=1)


def sklearn_loop(x_train, y_train, x_test, y_test) -> tuple[np.ndarray, np.ndarray]:
    accs, weights = [], []
    for layer in range(x_train.shape[0]):
        pipe = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=5000))
        pipe.fit(x_train[layer].numpy(), y_train)
        accs.append(pipe.score(x_test[layer].numpy(), y_test))
        weights.append(pipe[-1].coef_[0] / pipe[0].scale_)
    return np.array(accs), np.array(weights)


def time_both(split, repeats: int, *, threads: int | None) -> dict[str, object]:
    """Interleaved timings of both fits; ``threads`` caps torch's and the BLAS thread pools."""
    default = torch.get_num_threads()
    runs: dict[str, dict[str, list[float]]] = {
        name: {"wall": [], "cpu": []} for name in ("batched", "sklearn")
    }
    with threadpool_limits(limits=threads):
        torch.set_num_threads(threads or default)
        try:
            for _ in range(repeats):
                for name, fit in (("batched", batched), ("sklearn", sklearn_loop)):
                    wall, cpu = time.perf_counter(), time.process_time()
                    fit(*split)
                    runs[name]["wall"].append(time.perf_counter() - wall)
                    runs[name]["cpu"].append(time.process_time() - cpu)
        finally:
            torch.set_num_threads(default)
    out: dict[str, object] = {"threads": threads or default}
    for clock in ("wall", "cpu"):
        for name in ("batched", "sklearn"):
            values = runs[name][clock]
            out[f"{name}_{clock}_seconds"] = {
                "min": min(values),
                "median": statistics.median(values),
            }
        out[f"speedup_{clock}_min"] = min(runs["sklearn"][clock]) / min(runs["batched"][clock])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/probe_fit.json"))
    args = parser.parse_args()
    warnings.filterwarnings("ignore")

    model = load_model("smollm2")
    data = load_concept("stereotype")
    start = time.perf_counter()
    encodings = cached_encodings(
        data.texts(),
        name=data.name,
        position="last",
        weights_hash=weights_hash(model),
        cache_dir=cache_root() / "probe-encodings",
        get_model=lambda: model,
    )
    encode_s = time.perf_counter() - start
    train, test = split_pairs(data, seed=0)
    labels = data.labels()
    x = encodings.transpose(0, 1).contiguous()  # [layer item d_model]
    split = (x[:, train], labels[train], x[:, test], labels[test])

    load_before = os.getloadavg()
    timings = {
        "default_threads": time_both(split, args.repeats, threads=None),
        "one_thread": time_both(split, args.repeats, threads=1),
    }
    acc_batched = batched(*split)
    acc_loop, loop_weights = sklearn_loop(*split)

    fit = fit_logistic(split[0], torch.from_numpy(split[1]))
    cosines = torch.nn.functional.cosine_similarity(
        fit.weight, torch.from_numpy(loop_weights), dim=-1
    )
    diff = np.abs(acc_batched - acc_loop)
    result = {
        "what": "batched all-layer logistic probe vs per-layer sklearn loop, fit + predict",
        "model": "smollm2",
        "concept": data.name,
        "position": "last",
        "n_layers": int(x.shape[0]),
        "d_model": int(x.shape[2]),
        "n_train": len(train),
        "n_test": len(test),
        "repeats": args.repeats,
        "encode_or_cache_load_seconds": round(encode_s, 3),
        "timings": timings,
        "load_average_1min": {"before": load_before[0], "after": os.getloadavg()[0]},
        "batched_newton_iterations": fit.iterations,
        "batched_converged_all": bool(fit.converged.all()),
        "acc_batched": [round(float(a), 4) for a in acc_batched],
        "acc_sklearn": [round(float(a), 4) for a in acc_loop],
        "max_abs_acc_diff": float(diff.max()),
        "agree_within": AGREE_POINTS,
        "agree": bool(diff.max() <= AGREE_POINTS),
        "weight_cosine_min": float(cosines.min()),
        "machine": {
            "cpu_count": os.cpu_count(),
            "torch_default_threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "python": platform.python_version(),
        },
    }
    write_json(args.out, result)
    for name, t in timings.items():
        for clock in ("wall", "cpu"):
            print(
                f"{name}, {clock}: batched {t[f'batched_{clock}_seconds']['min']:.3f}s, sklearn "
                f"{t[f'sklearn_{clock}_seconds']['min']:.3f}s (min of {args.repeats}): "
                f"{t[f'speedup_{clock}_min']:.2f}x"
            )
    print(f"max acc diff {diff.max():.3f}; weight cosine >= {cosines.min():.5f}; wrote {args.out}")


if __name__ == "__main__":
    main()
