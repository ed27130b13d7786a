"""Benchmark: the explorer's Python side, each interaction of ``interp.explore`` timed.

Setting: the tiny model (3 layers; the stored tables, not the model, set these times) on 300
BBQ examples (``Age.jsonl`` of the shared data, ``--limit 300``), 5 rounds, the self-correct
plan, with a baseline control run, a probe (``stereotype``, its first 30 pairs,
``cluster=example``) and patching (``resid_post,attn_out,mlp_out``, every layer, round 5 ->
0) on the run. The runs are built once under ``--work`` (reused when there).

Each interaction is one :func:`interp.report.explore.view_state` call (what the widget and
the server compute when the state changes) on a warm explorer (the first state, which reads
the tables and loads the tokenizer, is reported apart as ``first_state_seconds``): pick an
example, move the round slider, click a heatmap cell (layer and round), set a filter, type a
query (an id), search the question text (the first search decodes every question, once).
Wall-clock per call, ``--repeats`` times over different examples; min, median, max.
The issue's target: each interaction <= 200 ms.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/explore.py [--work /tmp/explore-bench]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from importlib import resources
from pathlib import Path

from interp.report.explore import Explorer, view_state
from interp.runs.store import write_json

BBQ = Path(__file__).resolve().parents[2] / "shared" / "data" / "bbq" / "Age.jsonl"
N_EXAMPLES, ROUNDS = 300, 5
TARGET_SECONDS = 0.2


def build(work: Path) -> tuple[Path, Path]:
    from interp.model.loading import load_model
    from interp.patching import PatchConfig, patch
    from interp.replay.loop import ReplayConfig, replay
    from probes.api import probe
    from probes.config import ProbeConfig

    run, control = work / "run", work / "control"
    if (run / "patching").is_dir() and (control / "manifest.json").is_file():
        return run, control
    model = load_model("tiny")
    for out, plan in ((run, "self-correct"), (control, "baseline")):
        replay(
            ReplayConfig(
                model="tiny",
                task="bbq",
                data=[str(BBQ)],
                rounds=ROUNDS,
                limit=N_EXAMPLES,
                plan=plan,
                out=str(out),
            ),
            model=model,
            progress=False,
        )
    text = resources.files("probes").joinpath("data/stereotype.jsonl").read_text()
    concept = work / "concepts" / "stereotype.jsonl"
    concept.parent.mkdir(parents=True, exist_ok=True)
    concept.write_text("".join(text.splitlines(keepends=True)[:60]))
    probe(
        run, ProbeConfig(concept=concept, n_boot=50, cluster="example"), model=model, progress=False
    )
    patch(
        run,
        PatchConfig(
            layer="all",
            round=ROUNDS,
            target_round=0,
            component="resid_post,attn_out,mlp_out",
            n_boot=50,
        ),
        model=model,
        progress=False,
    )
    return run, control


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--work", type=Path, default=Path("/tmp/explore-bench"))
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument(
        "--out", type=Path, default=Path(__file__).parent / "results" / "explore.json"
    )
    args = parser.parse_args()
    started = time.perf_counter()
    run, control = build(args.work)
    build_seconds = time.perf_counter() - started

    explorer = Explorer(run, control=control)
    started = time.perf_counter()
    state = view_state(explorer, {})["state"]
    first = time.perf_counter() - started
    n = len(explorer.table)
    interactions = {
        "pick an example": lambda i: {**state, "example": (7 * i + 1) % n},
        "move the round slider": lambda i: {**state, "example": i % n, "round": i % ROUNDS},
        "click a heatmap cell": lambda i: {
            **state,
            "example": i % n,
            "layer": i % 3,
            "round": (i + 1) % ROUNDS,
        },
        "set a filter": lambda i: {
            **state,
            "example": i % n,
            "filters": [["changed"], ["ambiguous"], ["stereotyped"]][i % 3],
        },
        "type a query": lambda i: {**state, "example": i % n, "query": f"age/{i % 50}"},
        # words of the questions (round 0's user message): the first such search decodes
        # every example's question once, and is counted here
        "search the question text": lambda i: {
            **state,
            "example": i % n,
            "query": ["grandfather", "phone", "forgetful", "college", "risk"][i % 5],
        },
    }
    timings = {}
    for name, make in interactions.items():
        seconds = []
        for i in range(args.repeats):
            s = make(i)
            t = time.perf_counter()
            view_state(explorer, s)
            seconds.append(time.perf_counter() - t)
        timings[name] = {
            "min": min(seconds),
            "median": statistics.median(seconds),
            "max": max(seconds),
        }
        print(
            f"{name:24s} median {1000 * timings[name]['median']:6.1f} ms, "
            f"max {1000 * timings[name]['max']:6.1f} ms"
        )
    worst = max(t["max"] for t in timings.values())
    result = {
        "what": "interp.explore: the Python side of each interaction (view_state), warm explorer",
        "model": "tiny",
        "n_examples": n,
        "rounds": ROUNDS,
        "analyses": "probe (30 stereotype pairs), patching (resid_post, attn_out, mlp_out; "
        "every layer), baseline control run",
        "repeats": args.repeats,
        "build_seconds_not_timed": round(build_seconds, 1),
        "first_state_seconds": first,
        "interactions_seconds": timings,
        "worst_seconds": worst,
        "target_seconds": TARGET_SECONDS,
        "within_target": worst <= TARGET_SECONDS,
        "threads": os.environ.get("OMP_NUM_THREADS", "default"),
        "load_average": os.getloadavg(),
        "python": platform.python_version(),
        "cpu": platform.processor() or platform.machine(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_json(args.out, result)
    print(f"worst {1000 * worst:.1f} ms (target {1000 * TARGET_SECONDS:.0f} ms); wrote {args.out}")


if __name__ == "__main__":
    main()
