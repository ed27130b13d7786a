"""A circuit's drawings in circuits/<name>/ (issue 17, export): the Graphviz source of the top
N edges (deterministic; sign -> colour; one rank per layer's attention and MLP), its SVG when
`dot` is installed, and the interactive graph as one offline HTML file."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from interp.circuits import CircuitConfig, circuit
from interp.circuits.export import graph_data, graph_dot, graph_figure, graph_html, graph_title
from interp.runs.store import Run
from interp.stats import interval_text, no_interval_reason, sig3

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
    # labels: the score and its interval (3 significant digits), a head's input named first
    assert 'label="q 0.800 [0.700, 0.900]"' in text
    assert 'label="-0.400 [-0.500, -0.300]"' in text and "mlp_in " not in text


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
    tables = found.tables
    data = graph_data(tables["edges"], tables["nodes"], found.summary, tables["faithfulness"])
    dot_text = (folder / "graph.dot").read_text()
    assert dot_text == graph_dot(data, 7)
    assert len(edge_lines(dot_text)) == 7  # the circuit's top N
    # the human title, not the hash name: rounds, method, examples, faithfulness at the top N
    assert graph_title(data).startswith("round 1 → round 0, EAP, ")
    assert graph_title(data) in dot_text and "faithfulness " in graph_title(data)
    html = (folder / "graph.html").read_text()
    assert html == graph_html(data)  # deterministic
    assert graph_title(data).replace("→", "\\u2192") in html  # plotly's JSON escapes it
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


def test_export_caption_prints_numbers_to_three_digits_and_n_a_with_its_reason(
    circuit_run, tiny_model, tmp_path
):
    """The report's circuit caption: no 17-digit floats, no bare n/a, links to the files."""
    from interp.report.export import export

    run = tmp_path / "run"
    shutil.copytree(circuit_run, run)
    export([run], model=tiny_model)
    page = (run / "index.html").read_text()
    caption = page[page.index(f"<figcaption><code>{NAME}</code>") :]
    caption = caption[: caption.index("</figcaption>")]
    assert not re.search(r"\d\.\d{6,}", caption), caption  # e.g. 0.34374427795410156
    assert "None" not in caption
    assert all(m.group(1) == " (" for m in re.finditer(r"n/a(.{0,2})", caption)), caption
    assert re.search(r"ρ = -?\d\.\d\d\d? \(95% CI ", caption), caption
    for file in ("graph.html", "graph.svg", "graph.dot", "graph.json"):
        if file != "graph.svg" or shutil.which("dot"):
            assert f'href="circuits/{NAME}/{file}"' in caption
            assert (run / "circuits" / NAME / file).is_file()


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


# --- issue 25: graphs for papers -----------------------------------------------------------


def _edges_frame(pairs: list[tuple[str, str, float]], ci: bool = True):
    import pandas as pd

    rows = []
    for rank, (sender, receiver, score) in enumerate(pairs, start=1):
        rows.append(
            {
                "rank": rank,
                "sender": sender,
                "receiver": receiver,
                "score": score,
                "ci_lo": score - 0.01 if ci else float("nan"),
                "ci_hi": score + 0.01 if ci else float("nan"),
                "exact_delta": float("nan"),
                "significant": ci,
            }
        )
    return pd.DataFrame(rows)


SUMMARY = {
    "name": "r3-t0-eap-ig5-sel0123abcd",
    "method": "eap-ig",
    "n_edges": 9000,
    "n_examples": 72,
    "top": 3,
    "config": {"round": 3, "target_round": 0, "top": 3, "n_boot": 200},
    "bootstrap": {"n_boot": 200},
    "cluster": {"n_clusters": 1},
    "faithful_band": [0.8, 1.2],
    "faithful_n": 2,
}


