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

import html
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from interp.runs.store import Run
from interp.stats import interval_text, no_interval_reason, sig3

# Slider positions (top-N edges); those at or above the graph's edge count are dropped.
TOP_STEPS = (10, 20, 50, 100, 200, 500)
WIDTH_BUCKETS = 4  # edge widths drawn (one trace per bucket and sign per step)


def _r(value: Any) -> float | None:
    v = float(value)
    return round(v, 6) if np.isfinite(v) else None


def graph_data(
    edges: pd.DataFrame,
    nodes: pd.DataFrame,
    summary: dict[str, Any],
    faithfulness: pd.DataFrame | None = None,
) -> dict:
    """The JSON behind the figure: the edges ranked by |mean score| up to the largest slider
    step, the nodes on those edges only (a component no kept edge touches is not drawn, a
    layer without one folds away), laid out by :func:`layout`, and what the title says
    (deterministic: the same tables give the same dict). ``nodes`` (the circuit's node table)
    is not needed to draw: the drawn nodes are the kept edges' ends."""
    del nodes  # the drawn nodes are the kept edges' ends
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
    config = summary.get("config") or {}
    cluster = summary.get("cluster") or {}
    n_boot = (summary.get("bootstrap") or {}).get("n_boot", config.get("n_boot"))
    return {
        "name": summary.get("name"),
        "method": summary.get("method"),
        "round": config.get("round"),
        "target_round": config.get("target_round"),
        "top": summary.get("top", config.get("top")),
        "n_edges": summary.get("n_edges"),
        "n_examples": summary.get("n_examples"),
        "target_value": summary.get("target_value"),
        "source_value": summary.get("source_value"),
        "faithful_n": summary.get("faithful_n"),
        "faithful_n_stable": summary.get("faithful_n_stable"),
        "faithful_band": summary.get("faithful_band"),
        "faithful_refused": summary.get("faithful_refused"),
        "faithfulness": _faithfulness_at(faithfulness, summary.get("top", config.get("top"))),
        "interval_note": no_interval_reason(cluster.get("n_clusters"), n_boot),
        "nodes": layout(_nodes_of(rows)),
        "edges": rows,
    }


def _faithfulness_at(curve: pd.DataFrame | None, top: Any) -> dict[str, Any] | None:
    """The faithfulness curve's point at the largest N of its grid not above ``top``."""
    if curve is None or not len(curve) or top is None:
        return None
    below = curve[curve["n_edges"] <= int(top)].sort_values("n_edges")
    if not len(below):
        return None
    row = below.iloc[-1]
    return {
        "n_edges": int(row["n_edges"]),
        "value": _r(row["faithfulness"]),
        "ci": [_r(row["ci_lo"]), _r(row["ci_hi"])],
    }


_KIND_ORDER = {"embed": 0, "head": 1, "kv": 2, "mlp": 3, "logits": 4}


def _node_of(name: str) -> dict[str, Any]:
    """kind, layer and index (head or key/value group) of a drawn node's name."""
    if name in ("embed", "logits"):
        return {"name": name, "kind": name, "layer": -1 if name == "embed" else 10**6, "index": 0}
    layer, _, part = name.partition(".")
    if not part:  # m{L}
        return {"name": name, "kind": "mlp", "layer": int(layer[1:]), "index": 0}
    kind = "head" if part.startswith("h") else "kv"
    return {"name": name, "kind": kind, "layer": int(layer[1:]), "index": int(part[1:])}


