"""The weak-evidence experiment (issue 15, item 3): item construction by hand, and the
experiment end to end on the tiny model."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from interp.experiments.common import ExperimentConfig
from interp.experiments.weak_evidence import build_items, eligible, person, sentence, weak_evidence
from interp.inputs.tasks import load_builtin, load_mc

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_person_and_sentence():
    assert person("The retiree") == "the retiree"
    assert person("A nurse") == "a nurse"
    assert person("Daniel") == "Daniel"  # a name keeps its capital
    assert sentence("{Person} left early.", "The retiree") == "The retiree left early."
    assert sentence("I saw {person}.", "The retiree") == "I saw the retiree."


def test_only_ambiguous_items_with_target_unknown_and_one_other_qualify():
    examples = load_builtin()
    ex = examples[0]  # ambiguous; target 0, unknown 1: the other person is option 2
    assert eligible(ex) == 2
    assert eligible(examples[1]) is None  # disambiguated


def test_items_point_half_at_the_target_and_keep_unknown_correct():
    examples = load_builtin()
    items = build_items(examples, seed=0)
    n = sum(eligible(ex) is not None for ex in examples)
    assert len(items) == n
    roles = [i["points_at"] for i in items]
    assert roles.count("target") == n // 2 and roles.count("other") == n - n // 2
    by_id = {ex.example_id: ex for ex in examples}
    for item in items:
        ex, line = by_id[item["line"]["id"]], item["line"]
        assert line["label"] == ex.unknown == ex.label  # the correct answer stays unknown
        assert line["context"] == f"{ex.context} {item['sentence']}"
        wanted = ex.target if item["points_at"] == "target" else eligible(ex)
        assert item["pointed"] == wanted
        assert person(ex.options[wanted]).casefold() in item["sentence"].casefold()
    assert build_items(examples, seed=0) == items  # seeded
    assert build_items(examples, seed=1) != items


def test_too_few_items_is_a_user_error():
    from interp.errors import InterpError

    with pytest.raises(InterpError, match="weak evidence needs ambiguous items"):
        build_items(load_builtin()[1:2], seed=0)


@pytest.fixture(scope="module")
def weak(tmp_path_factory, tiny_model):
    config = ExperimentConfig(
        out=str(tmp_path_factory.mktemp("weak") / "exp"),
        model="tiny",
        rounds=2,
        sample=16,
        n_boot=30,
        probe=False,
    )
    return weak_evidence(config, model=tiny_model), config


def test_weak_evidence_end_to_end(weak):
    result, _ = weak
    path = result.path
    lines = [
        json.loads(x) for x in (path / "data" / "weak-evidence.jsonl").read_text().split("\n") if x
    ]
    loaded = load_mc(path / "data" / "weak-evidence.jsonl")  # a valid mc file
    assert len(loaded) == len(lines) == result.summary["n_items"]
    assert {p.name for p in (path / "runs").iterdir()} == {"baseline", "self-correct"}
    manifest = json.loads((path / "manifest.json").read_text())
    assert manifest["inputs"]["templates"] and manifest["complete"]
    rates = result.tables["rates"]
    assert len(rates) == 2 * 3 * 3 * 3  # plans x groups x measures x rounds
    ok = rates.dropna(subset=["lo"])
    assert ((ok["lo"] <= ok["value"] + 1e-9) & (ok["value"] <= ok["hi"] + 1e-9)).all()
    # "unknown" is the correct answer of every item: its share is the run's accuracy
    for plan in ("baseline", "self-correct"):
        metrics = json.loads((path / "runs" / plan / "metrics.json").read_text())
        for entry in metrics["per_round"]:
            row = rates[
                (rates["plan"] == plan)
                & (rates["group"] == "all")
                & (rates["measure"] == "unknown")
                & (rates["round"] == entry["round"])
            ]
            assert row["value"].iloc[0] == pytest.approx(entry["accuracy"]["value"])
    reading = result.summary["reading"]
    # the position caveat comes last, when the answers follow one option letter
    assert len([x for x in reading if not x.startswith("caveat:")]) == 3
    flagged = any(f and f["flag"] for f in result.summary["position"].values())
    assert flagged == reading[-1].startswith("caveat:")


def test_weak_evidence_resumes(weak):
    result, config = weak
    stamps = {p: p.stat().st_mtime_ns for p in (result.path / "runs").glob("*/manifest.json")}
    again = weak_evidence(config, model=None)
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
    pd.testing.assert_frame_equal(again.tables["rates"], result.tables["rates"])


def test_weak_evidence_on_bbq_with_templates(tmp_path, tiny_model, bbq_dir):
    # The arms replay the written mc file: the user's --bbq-templates (which only a bbq task
    # takes) must not reach them; it used to refuse the whole experiment after selection.
    config = ExperimentConfig(
        out=str(tmp_path / "exp"),
        model="tiny",
        task="bbq",
        data=[str(bbq_dir / "Age.jsonl")],
        bbq_templates=str(bbq_dir / "official" / "templates"),
        rounds=2,
        sample=24,
        n_boot=20,
        probe=False,
    )
    result = weak_evidence(config, model=tiny_model)
    assert result.summary["n_items"] > 0
    manifest = json.loads((result.path / "manifest.json").read_text())
    assert manifest["config"]["bbq_templates"] == config.bbq_templates
