"""The report of ``interp experiment`` (issue 15): ``interp export --run DIR`` on an experiment
directory of each kind, the figures drawn from its tables (one trace per plan where a table
has a ``plan`` column), and the experiment sections of a run analysed with ``--run``.

Every experiment is made once per module on the tiny model with small sizes."""

from __future__ import annotations

import html
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from faultkit import invoke

from interp.errors import InterpError
from interp.experiments.common import ExperimentConfig
from interp.report import experiment_figures as ef
from interp.report.experiment_page import is_experiment, read_experiment, table_html
from interp.report.export import export

pytestmark = pytest.mark.usefixtures("one_torch_thread")

KINDS = ("convergence", "superficial", "interactions", "weak-evidence", "self-distinguish")
# The figures of each kind, and the tables each figure's JSON holds.
FIGURES = {
    "convergence": {"curves": ("observed", "fits")},
    "superficial": {"rank": ("by_rank",), "concept": ("concept_change",)},
    "interactions": {"forest": ("effects", "concept_effects"), "cells": ("cells",)},
    "weak-evidence": {"rates": ("rates",), "difference": ("difference",)},
    "self-distinguish": {"per-round": ("per_round",)},
}


def _config(out: Path, **overrides) -> ExperimentConfig:
    fields = {"model": "tiny", "rounds": 2, "limit": 6, "n_boot": 20, "batch_size": 6}
    return ExperimentConfig(out=str(out), **{**fields, **overrides})


@pytest.fixture(scope="module")
def experiments(tmp_path_factory, tiny_model) -> dict[str, Path]:
    """One complete experiment directory per kind (read-only: tests export copies)."""
    from interp.experiments.convergence import convergence
    from interp.experiments.interactions import interactions
    from interp.experiments.self_distinguish import self_distinguish
    from interp.experiments.superficial import superficial
    from interp.experiments.weak_evidence import weak_evidence

    root = tmp_path_factory.mktemp("experiments")
    made = {
        "convergence": convergence(_config(root / "convergence"), model=tiny_model),
        "superficial": superficial(_config(root / "superficial"), model=tiny_model),
        "interactions": interactions(_config(root / "interactions", limit=4), model=tiny_model),
        "weak-evidence": weak_evidence(
            _config(root / "weak-evidence", limit=None, sample=16, probe=False), model=tiny_model
        ),
        "self-distinguish": self_distinguish(
            _config(root / "self-distinguish", probe=False), model=tiny_model
        ),
    }
    return {name: result.path for name, result in made.items()}


def _copy(source: Path, tmp_path: Path) -> Path:
    out = tmp_path / source.name
    shutil.copytree(source, out)
    return out


def _tables(path: Path) -> dict[str, pd.DataFrame]:
    return {p.stem: pd.read_parquet(p) for p in sorted((path / "tables").glob("*.parquet"))}


# --- the export of an experiment directory ---------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_export_of_each_experiment_kind(experiments, kind, tmp_path):
    path = _copy(experiments[kind], tmp_path)
    assert is_experiment(path)
    result = invoke("export", "--run", str(path), "--json")
    assert result.exit_code == 0, result.output
    written = json.loads(result.stdout)
    index = path / "index.html"
    assert written["index"] == str(index)
    page = index.read_text()
    summary = json.loads((path / "summary.json").read_text())
    # the sections: the experiment's (design, reading, headline tables) and its arms'
    assert f"<h2>Experiment: {kind}</h2>" in page
    assert "<h2>Arms (one run each)</h2>" in page
    assert page.count('<p class="design">') == 2
    for line in summary["reading"]:
        assert f"<li>{html.escape(line)}</li>" in page
    assert re.search(r"<td>-?\d\.\d{3} \[-?\d\.\d{3}, -?\d\.\d{3}\]</td>", page), "no interval"
    manifest = json.loads((path / "manifest.json").read_text())
    for arm in manifest["arms"]:
        assert f"<td>{html.escape(arm)}</td>" in page
    # every figure: its page, its element on the index and the JSON of the rows it draws
    tables = _tables(path)
    figures = path / "figures"
    for figure, sources in FIGURES[kind].items():
        name = f"exp-{kind}-{figure}"
        assert f'data-target="{name}"' in page
        assert (figures / f"{name}.html").is_file()
        data = json.loads((figures / f"{name}.json").read_text())
        for source in sources:
            rows = tables[source]
            if kind == "weak-evidence" and source == "rates":
                rows = rows[rows["group"] == "all"]  # the figure draws all items
            assert len(data["tables"][source]) == len(rows)
    assert {Path(p).name for p in written["figures"]} == {
        f"exp-{kind}-{f}.{ext}" for f in FIGURES[kind] for ext in ("html", "json")
    }
    # offline: plotly inline once, nothing fetched
    assert not re.search(r"<script[^>]*src=[\"']?https?:", page)
    assert page.count("<script") >= 2 and "cdn.plot.ly" not in page.split("</head>")[1]
    for standalone in figures.glob("*.html"):
        text = standalone.read_text()
        assert not re.search(r"<script[^>]*src=[\"']?https?:", text)
        assert 'src="plotly.min.js"' in text


