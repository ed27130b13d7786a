"""A circuit as a graph to look at: the JSON it is drawn from, and a plotly figure.

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
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go

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


def graphviz_svg(data: dict[str, Any], top: int) -> tuple[str | None, str]:
    """SVG of the top edges through Graphviz' ``dot``, or None with the reason."""
    import subprocess

    dot = shutil.which("dot")
    if dot is None:
        return None, "no SVG: Graphviz `dot` is not installed on this machine"
    lines = ["digraph circuit {", "rankdir=LR;", "node [shape=box, fontsize=10];"]
    for e in data["edges"][:top]:
        colour = "#2166ac" if (e["score"] or 0) >= 0 else "#b2182b"
        lines.append(f'"{e["sender"]}" -> "{e["to"]}" [color="{colour}", label="{e["input"]}"];')
    lines.append("}")
    out = subprocess.run(
        [dot, "-Tsvg"], input="\n".join(lines), capture_output=True, text=True, check=False
    )
    if out.returncode != 0:
        return None, f"no SVG: dot failed ({out.stderr.strip()[:200]})"
    return out.stdout, "SVG written by Graphviz"