def test_only_nodes_on_kept_edges_are_drawn_and_empty_layers_fold():
    """A model of 30 layers x 9 heads: the three kept edges join five components; only those
    are drawn (not 270 heads and 30 MLPs), and the layers between them take no room."""
    import pandas as pd

    pairs = [("a2.h5", "m7.in", 0.5), ("m7", "logits", -0.3), ("embed", "a2.h5.q", 0.1)]
    nodes = pd.DataFrame({"layer": [29], "role": ["sender"], "kind": ["head"]})
    data = graph_data(_edges_frame(pairs), nodes, SUMMARY)
    names = sorted(n["name"] for n in data["nodes"])
    assert names == ["a2.h5", "embed", "logits", "m7"]
    # columns in forward order, numbered without gaps: layers 0-1, 3-6 and 8-29 folded
    xs = {n["name"]: n["x"] for n in data["nodes"]}
    assert [xs[n] for n in ("embed", "a2.h5", "m7", "logits")] == [0.0, 1.0, 2.0, 3.0]
    assert {n["column"] for n in data["nodes"]} == {"embed", "L2 attn", "L7 MLP", "logits"}
    # the Graphviz drawing of the top 2 edges: only their three nodes
    dot_text = graph_dot(data, 2)
    drawn = set(re.findall(r'"([\w.]+)" \[shape=(?!plaintext)', dot_text))
    assert drawn == {"a2.h5", "m7", "logits"}
    # the interactive figure draws the same nodes at each slider step (the last trace of a
    # step is its nodes)
    fig = graph_figure(data)
    node_traces = [t for t in fig.data if t.mode == "markers+text"]
    assert [sorted(t.text) for t in node_traces] == [names]  # one step: the 3 edges


def test_the_title_is_for_people_and_names_the_faithfulness_at_the_top_n():
    import pandas as pd

    curve = pd.DataFrame(
        {
            "n_edges": [0, 1, 2, 5, 9000],
            "value": [0.0] * 5,
            "faithfulness": [0.0, 0.5, 0.8123456, 0.9, 1.0],
            "ci_lo": [float("nan")] * 5,
            "ci_hi": [float("nan")] * 5,
        }
    )
    pairs = [("a2.h5", "m7.in", 0.5), ("m7", "logits", -0.3), ("embed", "a2.h5.q", 0.1)]
    nodes = pd.DataFrame({"layer": [29], "role": ["sender"], "kind": ["head"]})
    data = graph_data(_edges_frame(pairs), nodes, SUMMARY, curve)
    # top 3: the largest grid N not above it is 2
    assert (
        graph_title(data) == "round 3 → round 0, EAP-IG, 72 examples, faithfulness 0.812 at 2 edges"
    )
    dot_text = graph_dot(data, 3)
    assert graph_title(data) in dot_text and "r3-t0-eap-ig5" not in dot_text.split("\\n")[0]
    assert "faithfulness within [0.800, 1.20] from N = 2 edges on" in dot_text
    # a legend of colour and width in both drawings
    assert "raises the value" in dot_text and "lowers the value" in dot_text
    assert "|mean score| 0.500 (the largest drawn)" in dot_text
    legend = [t.name for t in graph_figure(data).data if t.showlegend is not False]
    assert any("raises the value" in n for n in legend) and any("lowers" in n for n in legend)
    assert sum(n.startswith("|mean score| ≤ ") for n in legend) == 4


def test_n_a_always_carries_its_reason():
    import pandas as pd

    pairs = [("a2.h5", "m7.in", 0.5), ("m7", "logits", -0.3)]
    nodes = pd.DataFrame({"layer": [29], "role": ["sender"], "kind": ["head"]})
    data = graph_data(_edges_frame(pairs, ci=False), nodes, SUMMARY)
    assert data["interval_note"] == "1 clusters < floor 5"
    dot_text = graph_dot(data, 2)
    fig = graph_figure(data)
    html = " ".join([fig.layout.title.text, *(str(t.text) for t in fig.data)])
    assert "95% CI n/a (1 clusters < floor 5)" in html
    for text in (dot_text, html):
        found = re.findall(r"n/a(.{0,2})", text)
        assert found and all(f == " (" for f in found), found
    assert "CI n/a (1 clusters < floor 5)" in dot_text
    assert "95% intervals n/a (1 clusters < floor 5)" in dot_text
    assert no_interval_reason(20, 0) == "no bootstrap: n_boot 0"
    assert interval_text(None, "why") == "n/a (why)"
    assert interval_text([float("nan"), 1.0], "why") == "n/a (why)"


def test_numbers_are_printed_to_three_significant_digits():
    assert sig3(0.34374427795410156) == "0.344"
    assert sig3(0.9999999999999999) == "1.00"
    assert sig3(-1.0439049825072289) == "-1.04"
    assert sig3(72.0) == "72.0"
    assert sig3(1234.5) == "1.23e+03"
    assert sig3(0.000123456) == "0.000123"
    assert sig3(0.5, sign=True) == "+0.500" and sig3(-0.5, sign=True) == "-0.500"
    assert sig3(None) == "n/a" and sig3(float("nan"), "2 clusters") == "n/a (2 clusters)"
    assert interval_text([0.1234, 0.56789]) == "[0.123, 0.568]"