def test_export_twice_gives_identical_bytes(experiments, tmp_path):
    path = _copy(experiments["interactions"], tmp_path)
    first = export([path])
    before = {p.name: p.read_bytes() for p in [first.index, *first.figures]}
    second = export([path])
    after = {p.name: p.read_bytes() for p in [second.index, *second.figures]}
    assert before == after
    # and a second copy of the same experiment elsewhere gives the same page
    other = _copy(experiments["interactions"], tmp_path / "b")
    assert export([other]).index.read_bytes() == before["index.html"]


def test_export_keeps_a_users_files_and_removes_its_own_stale_ones(experiments, tmp_path):
    path = _copy(experiments["convergence"], tmp_path)
    export([path])
    mine = path / "figures" / "notes.html"
    mine.write_text("mine")
    stale = path / "figures" / "exp-convergence-old.html"
    stale.write_text("an earlier export's figure")
    listed = json.loads((path / "figures" / ".export-files.json").read_text())
    (path / "figures" / ".export-files.json").write_text(json.dumps([*listed, stale.name]))
    export([path])
    assert mine.read_text() == "mine" and not stale.exists()


def test_tables_with_a_control_plan_export(experiments, tmp_path):
    # As an experiment with a control arm writes them: a plan column, and a difference table
    # this module does not know by name (shown folded).
    path = _copy(experiments["convergence"], tmp_path)
    tables = _tables(path)
    for key in ("observed", "fits", "correlation"):
        _with_plans(tables[key]).to_parquet(path / "tables" / f"{key}.parquet")
    diff = tables["observed"].assign(plan="self-correct - baseline")
    diff.to_parquet(path / "tables" / "observed_difference.parquet")
    result = export([path])
    page = result.index.read_text()
    assert "<summary>Table observed_difference: " in page
    assert "<th>plan</th><th>quantity</th>" in page  # the plan first in the headline table
    data = json.loads((path / "figures" / "exp-convergence-curves.json").read_text())
    assert {row["plan"] for row in data["tables"]["observed"]} == {"self-correct", "baseline"}


def test_an_unfinished_experiment_is_refused(experiments, tmp_path):
    path = _copy(experiments["convergence"], tmp_path)
    (path / "summary.json").unlink()
    with pytest.raises(InterpError, match="unfinished experiment"):
        read_experiment(path)


def test_an_experiment_exports_alone(experiments, tmp_path):
    path = _copy(experiments["convergence"], tmp_path)
    run = path / "runs" / "main"
    for runs in ([path, run], [run, path]):
        with pytest.raises(InterpError, match="exports on its own"):
            export(runs)
    assert not (path / "index.html").exists() and not (run / "index.html").exists()


def test_arm_links_its_report_once_exported(experiments, tmp_path, tiny_model):
    path = _copy(experiments["convergence"], tmp_path)
    assert "runs/main/index.html" not in export([path]).index.read_text()
    export([path / "runs" / "main"], model=tiny_model)
    assert '<a href="runs/main/index.html">' in export([path]).index.read_text()


# --- the sections of a run analysed with --run -----------------------------------------------