def _nodes_of(edges: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The nodes the edges join (senders and the components owning their receivers)."""
    names = {e["sender"] for e in edges} | {e["to"] for e in edges}
    out = [_node_of(name) for name in names]
    top_layer = max((n["layer"] for n in out if n["kind"] != "logits"), default=-1)
    for n in out:
        if n["kind"] == "logits":
            n["layer"] = top_layer + 1
    return sorted(out, key=lambda n: (_dot_column(n), _KIND_ORDER[n["kind"]], n["index"]))


def layout(nodes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Positions of ``nodes``: x the column (:func:`_dot_column`) among the columns that have
    a node (empty layers fold away), y the place within the column, centred on 0."""
    columns: dict[tuple[int, int], list[dict[str, Any]]] = {}
    for n in nodes:
        columns.setdefault(_dot_column(n), []).append(n)
    out = []
    for x, column in enumerate(sorted(columns)):
        members = sorted(columns[column], key=lambda n: (_KIND_ORDER[n["kind"]], n["index"]))
        for i, n in enumerate(members):
            y = (len(members) - 1) / 2 - i
            if n["kind"] == "mlp":  # staggered so that MLP -> MLP edges are not collinear
                y -= 0.4 * (n["layer"] % 3)
            out.append({**n, "x": float(x), "y": float(y), "column": _column_label(column, n)})
    return out


def graph_title(data: dict[str, Any]) -> str:
    """The human title: rounds, method, examples and the faithfulness at the drawn top N."""
    method = str(data.get("method") or "?").upper()
    parts = [
        f"round {data.get('round')} → round {data.get('target_round')}",
        method,
        f"{data.get('n_examples')} examples",
    ]
    faith = data.get("faithfulness")
    if faith:
        parts.append(f"faithfulness {sig3(faith['value'])} at {faith['n_edges']} edges")
    return ", ".join(parts)


def graph_subtitle(data: dict[str, Any], shown: int) -> list[str]:
    """What is drawn and what the intervals and the faithfulness headline say (lines)."""
    edges = data["edges"][:shown]
    has_ci = any(e["ci"][0] is not None for e in edges)
    ci = "95% intervals on hover" if has_ci else f"95% intervals n/a ({data['interval_note']})"
    if data.get("faithful_refused"):
        headline = f"faithful N n/a ({data['faithful_refused']})"
    elif data.get("faithful_n") is not None and data.get("faithful_band"):
        lo, hi = data["faithful_band"]
        headline = (
            f"faithfulness within [{sig3(lo)}, {sig3(hi)}] from N = {data['faithful_n']} edges on"
        )
    else:
        headline = "faithful N n/a (the curve never stays within the band)"
    return [
        f"top {len(edges)} of {data.get('n_edges')} edges by |mean score| ({data.get('name')})",
        ci,
        headline,
    ]


def _step_nodes(data: dict[str, Any], edges: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The nodes of ``edges`` alone, laid out again (layers they do not touch fold away)."""
    return layout(_nodes_of(edges))


def _width_edges(biggest: float) -> list[float]:
    """|score| at the upper edge of each width bucket."""
    return [biggest * (b + 1) / WIDTH_BUCKETS for b in range(WIDTH_BUCKETS)]


def graph_figure(data: dict[str, Any], title: str | None = None) -> go.Figure:
    """The interactive figure of :func:`graph_data`'s dict, with a top-N slider: each step
    draws its edges and only the nodes they join, with colour and width legends."""
    edges = data["edges"]
    steps = [n for n in TOP_STEPS if n < len(edges)] + [len(edges)]
    top = data.get("top")
    if top is not None and 0 < int(top) < len(edges):
        steps.append(int(top))
    steps = sorted(set(s for s in steps if s > 0)) or [0]
    first = steps.index(int(top)) if top is not None and int(top) in steps else 0
    biggest = max((abs(e["score"] or 0.0) for e in edges), default=1.0) or 1.0
    fig = go.Figure()
    groups: list[list[int]] = []
    axes: list[dict[str, Any]] = []
    for n in steps:
        chosen = edges[:n]
        drawn = _step_nodes(data, chosen)
        pos = {d["name"]: (d["x"], d["y"]) for d in drawn}
        traces: list[int] = []
        for sign, colour in ((1, DOT_COLOURS[1]), (-1, DOT_COLOURS[-1])):
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
                        visible=n == steps[first],
                    )
                )
        # Hover targets at each edge's midpoint: the numbers behind the line.
        traces.append(len(fig.data))
        fig.add_trace(
            go.Scatter(
                x=[(pos[e["sender"]][0] + pos[e["to"]][0]) / 2 for e in chosen],
                y=[(pos[e["sender"]][1] + pos[e["to"]][1]) / 2 for e in chosen],
                mode="markers",
                marker={"size": 6, "color": "rgba(0,0,0,0.15)"},
                text=[_edge_text(e, data["interval_note"]) for e in chosen],
                hovertemplate="%{text}<extra></extra>",
                showlegend=False,
                visible=n == steps[first],
            )
        )
        traces.append(len(fig.data))
        fig.add_trace(
            go.Scatter(
                x=[d["x"] for d in drawn],
                y=[d["y"] for d in drawn],
                mode="markers+text",
                marker={
                    "size": [7 if d["kind"] == "kv" else 11 for d in drawn],
                    "color": [NODE_COLOURS.get(d["kind"], "#000") for d in drawn],
                    "line": {"width": 0.5, "color": "#333"},
                },
                text=[d["name"] for d in drawn],
                textposition="top center",
                textfont={"size": 10},
                hovertemplate="%{text}<extra></extra>",
                showlegend=False,
                visible=n == steps[first],
            )
        )
        groups.append(traces)
        ticks = {d["x"]: d["column"] for d in drawn}
        axes.append(
            {
                "xaxis.tickvals": sorted(ticks),
                "xaxis.ticktext": [ticks[x] for x in sorted(ticks)],
                "title.text": _figure_title(title, data, n),
            }
        )
    # Legends: colour = sign, width = |mean score| (always shown: no data, legend only).
    legend = [len(fig.data)]
    for sign, words in ((1, "raises the value (towards the unbiased option)"), (-1, "lowers it")):
        fig.add_trace(
            go.Scatter(
                x=[None],
                y=[None],
                mode="lines",
                line={"color": DOT_COLOURS[sign], "width": 3},
                name=f"{'blue' if sign > 0 else 'red'}: patching the edge {words}",
                legendgroup="colour",
                legendgrouptitle_text="colour",
            )
        )
    for b, upper in enumerate(_width_edges(biggest)):
        fig.add_trace(
            go.Scatter(
                x=[None],
                y=[None],
                mode="lines",
                line={"color": "#777777", "width": 0.5 + 5 * (b + 1) / WIDTH_BUCKETS},
                name=f"|mean score| ≤ {sig3(upper)}",
                legendgroup="width",
                legendgrouptitle_text="width",
            )
        )
    n_traces = len(fig.data)
    slider_steps = []
    for n, traces, axis in zip(steps, groups, axes, strict=True):
        visible = [i in traces or i >= legend[0] for i in range(n_traces)]
        slider_steps.append(
            {"label": str(n), "method": "update", "args": [{"visible": visible}, axis]}
        )
    fig.update_layout(
        title={"text": axes[first]["title.text"] if axes else title, "x": 0.01},
        sliders=[
            {
                "active": first,
                "currentvalue": {"prefix": "top edges: "},
                "pad": {"t": 56},
                "steps": slider_steps,
            }
        ],
        xaxis={
            "title": "forward order (layers without a drawn node folded)",
            "tickvals": axes[first]["xaxis.tickvals"] if axes else [],
            "ticktext": axes[first]["xaxis.ticktext"] if axes else [],
            "showgrid": False,
            "zeroline": False,
        },
        yaxis={"visible": False},
        legend={"x": 1.01, "y": 1, "font": {"size": 11}},
        plot_bgcolor="white",
        margin={"t": 140, "b": 130},
        height=620,
    )
    return fig


def _figure_title(title: str | None, data: dict[str, Any], shown: int) -> str:
    head = title or graph_title(data)
    return f"{head}<br><sup>{'<br>'.join(graph_subtitle(data, shown))}</sup>"


NODE_COLOURS = {"embed": "#444", "head": "#6a51a3", "kv": "#9e9ac8", "mlp": "#238b45"}


def _edge_text(e: dict[str, Any], why: str) -> str:
    exact = f"<br>exact change {sig3(e['exact_delta'])}" if e["exact_delta"] is not None else ""
    return (
        f"#{e['rank']} {e['sender']} → {e['receiver']} ({e['input']})<br>"
        f"score {sig3(e['score'])}, 95% CI {interval_text(e['ci'], why)}{exact}"
    )


# Graphviz: the colours of the plotly figure; an edge's alpha and pen width grow with |score|.
DOT_COLOURS = {1: "#2166ac", -1: "#b2182b"}
DOT_SHAPES = {"embed": "box", "head": "ellipse", "kv": "ellipse", "mlp": "box", "logits": "box"}
GRAPH_FILES = ("graph.json", "graph.dot", "graph.html", "graph.svg")
# At most this wide and high (inches; dot scales a larger drawing down): a two-column paper's
# full text width. `dot -Tpdf graph.dot -o graph.pdf` gives the same drawing as a PDF.
DOT_SIZE = "7,4.5"


def _dot_column(node: dict[str, Any]) -> tuple[int, int]:
    """Forward order of a node's column: embed, then per layer its attention (heads and
    key/value groups, one rank) and its MLP (the next: it reads that layer's heads), logits."""
    if node["kind"] == "embed":
        return (-1, 0)
    if node["kind"] == "logits":
        return (int(node["layer"]), 0)
    return (int(node["layer"]), 1 if node["kind"] in ("head", "kv") else 2)


def graph_dot(data: dict[str, Any], top: int) -> str:
    """Graphviz source of the top ``top`` edges of :func:`graph_data`'s dict: only the nodes
    they join, one rank (column, headed by its name) per layer's attention and per layer's
    MLP that has one (empty layers fold away), left to right in forward order; each edge blue
    (patching it raises the value) or red (lowers it), wider and more opaque the larger its
    |mean score|, labelled with its score and interval (q, k or v first when it feeds a head),
    its tooltip the score, the interval and the exact change; the human title, and a legend
    of colour and width. At most :data:`DOT_SIZE` inches. The same dict gives the same text."""
    edges = data["edges"][:top]
    biggest = max((abs(e["score"] or 0.0) for e in edges), default=0.0) or 1.0
    nodes = _step_nodes(data, edges)
    why = data.get("interval_note") or "no interval"
    title = "\\n".join(_dot_text(t) for t in [graph_title(data), *graph_subtitle(data, len(edges))])
    lines = [
        "digraph circuit {",
        f'  graph [rankdir=LR, ranksep=0.45, nodesep=0.1, size="{DOT_SIZE}", '
        f'fontname="Helvetica", fontsize=11, labelloc=t, label="{title}"];',
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
        label = _column_label(column, columns[column][0])
        lines.append(
            f'  {{ rank=same; "{head}" [shape=plaintext, label="{label}", fontcolor="#888888", '
            f"style=solid]; {members} }}"
        )
    if len(heads) > 1:
        lines.append(f"  {' -> '.join(heads)} [style=invis];")
    has_ci = False
    for e in edges:
        score = e["score"] or 0.0
        frac = abs(score) / biggest
        alpha = round(0x40 + (0xFF - 0x40) * frac)
        colour = DOT_COLOURS[1 if score >= 0 else -1] + f"{alpha:02x}"
        ci = interval_text(e["ci"], why)
        has_ci = has_ci or e["ci"][0] is not None
        exact = "" if e["exact_delta"] is None else f", exact change {sig3(e['exact_delta'])}"
        tip = f"#{e['rank']} {e['sender']} -> {e['receiver']}: score {sig3(score)}, CI {ci}{exact}"
        # Only a head's input needs naming: an edge into an MLP or the logits has one input.
        port = f"{e['input']} " if e["input"] in ("q", "k", "v") else ""
        shown = sig3(score) + (f" {ci}" if e["ci"][0] is not None else "")
        lines.append(
            f'  "{e["sender"]}" -> "{e["to"]}" [color="{colour}", penwidth={0.5 + 4.5 * frac:.2f}'
            f', label="{_dot_text(port + shown)}", tooltip="{_dot_text(tip)}"];'
        )
    lines.append(_dot_legend(biggest))
    lines.append("}")
    return "\n".join(lines) + "\n"


def _dot_legend(biggest: float) -> str:
    """A legend node (an HTML-like table): colour by sign, pen width by |mean score|."""
    rows = [
        (DOT_COLOURS[1], 3, "blue: patching the edge raises the value (towards the unbiased)"),
        (DOT_COLOURS[-1], 3, "red: patching it lowers the value"),
        ("#777777", 1, "thin: |mean score| near 0"),
        ("#777777", 5, f"wide: |mean score| {sig3(biggest)} (the largest drawn)"),
    ]
    cells = "".join(
        f'<tr><td width="24" height="{h}" fixedsize="true" cellpadding="0" bgcolor="{c}"></td>'
        f'<td align="left">{html.escape(t)}</td></tr>'
        for c, h, t in rows
    )
    return (
        '  "_legend" [shape=plaintext, style=solid, fontsize=8, label=<<table border="0" '
        f'cellspacing="2" cellpadding="1">{cells}</table>>];'
    )


def _column_label(column: tuple[int, int], node: dict[str, Any]) -> str:
    layer, part = column
    if node["kind"] in ("embed", "logits"):
        return str(node["kind"])
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


def graph_html(data: dict[str, Any], title: str | None = None) -> str:
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

    found = run.read_analysis("circuits", name, ["edges", "nodes", "faithfulness"])
    data = graph_data(
        found.tables["edges"],
        found.tables["nodes"],
        found.summary,
        found.tables.get("faithfulness"),
    )
    dot_source = graph_dot(data, int(found.summary.get("top", 50)))
    svg, note = render_svg(dot_source)
    texts = {
        "graph.json": json.dumps(data, indent=1, sort_keys=True, allow_nan=False) + "\n",
        "graph.dot": dot_source,
        "graph.html": graph_html(data),
        "graph.svg": svg,
    }
    paths = []
    for file, text in texts.items():
        path = run.write_analysis_text("circuits", name, file, text)
        if text is not None:
            paths.append(path)
    return paths, note
