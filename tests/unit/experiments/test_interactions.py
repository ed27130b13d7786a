"""The interactions experiment (issue 15, item 2): the contrasts against hand computations,
the cells' statistics against `interp metrics`, and the design end to end on the tiny model."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

from interp.experiments.common import ExperimentConfig
from interp.experiments.interactions import (
    EFFECTS,
    cell_plan,
    cells,
    contrast_weights,
    effect_name,
    interactions,
    signs,
)
from interp.inputs.plans import load_plan

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _effects(y: np.ndarray) -> dict[str, float]:
    return {effect_name(e): v for e, v in zip(EFFECTS, contrast_weights() @ y, strict=True)}


def test_additive_cells_have_no_interaction():
    # y = 1 + 0.1 s_I + 0.2 s_C - 0.3 s_F: main effects (on - off) are twice the coefficients
    y = np.array(
        [
            1 + 0.1 * s["instruction"] + 0.2 * s["cot"] - 0.3 * s["feedback"]
            for s in map(signs, cells())
        ]
    )
    eff = _effects(y)
    assert eff["instruction"] == pytest.approx(0.2)
    assert eff["cot"] == pytest.approx(0.4)
    assert eff["feedback"] == pytest.approx(-0.6)
    for name in ("instruction x cot", "instruction x feedback", "cot x feedback"):
        assert eff[name] == pytest.approx(0.0, abs=1e-12)


def test_interaction_is_the_difference_of_differences():
    # by hand: instruction helps (+1) only when CoT is on, whatever the feedback
    y = np.array(
        [1.0 if (c["instruction"] == "self-correct" and c["cot"] == "on") else 0.0 for c in cells()]
    )
    eff = _effects(y)
    # (y_I1C1 - y_I0C1) - (y_I1C0 - y_I0C0) = (1 - 0) - (0 - 0) = 1 at each feedback level
    assert eff["instruction x cot"] == pytest.approx(1.0)
    # main effect of instruction: mean(on) - mean(off) = 2/4 - 0 = 0.5
    assert eff["instruction"] == pytest.approx(0.5)
    assert eff["cot"] == pytest.approx(0.5)
    assert eff["feedback"] == pytest.approx(0.0)
    assert eff["cot x feedback"] == pytest.approx(0.0)


def test_cell_plans_compose_the_builtin_texts():
    plans = {tuple(c.values()): cell_plan(c) for c in cells()}
    assert plans[("none", "off", "none")]["followups"] == ["Please answer the question again."]
    assert plans[("self-correct", "off", "none")]["followups"] == list(
        load_plan("self-correct").followups
    )
    on = plans[("self-correct", "on", "oracle")]
    assert on["think_tokens"] == 48 and on["feedback"] == load_plan("feedback-oracle").feedback
    assert all("Think briefly" in f for f in on["followups"])
    assert "feedback" not in plans[("self-correct", "on", "none")]


@pytest.fixture(scope="module")
def design(tmp_path_factory, tiny_model):
    config = ExperimentConfig(
        out=str(tmp_path_factory.mktemp("inter") / "exp"),
        model="tiny",
        rounds=2,
        limit=4,
        n_boot=30,
        batch_size=4,
    )
    return interactions(config, model=tiny_model), config


def test_interactions_writes_every_cell_and_table(design):
    result, _ = design
    path = result.path
    assert len(list((path / "plans").glob("*.yaml"))) == 8
    assert len([p for p in (path / "runs").iterdir() if (p / "manifest.json").is_file()]) == 8
    assert {p.stem for p in (path / "tables").glob("*.parquet")} == {
        "cells",
        "effects",
        "concept_cells",
        "concept_effects",
    }
    manifest = json.loads((path / "manifest.json").read_text())
    assert manifest["complete"] and len(manifest["arms"]) == 8
    for arm in manifest["arms"].values():  # the composed plans' texts are in the manifest
        plan = yaml.safe_load((path / "plans" / f"{arm['plan']['name']}.yaml").read_text())
        assert arm["plan"]["followups"] == plan["followups"]
    effects = result.tables["effects"]
    assert len(effects) == 4 * 6 * 3  # metrics x effects x rounds
    ok = effects.dropna(subset=["lo"])
    assert ((ok["lo"] <= ok["value"] + 1e-9) & (ok["value"] <= ok["hi"] + 1e-9)).all()
    reading = result.summary["reading"]
    # the position caveat comes last, when the answers follow one option letter
    # 4 metrics, the multiplicity note, the concept score
    assert len([x for x in reading if not x.startswith("caveat:")]) == 6
    flagged = any(f and f["flag"] for f in result.summary["position"].values())
    assert flagged == reading[-1].startswith("caveat:")


def test_cell_values_are_each_runs_metrics(design):
    result, _ = design
    cells_table = result.tables["cells"].set_index(["cell", "metric", "round"])
    names = {"accuracy": "accuracy", "s_amb": "bias_amb", "s_dis": "bias_dis", "entropy": "entropy"}
    for run_dir in (result.path / "runs").iterdir():
        metrics = json.loads((run_dir / "metrics.json").read_text())
        for entry in metrics["per_round"]:
            for ours, theirs in names.items():
                expected = entry[theirs]["value"]
                got = cells_table.loc[(run_dir.name, ours, entry["round"]), "value"]
                if expected is None:
                    assert np.isnan(got)
                else:
                    assert got == pytest.approx(expected)


def test_interactions_resume_replays_nothing(design):
    result, config = design
    stamps = {p: p.stat().st_mtime_ns for p in (result.path / "runs").glob("*/manifest.json")}
    again = interactions(config, model=None)
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
    assert again.tables["effects"]["value"].equals(result.tables["effects"]["value"])
