"""Edge attribution (EAP, EAP-IG) against exact edge patching on a real BBQ run.

Replays EXAMPLES seeded BBQ examples (../shared/data/bbq, five categories) with the
self-correct plan for 2 rounds on the embedded model, then runs `interp.circuits.circuit`
between round 2 and round 0 with each method: seconds per example of the scores, the top-50
edges' Spearman rank agreement with exact single-edge patching (bootstrap interval), and the
faithfulness curve's first N >= 0.8 and the N from which it stays there. Exact verification
is the obvious alternative and is timed in the same run. circuit-tracer's attribution graphs
are not measured: it is not integrated (see the README's Circuits section).

Writes benchmarks/results/circuits.json. Usage: python benchmarks/circuits.py [--examples 16]
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

OUT = Path(__file__).parent / "results" / "circuits.json"
BBQ = Path(__file__).resolve().parents[2] / "shared" / "data" / "bbq"
FILES = ["Age", "Disability_status", "Physical_appearance", "Religion", "Sexual_orientation"]


def main() -> None:
    from interp.circuits.pipeline import CircuitConfig, circuit
    from interp.model.loading import load_model
    from interp.replay.loop import ReplayConfig, replay

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--examples", type=int, default=16)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    model = load_model("smollm2")
    runs = {}
    with tempfile.TemporaryDirectory() as tmp:
        data = [str(BBQ / f"{f}.jsonl") for f in FILES]
        config = ReplayConfig(
            out=str(Path(tmp) / "run"), model="smollm2", task="bbq", data=data,
            sample=args.examples, rounds=2, plan="self-correct",
        )  # fmt: skip
        started = time.perf_counter()
        run = replay(config, model=model)
        replay_s = time.perf_counter() - started
        for method in ("eap", "eap-ig"):
            cfg = CircuitConfig(round=2, method=method, verify_top=50)
            result = circuit(run, cfg, model=model, write=False)
            s = result.summary
            runs[method] = {
                "steps": 1 if method == "eap" else cfg.steps,
                "n_examples": int(result.scores.shape[0]),
                "n_edges": s.get("n_edges"),
                "faithful_n": s.get("faithful_n"),
                "faithful_n_stable": s.get("faithful_n_stable"),
                "verify": s.get("verify"),
                "timing": s.get("timing"),
            }
    payload = {
        "what": __doc__.split("\n\n")[0],
        "python": platform.python_version(),
        "examples": args.examples,
        "replay_s": round(replay_s, 1),
        "runs": runs,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    print(json.dumps(payload, indent=2, default=str))


if __name__ == "__main__":
    main()
