"""Replay sharded over Ray on this machine, and what it projects to on a GPU cluster.

Three whole-process runs of the same ``interp replay`` (the embedded model, EXAMPLES seeded BBQ
examples from ../shared/data/bbq, ROUNDS follow-up rounds), as a person runs them:
- one process, torch with 2 threads (today's path, no Ray);
- ``--workers 2``, one thread each (a local Ray cluster of this machine's 2 cores);
- ``--workers 1``, one thread (the price of Ray alone), beside one process with one thread.
Each is timed whole (process start, cluster start, model loads, replay, merge). The overheads
are measured on their own: starting and stopping a local cluster (``ray.init``), and loading
the model in a fresh process. The merged runs are checked byte for byte against the single one.

Then a scaling model: wall time = cluster start + model load + examples x plans x tokens per
example / (workers x tokens/s per worker), with the tokens per example measured here and the
GPU rate for a 7B model an assumption stated in the JSON (not measured: no GPU was used).

Writes benchmarks/results/ray_scaling.json. Usage: python benchmarks/ray_scaling.py
[--examples 64] [--rounds 4] [--out FILE]. Takes ~12 min on 2 quiet cores.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

OUT = Path(__file__).parent / "results" / "ray_scaling.json"
BBQ = Path(__file__).resolve().parents[2] / "shared" / "data" / "bbq"
FILES = ["Age", "Disability_status", "Physical_appearance", "Religion", "Sexual_orientation"]

# The 7B projection's assumptions (stated, not measured here).
GPU_ASSUMPTIONS = {
    "model": "a 7B decoder in bfloat16 on one H100/H200-class GPU per worker",
    "flops_per_token": 2 * 7e9,  # forward pass: ~2 x parameters
    "peak_bf16_flops": 989e12,  # H100 SXM dense bf16
    "mfu": 0.35,  # batched prefill-style forwards with hooks; a cautious utilisation
    "model_load_s": 60.0,  # ~15 GB of safetensors at ~0.25-1 GB/s from shared storage
    "cluster_start_s": 30.0,  # joining an existing cluster and scheduling N actors
}


def _run(argv: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    subprocess.run(argv, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - started


def _digest(run: Path) -> dict[str, str]:
    files = {}
    for p in sorted(run.rglob("*")):
        if p.is_file() and p.name not in ("manifest.json", ".interp.lock"):
            files[str(p.relative_to(run))] = hashlib.sha256(p.read_bytes()).hexdigest()
    manifest = json.loads((run / "manifest.json").read_text())
    manifest["config"].pop("out")
    for key in ("workers", "timing", "command"):
        manifest.pop(key, None)
    files["manifest (result fields)"] = hashlib.sha256(
        json.dumps(manifest, sort_keys=True).encode()
    ).hexdigest()
    return files


def _numeric_gap(a: Path, b: Path) -> dict[str, float]:
    """How far two runs' answers and option log-probs are apart."""
    import numpy as np
    import pandas as pd

    ra, rb = pd.read_parquet(a / "rounds.parquet"), pd.read_parquet(b / "rounds.parquet")
    la, lb = np.array(ra["option_logprobs"].tolist()), np.array(rb["option_logprobs"].tolist())
    return {
        "answers_agree": float((ra["choice"] == rb["choice"]).mean()),
        "option_logprob_max_abs_diff": float(np.nanmax(np.abs(la - lb))),
    }


def _cluster_start_s(env: dict[str, str]) -> float:
    code = (
        "import time, ray; t = time.perf_counter(); "
        "ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, "
        "logging_level='ERROR'); "
        "ray.shutdown(); print(time.perf_counter() - t)"
    )
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    return float(out.stdout.strip().splitlines()[-1])


