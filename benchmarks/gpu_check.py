"""The GPU path checked against the CPU: the same replay and patching sweep, both ways.

On a machine with CUDA: replay EXAMPLES seeded BBQ examples (../shared/data/bbq) x ROUNDS
follow-up rounds on the embedded model with ``--device cuda --dtype bfloat16``, and with
``--device cpu --dtype float32``; then one patching sweep (every layer, resid_post) on each run.
Reports answers' agreement (the check: >= 98%), the option log-probs' max |difference|, the
stored activations' relative error ||gpu - cpu|| / ||cpu||, the patching effects' max
|difference|, and tokens/s of each replay. Writes benchmarks/results/gpu_check.json.

Usage: python benchmarks/gpu_check.py [--examples 64] [--rounds 3] [--out FILE].
Without CUDA it says so and exits 2 (nothing written).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

OUT = Path(__file__).parent / "results" / "gpu_check.json"
BBQ = Path(__file__).resolve().parents[2] / "shared" / "data" / "bbq"
FILES = ["Age", "Disability_status", "Physical_appearance", "Religion", "Sexual_orientation"]
AGREEMENT_NEEDED = 0.98


def _interp(*args: str) -> float:
    started = time.perf_counter()
    cmd = [sys.executable, "-m", "interp.cli", *args]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - started


def main() -> None:
    import numpy as np
    import pandas as pd
    import torch
    from safetensors.torch import load_file

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--examples", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("error: no CUDA device here; run this on a GPU machine", file=sys.stderr)
        raise SystemExit(2)
    data = [str(BBQ / f"{f}.jsonl") for f in FILES]
    common = ["--model", "smollm2", "--task", "bbq", "--data", *data]
    common += ["--sample", str(args.examples), "--rounds", str(args.rounds), "--json"]
    settings = {"cpu": ["--device", "cpu", "--dtype", "float32"]}
    settings["cuda"] = ["--device", "cuda", "--dtype", "bfloat16"]
    timing: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        runs = {name: Path(tmp) / name for name in settings}
        for name, flags in settings.items():
            replay_s = _interp("replay", *common, "--out", str(runs[name]), *flags)
            patch_s = _interp(
                "patch", "--run", str(runs[name]), "--layers", "all", "--round", str(args.rounds),
                "--n-boot", "200", "--json", *flags,
            )  # fmt: skip
            manifest = json.loads((runs[name] / "manifest.json").read_text())
            tokens = manifest["timing"]["tokens_run"]
            timing[name] = {
                "replay_s": round(replay_s, 2),
                "patch_s": round(patch_s, 2),
                "replay_tokens_per_s": round(tokens / manifest["timing"]["replay_seconds"], 1),
            }
        cpu, gpu = (pd.read_parquet(runs[n] / "rounds.parquet") for n in ("cpu", "cuda"))
        agree = float((cpu["choice"] == gpu["choice"]).mean())
        lp_c = np.array(cpu["option_logprobs"].tolist())
        lp_g = np.array(gpu["option_logprobs"].tolist())
        rel = {}
        for path in sorted((runs["cpu"] / "activations").glob("*.safetensors")):
            a = next(iter(load_file(str(path)).values())).float()
            b = next(iter(load_file(str(runs["cuda"] / "activations" / path.name)).values()))
            rel[path.stem] = float((b.float() - a).norm() / a.norm())
        effects = {}
        for n in ("cpu", "cuda"):
            table = next((runs[n] / "patching").glob("*.parquet"))
            effects[n] = pd.read_parquet(table)["patched"].to_numpy()
    payload = {
        "what": __doc__.split("\n\n")[0],
        "device": torch.cuda.get_device_name(0),
        "examples": args.examples,
        "rounds": args.rounds,
        "answers_agree": agree,
        "passes": agree >= AGREEMENT_NEEDED,
        "option_logprob_max_abs_diff": float(np.nanmax(np.abs(lp_c - lp_g))),
        "activation_relative_error": rel,
        "patched_logit_diff_max_abs_diff": float(
            np.nanmax(np.abs(effects["cpu"] - effects["cuda"]))
        ),
        "timing": timing,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(payload, indent=2) + "\n")
    print(json.dumps(payload, indent=2))
    if not payload["passes"]:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
