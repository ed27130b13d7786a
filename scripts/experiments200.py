"""The README's experiment measurements (issue 15): every `interp experiment` on the embedded
model, 200 seeded BBQ examples of the five category files in ../shared/data/bbq, rounds 0..3,
seed 0; then one JSON of each experiment's wall time, sizes and summary.

    python scripts/experiments200.py OUT [NAME ...] [--sample N] [--cot-sample N]

OUT/<name>/ is each experiment directory (resumable: a second call reuses every finished
replay, so the wall time of a resumed call is not the experiment's cost; the JSON keeps the
first complete call's time unless --retime). `interactions` may use fewer examples
(``--cot-sample``, default: the same 200) because its CoT cells generate up to 48 tokens a
round. `superficial` analyses convergence's two replays (self-correct and its baseline
control, the same examples) with ``--run/--control-run`` when OUT/convergence is complete, so
its time is then the analysis only (``--no-reuse`` replays its own).
OUT/experiments200.json collects the summaries.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

NAMES = ("convergence", "superficial", "weak-evidence", "self-distinguish", "interactions")
CATEGORIES = ("Age", "Disability_status", "Physical_appearance", "Religion", "Sexual_orientation")


def command(name: str, out: Path, data: Path, sample: int, rounds: int, seed: int) -> list[str]:
    files = [str(data / f"{c}.jsonl") for c in CATEGORIES]
    return [
        sys.executable,
        "-m",
        "interp.cli",
        "experiment",
        name,
        "--model",
        "smollm2",
        "--task",
        "bbq",
        "--data",
        *files,
        "--bbq-templates",
        str(data / "official" / "templates"),
        "--sample",
        str(sample),
        "--rounds",
        str(rounds),
        "--seed",
        str(seed),
        "--out",
        str(out / name),
        "--json",
    ]


def reuse_convergence(cmd: list[str], out: Path) -> tuple[list[str], Path] | None:
    """superficial on convergence's main and control runs, when they are complete."""
    runs = out / "convergence" / "runs"
    if not (out / "convergence" / "summary.json").is_file():
        return None
    keep = cmd[: cmd.index("--model")]
    cmd = [*keep, "--run", str(runs / "main"), "--control-run", str(runs / "control"), "--json"]
    return cmd, runs / "main" / "experiments" / "superficial"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("names", nargs="*", default=list(NAMES))
    parser.add_argument("--data", type=Path, default=Path("../shared/data/bbq"))
    parser.add_argument("--sample", type=int, default=200)
    parser.add_argument("--cot-sample", type=int, default=None)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--retime", action="store_true")
    parser.add_argument("--no-reuse", action="store_true", help="superficial replays its own")
    args = parser.parse_args()
    unknown = sorted(set(args.names) - set(NAMES))
    if unknown:
        parser.error(f"unknown experiment(s): {', '.join(unknown)}; known: {', '.join(NAMES)}")
    args.out.mkdir(parents=True, exist_ok=True)
    record_path = args.out / "experiments200.json"
    record = json.loads(record_path.read_text()) if record_path.exists() else {}
    record.setdefault("machine", {"cpus": os.cpu_count(), "load_at_start": os.getloadavg()})
    for name in args.names:
        sample = args.cot_sample if name == "interactions" and args.cot_sample else args.sample
        cmd = command(name, args.out, args.data, sample, args.rounds, args.seed)
        where = args.out / name
        reused = (
            None if args.no_reuse or name != "superficial" else reuse_convergence(cmd, args.out)
        )
        if reused is not None:
            cmd, where = reused
        print("$", shlex.join(cmd), flush=True)
        start = time.perf_counter()
        load0 = os.getloadavg()[0]
        done = subprocess.run(cmd, stdout=subprocess.PIPE, text=True)
        seconds = time.perf_counter() - start
        if done.returncode != 0:
            print(f"{name} failed with exit code {done.returncode}", file=sys.stderr)
            return done.returncode
        summary = json.loads((where / "summary.json").read_text())
        if record_path.exists():
            record = json.loads(record_path.read_text())
        entry = record.get(name, {})
        if "seconds" not in entry or args.retime:
            entry.update(seconds=round(seconds, 1), load_at_start=load0)
        entry.update(
            sample=sample,
            rounds=args.rounds,
            seed=args.seed,
            command=shlex.join(cmd[1:]),
            directory=str(where),
            load_at_end=os.getloadavg()[0],
            summary=summary,
        )
        # Re-read first: another call of this script may have written other experiments.
        record = json.loads(record_path.read_text()) if record_path.exists() else record
        record[name] = entry
        record_path.write_text(json.dumps(record, indent=2, default=str) + "\n")
        print(f"{name}: {seconds:.0f} s; reading:", *summary.get("reading", []), sep="\n  ")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
