"""Issue 17's "100-example run of the embedded model", end to end, and the numbers the README
quotes from it.

1. replay SAMPLE seeded BBQ examples of the five category files (../shared/data/bbq) with the
   self-correct plan, rounds 0..ROUNDS, into OUT;
2. `interp circuit` between round ROUND and round 0 with EAP-IG (the default) and EAP, each
   verified by exact edge patching (top-50 rank agreement, faithfulness curve), which also
   writes each circuit's graph (circuits/<name>/graph.html, graph.dot, graph.svg);
3. `interp export` of the run (index.html with the circuits' graphs);
4. a JSON of the numbers: seconds per example, top-50 Spearman with its interval, the smallest
   N reaching faithfulness 0.8 (with the curve's interval there), the circuit's edges, and
   how many top-50 edges the two methods share.

Resumable: a complete replay is kept (a killed one resumes from its finished batches), and a
circuit whose summary already records these settings is read instead of recomputed; run the
same command again after a kill. --workers N spreads the replay and both circuit passes over
N Ray actors (same results). The README's run (the lead's, on a quiet machine):

    python scripts/circuits100.py --out artifacts/runs/circuits100

(on two cores --workers 2 is slower than one process; it pays on more cores or a cluster).

Tested on small settings only (tests/e2e/test_circuits100.py: --model tiny --sample 4).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BBQ = ROOT.parent / "shared" / "data" / "bbq"
FILES = ["Age", "Disability_status", "Physical_appearance", "Religion", "Sexual_orientation"]
METHODS = ("eap-ig", "eap")


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=ROOT / "artifacts" / "runs" / "circuits100")
    p.add_argument(
        "--json", type=Path, default=ROOT / "benchmarks" / "results" / "circuits100.json"
    )
    p.add_argument("--model", default="smollm2")
    p.add_argument("--data", type=Path, default=BBQ, help="folder of the BBQ category files")
    p.add_argument("--sample", type=int, default=100)
    p.add_argument("--rounds", type=int, default=3, help="replay rounds 0..ROUNDS")
    p.add_argument("--round", type=int, default=None, help="source round (default: ROUNDS)")
    p.add_argument("--steps", type=int, default=5, help="EAP-IG steps")
    p.add_argument("--top", type=int, default=50)
    p.add_argument("--verify-top", type=int, default=50)
    p.add_argument("--n-boot", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=8, help="replay batch size")
    p.add_argument("--device", default="cpu")
    p.add_argument("--workers", type=int, default=None, help="Ray actors (default: no Ray)")
    p.add_argument("--threads-per-worker", type=int, default=1)
    p.add_argument("--no-export", action="store_true", help="skip interp export")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse(argv)
    from interp.circuits import CircuitConfig, circuit
    from interp.errors import InterpError
    from interp.model.loading import load_model
    from interp.replay import ReplayConfig, replay

    workers = None
    if args.workers is not None:  # only then is Ray imported (by interp.runs.distributed)
        from interp.runs.distributed import Workers

        workers = Workers(n=args.workers, threads=args.threads_per_worker)
    data = [args.data / f"{name}.jsonl" for name in FILES]
    missing = [str(p) for p in data if not p.is_file()]
    if missing:
        raise InterpError(f"BBQ files missing: {', '.join(missing)}")
    source = args.rounds if args.round is None else args.round
    config = ReplayConfig(
        out=str(args.out), model=args.model, task="bbq", data=[str(p) for p in data],
        sample=args.sample, rounds=args.rounds, plan="self-correct", seed=args.seed,
        batch_size=args.batch_size, device=args.device,
    )  # fmt: skip
    model = None if workers is not None else load_model(args.model, device=args.device)
    say(f"replay: {args.sample} BBQ examples, rounds 0..{args.rounds} -> {args.out}")
    started = time.perf_counter()
    run = replay(config, model=model, progress=True, workers=workers)
    replay_wall = time.perf_counter() - started
    n_examples = int(run.rounds()["example_index"].nunique())
    results: dict[str, dict[str, Any]] = {}
    for method in METHODS:
        cfg = CircuitConfig(
            round=source, method=method, steps=args.steps, top=args.top,
            verify_top=args.verify_top, n_boot=args.n_boot, seed=args.seed,
        )  # fmt: skip
        kept = _kept(run, cfg)
        if kept is None:
            say(f"circuit {cfg.name()}: computing")
            if model is None:
                model = load_model(args.model, device=args.device)
            circuit(run, cfg, model=model, device=args.device, progress=True, workers=workers)
        else:
            say(f"circuit {cfg.name()}: kept (its summary records these settings)")
        results[method] = _numbers(run, cfg.name())
    export_note = None
    if not args.no_export:
        from interp.report.export import export

        say("export")
        exported = export([run], model=model)
        export_note = str(exported.index)
    payload = {
        "what": __doc__.split("\n\n")[0],
        "python": platform.python_version(),
        "run": str(run.path),
        "model": run.manifest["model"].get("model_id"),
        "replay": {
            "examples": n_examples,
            "rounds": args.rounds,
            "seconds": run.manifest.get("timing", {}).get("replay_seconds"),
            "wall_s_this_call": round(replay_wall, 1),
        },
        "round": source,
        "target_round": 0,
        "workers": args.workers,
        "methods": results,
        "top_overlap": _overlap(run, [results[m]["name"] for m in METHODS], args.top),
        "index": export_note,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(payload, indent=2, allow_nan=False) + "\n")
    say(f"numbers: {args.json}")
    return payload


def say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _kept(run, cfg) -> dict[str, Any] | None:
    """The summary of a complete circuit computed with exactly these settings, if any."""
    if cfg.name() not in run.analyses("circuits"):
        return None
    summary = run.read_analysis("circuits", cfg.name(), []).summary
    return summary if summary.get("config") == cfg.to_dict() else None


def _numbers(run, name: str) -> dict[str, Any]:
    found = run.read_analysis("circuits", name, ["edges", "faithfulness"])
    s, faith = found.summary, found.tables["faithfulness"]
    n = s["n_examples"]
    timing = s["timing"]
    reach = faith[faith["n_edges"] == s["faithful_n"]] if s.get("faithful_n") is not None else None
    at = None
    if reach is not None and len(reach):
        row = reach.iloc[0]
        at = {k: _num(row[k]) for k in ("faithfulness", "ci_lo", "ci_hi")}
    edges = found.tables["edges"]
    return {
        "name": name,
        "method": s["method"],
        "steps": s["steps"],
        "n_examples": n,
        "n_edges": s["n_edges"],
        "seconds_per_example": {
            "scores": timing.get("scoring_per_example_s"),
            "verify": round(timing["verify_s"] / n, 3),
            "total": round(timing["total_s"] / n, 3),
        },
        "workers": timing.get("workers"),
        "rank_agreement": s.get("verify"),  # top-K Spearman with a cluster-bootstrap interval
        "faithful_threshold": s["faithful_threshold"],
        "faithful_n": s.get("faithful_n"),
        "faithfulness_at_faithful_n": at,
        "faithful_n_stable": s.get("faithful_n_stable"),
        "circuit_edges": int(edges["in_circuit"].sum()),
        "significant_edges": s["n_significant"],
        "target_value": s["target_value"],
        "source_value": s["source_value"],
    }


def _overlap(run, names: list[str], top: int) -> int:
    """How many of the top ``top`` edges the methods share."""
    tops = []
    for name in names:
        edges = run.read_analysis("circuits", name, ["edges"]).tables["edges"]
        chosen = edges[edges["rank"] <= top]
        tops.append(set(zip(chosen["sender"], chosen["receiver"], strict=True)))
    return len(set.intersection(*tops))


def _num(value: Any) -> float | None:
    v = float(value)
    return round(v, 4) if v == v and abs(v) != float("inf") else None


if __name__ == "__main__":
    from interp.errors import InterpError

    try:
        main()
    except InterpError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
