"""A circuit as a graph to look at: the JSON it is drawn from, a plotly figure (also as one
standalone HTML file) and a Graphviz drawing (.dot source, SVG when ``dot`` is installed).

Drawn nodes are model components: ``embed``, every head, every key/value head group (the
receivers of key and value inputs in grouped-query attention), every MLP and ``logits``,
laid out left to right by forward order (x) and head (y). An edge is drawn from its sender
to the component that owns its receiver; width and colour show its mean score (blue: patching
it raises the value, towards the unbiased option; red: lowers it), hover shows the score, its
interval, the exact change where verified, and which input (q, k, v, MLP in, logits) it
feeds. The slider shows the top N edges by |mean score|.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from interp.runs.store import Run

# Slider positions (top-N edges); those at or above the graph's edge count are dropped.
TOP_STEPS = (10, 20, 50, 100, 200, 500)
WIDTH_BUCKETS = 4  # edge widths drawn (one trace per bucket and sign per step)


def _r(value: Any) -> float | None:
    v = float(value)
    return round(v, 6) if np.isfinite(v) else None


def graph_data(edges: pd.DataFrame, nodes: pd.DataFrame, summary: dict[str, Any]) -> dict:
    """The JSON behind the figure: drawn nodes with positions, and the edges ranked by |mean
    score| up to the largest slider step (deterministic: the same tables give the same
    dict)."""
    n_layers = int(nodes["layer"].max()) if len(nodes) else 0
    senders = nodes[nodes["role"] == "sender"]
    receivers = nodes[nodes["role"] == "receiver"]
    n_heads = int((senders["kind"] == "head").sum() // max(n_layers, 1))
    n_kv = int((receivers["kind"] == "k").sum() // max(n_layers, 1))
    drawn: dict[str, dict[str, Any]] = {}

    def add(name: str, x: float, y: float, kind: str, layer: int) -> str:
        drawn.setdefault(name, {"name": name, "x": x, "y": y, "kind": kind, "layer": layer})
        return name

    add("embed", 0.0, (n_heads - 1) / 2, "embed", -1)
    for layer in range(n_layers):
        for h in range(n_heads):
            add(f"a{layer}.h{h}", 2 * layer + 1.0, float(h), "head", layer)
        per = n_heads / max(n_kv, 1)
        for g in range(n_kv):
            add(f"a{layer}.g{g}", 2 * layer + 0.6, g * per + (per - 1) / 2, "kv", layer)
        # MLPs below the heads, staggered so that MLP -> MLP edges are not collinear
        add(f"m{layer}", 2 * layer + 2.0, -1.0 - 0.4 * (layer % 3), "mlp", layer)
    add("logits", 2 * n_layers + 1.0, (n_heads - 1) / 2, "logits", n_layers)
    top = edges.sort_values("rank").head(max(TOP_STEPS))
    rows = []
    for e in top.itertuples(index=False):
        receiver = str(e.receiver)
        owner, _, port = receiver.rpartition(".")
        if receiver == "logits":
            owner, port = "logits", "logits"
        elif port == "in":
            port = "mlp_in"
        rows.append(
            {
                "rank": int(e.rank),
                "sender": str(e.sender),
                "receiver": receiver,
                "to": owner,
                "input": port,
                "score": _r(e.score),
                "ci": [_r(e.ci_lo), _r(e.ci_hi)],
                "exact_delta": _r(e.exact_delta),
                "significant": bool(e.significant),
            }
        )
    return {
        "name": summary.get("name"),
        "method": summary.get("method"),
        "n_edges": summary.get("n_edges"),
        "n_examples": summary.get("n_examples"),
        "target_value": summary.get("target_value"),
        "source_value": summary.get("source_value"),
        "faithful_n": summary.get("faithful_n"),
        "faithful_n_stable": summary.get("faithful_n_stable"),
        "nodes": list(drawn.values()),
        "edges": rows,
    }


def graph_figure(data: dict[str, Any], title: str) -> go.Figure:
    """The interactive figure of :func:`graph_data`'s dict, with a top-N slider."""
    pos = {n["name"]: (n["x"], n["y"]) for n in data["nodes"]}
    edges = data["edges"]
    steps = [n for n in TOP_STEPS if n < len(edges)] + [len(edges)]
    steps = sorted(set(s for s in steps if s > 0)) or [0]
    biggest = max((abs(e["score"] or 0.0) for e in edges), default=1.0) or 1.0
    fig = go.Figure()
    groups: list[list[int]] = []
    for n in steps:
        chosen = edges[:n]
        traces: list[int] = []
        for sign, colour in ((1, "#2166ac"), (-1, "#b2182b")):
            for b in range(WIDTH_BUCKETS):
                lo, hi = b / WIDTH_BUCKETS, (b + 1) / WIDTH_BUCKETS
                xs: list[float | None] = []
                ys: list[float | None] = []
                for e in chosen:
                    s = e["score"] or 0.0
                    frac = abs(s) / biggest
                    if (s >= 0) != (sign > 0) or not (lo < frac <= hi or (b == 0 and frac == 0)):
                        continue
                    (x0, y0), (x1, y1) = pos[e["sender"]], pos[e["to"]]
                    xs += [x0, x1, None]
                    ys += [y0, y1, None]
                if not xs:
                    continue
                traces.append(len(fig.data))
                fig.add_trace(
                    go.Scatter(
                        x=xs,
                        y=ys,
                        mode="lines",
                        line={"color": colour, "width": 0.5 + 5 * hi},
                        opacity=0.35 + 0.6 * hi,
                        hoverinfo="skip",
                        showlegend=False,
                        visible=n == steps[0],
                    )
                )
        # Hover targets at each edge's midpoint: the numbers behind the line.
        traces.append(len(fig.data))
        fig.add_trace(
            go.Scatter(
                x=[(pos[e["sender"]][0] + pos[e["to"]][0]) / 2 for e in chosen],
                y=[(pos[e["sender"]][1] + pos[e["to"]][1]) / 2 for e in chosen],
                mode="markers",
                marker={"size": 5, "color": "rgba(0,0,0,0.15)"},
                text=[_edge_text(e) for e in chosen],
                hovertemplate="%{text}<extra></extra>",
                showlegend=False,
                visible=n == steps[0],
            )
        )
        groups.append(traces)
    kinds = {"embed": "#444", "head": "#6a51a3", "kv": "#9e9ac8", "mlp": "#238b45"}
    fig.add_trace(
        go.Scatter(
            x=[n["x"] for n in data["nodes"]],
            y=[n["y"] for n in data["nodes"]],
            mode="markers",
            marker={
                "size": [6 if n["kind"] == "kv" else 10 for n in data["nodes"]],
                "color": [kinds.get(n["kind"], "#000") for n in data["nodes"]],
            },
            text=[n["name"] for n in data["nodes"]],
            hovertemplate="%{text}<extra></extra>",
            showlegend=False,
        )
    )
    n_traces = len(fig.data)
    slider_steps = []
    for n, traces in zip(steps, groups, strict=True):
        visible = [False] * n_traces
        for t in traces:
            visible[t] = True
        visible[-1] = True
        slider_steps.append({"label": str(n), "method": "restyle", "args": ["visible", visible]})
    fig.update_layout(
        title=title,
        sliders=[{"active": 0, "currentvalue": {"prefix": "top edges: "}, "steps": slider_steps}],
        xaxis={
            "title": "forward order: embed, per layer its heads (a) and MLP (m), logits",
            "tickvals": [n["x"] for n in data["nodes"] if n["kind"] in ("embed", "mlp", "logits")]
            + [n["x"] for n in data["nodes"] if n["kind"] == "head" and n["y"] == 0],
            "ticktext": [
                n["name"] for n in data["nodes"] if n["kind"] in ("embed", "mlp", "logits")
            ]
            + [f"a{n['layer']}" for n in data["nodes"] if n["kind"] == "head" and n["y"] == 0],
        },
        yaxis={"title": "head (MLPs below)", "zeroline": False},
        plot_bgcolor="white",
        height=560,
    )
    return fig


