"""Feature circuits in the report (issue 17, export): `interp export` shows each
feature_circuits/<name>/ of a run (summary, both rounds' graphs side by side, the comparison
and interventions tables, links to circuit-tracer's files) and writes a standalone offline
graph.html beside it; the same run exports to the same bytes. The drawing's data is checked on
hand-made tables (no circuit-tracer needed); the export on the tiny model with tiny
transcoders skips when circuit-tracer is not importable, as
tests/unit/circuits/test_feature_level.py does."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pandas as pd
import pytest

from interp.circuits.feature_export import (
    TOP_STEPS,
    feature_graph_data,
    feature_graph_figure,
    feature_graph_html,
)
from interp.errors import InterpError

FETCHED = r"<(?:script|link|img|iframe)\b[^>]*\b(?:src|href)\s*=\s*[\"']?(?:https?:)?//"


def _nodes() -> pd.DataFrame:
    rows = []
    for r, sign in ((0, 1.0), (2, -1.0)):
        for i in range(30):  # features with |total effect| i / 10, alternating sign
            rows.append((r, "feature", i % 3, i, 5 + i, 1.0, sign * (-1) ** i * i / 10))
        rows.append((r, "error", 1, 4, -1, float("nan"), 0.25))
        rows.append((r, "token", -1, 0, -1, float("nan"), 0.0))
    frame = pd.DataFrame(
        rows, columns=["round", "kind", "layer", "position", "feature", "activation", "total"]
    )
    frame["direct_effect"] = frame["total"] / 2
    return frame.rename(columns={"total": "total_effect"})


SUMMARY = {
    "name": "r2-t0-0-tc",
    "config": {"round": 2, "target_round": 0, "transcoders": "/x/tc"},
    "example": {"index": 0, "id": "builtin/0"},
    "positions": {"target_readout": 9, "source_readout": 29, "shared_prefix": 10},
    "graphs": {},
    "interventions": [{"k": 1, "source_value": 1.5, "target_value": 0.5}],
}


def test_the_graph_data_ranks_each_rounds_nodes_by_total_effect():
    data = feature_graph_data(_nodes(), SUMMARY, {"target": [f"t{i}" for i in range(10)]})
    assert data == feature_graph_data(_nodes(), SUMMARY, {"target": [f"t{i}" for i in range(10)]})
    target, source = data["panels"]["target"], data["panels"]["source"]
    assert (target["round"], source["round"]) == (0, 2)
    assert len(target["nodes"]) == 32  # every node: fewer than the largest slider step
    totals = [abs(n["total_effect"]) for n in target["nodes"]]
    assert totals == sorted(totals, reverse=True)
    assert target["nodes"][0] == {
        "kind": "feature",
        "layer": 2,
        "position": 29,
        "feature": 34,
        "activation": 1.0,
        "direct_effect": -1.45,
        "total_effect": -2.9,
        "token": None,  # position 29 is past the 10 token strings given
    }
    assert source["nodes"][0]["total_effect"] == 2.9  # the other round's own signs
    assert data["value"] == {"target": 0.5, "source": 1.5}
    # the error node (0.25) sits between the features of 0.3 and 0.2
    kinds = [n["kind"] for n in target["nodes"]]
    assert kinds.index("error") == 27 and kinds[-2:] == ["token", "feature"]  # 0: by layer


def test_the_figure_shows_both_rounds_with_a_top_n_slider():
    data = feature_graph_data(_nodes(), SUMMARY)
    fig = feature_graph_figure(data, "t")
    steps = fig.layout.sliders[0].steps
    assert [s.label for s in steps] == [str(n) for n in TOP_STEPS if n < 32] + ["32"]
    # one trace per round and step, then the legend's entries (no data)
    legend = [t for t in fig.data if t.x == (None,)]
    assert len(fig.data) == 2 * len(steps) + len(legend)
    assert {t.legendgroup for t in legend} == {"colour", "symbol", "size"}
    assert "round 2 → round 0" in feature_graph_figure(data).layout.title.text  # human title
    shown = [t for t in fig.data if t.visible and t.x != (None,)]
    assert [len(t.x) for t in shown] == [32, 32]  # the largest step <= 50 first
    # sizes on one scale for both rounds: the largest node of either is the largest marker
    assert max(shown[0].marker.size) == max(shown[1].marker.size) == 30.0
    assert set(shown[0].marker.color) == {"#2166ac", "#b2182b"}
    html = feature_graph_html(data, "t")
    assert html == feature_graph_html(data, "t")
    assert not re.search(FETCHED, html) and "Plotly.newPlot" in html


# --- the export of a real feature circuit (tiny model, tiny transcoders) -------------------


def add_feature_circuit(run: Path, model, root: Path) -> str:
    """Tiny transcoders trained for a few steps into ``root``, then `interp feature-circuit`
    of example 0, round 1 vs 0, on ``run``; its name. Skips without circuit-tracer."""
    from interp.circuits import CircuitConfig, circuit
    from interp.circuits.feature_level import circuit_tracer
    from interp.sae.corpus import CorpusConfig
    from interp.sae.transcoders import TranscoderTrainConfig, train_transcoders

    try:
        circuit_tracer()
    except InterpError:
        pytest.skip("circuit-tracer is not installed (pip install --no-deps circuit-tracer)")
    tc = train_transcoders(
        model,
        TranscoderTrainConfig(
            out=str(root / "tc"),
            width=64,
            tokens=2048,
            batch_tokens=256,
            eval_tokens=256,
            l1=0.5,
            lr=3e-3,
            corpus=CorpusConfig(corpus=["builtin", "concepts"], context=32),
        ),
        progress=False,
    ).path
    config = CircuitConfig(
        level="features", transcoders=str(tc), round=1, max_feature_nodes=32, top=5
    )
    return circuit(run, config, model=model).name


@pytest.fixture(scope="module")
def fc_run(tmp_path_factory, tiny_model, one_torch_thread) -> tuple[Path, str]:
    from faultkit import small_config

    from interp.replay.loop import replay

    root = tmp_path_factory.mktemp("fc-report")
    out = root / "run"
    replay(small_config(out, limit=2, rounds=2), model=tiny_model)
    return out, add_feature_circuit(out, tiny_model, root)


def test_export_shows_the_feature_circuit_and_writes_its_graph(fc_run, tiny_model, tmp_path):
    from interp.report.export import export

    run = tmp_path / "run"
    shutil.copytree(fc_run[0], run)
    name = fc_run[1]
    pages = []
    for _ in range(2):
        export([run], model=tiny_model)
        files = sorted((run / "figures").glob("feature-circuit-*")) + [
            run / "feature_circuits" / name / f for f in ("graph.json", "graph.html")
        ]
        pages.append({p.name: p.read_bytes() for p in [run / "index.html", *files]})
    assert pages[0] == pages[1]  # deterministic bytes
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    assert {f"feature-circuit-{slug}.html", f"feature-circuit-{slug}.json"} <= set(pages[0])
    index = (run / "index.html").read_text()
    assert (
        "Feature circuits between rounds" in index
        and f'data-target="feature-circuit-{slug}"' in index
    )
    assert not re.search(FETCHED, index)
    # the tables: one row per intervention k, the top changes of the comparison
    found = pd.read_parquet(run / "feature_circuits" / name / "interventions.parquet")
    section = index[index.index("Feature circuits between rounds") :]
    assert section.count("<tr><td>") >= len(found) + 1
    assert "replacement score" in section and "share of the gap" in section
    # links to circuit-tracer's own files and the standalone graph, all present
    links = re.findall(r'href="(feature_circuits/[^"]+)"', section)
    assert f"feature_circuits/{name}/{name}-source.json" in links
    assert f"feature_circuits/{name}/graph.html" in links
    assert all((run / link).is_file() for link in links)
    graph = (run / "feature_circuits" / name / "graph.html").read_text()
    assert not re.search(FETCHED, graph) and "<script src=" not in graph
    assert "Plotly.newPlot" in graph and "top nodes per round: " in graph


def test_a_removed_feature_circuit_leaves_the_report(fc_run, tiny_model, tmp_path):
    from interp.report.export import export

    run = tmp_path / "run"
    shutil.copytree(fc_run[0], run)
    export([run], model=tiny_model)
    assert list((run / "figures").glob("feature-circuit-*"))
    shutil.rmtree(run / "feature_circuits")
    export([run], model=tiny_model)
    assert not list((run / "figures").glob("feature-circuit-*"))
    assert "Feature circuits between rounds" not in (run / "index.html").read_text()


def test_a_damaged_feature_circuit_is_a_note_and_the_rest_exports(fc_run, tiny_model, tmp_path):
    from interp.report.export import export

    run = tmp_path / "run"
    shutil.copytree(fc_run[0], run)
    (run / "feature_circuits" / fc_run[1] / "nodes.parquet").unlink()
    result = export([run], model=tiny_model)
    assert any("lacks nodes.parquet" in note for note in result.notes)
    index = (run / "index.html").read_text()
    assert "lacks nodes.parquet" in index and "interp circuit --level features" in index
    assert not list((run / "figures").glob("feature-circuit-*"))
