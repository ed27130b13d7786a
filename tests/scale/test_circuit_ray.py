"""`interp circuit --workers` (interp.runs.distributed): both per-example passes sharded over Ray,
and the written circuit is the one a single process writes.

One local Ray cluster limited to this machine's cores serves the module; `run_jobs` joins it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from interp.circuits.pipeline import CIRCUIT_SHARD
from interp.cli import app
from interp.replay.loop import ReplayConfig, replay

ray = pytest.importorskip("ray", reason="the Ray extra is not installed (pip install interp[ray])")
# The workers compute with --threads-per-worker 1 torch thread; the single process must too,
# or float reductions differ in the last bits (CI, with no OMP_NUM_THREADS, ran it on 2).
pytestmark = [pytest.mark.ray, pytest.mark.usefixtures("one_torch_thread")]

ARGS = ["--round", "2", "--method", "eap-ig", "--steps", "2", "--verify-top", "10"]
ARGS += ["--n-boot", "50", "--json"]
TABLES = ("edges.parquet", "nodes.parquet", "faithfulness.parquet")


@pytest.fixture(scope="module")
def cluster():
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, tiny_model) -> Path:
    out = tmp_path_factory.mktemp("circuit-ray") / "run"
    # more examples than one shard holds, so the rows come from several jobs
    limit = 3 * CIRCUIT_SHARD - 1
    config = ReplayConfig(model="tiny", task="builtin", rounds=2, limit=limit, out=str(out))
    replay(config, model=tiny_model)
    return out


def written(run: Path) -> tuple[dict[str, bytes], dict]:
    (folder,) = (run / "circuits").iterdir()
    summary = json.loads((folder / "summary.json").read_text())
    timing = summary.pop("timing")
    return {t: (folder / t).read_bytes() for t in TABLES}, {"summary": summary, "timing": timing}


def test_circuit_on_two_workers_writes_the_same_circuit(cluster, run_dir):
    runner = CliRunner()
    alone = runner.invoke(app, ["circuit", "--run", str(run_dir), *ARGS])
    assert alone.exit_code == 0, alone.output
    tables, single = written(run_dir)
    spread = runner.invoke(app, ["circuit", "--run", str(run_dir), *ARGS, "--workers", "2"])
    assert spread.exit_code == 0, spread.output
    tables2, sharded = written(run_dir)
    assert tables2 == tables  # byte for byte
    assert sharded["summary"] == single["summary"]  # all but the clock
    assert "workers" not in single["timing"]
    # three shards per pass (11 examples in shards of 4), two passes
    assert sharded["timing"]["workers"]["n"] == 2 and sharded["timing"]["workers"]["jobs"] == 6


def test_no_ray_without_workers(run_dir, tmp_path):
    code = (
        "import sys; from interp.cli import main; sys.argv=['interp','circuit','--run',"
        f"{str(run_dir)!r},'--round','1','--method','eap','--verify-top','0','--n-boot','0',"
        "'--limit','2','--json']\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "print('RAY' if 'ray' in sys.modules else 'NO-RAY')"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env
    )
    assert out.stdout.strip().endswith("NO-RAY"), out.stderr[-2000:]


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--workers", "0"], "--workers must be at least 1"),
        (["--workers", "2", "--threads-per-worker", "0"], "--threads-per-worker must be"),
        (["--workers", "1", "--gpus-per-worker", "-1"], "--gpus-per-worker must not be"),
        (["--workers", "1", "--device", "cuda"], "--gpus-per-worker must be above 0"),
    ],
)
def test_bad_worker_flags_are_one_line_and_write_nothing(run_dir, flags, message):
    import hashlib

    def tree() -> dict[str, str]:
        return {
            str(p.relative_to(run_dir)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(run_dir.rglob("*"))
            if p.is_file()
        }

    before = tree()
    result = CliRunner().invoke(app, ["circuit", "--run", str(run_dir), "--round", "1", *flags])
    assert result.exit_code == 2
    assert message in result.output and result.output.count("\n") == 1, result.output
    assert result.output.startswith("error: ")
    assert tree() == before


def test_the_circuits100_script_on_workers_gives_the_same_numbers(cluster, bbq_dir, tmp_path):
    """scripts/circuits100.py --workers: the replay and both circuits sharded, same numbers."""
    import importlib.util

    script_path = Path(__file__).resolve().parents[2] / "scripts" / "circuits100.py"
    spec = importlib.util.spec_from_file_location("circuits100", script_path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    small = ["--model", "tiny", "--sample", "6", "--rounds", "1", "--steps", "2"]
    small += ["--n-boot", "50", "--top", "10", "--verify-top", "10", "--no-export"]
    small += ["--data", str(bbq_dir)]
    numbers = {}
    for label, extra in (("alone", []), ("spread", ["--workers", "2"])):
        out, path = tmp_path / label, tmp_path / f"{label}.json"
        numbers[label] = script.main([*small, "--out", str(out), "--json", str(path), *extra])

    def result(payload: dict) -> dict:
        volatile = ("seconds_per_example", "workers")
        return {
            m: {k: v for k, v in numbers.items() if k not in volatile}
            for m, numbers in payload["methods"].items()
        }

    assert result(numbers["spread"]) == result(numbers["alone"])
    assert numbers["spread"]["methods"]["eap"]["workers"]["n"] == 2
    assert numbers["alone"]["top_overlap"] == numbers["spread"]["top_overlap"]
