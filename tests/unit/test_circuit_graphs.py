"""A circuit's drawings in circuits/<name>/ (issue 17, export): the Graphviz source of the top
N edges (deterministic; sign -> colour; one rank per layer's attention and MLP), its SVG when
`dot` is installed, and the interactive graph as one offline HTML file."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from interp.circuits import CircuitConfig, circuit
from interp.circuits.export import graph_data, graph_dot, graph_html
from interp.runs.store import Run

NAME = "r1-t0-eap"
EDGE = re.compile(r'^  "([^"]+)" -> "([^"]+)" \[color="(#[0-9a-f]{6})([0-9a-f]{2})", penwidth=')


def _data(scores: list[float]) -> dict:
    """A hand-made graph_data dict: embed -> a0.h0 (q), a0.h0 -> m0, m0 -> logits, ..."""
    nodes = [
        {"name": "embed", "x": 0.0, "y": 0.0, "kind": "embed", "layer": -1},
        {"name": "a0.h0", "x": 1.0, "y": 0.0, "kind": "head", "layer": 0},
        {"name": "a0.h1", "x": 1.0, "y": 1.0, "kind": "head", "layer": 0},
        {"name": "m0", "x": 2.0, "y": -1.0, "kind": "mlp", "layer": 0},
        {"name": "logits", "x": 3.0, "y": 0.0, "kind": "logits", "layer": 1},
    ]
    pairs = [
        ("embed", "a0.h0.q", "a0.h0", "q"),
        ("a0.h0", "m0.in", "m0", "mlp_in"),
        ("m0", "logits", "logits", "logits"),
        ("embed", "a0.h1.q", "a0.h1", "q"),
        ("embed", "logits", "logits", "logits"),
    ]
    edges = [
        {
            "rank": i + 1,
            "sender": s,
            "receiver": r,
            "to": to,
            "input": port,
            "score": score,
            "ci": [score - 0.1, score + 0.1],
            "exact_delta": None,
            "significant": True,
        }
        for i, ((s, r, to, port), score) in enumerate(zip(pairs, scores, strict=False))
    ]
    return {
        "name": "c",
        "method": "eap",
        "n_edges": 9,
        "n_examples": 3,
        "nodes": nodes,
        "edges": edges,
    }


def edge_lines(dot_text: str) -> list[str]:
    """The drawn edges' lines (not the invisible chain that orders the columns)."""
    return [line for line in dot_text.splitlines() if " -> " in line and "invis" not in line]


def test_dot_draws_the_top_n_edges_coloured_by_sign_ranked_by_layer():
    data = _data([0.8, -0.4, 0.2, -0.1, 0.05])
    text = graph_dot(data, top=3)
    assert text == graph_dot(data, top=3)  # deterministic
    edges = [EDGE.match(line) for line in edge_lines(text)]
    assert all(edges) and len(edges) == 3
    drawn = [(m[1], m[2], m[3]) for m in edges]
    # the top 3 in rank order; blue raises the value, red lowers it
    assert drawn == [
        ("embed", "a0.h0", "#2166ac"),
        ("a0.h0", "m0", "#b2182b"),
        ("m0", "logits", "#2166ac"),
    ]
    # opacity and width grow with |score|: the largest edge is opaque
    assert [m[4] for m in edges][0] == "ff" and int(edges[1][4], 16) > int(edges[2][4], 16)
    widths = [float(re.search(r"penwidth=([0-9.]+)", line)[1]) for line in edge_lines(text)]
    assert widths == sorted(widths, reverse=True) and widths[0] == 5.0
    # only nodes the top edges join; one rank per column, in forward order
    ranks = [line for line in text.splitlines() if "rank=same" in line]
    members = [re.findall(r'"([\w.]+)" \[shape=(?!plaintext)', r) for r in ranks]
    assert members == [["embed"], ["a0.h0"], ["m0"], ["logits"]]
    # the columns' headers, chained invisibly so that dot keeps them in forward order
    headers = re.findall(r'label="([^"]+)", fontcolor', text)
    assert headers == ["embed", "L0 attn", "L0 MLP", "logits"]
    assert '"_col0" -> "_col1" -> "_col2" -> "_col3" [style=invis];' in text
    assert "a0.h1" not in text
    assert 'label="q"' in text and 'label="mlp_in"' not in text  # only head inputs named


