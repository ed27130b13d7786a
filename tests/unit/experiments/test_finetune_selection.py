"""interp.experiments.finetune_selection end to end on the tiny model (issue 26 item 2): the
structure, the numbers equal a recomputation from the stored runs and fine-tunes, a rerun
reuses everything, and bad settings are refused before anything is written."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from interp.errors import InterpError
from interp.experiments import experiment
from interp.experiments.finetune_selection import SelectionConfig, arms
from interp.metrics.debias import debiased_rounds
from interp.runs.store import Run
from tests.faults.faultkit import assert_refused_without_trace, invoke


def _config(out, bbq_dir, **fields) -> SelectionConfig:
    base = {
        "model": "tiny",
        "task": "bbq",
        "data": [str(bbq_dir / "Age.jsonl")],
        "eval_data": [str(bbq_dir / "Religion.jsonl")],
        "sample": 6,
        "pool": 10,
        "n": 3,
        "seeds": 3,
        "steps": 2,
        "lr": 0.05,  # the 2 steps move the tiny model's answers
        "n_boot": 50,
        "batch_size": 4,
    }
    return SelectionConfig(out=str(out), **{**base, **fields})


@pytest.fixture(scope="module")
def done(tmp_path_factory, bbq_dir, one_torch_thread):
    out = tmp_path_factory.mktemp("ftsel") / "exp"
    config = _config(out, bbq_dir)
    return config, experiment("finetune-selection", config, progress=False)


def _debiased(path, name) -> pd.DataFrame:
    return debiased_rounds(Run.open(path / "runs" / name).rounds())


def test_structure(done):
    config, result = done
    path = result.path
    assert set(arms(config)) == {"before"} | {
        f"{r}-s{k}" for r in ("random", "concept") for k in range(3)
    }
    for name in arms(config):
        assert (path / "runs" / name / "manifest.json").is_file()
    assert (path / "runs" / "before" / "probes" / "stereotype" / "directions.safetensors").is_file()
    assert set(result.tables) == {"runs", "arms", "vs_random", "selection", "training"}
    assert {p.stem for p in (path / "tables").glob("*.parquet")} == set(result.tables)
    summary = json.loads((path / "summary.json").read_text())
    assert summary["experiment"] == "finetune-selection" and summary["n_eval_examples"] == 6
    assert summary["rules"] == ["random", "concept"] and summary["seeds"] == 3
    assert any("concept selection" in line for line in summary["reading"])
    train = result.tables["training"]
    assert (train["n"] == 3).all() and len(train) == 6
    manifest = json.loads((path / "manifest.json").read_text())
    assert manifest["complete"] and manifest["replay"]["eval_data"] == config.eval_data
    for k in range(3):  # the fine-tunes: rounds 0 only, the seeds, the candidates
        info = json.loads((path / "models" / f"concept-s{k}" / "finetune.json").read_text())
        assert info["hyper_parameters"]["seed"] == k and info["hyper_parameters"]["rounds"] == 0
        assert info["selection"]["candidates"] == 10
        replayed = json.loads((path / "runs" / f"concept-s{k}" / "manifest.json").read_text())
        assert replayed["model"]["kind"] == "tl-folder"
        assert replayed["config"]["data"] == config.eval_data


def test_numbers_equal_a_recomputation_from_the_stored_runs(done):
    _, result = done
    path = result.path

    def measures(name: str) -> dict[str, float]:
        t = _debiased(path, name)
        t = t[t["round"] == 0]
        dis = t[(t["context_condition"] == "disambig") & (t["choice"] != t["unknown"])]
        return {
            "accuracy": float(t["correct"].mean()),
            "agreement": float(t["agree"].mean()),
            "entropy": float(t["entropy"].mean()),
            "bias_dis": 2 * float((dis["choice"] == dis["target"]).mean()) - 1
            if len(dis)
            else np.nan,
        }

    before = measures("before")
    after = {r: [measures(f"{r}-s{k}") for k in range(3)] for r in ("random", "concept")}
    arms_t = result.tables["arms"].set_index(["arm", "round", "measure"])
    vs = result.tables["vs_random"].set_index(["arm", "round", "measure"])
    runs_t = result.tables["runs"].set_index(["arm", "seed", "round", "measure"])
    for m, value in before.items():
        if np.isnan(value):
            continue
        assert arms_t.loc[("concept", 0, m), "before"] == pytest.approx(value)
        for rule in ("random", "concept"):
            mean = np.mean([a[m] for a in after[rule]])
            assert arms_t.loc[(rule, 0, m), "after"] == pytest.approx(mean)
            assert arms_t.loc[(rule, 0, m), "change"] == pytest.approx(mean - value)
            assert runs_t.loc[(rule, 1, 0, m), "value"] == pytest.approx(after[rule][1][m])
        diff = np.mean([a[m] for a in after["concept"]]) - np.mean([a[m] for a in after["random"]])
        row = vs.loc[("concept", 0, m)]
        assert row["value"] == pytest.approx(diff)
        assert row["lo"] <= row["value"] + 1e-12 and row["value"] - 1e-12 <= row["hi"]
    # the selection and training tables are what the fine-tunes recorded
    sel = result.tables["selection"]
    for rule in ("random", "concept"):
        for k in range(3):
            info = json.loads((path / "models" / f"{rule}-s{k}" / "finetune.json").read_text())
            rows = sel[(sel["arm"] == rule) & (sel["seed"] == k)].sort_values("rank")
            assert rows["example_id"].tolist() == info["selection"]["example_ids"]
            train = result.tables["training"]
            tok = train[(train["arm"] == rule) & (train["seed"] == k)]["tokens"].item()
            assert tok == info["selection"]["tokens"]
    # the concept arm keeps the same top N at every seed (the pool is fixed); random varies
    concept_ids = {
        tuple(sel[(sel["arm"] == "concept") & (sel["seed"] == k)]["example_id"]) for k in range(3)
    }
    assert len(concept_ids) == 1
    for k in range(3):  # the token-matched control is never the concept arm's own top N
        random_ids = set(sel[(sel["arm"] == "random") & (sel["seed"] == k)]["example_id"])
        assert random_ids != set(next(iter(concept_ids)))
    # the fine-tunes moved the answers (the comparison above is not of equal numbers only)
    runs_t = result.tables["runs"]
    acc = runs_t[(runs_t["measure"] == "entropy") & (runs_t["round"] == 0)]["value"]
    assert acc.nunique() > 2


def test_a_rerun_reuses_every_fine_tune_and_replay(done, monkeypatch):
    import interp.finetune.train as train

    config, result = done
    monkeypatch.setattr(train, "finetune", lambda *a, **k: pytest.fail("fine-tuned again"))
    again = experiment("finetune-selection", config, progress=False)
    pd.testing.assert_frame_equal(again.tables["vs_random"], result.tables["vs_random"])


def test_the_command_line_reuses_the_runs_and_prints_the_reading(done, bbq_dir):
    config, result = done
    args = ["experiment", "finetune-selection", "--model", "tiny", "--task", "bbq"]
    args += ["--data", config.data[0], "--eval-data", config.eval_data[0], "--sample", "6"]
    args += ["--pool", "10", "--n", "3", "--steps", "2", "--lr", "0.05", "--n-boot", "50"]
    args += ["--batch-size", "4", "--out", str(result.path)]
    shown = invoke(*args)
    assert shown.exit_code == 0, shown.output
    assert "rule - random" in shown.output
    assert "concept              accuracy" in shown.output
    assert result.summary["reading"][0] in shown.output


def test_bad_settings_are_refused_before_anything_is_written(tmp_path, bbq_dir):
    with pytest.raises(InterpError, match="held-out files"):
        experiment("finetune-selection", _config(tmp_path / "a", bbq_dir, eval_data=[]))
    with pytest.raises(InterpError, match="unknown rule"):
        experiment("finetune-selection", _config(tmp_path / "b", bbq_dir, select="best"))
    with pytest.raises(InterpError, match="exceeds the 10 candidates"):
        experiment("finetune-selection", _config(tmp_path / "c", bbq_dir, n=11))
    same = [str(bbq_dir / "Age.jsonl")]
    with pytest.raises(InterpError, match="both a training and a held-out"):
        experiment("finetune-selection", _config(tmp_path / "d", bbq_dir, eval_data=same))
    assert list(tmp_path.iterdir()) == []
    args = ["experiment", "finetune-selection", "--model", "tiny", "--task", "bbq"]
    args += ["--data", same[0], "--out", str(tmp_path / "e"), "--n", "4"]
    assert_refused_without_trace(tmp_path, *args, contains="--eval-data")


def test_help_names_the_options():
    out = invoke("experiment", "finetune-selection", "--help").output
    for flag in ("--eval-data", "--select", "--n", "--seeds", "--pool", "--steps"):
        assert flag in out