def _edge_text(e: dict[str, Any]) -> str:
    lo, hi = e["ci"]
    ci = f"[{lo:.4g}, {hi:.4g}]" if lo is not None and hi is not None else "n/a"
    exact = f"<br>exact change {e['exact_delta']:.4g}" if e["exact_delta"] is not None else ""
    return (
        f"#{e['rank']} {e['sender']} → {e['receiver']} ({e['input']})<br>"
        f"score {e['score']:.4g}, 95% CI {ci}{exact}"
    )


# Graphviz: the colours of the plotly figure; an edge's alpha and pen width grow with |score|.
DOT_COLOURS = {1: "#2166ac", -1: "#b2182b"}
DOT_SHAPES = {"embed": "box", "head": "ellipse", "kv": "ellipse", "mlp": "box", "logits": "box"}
GRAPH_FILES = ("graph.json", "graph.dot", "graph.html", "graph.svg")


def _dot_column(node: dict[str, Any]) -> tuple[int, int]:
    """Forward order of a node's column: embed, then per layer its attention (heads and
    key/value groups, one rank) and its MLP (the next: it reads that layer's heads), logits."""
    if node["kind"] == "embed":
        return (-1, 0)
    if node["kind"] == "logits":
        return (int(node["layer"]), 0)
    return (int(node["layer"]), 1 if node["kind"] in ("head", "kv") else 2)


