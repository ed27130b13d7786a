"""Benchmark: the probes' logistic fit (scikit-learn, per layer) vs the alternatives, same run.

Data: the embedded model's (SmolLM2-135M, 30 layers, d_model 576) last-token encodings of
each built-in concept, split by pair (``split_pairs``, seed 0). Every side fits the same
objective (standardise with training statistics, L2 logistic regression with C = 1, intercept
unpenalised) and predicts the held-out items:

- kept: ``probes.logistic.fit_logistic``, what the library uses: scikit-learn
  ``LogisticRegression(solver="newton-cg", tol=1e-8)`` layer by layer;
- newton: the batched all-layer Newton solver the library had before (kept here as
  ``benchmarks/newton_logistic.py``), all layers at once in torch;
- lbfgs_default: ``make_pipeline(StandardScaler(), LogisticRegression(C=1))`` per layer with
  scikit-learn's defaults (lbfgs, tol 1e-4): the plain loop, fast but stopped early enough to
  change held-out predictions, so shown with its accuracy disagreement.

Timings are fit + predict, interleaved over ``--repeats`` rounds; the minimum and median are
reported, in wall-clock and in process CPU time (with one thread, CPU time is what the fit
itself costs, whatever else runs on the machine). Each is taken twice: with the default
thread count, and with one thread for torch and the BLAS. The load average
(``os.getloadavg``) is recorded beside the numbers. Encodings are cached under
``$INTERP_CACHE/probe-encodings`` and are not part of the timing. (The file keeps its name:
a script ``benchmarks/probes.py`` would shadow the ``probes`` package it imports.)

    .venv/bin/python benchmarks/probe_fit.py [--repeats 5] [--out benchmarks/results/probe_fit.json]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import sklearn
import torch
from newton_logistic import fit_logistic as newton_fit
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from interp.model.loading import cache_root, load_model
from interp.runs.store import write_json
from probes.concepts import load_concept, split_pairs
from probes.encode import cached_encodings, weights_hash
from probes.logistic import fit_logistic

SAME_ACC = 1e-4  # "the same accuracies": every held-out prediction equal, per layer
KEPT = "kept"


def _accuracy(weight, bias, x_test, y_test) -> np.ndarray:
    logits = (x_test.to(weight.dtype) @ weight[..., None])[..., 0] + bias[:, None]
    return ((logits > 0).numpy() == y_test[None]).mean(axis=1)


def kept(x_train, y_train, x_test, y_test):
    fit = fit_logistic(x_train, torch.from_numpy(y_train))
    return _accuracy(fit.weight, fit.bias, x_test, y_test), fit.weight


def newton(x_train, y_train, x_test, y_test):
    fit = newton_fit(x_train, torch.from_numpy(y_train))
    return _accuracy(fit.weight, fit.bias, x_test, y_test), fit.weight


def lbfgs_default(x_train, y_train, x_test, y_test):
    accs, weights = [], []
    for layer in range(x_train.shape[0]):
        pipe = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=5000))
        pipe.fit(x_train[layer].numpy(), y_train)
        accs.append(pipe.score(x_test[layer].numpy(), y_test))
        weights.append(pipe[-1].coef_[0] / pipe[0].scale_)
    return np.array(accs), torch.from_numpy(np.array(weights))


FITS: dict[str, Callable] = {KEPT: kept, "newton": newton, "lbfgs_default": lbfgs_default}


def time_all(split, repeats: int, *, threads: int | None) -> dict[str, object]:
    """Interleaved timings of every fit; ``threads`` caps torch's and the BLAS thread pools."""
    default = torch.get_num_threads()
    runs = {name: {"wall": [], "cpu": []} for name in FITS}
    with threadpool_limits(limits=threads):
        torch.set_num_threads(threads or default)
        try:
            for _ in range(repeats):
                for name, fit in FITS.items():
                    wall, cpu = time.perf_counter(), time.process_time()
                    fit(*split)
                    runs[name]["wall"].append(time.perf_counter() - wall)
                    runs[name]["cpu"].append(time.process_time() - cpu)
        finally:
            torch.set_num_threads(default)
    out: dict[str, object] = {"threads": threads or default}
    for clock in ("wall", "cpu"):
        for name in FITS:
            values = runs[name][clock]
            out[f"{name}_{clock}_seconds"] = {
                "min": min(values),
                "median": statistics.median(values),
            }
        for name in FITS:
            if name != KEPT:  # > 1: the kept fit is faster
                out[f"kept_speedup_vs_{name}_{clock}_min"] = min(runs[name][clock]) / min(
                    runs[KEPT][clock]
                )
    return out


def concept_result(model, name: str, repeats: int) -> dict[str, object]:
    data = load_concept(name)
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
        "default_threads": time_all(split, repeats, threads=None),
        "one_thread": time_all(split, repeats, threads=1),
    }
    load_after = os.getloadavg()
    outputs = {name: fit(*split) for name, fit in FITS.items()}
    acc_kept, weight_kept = outputs[KEPT]
    agreement = {}
    for other in ("newton", "lbfgs_default"):
        acc, weight = outputs[other]
        relative = (weight_kept - weight).norm(dim=-1) / weight.norm(dim=-1)
        diff = float(np.abs(acc_kept - acc).max())
        agreement[f"kept_vs_{other}"] = {
            "max_abs_acc_diff": diff,
            "same_accuracies": diff <= SAME_ACC,
            "max_relative_weight_diff": float(relative.max()),
        }
    return {
        "concept": data.name,
        "n_layers": int(x.shape[0]),
        "d_model": int(x.shape[2]),
        "n_train": len(train),
        "n_test": len(test),
        "encode_or_cache_load_seconds": round(encode_s, 3),
        "timings": timings,
        "load_average_1_5_15min": {"before": list(load_before), "after": list(load_after)},
        "acc": {name: [round(float(a), 4) for a in out[0]] for name, out in outputs.items()},
        "agreement": agreement,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/probe_fit.json"))
    args = parser.parse_args()
    warnings.filterwarnings("ignore")

    model = load_model("smollm2")
    concepts = [concept_result(model, name, args.repeats) for name in ("stereotype", "morality")]
    result = {
        "what": (
            "probe logistic fit + predict on every layer: kept (scikit-learn newton-cg per "
            "layer) vs the replaced batched Newton solver vs scikit-learn's default lbfgs loop"
        ),
        "model": "smollm2",
        "position": "last",
        "repeats": args.repeats,
        "same_acc_within": SAME_ACC,
        "concepts": concepts,
        "machine": {
            "cpu_count": os.cpu_count(),
            "torch_default_threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "sklearn": sklearn.__version__,
            "python": platform.python_version(),
        },
    }
    write_json(args.out, result)
    for c in concepts:
        for name, t in c["timings"].items():
            for clock in ("wall", "cpu"):
                secs = ", ".join(f"{k} {t[f'{k}_{clock}_seconds']['min']:.3f}s" for k in FITS)
                print(
                    f"{c['concept']} {name} {clock} (min of {args.repeats}): {secs}; kept "
                    f"{t[f'kept_speedup_vs_newton_{clock}_min']:.2f}x newton"
                )
        for pair, a in c["agreement"].items():
            print(f"{c['concept']} {pair}: {a}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