def _model_load_s(env: dict[str, str]) -> float:
    code = (
        "import time; from interp.model.loading import load_model; t = time.perf_counter(); "
        "load_model('smollm2'); print(time.perf_counter() - t)"
    )
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--examples", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    base_env = {**os.environ, "TQDM_DISABLE": "1", "RAY_AUTH_MODE": "disabled"}
    cli = [sys.executable, "-m", "interp.cli", "replay", "--model", "smollm2", "--task", "bbq"]
    cli += ["--data", *[str(BBQ / f"{f}.jsonl") for f in FILES]]
    cli += ["--sample", str(args.examples), "--rounds", str(args.rounds), "--json"]
    cases = {
        "single process, 2 threads": ([], "2"),
        "single process, 1 thread": ([], "1"),
        "--workers 2, 1 thread each": (["--workers", "2", "--threads-per-worker", "1"], "1"),
        "--workers 1, 1 thread": (["--workers", "1", "--threads-per-worker", "1"], "1"),
    }
    with tempfile.TemporaryDirectory() as tmp:
        results = {}
        for i, (name, (flags, threads)) in enumerate(cases.items()):
            out = Path(tmp) / f"run{i}"
            env = {**base_env, "OMP_NUM_THREADS": threads}
            wall = _run([*cli, "--out", str(out), *flags], env)
            manifest = json.loads((out / "manifest.json").read_text())
            results[name] = {
                "wall_s": round(wall, 2),
                "replay_s": manifest["timing"]["replay_seconds"],
                "tokens_run": manifest["timing"]["tokens_run"],
                "digest": _digest(out),
                "dir": out,
            }
        # Byte identity holds between processes with the same torch thread count: a matmul's
        # reduction order depends on it. Across counts, report how far apart the numbers are.
        for ref_name in ("single process, 2 threads", "single process, 1 thread"):
            reference = results[ref_name]
            for r in results.values():
                key = "vs " + ref_name
                differing = sorted(
                    k for k in reference["digest"] if r["digest"].get(k) != reference["digest"][k]
                )
                r[key] = {"identical": not differing, "files_differing": differing}
                if differing:
                    r[key].update(_numeric_gap(reference["dir"], r["dir"]))
        for r in results.values():
            r.pop("digest")
            r.pop("dir")
        env1 = {**base_env, "OMP_NUM_THREADS": "1"}
        cluster_s = _cluster_start_s(env1)
        load_s = _model_load_s(env1)
    _finish(args, results, cluster_s, load_s)


def _finish(args, results, cluster_s: float, load_s: float) -> None:
    single = results["single process, 2 threads"]
    n = args.examples
    tokens_per_example = single["tokens_run"] / n
    per_example_s = single["replay_s"] / n
    g = GPU_ASSUMPTIONS
    tok_s = g["peak_bf16_flops"] * g["mfu"] / g["flops_per_token"]
    total_tokens = 50_000 * 5 * tokens_per_example
    projection = {
        f"{w} GPU workers": {
            "wall_h": round(
                (g["cluster_start_s"] + g["model_load_s"] + total_tokens / (w * tok_s)) / 3600, 2
            )
        }
        for w in (8, 64)
    }
    payload = {
        "what": __doc__.split("\n\n")[0],
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "examples": n,
        "rounds": args.rounds,
        "runs": results,
        "overheads": {
            "local_cluster_start_stop_s": round(cluster_s, 2),
            "model_load_s": round(load_s, 2),
        },
        "measured": {
            "tokens_per_example": round(tokens_per_example, 1),
            "cpu_seconds_per_example_single": round(per_example_s, 3),
            "speedup_workers2_vs_single_2_threads": round(
                single["wall_s"] / results["--workers 2, 1 thread each"]["wall_s"], 3
            ),
            "workers1_overhead_vs_single_1_thread_s": round(
                results["--workers 1, 1 thread"]["wall_s"]
                - results["single process, 1 thread"]["wall_s"],
                2,
            ),
        },
        "projection_50k_examples_x_5_plans_7B": {
            "assumptions": {**g, "tokens_per_s_per_worker": round(tok_s)},
            "tokens_total": round(total_tokens),
            **projection,
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(payload, indent=2) + "\n")
    print(json.dumps(payload, indent=2))


if __name__ == "__main__":
    main()