def graph_dot(data: dict[str, Any], top: int) -> str:
    """Graphviz source of the top ``top`` edges of :func:`graph_data`'s dict: the nodes they
    join, one rank (column, headed by its name) per layer's attention and per layer's MLP,
    left to right in forward order; each
    edge blue (patching it raises the value) or red (lowers it), wider and more opaque the
    larger its |mean score|, labelled q, k or v when it feeds a head, its tooltip the score, the
    interval and the exact change. The same dict gives the same text."""
    edges = data["edges"][:top]
    biggest = max((abs(e["score"] or 0.0) for e in edges), default=0.0) or 1.0
    used = {e["sender"] for e in edges} | {e["to"] for e in edges}
    nodes = [n for n in data["nodes"] if n["name"] in used]
    title = (
        f"{data.get('name')}: top {len(edges)} of {data.get('n_edges')} edges by |mean score| "
        f"({data.get('method')}, {data.get('n_examples')} examples); blue raises the value, "
        "red lowers it"
    )
    lines = [
        "digraph circuit {",
        f'  graph [rankdir=LR, ranksep=0.6, nodesep=0.12, fontname="Helvetica", '
        f'fontsize=11, labelloc=t, label="{_dot_text(title)}"];',
        '  node [fontname="Helvetica", fontsize=10, style=filled, fillcolor="#f7f7f7", '
        'color="#666666", height=0.3];',
        '  edge [fontname="Helvetica", fontsize=7, fontcolor="#555555", arrowsize=0.5];',
    ]
    columns: dict[tuple[int, int], list[dict[str, Any]]] = {}
    for node in nodes:
        columns.setdefault(_dot_column(node), []).append(node)
    # A header per column, chained by invisible edges: dot then keeps the columns in forward
    # order (rank=same alone only aligns a column, it does not order columns).
    heads = []
    for i, column in enumerate(sorted(columns)):
        head = f"_col{i}"
        heads.append(f'"{head}"')
        members = " ".join(
            f'"{n["name"]}" [shape={DOT_SHAPES.get(n["kind"], "box")}];' for n in columns[column]
        )
        label = _column_label(column, columns[column][0]["kind"])
        lines.append(
            f'  {{ rank=same; "{head}" [shape=plaintext, label="{label}", fontcolor="#888888", '
            f"style=solid]; {members} }}"
        )
    if len(heads) > 1:
        lines.append(f"  {' -> '.join(heads)} [style=invis];")
    for e in edges:
        score = e["score"] or 0.0
        frac = abs(score) / biggest
        alpha = round(0x40 + (0xFF - 0x40) * frac)
        colour = DOT_COLOURS[1 if score >= 0 else -1] + f"{alpha:02x}"
        lo, hi = e["ci"]
        ci = f"[{lo:.4g}, {hi:.4g}]" if lo is not None and hi is not None else "n/a"
        exact = "" if e["exact_delta"] is None else f", exact change {e['exact_delta']:.4g}"
        tip = f"#{e['rank']} {e['sender']} -> {e['receiver']}: score {score:.4g}, CI {ci}{exact}"
        # Only a head's input needs naming: an edge into an MLP or the logits has one input.
        label = f', label="{e["input"]}"' if e["input"] in ("q", "k", "v") else ""
        lines.append(
            f'  "{e["sender"]}" -> "{e["to"]}" [color="{colour}", penwidth={0.5 + 4.5 * frac:.2f}'
            f'{label}, tooltip="{_dot_text(tip)}"];'
        )
    lines.append("}")
    return "\n".join(lines) + "\n"


