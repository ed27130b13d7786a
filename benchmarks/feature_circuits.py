"""Feature circuits on CPU: circuit-tracer's attribution-graph build time per prompt against
our component EAP on the same example, and the transcoders' quality.

Replays the first EXAMPLES examples of BBQ Age (../shared/data/bbq) with the self-correct plan
for ROUNDS rounds on the model, then for each example runs `interp feature-circuit` (round
ROUNDS against round 0; circuit-tracer's graphs of both prompts, comparison, interventions)
and, on the same example and rounds, `interp circuit` with EAP and EAP-IG (the component-level
alternative: scores of every edge, no verification, no bootstrap), each timed in this process.
The transcoders are a folder given with --transcoders (its transcoders.json: how they were
trained and how long it took; evals.json: replacement-model quality on held-out text), or,
without it, trained here first like the README's command (--train-tokens, width 512).

Writes benchmarks/results/feature_circuits.json. Usage:
  python benchmarks/feature_circuits.py --transcoders DIR [--examples 2] [--rounds 1]
  python benchmarks/feature_circuits.py --model tiny --train-tokens 2048 --width 64 \
      --out /tmp/fc.json          (a check that it runs: minutes, not the numbers)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

OUT = Path(__file__).parent / "results" / "feature_circuits.json"
BBQ = Path(__file__).resolve().parents[2] / "shared" / "data" / "bbq"
FILES = ["Age", "Religion", "Disability_status", "Physical_appearance", "Sexual_orientation"]


def main() -> None:
    from interp.circuits.feature_level import FeatureCircuitConfig, feature_circuit
    from interp.circuits.pipeline import CircuitConfig, circuit
    from interp.model.loading import load_model
    from interp.replay.loop import ReplayConfig, replay
    from interp.sae.corpus import CorpusConfig
    from interp.sae.transcoders import TranscoderTrainConfig, train_transcoders

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--transcoders", type=Path, default=None)
    parser.add_argument("--train-tokens", type=int, default=131072)
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--examples", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--max-feature-nodes", type=int, default=256)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    load_before = os.getloadavg()
    model = load_model(args.model)
    with tempfile.TemporaryDirectory() as tmp:
        tc = args.transcoders
        if tc is None:  # the README's training command, here
            tc = Path(tmp) / f"{args.model}-w{args.width}"
            train_transcoders(
                TranscoderTrainConfig(
                    out=str(tc),
                    width=args.width,
                    l1=3.0,
                    lr=2e-3,
                    tokens=args.train_tokens,
                    eval_tokens=4096,
                    corpus=CorpusConfig(
                        corpus=["bbq"], data=[str(BBQ / f"{f}.jsonl") for f in FILES]
                    ),
                ),
                model,
                progress=False,
            )
        record, evals = _read(tc / "transcoders.json"), _read(tc / "evals.json")
        run = Path(tmp) / "run"
        started = time.perf_counter()
        replay(
            ReplayConfig(
                out=str(run), model=args.model, task="bbq", data=[str(BBQ / "Age.jsonl")],
                plan="self-correct", rounds=args.rounds, limit=args.examples,
            ),
            model=model,
        )  # fmt: skip
        replay_s = time.perf_counter() - started
        examples = []
        for index in range(args.examples):
            config = FeatureCircuitConfig(
                transcoders=str(tc),
                round=args.rounds,
                example=index,
                max_feature_nodes=args.max_feature_nodes,
            )
            t0 = time.perf_counter()
            fc = feature_circuit(run, config, model=model)
            fc_s = time.perf_counter() - t0
            s = fc.summary
            eap = {}
            for method in ("eap", "eap-ig"):
                cc = CircuitConfig(
                    round=args.rounds, method=method, examples=(index,), verify_top=0, n_boot=0
                )
                t0 = time.perf_counter()
                result = circuit(run, cc, model=model, write=False)
                eap[method] = {
                    "seconds": round(time.perf_counter() - t0, 2),
                    "n_edges": result.summary.get("n_edges"),
                    "steps": 1 if method == "eap" else cc.steps,
                }
            graphs = s["graphs"]
            examples.append(
                {
                    "example": s["example"],
                    "positions": s["positions"],
                    "feature_circuit_s": round(fc_s, 2),
                    "graph_s_per_prompt": {
                        label: {
                            "seconds": s["timing"][f"graph_{label}_s"],
                            "n_tokens": graphs[label]["n_tokens"],
                        }
                        for label in ("target", "source")
                    },
                    "graphs": graphs,
                    "interventions": s["interventions"],
                    "circuit_tracer_cross_check": s["circuit_tracer_cross_check"],
                    "top_changes": s["top_changes"][:10],
                    "component_eap_same_example": eap,
                }
            )
    per_prompt = [
        g["seconds"] for e in examples for g in e["graph_s_per_prompt"].values()
    ]  # fmt: skip
    payload = {
        "what": __doc__.split("\n\n")[0],
        "command": "python benchmarks/feature_circuits.py " + " ".join(sys.argv[1:]),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "model": args.model,
        "rounds": args.rounds,
        "max_feature_nodes": args.max_feature_nodes,
        "transcoders": {
            "folder": str(args.transcoders) if args.transcoders else "trained in this run",
            **{k: record.get(k) for k in ("layers", "width", "config", "tokens", "seconds")},
            "train_tokens_per_s": record.get("train_tokens_per_s"),
            "versions": record.get("versions"),
        },
        "replacement_loss": evals,
        "replay_s": round(replay_s, 1),
        "graph_s_per_prompt_mean": round(sum(per_prompt) / len(per_prompt), 2)
        if per_prompt
        else None,
        "examples": examples,
        "versions": _versions(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(payload, indent=1, default=str) + "\n")
    print(json.dumps({k: v for k, v in payload.items() if k != "examples"}, indent=1, default=str))


def _read(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}  # an older folder without it: the numbers are left out, not invented


def _versions() -> dict[str, str]:
    from importlib import metadata

    return {
        p: metadata.version(p)
        for p in ("circuit-tracer", "transformer-lens", "transformers", "torch")
    }


if __name__ == "__main__":
    main()
