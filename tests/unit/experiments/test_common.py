"""interp.experiments (issue 15): the estimators against hand computations, and each
experiment end to end on the tiny model (structure, intervals, resume, files)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from interp.experiments.common import ExperimentConfig, Grid, rank_of
from interp.experiments.convergence import (
    convergence,
    convergence_of_run,
    fit_curve,
    saturating,
    settle_round,
    weighted_ece,
    weighted_pearson,
)
from interp.experiments.superficial import (
    concept_change_table,
    outcome_groups,
    rank_table,
    superficial,
    superficial_of_run,
)
from interp.stats import Clusters

# --- estimators ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("y_inf", "y0", "lam"), [(0.3, 0.9, 0.7), (1.1, 0.2, 1.6), (-2.0, 5.0, 0.3)]
)
def test_fit_recovers_known_parameters(y_inf, y0, lam):
    rounds = np.arange(8)
    noise = np.random.default_rng(0).normal(0, 1e-4, size=8)
    fit = fit_curve(rounds, saturating(rounds, y_inf, y0, lam) + noise, eps=0.01)
    assert fit.y_inf == pytest.approx(y_inf, abs=2e-3)
    assert fit.y0 == pytest.approx(y0, abs=2e-3)
    assert fit.lam == pytest.approx(lam, rel=2e-2)
    assert fit.rmse < 1e-3


def test_fit_of_three_points_is_exact():
    # three points, three parameters: the curve passes through all of them
    y = saturating(np.arange(3), 0.5, 1.0, 1.0)
    fit = fit_curve(np.arange(3), y, eps=0.01)
    assert (fit.y_inf, fit.y0, fit.lam) == pytest.approx((0.5, 1.0, 1.0), abs=1e-6)


def test_settle_round_by_hand():
    # |0.9 - 0.3| e^{-0.7 r} <= 0.01  <=>  r >= ln(60) / 0.7 = 5.85  ->  6
    assert settle_round(0.9, 0.3, 0.7, 0.01) == 6
    assert settle_round(0.305, 0.3, 0.7, 0.01) == 0  # starts within eps
    assert settle_round(0.9, 0.3, 0.0, 0.01) == math.inf


def test_flat_curve_has_no_rate():
    fit = fit_curve(np.arange(4), np.full(4, 0.25), eps=0.01)
    assert math.isnan(fit.lam) and fit.y_inf == 0.25 and fit.settle == 0
    assert fit.note.startswith("flat")


def test_linear_data_is_flagged_as_not_saturating():
    fit = fit_curve(np.arange(4), np.array([0.0, 0.1, 0.2, 0.3]), eps=0.01)
    assert fit.note is not None and "not saturating" in fit.note


def test_weighted_ece_by_hand():
    # round 0: confidences 0.95 (right), 0.95 (wrong), 0.35 (right): bins 10 and 4.
    # bin 10: |(1 - .95) + (0 - .95)| = 0.9; bin 4: |1 - .35| = 0.65; ECE = 1.55 / 3.
    conf = np.array([[0.95], [0.95], [0.35]])
    correct = np.array([[1.0], [0.0], [1.0]])
    assert weighted_ece(conf, correct, np.ones((1, 3)))[0, 0] == pytest.approx(1.55 / 3)
    # weights 2, 0, 1: bin 10 holds 2 x 0.05 = 0.1, bin 4 0.65; ECE = 0.75 / 3
    assert weighted_ece(conf, correct, np.array([[2.0, 0, 1]]))[0, 0] == pytest.approx(0.75 / 3)


def test_weighted_pearson_is_pearson_of_repeated_rows():
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=6), rng.normal(size=6)
    assert weighted_pearson(x, y, np.ones((1, 6)))[0] == pytest.approx(np.corrcoef(x, y)[0, 1])
    w = np.array([2, 1, 0, 3, 1, 1])
    rep = np.repeat(np.arange(6), w)
    expected = np.corrcoef(x[rep], y[rep])[0, 1]
    assert weighted_pearson(x, y, w[None].astype(float))[0] == pytest.approx(expected)


def test_rank_of_counts_strictly_better_options():
    assert rank_of(np.array([-1.0, -2.0, -0.5]), 0) == 2
    assert rank_of(np.array([-1.0, -1.0, -3.0]), 1) == 1  # a tie shares the better rank
    assert rank_of(np.array([-1.0, -2.0, -0.5]), 1) == 3


def _grid(correct: list[list[float]], ranks: list[int]) -> Grid:
    c = np.array(correct, dtype=float)
    n = len(c)
    ids = np.arange(n)
    return Grid(
        c,
        np.zeros_like(c),
        np.full_like(c, 0.5),
        np.array(ranks),
        Clusters("example", "example", ids),
    )


def test_rank_table_and_groups_by_hand():
    # rank 1: two examples right at both rounds; rank 2: one improves, one stays wrong;
    # rank 3: one stays wrong
    grid = _grid([[1, 1], [1, 1], [0, 1], [0, 0], [0, 0]], [1, 1, 2, 2, 3])
    assert outcome_groups(grid).tolist() == [
        "stayed_right",
        "stayed_right",
        "improved",
        "stayed_wrong",
        "stayed_wrong",
    ]
    table = rank_table(grid, np.ones((0, 5))).set_index("rank")
    assert table.loc[2, "n_examples"] == 2 and table.loc[2, "improved"] == 0.5
    assert table.loc[2, "acc_last"] == 0.5 and table.loc[1, "acc_first"] == 1.0
    assert table.loc[3, "improved"] == 0.0 and table.loc[3, "share"] == pytest.approx(0.2)


def test_concept_change_difference_by_hand():
    grid = _grid([[0, 1], [0, 1], [0, 0], [0, 0], [1, 1]], [2, 2, 2, 3, 1])
    # one layer; change (last - first): 2, 4 (improved), 1, 1 (stayed wrong), 7 (right)
    first = np.zeros(5)
    last = np.array([2.0, 4.0, 1.0, 1.0, 7.0])
    scores = np.stack([first, last], axis=1)[None]
    weights = np.random.default_rng(0).integers(0, 3, size=(200, 5)).astype(float)
    table = concept_change_table(grid, [4], scores, weights).set_index("group")
    assert table.loc["improved", "change"] == 3.0
    assert table.loc["stayed_wrong", "change"] == 1.0
    assert table.loc["stayed_right", "change"] == 7.0
    diff = table.loc["improved - stayed_wrong"]
    assert diff["change"] == 2.0 and diff["lo"] <= 2.0 <= diff["hi"]
    # every resample's difference lies between the extreme ones (4 - 1 and 2 - 1)
    assert diff["lo"] >= 1.0 and diff["hi"] <= 3.0


# --- end to end on the tiny model ------------------------------------------------------------


def _config(out: Path, **overrides) -> ExperimentConfig:
    fields = {"model": "tiny", "rounds": 2, "limit": 8, "n_boot": 30, "batch_size": 4}
    return ExperimentConfig(out=str(out), **{**fields, **overrides})


@pytest.fixture(scope="module")
def conv(tmp_path_factory, tiny_model):
    out = tmp_path_factory.mktemp("exp") / "conv"
    return convergence(_config(out), model=tiny_model)


def test_convergence_writes_tables_manifest_and_summary(conv):
    path = conv.path
    assert {p.stem for p in (path / "tables").glob("*.parquet")} == {
        "fits",
        "observed",
        "correlation",
        "example_changes",
        "difference",
        "fit_difference",
    }
    manifest = json.loads((path / "manifest.json").read_text())
    assert manifest["complete"] and manifest["experiment"] == "convergence"
    assert manifest["arms"]["main"]["plan"]["name"] == "self-correct"
    assert manifest["arms"]["main"]["probe"]["concept"] == "stereotype"
    assert manifest["sizes"] == {"n_examples": 8, "rounds": 2}
    assert manifest["seed"] == 0 and "scipy" in manifest["versions"]
    summary = json.loads((path / "summary.json").read_text())
    assert summary["reading"] and summary["concept"]["layer"] in range(3)
    fits = pd.read_parquet(path / "tables" / "fits.parquet")
    assert set(fits["quantity"]) == {"accuracy", "entropy", "ece", "concept"}
    for col in ("y0", "y_inf", "lam", "settle"):
        assert {f"{col}_lo", f"{col}_hi"} <= set(fits.columns)
    observed = conv.tables["observed"]
    assert len(observed) == 2 * 4 * 3  # main and control arms
    assert (observed["lo"] <= observed["mean"] + 1e-12).all()
    assert (observed["mean"] <= observed["hi"] + 1e-12).all()
    corr = conv.tables["correlation"].iloc[0]
    assert corr["lo"] <= corr["pearson"] <= corr["hi"]


def test_convergence_observed_means_are_the_runs_metrics(conv):
    from interp.runs.store import Run

    for arm in ("main", "control"):  # each arm's rows are its own run's metrics
        run = Run.open(conv.path / "runs" / arm)
        metrics = json.loads((run.path / "metrics.json").read_text())
        table = conv.tables["observed"]
        observed = table[table["arm"] == arm].set_index(["quantity", "round"])
        assert set(observed["plan"]) == {run.manifest["plan"]["name"]}
        for entry in metrics["per_round"]:
            r = entry["round"]
            for key in ("accuracy", "entropy", "ece"):
                assert observed.loc[(key, r), "mean"] == pytest.approx(entry[key]["value"])


def test_experiment_resumes_reusing_its_replay(conv, tiny_model):
    run_manifest = conv.path / "runs" / "main" / "manifest.json"
    before = run_manifest.stat().st_mtime_ns
    again = convergence(_config(conv.path, n_boot=40), model=None)  # no model: nothing replays
    assert run_manifest.stat().st_mtime_ns == before
    manifest = json.loads((conv.path / "manifest.json").read_text())
    assert manifest["arms"]["main"]["reused"] is True and manifest["config"]["n_boot"] == 40
    pd.testing.assert_frame_equal(
        again.tables["observed"][["quantity", "round", "mean"]],
        conv.tables["observed"][["quantity", "round", "mean"]],
    )


def test_experiment_refuses_other_replay_settings(conv):
    from interp.errors import InterpError

    with pytest.raises(InterpError, match="other replay settings"):
        convergence(_config(conv.path, rounds=3))
    with pytest.raises(InterpError, match="holds the experiment 'convergence'"):
        superficial(_config(conv.path))


def test_convergence_of_an_existing_run(conv):
    result = convergence_of_run(conv.path / "runs" / "main", ExperimentConfig(n_boot=20))
    assert (result.path / "summary.json").is_file()
    assert (result.path / "fits.parquet").is_file()
    assert set(result.tables["fits"]["quantity"]) == {"accuracy", "entropy", "ece", "concept"}


def test_superficial_end_to_end(conv, tmp_path, tiny_model):
    result = superficial(_config(tmp_path / "sup"), model=tiny_model)
    ranks = result.tables["by_rank"]
    assert ranks.groupby("arm")["n_examples"].sum().to_dict() == {"main": 8, "control": 8}
    assert (
        (ranks["acc_last_lo"] <= ranks["acc_last"]) & (ranks["acc_last"] <= ranks["acc_last_hi"])
    ).all()
    change = result.tables["concept_change"]
    change = change[change["arm"] == "main"]
    assert set(change["layer"]) == {0, 1, 2}
    assert set(change["group"]) == {
        "improved",
        "stayed_wrong",
        "stayed_right",
        "worsened",
        "improved - stayed_wrong",
    }
    assert len(result.summary["reading"]) >= 4  # (a), (b), and both against the control
    assert sum(result.summary["groups"].values()) == 8


def test_superficial_without_probe_says_how_to_make_scores(tmp_path, tiny_model):
    result = superficial(_config(tmp_path / "np", probe=False, limit=4), model=tiny_model)
    assert "concept_change" not in result.tables
    assert "interp probe --run" in result.summary["concept_note"]
    # and the --run form on the same run says the same
    again = superficial_of_run(tmp_path / "np" / "runs" / "main", ExperimentConfig(n_boot=10))
    assert "interp probe --run" in again.summary["concept_note"]


def test_cli_experiment_json(conv):
    from interp.cli import app

    args = ["experiment", "convergence", "--run", str(conv.path / "runs" / "main")]
    result = CliRunner().invoke(app, [*args, "--n-boot", "10", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["experiment"] == "convergence"
    text = CliRunner().invoke(app, [*args, "--n-boot", "10"])
    assert text.exit_code == 0 and "reading:" in text.stdout and "y_inf" in text.stdout


@pytest.mark.parametrize(
    ("command", "not_offered"),
    [
        ("convergence", set()),
        ("superficial", {"layer", "eps", "stats"}),
        ("interactions", {"layer", "eps", "plan", "control", "stats"}),
        ("weak-evidence", {"layer", "eps", "plan", "concept", "probe", "control", "stats"}),
        ("self-distinguish", {"layer", "eps", "concept", "probe", "control", "stats"}),
    ],
)
def test_experiment_options_are_the_config_fields(command, not_offered):
    import dataclasses

    import typer

    from interp.cli import app

    group = typer.main.get_command(app).commands["experiment"]
    params = {p.name: p for p in group.commands[command].params if p.name != "help"}
    fields = {f.name: f for f in dataclasses.fields(ExperimentConfig)}
    # --examples: accepted as by every command that reads a run, and refused (reads all)
    cli_only = {"run", "as_json", "control_run", "examples"}
    assert set(params) - cli_only == set(fields) - not_offered
    for name, param in params.items():
        if name in fields and name not in ("out", "data"):
            flag = "--layers" if name == "layer" else "--" + name.replace("_", "-")
            assert param.opts[0] == flag  # --layers: the one grammar (interp.cli.params)
            default = param.default
            assert (str(default) if isinstance(default, Path) else default) == fields[
                name
            ].default, name
