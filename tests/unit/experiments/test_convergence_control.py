"""The experiments' control arm, position caveat, shared concept encodings and Winogender
plug-in (issue 15 follow-up): each against hand computations on the tiny model."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from interp.experiments.common import ExperimentConfig, position_caveat
from interp.experiments.convergence import control_reading, convergence, convergence_of_run
from interp.experiments.superficial import superficial
from interp.metrics.rounds import model_floor
from interp.runs.store import Run

pytestmark = pytest.mark.usefixtures("one_torch_thread")

DATA = Path("/work/shared/data/winogender")
for _parent in Path(__file__).resolve().parents:
    if (_parent / "shared" / "data" / "winogender").is_dir():
        DATA = _parent / "shared" / "data" / "winogender"
        break
TEMPLATES = DATA / "templates.tsv"


def _config(out: Path, **overrides) -> ExperimentConfig:
    fields = {"model": "tiny", "rounds": 2, "limit": 8, "n_boot": 30, "batch_size": 4}
    return ExperimentConfig(out=str(out), **{**fields, **overrides})


@pytest.fixture(scope="module")
def conv(tmp_path_factory, tiny_model):
    return convergence(_config(tmp_path_factory.mktemp("ctl") / "conv"), model=tiny_model)


@pytest.fixture(scope="module")
def sup(tmp_path_factory, tiny_model):
    return superficial(_config(tmp_path_factory.mktemp("ctl") / "sup"), model=tiny_model)


# --- the control arm -------------------------------------------------------------------------


def test_control_arm_is_replayed_probed_and_in_the_manifest(conv):
    from interp.inputs.plans import load_plan

    manifest = json.loads((conv.path / "manifest.json").read_text())
    control = manifest["arms"]["control"]
    assert control["run"] == "runs/control"
    assert control["plan"] == load_plan("baseline").to_dict()  # the plan's texts
    assert control["probe"]["concept"] == "stereotype"
    assert manifest["config"]["control"] == "baseline"
    assert "stereotype" in Run.open(conv.path / "runs" / "control").analyses("probes")
    assert conv.summary["control"]["plan"] == "baseline"
    for key in ("fits", "observed", "correlation", "example_changes"):
        frame = conv.tables[key]
        assert set(zip(frame["arm"], frame["plan"], strict=True)) == {
            ("main", "self-correct"),
            ("control", "baseline"),
        }, key


def test_convergence_difference_is_main_minus_control(conv):
    observed = conv.tables["observed"].set_index(["arm", "quantity", "round"])["mean"]
    diff = conv.tables["difference"]
    assert list(diff.columns) == [
        "quantity",
        "round",
        "main_plan",
        "control_plan",
        "main",
        "control",
        "value",
        "lo",
        "hi",
        "change_main",
        "change_control",
        "change_diff",
        "change_lo",
        "change_hi",
    ]
    assert set(diff["quantity"]) == {"accuracy", "entropy", "ece", "concept"}
    for row in diff.itertuples():
        main = observed[("main", row.quantity, row.round)]
        control = observed[("control", row.quantity, row.round)]
        assert (row.main, row.control) == pytest.approx((main, control))
        assert row.value == pytest.approx(main - control)
        first = observed[("main", row.quantity, 0)] - observed[("control", row.quantity, 0)]
        assert row.change_diff == pytest.approx(main - control - first)
        if np.isfinite(row.lo):
            assert row.lo - 1e-12 <= row.value <= row.hi + 1e-12
    fits = conv.tables["fits"].set_index(["arm", "quantity"])
    fit_diff = conv.tables["fit_difference"]
    assert set(fit_diff["parameter"]) == {"y_inf", "settle"}
    for row in fit_diff[fit_diff["parameter"] == "y_inf"].itertuples():
        m, c = (
            fits.loc[("main", row.quantity), "y_inf"],
            fits.loc[("control", row.quantity), "y_inf"],
        )
        assert row.value == pytest.approx(m - c, nan_ok=True)


def test_paired_intervals_use_the_same_resamples_for_both_arms(conv):
    # A run against itself: every resample's difference is 0, so the interval is [0, 0].
    # Resamples drawn separately for each arm would give intervals of positive width.
    # (analyse_run: convergence_of_run refuses a run as its own control, as probe/patch do)
    from interp.experiments.convergence import analyse_run
    from interp.runs.store import Run

    main = Run.open(conv.path / "runs" / "main")
    tables, _ = analyse_run(main, n_boot=50, control=main)
    diff = tables["difference"]
    assert (diff["value"] == 0).all() and (diff["lo"] == 0).all() and (diff["hi"] == 0).all()
    assert (diff["change_lo"] == 0).all() and (diff["change_hi"] == 0).all()


def test_the_reading_compares_every_quantity_with_the_control(conv):
    lines = [x for x in conv.summary["reading"] if "the control (baseline)" in x]
    assert len(lines) == 4  # accuracy, entropy, ece, concept
    verdicts = ("exceeds the control's", "does not exceed", "moves less than", "no interval")
    assert all(sum(v in x for v in verdicts) == 1 for x in lines)


def test_the_reading_does_not_credit_what_the_control_also_shows():
    def diff(change_main, change_control, lo, hi):
        return pd.DataFrame(
            [
                {"quantity": "concept", "round": 0, "change_main": 0.0, "change_control": 0.0}
                | {"change_diff": 0.0, "change_lo": 0.0, "change_hi": 0.0},
                {"quantity": "concept", "round": 3, "change_main": change_main}
                | {"change_control": change_control, "change_diff": change_main - change_control}
                | {"change_lo": lo, "change_hi": hi},
            ]
        )

    # the concept falls under self-correct, and as much under baseline: not the instruction's
    (line,) = control_reading(diff(-0.5, -0.45, -0.2, 0.1), "self-correct", "baseline")
    assert "does not exceed the control's" in line and "not the self-correct plan's doing" in line
    assert "the control moves too" in line
    (line,) = control_reading(diff(-0.5, 0.0, -0.7, -0.3), "self-correct", "baseline")
    assert "exceeds the control's" in line and "does not" not in line
    # the concept falls under both, reliably less under self-correct: not the plan's doing
    (line,) = control_reading(diff(-0.2, -0.6, 0.2, 0.6), "self-correct", "baseline")
    assert "moves less than the control" in line and "exceeds" not in line
    # one cluster: a zero-width interval is no test
    (line,) = control_reading(diff(-0.5, 0.0, -0.5, -0.5), "self-correct", "baseline", 1)
    assert "no interval" in line and "exceeds" not in line


def test_superficial_control_is_grouped_by_the_main_arms_outcome(sup):
    change = sup.tables["concept_change"]
    main = change[change["arm"] == "main"].set_index(["layer", "group"])
    control = change[change["arm"] == "control"].set_index(["layer", "group"])
    assert set(control["plan"]) == {"baseline"}
    # the same examples in every group: the main arm's groups, not the control's own
    pd.testing.assert_series_equal(main["n_examples"], control["n_examples"])
    assert main.loc[(0, "improved"), "n_examples"] == sup.summary["groups"]["improved"]
    diff = sup.tables["concept_change_difference"]
    assert list(diff.columns) == [
        "layer",
        "group",
        "n_examples",
        "main",
        "control",
        "value",
        "lo",
        "hi",
        "p",  # bootstrap p-value, for the correction over layers x groups
    ]
    p = diff["p"].dropna()  # NaN: an empty group, no test
    assert ((p > 0) & (p <= 1)).all()
    for row in diff.itertuples():
        m, c = (
            main.loc[(row.layer, row.group), "change"],
            control.loc[(row.layer, row.group), "change"],
        )
        assert (row.main, row.control) == pytest.approx((m, c), nan_ok=True)
        assert row.value == pytest.approx(m - c, nan_ok=True)
    ranks = sup.tables["by_rank"]
    assert set(ranks["arm"]) == {"main", "control"}
    by_rank = ranks.set_index(["arm", "rank"])
    rank_diff = sup.tables["by_rank_difference"]
    assert set(rank_diff["measure"]) == {"improved", "worsened", "acc_last"}
    for row in rank_diff[rank_diff["measure"] == "improved"].itertuples():
        m, c = (
            by_rank.loc[("main", row.rank), "improved"],
            by_rank.loc[("control", row.rank), "improved"],
        )
        assert row.value == pytest.approx(m - c)
    assert any("vs control (baseline)" in x for x in sup.summary["reading"])


def test_no_control_says_so(conv, tmp_path, tiny_model):
    result = convergence_of_run(conv.path / "runs" / "main", ExperimentConfig(n_boot=10))
    assert result.summary["control"] is None and "no control" in result.summary["control_note"]
    assert any("no control arm" in x for x in result.summary["reading"])
    assert "difference" not in result.tables
    skipped = convergence(_config(tmp_path / "none", control=None, limit=4), model=tiny_model)
    assert not (tmp_path / "none" / "runs" / "control").exists()
    assert skipped.summary["control"] is None


def test_cli_control_options(conv):
    from typer.testing import CliRunner

    from interp.cli import app

    main, control = conv.path / "runs" / "main", conv.path / "runs" / "control"
    args = ["experiment", "superficial", "--run", str(main), "--control-run", str(control)]
    result = CliRunner().invoke(app, [*args, "--n-boot", "10", "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["control"]["plan"] == "baseline" and "position_share" in summary


def test_an_experiment_from_before_the_control_resumes_and_another_control_is_refused(
    conv, tmp_path
):
    from interp.errors import InterpError

    copy = tmp_path / "old"
    shutil.copytree(conv.path, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    for key in ("control", "stats"):  # written before these settings existed
        del manifest["replay"][key]
    (copy / "manifest.json").write_text(json.dumps(manifest))
    again = convergence(_config(copy), model=None)  # every arm reused: no model needed
    assert again.summary["control"]["plan"] == "baseline"
    with pytest.raises(InterpError, match="other replay settings"):
        convergence(_config(conv.path, control="negated"))


def test_control_none_on_the_command_line_is_no_control(tmp_path):
    from interp.cli.experiment import _config as cli_config

    fields = {"out": tmp_path, "data": None, "bbq_templates": None}
    assert cli_config(**fields, control="none").control is None
    assert cli_config(**fields, control="baseline").control == "baseline"


# --- the position caveat ---------------------------------------------------------------------


def test_position_check_is_each_arms_metrics_floor(conv):
    # One rule (interp.metrics.rounds.model_floor), per arm and per round, as `interp metrics`
    # says it.
    flags = {}
    for arm in ("main", "control"):
        run = Run.open(conv.path / "runs" / arm)
        floor = model_floor(run.read_metrics())
        assert conv.summary["position"][arm]["flag"] == floor["flag"]
        flags[arm] = floor["flag"]
        shares = [max(e["position_share"]) for e in run.read_metrics()["per_round"]]
        assert conv.summary["position_share"] >= max(shares) - 1e-12
    caveat = [x for x in conv.summary["reading"] if "option position" in x]
    assert bool(caveat) == any(flags.values())
    if caveat:
        assert "--permute cyclic" in caveat[0]


def test_position_caveat_names_the_flagged_arms():
    flagged = {"flag": True, "rounds": [{"round": 2, "option": 2, "share": 0.994}]}
    assert position_caveat({"main": None}) is None
    assert position_caveat({"main": {"flag": False, "rounds": []}}) is None
    line = position_caveat({"main": flagged, "control": {"flag": False, "rounds": []}})
    assert "follow option position in main (rounds 2; (c) takes up to 99%" in line
    assert "control" not in line and "more than 80%" in line


# --- shared concept encodings ----------------------------------------------------------------


def test_an_experiments_arms_share_one_encodings_folder(conv):
    assert any((conv.path / "encodings").glob("stereotype-*.safetensors"))
    for arm in ("main", "control"):
        assert not (conv.path / "runs" / arm / "probes" / "encodings").exists()


def test_the_second_probe_encodes_nothing_and_scores_as_unshared(
    conv, tmp_path, tiny_model, monkeypatch
):
    from probes.api import probe
    from probes.config import ProbeConfig

    forwards = []  # every forward pass of the model (encodings are its only use in a probe)
    original = type(tiny_model).forward

    def counted(self, *args, **kwargs):
        forwards.append(1)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(type(tiny_model), "forward", counted)

    copies = {}
    for name, arm in (("a", "main"), ("b", "control"), ("b_alone", "control")):
        copies[name] = tmp_path / name
        shutil.copytree(conv.path / "runs" / arm, copies[name])
        shutil.rmtree(copies[name] / "probes")
    shared = tmp_path / "encodings"
    alone = probe(copies["b_alone"], ProbeConfig(concept="stereotype", n_boot=10), model=tiny_model)
    assert forwards  # the counter sees encoding
    before = len(forwards)
    probe(
        copies["a"],
        ProbeConfig(concept="stereotype", n_boot=10),
        model=tiny_model,
        encodings_dir=shared,
    )
    assert len(forwards) > before  # the first arm encodes into the shared folder
    before = len(forwards)
    second = probe(
        copies["b"],
        ProbeConfig(concept="stereotype", n_boot=10),
        model=tiny_model,
        encodings_dir=shared,
    )
    assert len(forwards) == before  # no forward pass: every encoding came from the shared folder
    assert not (copies["b"] / "probes" / "encodings").exists()
    pd.testing.assert_frame_equal(second.example_scores, alone.example_scores)
    pd.testing.assert_frame_equal(second.per_layer, alone.per_layer)


# --- Winogender ------------------------------------------------------------------------------


@pytest.mark.skipif(not TEMPLATES.exists(), reason="shared Winogender data absent")
def test_convergence_on_winogender(tmp_path, tiny_model):
    config = _config(
        tmp_path / "wino", task="winogender", data=[str(TEMPLATES)], limit=6, n_boot=20
    )
    result = convergence(config, model=tiny_model)
    fits = result.tables["fits"]
    for arm, plan in (("main", "self-correct"), ("control", "baseline")):
        rows = fits[fits["arm"] == arm]
        assert set(rows["plan"]) == {plan}
        assert set(rows["quantity"]) == {"gender_gap", "p_neutral", "entropy", "concept"}
    assert set(result.tables["difference"]["quantity"]) == {
        "gender_gap",
        "p_neutral",
        "entropy",
        "concept",
    }
    manifest = json.loads((result.path / "manifest.json").read_text())
    assert "Fill in the missing blank" in " ".join(manifest["arms"]["main"]["plan"]["followups"])
    assert result.summary["position_share"] is None  # pronouns, not lettered options
    rounds = Run.open(result.path / "runs" / "main").rounds()
    gap = np.log(rounds["p_female"]) - np.log(rounds["p_male"])
    observed = result.tables["observed"]
    at = observed[(observed["arm"] == "main") & (observed["quantity"] == "gender_gap")]
    expected = gap.groupby(rounds["round"]).mean().to_numpy()
    np.testing.assert_allclose(at.sort_values("round")["mean"].to_numpy(), expected)
    # --run on a Winogender run: convergence fits the same quantities; superficial refuses
    from interp.errors import InterpError
    from interp.experiments.superficial import superficial_of_run

    main = result.path / "runs" / "main"
    alone = convergence_of_run(main, ExperimentConfig(n_boot=10))
    assert set(alone.tables["fits"]["quantity"]) == {
        "gender_gap",
        "p_neutral",
        "entropy",
        "concept",
    }
    with pytest.raises(InterpError, match="is a Winogender run, which superficial does not take"):
        superficial_of_run(main, ExperimentConfig(n_boot=10))
    # resumable like any experiment: a second call replays nothing
    again = convergence(config, model=None)
    assert json.loads((result.path / "manifest.json").read_text())["arms"]["control"]["reused"]
    assert again.summary["quantities"] == result.summary["quantities"]


def test_superficial_reading_names_the_largest_concept_differences_first():
    from interp.experiments.superficial import control_reading

    rank_diff = pd.DataFrame(
        [{"rank": 1, "measure": "improved", "value": 0.0, "lo": 0, "hi": 0, "p": 1.0}]
    )
    rows = [  # layer 0: small, main falls less than the control; layer 5: large, beyond it
        {"layer": 0, "group": "stayed_wrong", "main": -0.1, "value": 0.03, "lo": 0.02, "hi": 0.04},
        {"layer": 5, "group": "stayed_wrong", "main": -2.0, "value": -1.9, "lo": -2.0, "hi": -1.8},
        {"layer": 7, "group": "stayed_wrong", "main": -0.2, "value": 0.01, "lo": -0.1, "hi": 0.1},
    ]
    for row, p in zip(rows, (0.002, 0.002, 0.8), strict=True):  # bootstrap p-values
        row["p"] = p
    change_diff = pd.DataFrame(rows).assign(n_examples=10, control=0.0)
    lines = control_reading(rank_diff, change_diff, None, "self-correct", "baseline")
    assert lines[-1] == "(b) vs control: no probe scores for both arms, not compared."
    control_change = change_diff.assign(lo=-0.01, hi=0.01, p=0.9)  # the control does not move
    (line,) = control_reading(rank_diff, change_diff, control_change, "self-correct", "baseline")[
        1:
    ]
    assert "in 2 of 3 layer x group cells" in line and "own direction in 1" in line
    assert line.index("layer 5") < line.index("layer 0")  # the largest first
    assert "layer 0 stayed_wrong +0.03 [+0.02, +0.04] (less than the control)" in line