def test_a_run_with_experiments_gets_their_sections(experiments, tmp_path, tiny_model):
    from interp.experiments.convergence import convergence_of_run
    from interp.experiments.superficial import superficial_of_run

    run = _copy(experiments["convergence"] / "runs" / "main", tmp_path)
    plain = export([run], model=tiny_model).index.read_text()
    assert "Experiment:" not in plain  # nothing added to a run without experiments
    convergence_of_run(run, ExperimentConfig(n_boot=10))
    superficial_of_run(run, ExperimentConfig(n_boot=10))
    result = export([run], model=tiny_model)
    page = result.index.read_text()
    for kind in ("convergence", "superficial"):
        assert f"<h2>Experiment: {kind} (experiments/{kind})</h2>" in page
        summary = json.loads((run / "experiments" / kind / "summary.json").read_text())
        assert f"<li>{html.escape(summary['reading'][0])}</li>" in page
    names = {p.name for p in result.figures}
    assert {"exp-convergence-curves.json", "exp-superficial-rank.html"} <= names
    assert page.index("Experiment: convergence") > page.index("Attention over the transcript")


def test_a_damaged_experiment_of_a_run_is_a_note(experiments, tmp_path, tiny_model):
    from interp.experiments.convergence import convergence_of_run

    run = _copy(experiments["convergence"] / "runs" / "main", tmp_path)
    convergence_of_run(run, ExperimentConfig(n_boot=10))
    (run / "experiments" / "convergence" / "observed.parquet").unlink()
    result = export([run], model=tiny_model)
    assert any(
        "experiments/convergence is damaged (observed.parquet is missing)" in n
        for n in result.notes
    )
    assert "Probes: concepts across rounds" in result.index.read_text()


# --- figures ---------------------------------------------------------------------------------


def _with_plans(frame: pd.DataFrame) -> pd.DataFrame:
    """The table as a control arm's analysis would write it: main and control plans."""
    return pd.concat(
        [frame.assign(plan="self-correct"), frame.assign(plan="baseline")], ignore_index=True
    )


def _main_arm(frame: pd.DataFrame) -> pd.DataFrame:
    """The main arm's rows without the arm/plan columns: a table of one plan."""
    if "arm" not in frame.columns:
        return frame
    main = frame[frame["arm"] == "main"]
    return main.drop(columns=["arm", "plan"]).reset_index(drop=True)


def test_convergence_figure_points_intervals_and_curve(experiments):
    t = _tables(experiments["convergence"])
    both = ef.convergence_figure(t["observed"], t["fits"])  # main and control as written
    assert {trace.name for trace in both.data} >= {"self-correct", "baseline"}
    observed, fits = _main_arm(t["observed"]), _main_arm(t["fits"])
    quantities = list(dict.fromkeys(observed["quantity"]))
    fig = ef.convergence_figure(observed, fits)
    assert len(fig.data) == 2 * len(quantities)
    for i, quantity in enumerate(quantities):
        points, curve = fig.data[2 * i], fig.data[2 * i + 1]
        rows = observed[observed["quantity"] == quantity].sort_values("round")
        assert list(points.x) == rows["round"].tolist()
        assert list(points.y) == pytest.approx(rows["mean"].tolist())
        low = np.asarray(points.y) - np.asarray(points.error_y.arrayminus, dtype=float)
        assert low == pytest.approx(rows["lo"].to_numpy())
        fit = fits[fits["quantity"] == quantity].iloc[0]
        assert curve.y[0] == pytest.approx(fit["y0"])  # the fitted curve starts at y_0
        assert len(curve.x) == ef.CURVE_POINTS
    two = ef.convergence_figure(_with_plans(observed), _with_plans(fits))
    assert len(two.data) == 4 * len(quantities)
    assert {t.name for t in two.data} >= {"self-correct", "baseline"}


def test_saturating_curve_is_the_experiments_model():
    from interp.experiments.convergence import saturating

    r = np.linspace(0, 5, 11)
    assert ef.saturating_curve(r, 0.9, 0.3, 0.7) == pytest.approx(saturating(r, 0.3, 0.9, 0.7))


