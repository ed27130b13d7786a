"""scripts/circuits100.py (issue 17's 100-example run) on small settings: replay, both
methods' circuits, export and the numbers' JSON; run again, it keeps what is done."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "circuits100.py"
SMALL = ["--model", "tiny", "--sample", "4", "--rounds", "1", "--steps", "2", "--n-boot", "50"]
SMALL += ["--top", "10", "--verify-top", "10"]

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def load_script():
    spec = importlib.util.spec_from_file_location("circuits100", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def summaries(run: Path) -> dict[str, bytes]:
    return {p.parent.name: p.read_bytes() for p in sorted(run.glob("circuits/*/summary.json"))}


def test_circuits100_runs_end_to_end_and_resumes(tmp_path, bbq_dir, capsys):
    script = load_script()
    out, numbers = tmp_path / "run", tmp_path / "numbers.json"
    args = [*SMALL, "--data", str(bbq_dir), "--out", str(out), "--json", str(numbers)]
    first = script.main(args)
    assert json.loads(numbers.read_text()) == first
    assert set(first["methods"]) == {"eap-ig", "eap"}
    for m in first["methods"].values():
        assert m["rank_agreement"]["k"] == 10 and -1 <= m["rank_agreement"]["spearman"] <= 1
        assert m["circuit_edges"] == 10 and m["n_edges"] > 10
        assert m["faithful_n"] is None or m["faithful_n"] <= m["n_edges"]
        assert m["seconds_per_example"]["scores"] > 0
    assert 0 <= first["top_overlap"] <= 10
    assert (out / "index.html").is_file()
    for name in ("r1-t0-eap-ig2", "r1-t0-eap"):
        assert (out / "circuits" / name / "graph.html").is_file()
        assert (out / "circuits" / name / "graph.dot").is_file()
    before = summaries(out)
    capsys.readouterr()
    second = script.main([*args, "--no-export"])
    said = capsys.readouterr().err
    assert said.count(": kept (its summary records these settings)") == 2
    assert summaries(out) == before  # nothing recomputed
    assert second["methods"] == first["methods"]