def _column_label(column: tuple[int, int], kind: str) -> str:
    layer, part = column
    if kind in ("embed", "logits"):
        return kind
    return f"L{layer} attn" if part == 1 else f"L{layer} MLP"


def _dot_text(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')


def render_svg(dot_source: str) -> tuple[str | None, str]:
    """SVG of Graphviz source through the ``dot`` binary, or None with the reason (one line)."""
    import subprocess

    dot = shutil.which("dot")
    if dot is None:
        return None, (
            "no SVG: Graphviz `dot` is not installed on this machine (apt-get install graphviz; "
            "the .dot source is written)"
        )
    out = subprocess.run(
        [dot, "-Tsvg"], input=dot_source, capture_output=True, text=True, check=False
    )
    if out.returncode != 0:
        first = (out.stderr.strip().splitlines() or ["no message"])[0][:200]
        return None, f"no SVG: dot failed ({first})"
    return out.stdout, "SVG written by Graphviz"


def graphviz_svg(data: dict[str, Any], top: int) -> tuple[str | None, str]:
    """SVG of the top edges (:func:`graph_dot`) through Graphviz, or None with the reason."""
    return render_svg(graph_dot(data, top))


def graph_html(data: dict[str, Any], title: str) -> str:
    """The interactive figure as one HTML file that opens offline (plotly.js inline)."""
    import plotly.io as pio

    return pio.to_html(
        graph_figure(data, title),
        full_html=True,
        include_plotlyjs=True,
        div_id="circuit-graph",
        config={"displaylogo": False, "responsive": True},
    )


def write_graph_files(run: Run, name: str) -> tuple[list[Path], str]:
    """Write the graph of circuit ``name`` beside its tables in ``circuits/<name>/``: the JSON
    it is drawn from, the standalone interactive HTML, the Graphviz source of the top N edges
    (N: the circuit's ``top``) and its SVG when Graphviz' ``dot`` is installed (a stale SVG
    is removed otherwise). Returns the files written and one line on the SVG."""
    import json

    found = run.read_analysis("circuits", name, ["edges", "nodes"])
    data = graph_data(found.tables["edges"], found.tables["nodes"], found.summary)
    dot_source = graph_dot(data, int(found.summary.get("top", 50)))
    svg, note = render_svg(dot_source)
    texts = {
        "graph.json": json.dumps(data, indent=1, sort_keys=True, allow_nan=False) + "\n",
        "graph.dot": dot_source,
        "graph.html": graph_html(data, f"Circuit {name}"),
        "graph.svg": svg,
    }
    paths = []
    for file, text in texts.items():
        path = run.write_analysis_text("circuits", name, file, text)
        if text is not None:
            paths.append(path)
    return paths, note