def test_superficial_figures(experiments):
    t = _tables(experiments["superficial"])
    by_rank, change = _main_arm(t["by_rank"]), _main_arm(t["concept_change"])
    fig = ef.superficial_rank_figure(by_rank)
    assert len(fig.data) == len(ef.RANK_PANELS)
    for trace, (column, _) in zip(fig.data, ef.RANK_PANELS, strict=True):
        assert list(trace.y) == pytest.approx(by_rank[column].tolist())
        assert len(trace.x) == len(by_rank)
    assert len(ef.superficial_rank_figure(_with_plans(by_rank)).data) == 2 * len(ef.RANK_PANELS)
    groups = change[change["group"].isin(ef.SUPERFICIAL_GROUPS)]
    present = groups.groupby("group")["n_examples"].max().gt(0).sum()
    diff = change[change["group"] == "improved - stayed_wrong"]["change"].notna().any()
    expected = 2 * (present + int(diff))  # a band and a line each
    assert len(ef.superficial_concept_figure(change).data) == expected
    assert len(ef.superficial_concept_figure(_with_plans(change)).data) == 2 * expected


def test_interactions_figures(experiments):
    t = _tables(experiments["interactions"])
    effects, concept, cells = t["effects"], t["concept_effects"], t["cells"]
    fig = ef.interactions_forest_figure(effects, concept)
    metrics = list(dict.fromkeys(effects["metric"]))
    assert len(fig.data) == len(metrics) + 1
    last = effects[effects["round"] == effects["round"].max()]
    for trace, metric in zip(fig.data, metrics, strict=False):
        rows = last[last["metric"] == metric].set_index("effect").reindex(list(trace.y))
        assert len(trace.y) == 6 and list(trace.y[:3]) == ["instruction", "cot", "feedback"]
        assert list(trace.x) == pytest.approx(rows["value"].tolist())
    assert len(ef.interactions_forest_figure(effects).data) == len(metrics)
    at_round = ef.interactions_forest_figure(effects, round=0)
    assert at_round.layout.title.text.startswith("Interactions at round 0")
    grid = ef.interactions_cells_figure(cells)
    assert len(grid.data) == len(metrics) * 8
    assert all(len(trace.x) == cells["round"].nunique() for trace in grid.data)


def test_weak_evidence_figures(experiments):
    t = _tables(experiments["weak-evidence"])
    rates, diff = t["rates"], t["difference"]
    fig = ef.weak_evidence_figure(rates)
    assert len(fig.data) == 2 * 3  # two plans x (unknown, follows, s_AMB)
    assert {trace.name for trace in fig.data} == {"baseline", "self-correct"}
    rows = rates[(rates["plan"] == "baseline") & (rates["group"] == "all")]
    follows = rows[rows["measure"] == "follows"].sort_values("round")
    assert list(fig.data[1].y) == pytest.approx(follows["value"].tolist())
    assert len(ef.weak_evidence_difference_figure(diff).data) == 2 * 3 * 3  # band + line


def test_self_distinguish_figure(experiments):
    per_round = _tables(experiments["self-distinguish"])["per_round"]
    fig = ef.self_distinguish_figure(per_round)
    assert len(fig.data) == 6
    assert all(len(trace.x) == len(per_round) for trace in fig.data)
    assert list(fig.data[0].y) == pytest.approx(per_round["both"].tolist())
    assert len(ef.self_distinguish_figure(_with_plans(per_round)).data) == 12


def test_table_html_merges_intervals():
    frame = pd.DataFrame(
        {
            "quantity": ["accuracy"],
            "y0": [0.5],
            "y0_lo": [0.25],
            "y0_hi": [0.75],
            "settle": [float("inf")],
            "note": [None],
        }
    )
    text = table_html(frame)
    assert "<th>y0</th>" in text and "y0_lo" not in text
    assert "<td>0.500 [0.250, 0.750]</td>" in text and "<td>∞</td>" in text
    bare = table_html(pd.DataFrame({"layer": [2], "change": [0.1], "lo": [0.0], "hi": [np.nan]}))
    assert "<td>0.100</td>" in bare and "<th>lo</th>" not in bare
