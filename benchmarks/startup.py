"""Start-up time of the command line, whole process: what a person waits for before anything
happens. Commands that need no model must not load torch or TransformerLens (issue 12), and
neither must a refusal that the run's manifest or the file system decides (issue 22).

Measures the median (and every run) of REPEATS whole-process runs of
- ``interp --help``;
- ``interp metrics --run R`` on a small run of the tiny model (made once, beforehand);
- the refusals (each must print its one ``error:`` line and exit 2): a mistyped run, a layer
  and a round out of the run's range, a model that is not installed, an unknown flag, permuted
  orders in generate mode, a malformed Ray address, an unknown control plan, a mistyped
  control run;
- ``python -c "import torch, transformer_lens"``: the cost the others must not pay.
Also records which of torch / transformer_lens each command loads (``-X importtime``).
Writes benchmarks/results/startup.json. Usage: python benchmarks/startup.py [--out FILE]
(the interp package measured is the one ``python -c "import interp"`` finds: put a checkout
first on PYTHONPATH to measure it).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPEATS = 5
OUT = Path(__file__).parent / "results" / "startup.json"


def _interp() -> list[str]:
    """The console script beside this Python, as a person runs it; else ``python -m``."""
    script = Path(sys.executable).parent / "interp"
    return [str(script)] if script.exists() else [sys.executable, "-m", "interp.cli"]


def _time(argv: list[str], env: dict[str, str], code: int = 0) -> float:
    started = time.perf_counter()
    proc = subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    elapsed = time.perf_counter() - started
    if proc.returncode != code:
        raise SystemExit(f"{argv}: exit {proc.returncode}, not {code}: {proc.stderr.decode()}")
    return elapsed


def _loads_heavy(argv: list[str], env: dict[str, str]) -> dict[str, bool]:
    """Which heavy packages the process imports (from ``-X importtime`` on stderr)."""
    proc = subprocess.run(
        argv, env={**env, "PYTHONPROFILEIMPORTTIME": "1"}, capture_output=True, text=True
    )
    names = {line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines()}
    return {name: name in names for name in ("torch", "transformer_lens")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1"}
    cli = _interp()
    with tempfile.TemporaryDirectory() as tmp:
        run = str(Path(tmp) / "run")
        replay = ["replay", "--model", "tiny", "--rounds", "1", "--limit", "4", "--out", run]
        subprocess.run([*cli, *replay, "--json"], env=env, check=True, capture_output=True)
        missing = str(Path(tmp) / "dmeo")
        patch = [*cli, "patch", "--run", run, "--layers"]
        cases = {
            "interp --help": [*cli, "--help"],
            "interp metrics --run R": [*cli, "metrics", "--run", run],
            # refusals, exit 2 (the tiny run has layers 0..2 and rounds 0..1)
            "refused: patch --run MISTYPED": [*cli, "patch", "--run", missing, "--round", "1"],
            "refused: patch --layers 40": [*patch, "40", "--round", "1"],
            "refused: patch --round 9": [*patch, "1", "--round", "9"],
            "refused: probe --layers 7": [*cli, "probe", "--run", run, "--layers", "7"],
            "refused: replay --model notinstalled": [*cli, "replay", "--model", "notinstalled"]
            + ["--out", missing],
            "refused: patch --bogus-flag": [*cli, "patch", "--bogus-flag"],
            "refused: replay --permute cyclic --mode generate": [*cli, "replay", "--model"]
            + ["tiny", "--permute", "cyclic", "--mode", "generate", "--out", missing],
            "refused: replay --ray-address 'not a host'": [*cli, "replay", "--model", "tiny"]
            + ["--ray-address", "not a host", "--out", missing],
            "refused: experiment convergence --control nonsense": [*cli, "experiment"]
            + ["convergence", "--model", "tiny", "--control", "nonsense", "--out", missing],
            "refused: experiment convergence --run R --control-run MISTYPED": [*cli]
            + ["experiment", "convergence", "--run", run, "--control-run", missing],
            "python -c 'import torch, transformer_lens'": [
                sys.executable,
                "-c",
                "import torch, transformer_lens",
            ],
        }
        results = {}
        for name, argv in cases.items():
            code = 2 if name.startswith("refused") else 0
            _time(argv, env, code)  # warm the file cache; not counted
            runs = [_time(argv, env, code) for _ in range(REPEATS)]
            results[name] = {
                "median_s": round(statistics.median(runs), 3),
                "runs_s": [round(r, 3) for r in runs],
                "loads": _loads_heavy(argv, env),
            }
    import interp

    out = {
        "what": "whole-process wall time, median of repeats (first run not counted)",
        "repeats": REPEATS,
        "interp": str(Path(interp.__file__).parent),
        "command": " ".join(cli),
        "python": platform.python_version(),
        "machine": f"{platform.machine()}, {os.cpu_count()} cpus",
        "targets_s": {"interp --help": 0.5, "interp metrics --run R": 1.5, "refused: *": 1.0},
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    for name, row in results.items():
        print(f"{name:<45} {row['median_s']:>6.3f} s  loads {row['loads']}")


if __name__ == "__main__":
    main()