@pytest.fixture(scope="module")
def circuit_run(tmp_path_factory, tiny_model) -> Path:
    from faultkit import small_config

    from interp.replay.loop import replay

    out = tmp_path_factory.mktemp("circuit-graphs") / "run"
    replay(small_config(out), model=tiny_model)
    circuit(out, CircuitConfig(round=1, method="eap", n_boot=20, top=7), model=tiny_model)
    return out


def test_circuit_writes_its_graph_beside_its_tables(circuit_run, tiny_model):
    folder = circuit_run / "circuits" / NAME
    found = Run.open(circuit_run).read_analysis("circuits", NAME)
    data = graph_data(found.tables["edges"], found.tables["nodes"], found.summary)
    dot_text = (folder / "graph.dot").read_text()
    assert dot_text == graph_dot(data, 7)
    assert len(edge_lines(dot_text)) == 7  # the circuit's top N
    html = (folder / "graph.html").read_text()
    assert html == graph_html(data, f"Circuit {NAME}")  # deterministic
    # offline: plotly.js inline, no script fetched from anywhere; the top-N slider is there
    fetched = r"<(?:script|link|img|iframe)\b[^>]*\b(?:src|href)\s*=\s*[\"']?(?:https?:)?//"
    assert not re.search(fetched, html) and "<script src=" not in html
    assert "Plotly.newPlot" in html and len(html) > 1_000_000  # the library itself, inline
    assert '"sliders"' in html and "top edges: " in html
    if shutil.which("dot") is None:
        pytest.skip("Graphviz `dot` is not installed (apt-get install graphviz): no SVG to check")
    svg = (folder / "graph.svg").read_text()
    assert svg.lstrip().startswith("<?xml") and "<svg" in svg
    assert svg.count('class="edge"') == 7


def test_without_dot_the_source_is_written_and_a_stale_svg_removed(
    circuit_run, tiny_model, tmp_path, monkeypatch
):
    from typer.testing import CliRunner

    from interp.circuits import export
    from interp.cli import app

    run = tmp_path / "run"
    shutil.copytree(circuit_run, run)
    folder = run / "circuits" / NAME
    (folder / "graph.svg").write_text("<svg>an earlier drawing</svg>")
    real_which = shutil.which
    monkeypatch.setattr(
        export.shutil, "which", lambda cmd, *a, **k: None if cmd == "dot" else real_which(cmd)
    )
    args = ["circuit", "--run", str(run), "--round", "1", "--method", "eap", "--n-boot", "20"]
    result = CliRunner().invoke(app, [*args, "--top-edges", "7"])
    assert result.exit_code == 0, result.output
    said = [line for line in result.output.splitlines() if line.startswith("graph: ")]
    assert len(said) == 1 and "Graphviz `dot` is not installed" in said[0]
    assert not (folder / "graph.svg").exists()
    assert (folder / "graph.dot").read_text() == (
        circuit_run / "circuits" / NAME / "graph.dot"
    ).read_text()


def test_export_draws_each_circuits_graph_again(circuit_run, tiny_model, tmp_path):
    """After installing Graphviz, `interp export` gives the SVG without a new circuit."""
    from interp.report.export import export

    run = tmp_path / "run"
    shutil.copytree(circuit_run, run)
    folder = run / "circuits" / NAME
    for name in ("graph.html", "graph.dot", "graph.svg", "graph.json"):
        (folder / name).unlink(missing_ok=True)
    export([run], model=tiny_model)
    assert (folder / "graph.dot").read_bytes() == (
        circuit_run / "circuits" / NAME / "graph.dot"
    ).read_bytes()
    assert (folder / "graph.html").is_file() and (folder / "graph.json").is_file()
    assert (folder / "graph.svg").is_file() == (shutil.which("dot") is not None)
