"""Defect 1 of issue 10: metrics undefined for a run (JSON null) print as "-", never crash;
and an analysis option never degrades the stored metrics.json."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from faultkit import assert_refused_without_trace, copy_run, invoke, tree_digest

from interp.report.tables import format_metrics

pytestmark = [pytest.mark.faults, pytest.mark.usefixtures("one_torch_thread")]


def replay_ok(out: Path, *args: str) -> str:
    result = invoke("replay", "--model", "tiny", "--rounds", "1", "--out", str(out), *args)
    assert result.exit_code == 0, (result.output, result.exception)
    assert "Traceback" not in result.output
    return result.stdout


def test_smallest_case_one_ambiguous_example(tmp_path):
    # The smallest case: one ambiguous example, so no disambiguated accuracy and no
    # s_DIS exist; replay used to write the run and then exit 1 in the table printer.
    stdout = replay_ok(tmp_path / "x", "--limit", "1")
    # One example: the position warning comes first (no interval below the cluster floor,
    # so accuracy's Wilson interval, which covers chance, stands in).
    table = [line for line in stdout.splitlines() if not line.startswith("WARNING:")]
    assert table[0].split()[:3] == ["round", "accuracy", "acc"]
    assert " - " in table[1]  # acc disambig and s_DIS undefined
    assert table[-1] == f"wrote {tmp_path / 'x'}"
    metrics = json.loads((tmp_path / "x" / "metrics.json").read_text())
    assert metrics["per_round"][0]["accuracy_disambig"]["value"] is None
    # ... and `interp metrics` prints the same run.
    again = invoke("metrics", "--run", str(tmp_path / "x"))
    assert again.exit_code == 0, again.output
    shown = [line for line in again.stdout.splitlines() if not line.startswith("WARNING:")]
    assert shown[:3] == table[:3]


def test_generate_mode_run_prints_its_table(tmp_path):
    args = ("--limit", "2", "--mode", "generate", "--max-new-tokens", "2")
    stdout = replay_ok(tmp_path / "g", *args)
    assert "n = 2 examples" in stdout  # entropy, ECE, Brier are undefined: shown as "-"


def test_mc_file_without_context_condition(tmp_path):
    data = tmp_path / "q.jsonl"
    rows = [
        {"id": f"q{i}", "question": f"Pick {i}?", "options": ["yes", "no", "maybe"], "label": 0}
        for i in range(2)
    ]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    stdout = replay_ok(tmp_path / "mc", "--task", "mc", "--data", str(data))
    assert "n = 2 examples" in stdout


def test_format_metrics_reads_null_and_nan_alike(base_run):
    metrics = json.loads((base_run / "metrics.json").read_text())
    for entry in metrics["per_round"]:
        entry["ece"] = {"value": None, "ci": None}
        entry["brier"] = None
        entry["unknown_rate"] = None
        entry["position_share"] = [None for _ in entry["position_share"]]
    text = format_metrics(metrics)
    assert "nan" not in text.lower() and "None" not in text


@pytest.mark.parametrize("n_boot", ["0", "-3"])
def test_metrics_refuses_n_boot_below_one_and_keeps_the_run(tmp_path, base_run, n_boot):
    run = copy_run(base_run, tmp_path / "run")
    line = assert_refused_without_trace(run, "metrics", "--run", str(run), "--n-boot", n_boot)
    assert "--n-boot" in line


def test_other_bootstrap_settings_are_printed_not_stored(tmp_path, base_run):
    run = copy_run(base_run, tmp_path / "run")
    before = tree_digest(run)
    for args in (["--n-boot", "7"], ["--seed", "3"], ["--n-boot", "7", "--json"]):
        result = invoke("metrics", "--run", str(run), *args)
        assert result.exit_code == 0, result.output
        assert tree_digest(run) == before
    fewer = json.loads(invoke("metrics", "--run", str(run), "--n-boot", "7", "--json").stdout)
    assert fewer["bootstrap"]["n_boot"] == 7  # printed with the asked-for settings


def test_stored_settings_rewrite_the_same_bytes(tmp_path, base_run):
    run = copy_run(base_run, tmp_path / "run")
    before = tree_digest(run)
    result = invoke("metrics", "--run", str(run))
    assert result.exit_code == 0, result.output
    assert tree_digest(run) == before
