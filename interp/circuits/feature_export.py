"""A feature circuit (``interp circuit --level features``) drawn: the JSON it is drawn from, a
plotly figure of both rounds' attribution graphs side by side (also one standalone offline HTML
file beside the tables) and the HTML tables of the report.

Each panel is one round's graph: x the token position, y the layer (the token embeddings at
-1), one marker per node — a transcoder feature (circle), an error node (x: what the
transcoder misses at that layer and position) or a token (square) — sized by its |total
effect| on the read-out's value (one scale for both panels) and coloured by sign (blue raises
the value, towards the unbiased option; red lowers it). The slider shows the top N nodes of
each round by |total effect|. circuit-tracer's own graph files (edges included) lie beside
and open in its viewer.
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from interp.errors import InterpError
from interp.runs.store import Run
from interp.stats import sig3

KIND = "feature_circuits"  # = interp.circuits.feature_level.KIND (that module wants circuit-tracer)
TOP_STEPS = (10, 20, 50, 100, 200)  # slider: top N nodes per round by |total effect|
DEFAULT_TOP = 50
COLOURS = {1: "#2166ac", -1: "#b2182b"}
SYMBOLS = {"feature": "circle", "error": "x", "token": "square"}
LABELS = ("target", "source")
GRAPH_FILES = ("graph.json", "graph.html")
TABLE_ROWS = 10  # rows of the comparison table in the report


def _r(value: Any) -> float | None:
    v = float(value)
    return round(v, 6) if np.isfinite(v) else None


def prompt_tokens(folder: Path, name: str) -> dict[str, list[str]]:
    """Each round's token strings from circuit-tracer's graph-metadata.json (written with the
    graphs), or nothing when it is missing or unreadable (the figure then shows positions)."""
    try:
        meta = json.loads((folder / "graph-metadata.json").read_text(encoding="utf-8"))
        slugs = {g["slug"]: g.get("prompt_tokens") for g in meta["graphs"]}
    except (OSError, ValueError, KeyError, TypeError):
        return {}
    out = {}
    for label in LABELS:
        tokens = slugs.get(f"{name}-{label}")
        if isinstance(tokens, list) and all(isinstance(t, str) for t in tokens):
            out[label] = tokens
    return out


def feature_graph_data(
    nodes: pd.DataFrame,
    summary: dict[str, Any],
    tokens: dict[str, list[str]] | None = None,
) -> dict[str, Any]:
    """The JSON behind the figure: per round the top nodes by |total effect| (features, error
    nodes and tokens), with the graph's scores; the same tables give the same dict."""
    config = summary.get("config", {})
    rounds = {"target": config.get("target_round"), "source": config.get("round")}
    values = (summary.get("interventions") or [{}])[0]
    panels = {}
    for label in LABELS:
        frame = nodes[nodes["round"] == rounds[label]].copy()
        frame["abs"] = frame["total_effect"].abs()
        frame = frame.sort_values(
            ["abs", "layer", "position", "feature", "kind"],
            ascending=[False, True, True, True, True],
            kind="mergesort",
        ).head(max(TOP_STEPS))
        words = (tokens or {}).get(label)
        panels[label] = {
            "round": rounds[label],
            "readout": (summary.get("positions") or {}).get(f"{label}_readout"),
            "tokens": words,
            "scores": summary.get("graphs", {}).get(label, {}),
            "nodes": [
                {
                    "kind": str(row.kind),
                    "layer": int(row.layer),
                    "position": int(row.position),
                    "feature": int(row.feature),
                    "activation": _r(row.activation),
                    "direct_effect": _r(row.direct_effect),
                    "total_effect": _r(row.total_effect),
                    "token": words[int(row.position)]
                    if words and 0 <= int(row.position) < len(words)
                    else None,
                }
                for row in frame.itertuples(index=False)
            ],
        }
    return {
        "name": summary.get("name"),
        "example": summary.get("example"),
        "shared_prefix": (summary.get("positions") or {}).get("shared_prefix"),
        "value": {"target": values.get("target_value"), "source": values.get("source_value")},
        "panels": panels,
    }


def _node_text(node: dict[str, Any]) -> str:
    where = f"L{node['layer']}" if node["layer"] >= 0 else "embedding"
    if node["kind"] == "feature":
        what = f"feature {node['feature']} (activation {_num(node['activation'])})"
    else:
        what = "error node" if node["kind"] == "error" else "token"
    token = f" {html.escape(repr(node['token']))}" if node.get("token") is not None else ""
    return (
        f"{what}<br>{where}, position {node['position']}{token}<br>"
        f"total effect {_num(node['total_effect'])}, direct {_num(node['direct_effect'])}"
    )


def _num(value: float | None) -> str:
    return sig3(value, "not finite in the graph")


def feature_graph_title(data: dict[str, Any]) -> str:
    """The human title: the rounds, the example and the value at both rounds."""
    panels, value = data["panels"], data["value"]
    example = (data.get("example") or {}).get("id")
    return (
        f"round {panels['source']['round']} → round {panels['target']['round']}, attribution "
        f"graphs of example {example}: value {_num(value['source'])} → {_num(value['target'])}"
    )


def feature_graph_figure(data: dict[str, Any], title: str | None = None) -> go.Figure:
    """Both rounds' graphs side by side (:func:`feature_graph_data`), top-N slider."""
    panels = [data["panels"][label] for label in LABELS]
    longest = max(len(p["nodes"]) for p in panels)
    steps = sorted({n for n in TOP_STEPS if n < longest} | {longest}) if longest else [0]
    biggest = max((abs(n["total_effect"] or 0.0) for p in panels for n in p["nodes"]), default=0.0)
    biggest = biggest or 1.0
    fig = make_subplots(
        rows=1,
        cols=2,
        shared_yaxes=True,
        horizontal_spacing=0.04,
        subplot_titles=[
            f"round {p['round']} ({label}): value {_num(data['value'][label])}"
            for label, p in zip(LABELS, panels, strict=True)
        ],
    )
    # Shown first: 50 nodes per round where there are that many (10 look empty on 30 layers).
    first = max([i for i, n in enumerate(steps) if n <= DEFAULT_TOP], default=0)
    groups: list[list[int]] = []
    for n in steps:
        traces = []
        for col, panel in enumerate(panels, start=1):
            chosen = panel["nodes"][:n]
            traces.append(len(fig.data))
            fig.add_trace(
                go.Scatter(
                    x=[node["position"] for node in chosen],
                    y=[node["layer"] for node in chosen],
                    mode="markers",
                    marker={
                        "size": [
                            round(4 + 26 * (abs(node["total_effect"] or 0.0) / biggest) ** 0.5, 2)
                            for node in chosen
                        ],
                        "color": [
                            COLOURS[1 if (node["total_effect"] or 0.0) >= 0 else -1]
                            for node in chosen
                        ],
                        "symbol": [SYMBOLS[node["kind"]] for node in chosen],
                        "opacity": 0.75,
                        "line": {"width": 0.5, "color": "#333"},
                    },
                    text=[_node_text(node) for node in chosen],
                    hovertemplate="%{text}<extra></extra>",
                    showlegend=False,
                    visible=n == steps[first],
                ),
                row=1,
                col=col,
            )
        groups.append(traces)
    legend = len(fig.data)
    _legend_traces(fig, biggest)
    n_traces = len(fig.data)
    slider = []
    for n, traces in zip(steps, groups, strict=True):
        visible = [i in traces or i >= legend for i in range(n_traces)]
        slider.append({"label": str(n), "method": "restyle", "args": ["visible", visible]})
    # The read-out of each round and, in the source round, where its own tokens begin.
    for col, panel in enumerate(panels, start=1):
        if panel["readout"] is not None:
            fig.add_vline(
                x=panel["readout"], line={"color": "#888", "dash": "dot", "width": 1}, col=col
            )
    if data.get("shared_prefix") is not None:
        fig.add_vline(
            x=data["shared_prefix"] - 0.5, line={"color": "#e0a800", "width": 1}, row=1, col=2
        )
    fig.update_xaxes(title_text="token position (dotted: read-out)", row=1, col=1)
    fig.update_xaxes(
        title_text="token position (yellow: the rounds' shared prefix ends)", row=1, col=2
    )
    fig.update_yaxes(title_text="layer (-1: token embeddings)", row=1, col=1)
    name = data.get("name")
    fig.update_layout(
        title={
            "text": f"{title or feature_graph_title(data)}<br><sup>{name}</sup>",
            "x": 0.01,
        },
        legend={"x": 1.01, "y": 1, "font": {"size": 11}},
        margin={"t": 110},
        sliders=[
            {
                "active": first,
                "currentvalue": {"prefix": "top nodes per round: "},
                "pad": {"t": 50},
                "steps": slider,
            }
        ],
        plot_bgcolor="white",
        height=620,
    )
    return fig


def _legend_traces(fig: go.Figure, biggest: float) -> None:
    """Legend entries only (no data): colour by sign, symbol by kind, size by |total effect|."""
    entries = [
        ("colour", COLOURS[1], "circle", 10, "blue: raises the value (towards the unbiased)"),
        ("colour", COLOURS[-1], "circle", 10, "red: lowers the value"),
        *[
            ("symbol", "#777777", SYMBOLS[kind], 10, words)
            for kind, words in (
                ("feature", "transcoder feature"),
                ("error", "error node"),
                ("token", "token"),
            )
        ],
        *[
            (
                "size",
                "#777777",
                "circle",
                round(4 + 26 * share**0.5, 2),
                f"|total effect| {_num(biggest * share)}",
            )
            for share in (0.1, 1.0)
        ],
    ]
    for group, colour, symbol, size, words in entries:
        fig.add_trace(
            go.Scatter(
                x=[None],
                y=[None],
                mode="markers",
                marker={"color": colour, "symbol": symbol, "size": size},
                name=words,
                legendgroup=group,
                legendgrouptitle_text=group,
            )
        )


def _fmt(value: Any, digits: int = 3) -> str:
    """A signed number to 3 significant digits (``digits`` is kept for older callers)."""
    return sig3(value, "not computed", sign=True)


def feature_graph_html(data: dict[str, Any], title: str | None = None) -> str:
    """The figure as one HTML file that opens offline (plotly.js inline)."""
    import plotly.io as pio

    return pio.to_html(
        feature_graph_figure(data, title),
        full_html=True,
        include_plotlyjs=True,
        div_id="feature-circuit-graph",
        config={"displaylogo": False, "responsive": True},
    )


def load_feature_graph(run: Run, name: str) -> tuple[dict[str, Any], Any]:
    """The graph data of feature circuit ``name`` and the analysis it was read from."""
    wanted = ["nodes", "comparison", "interventions"]
    found = run.read_analysis(KIND, name, wanted)
    missing = [f"{t}.parquet" for t in wanted if t not in found.tables]
    if missing:
        raise InterpError(
            f"feature circuit {name} lacks {', '.join(missing)}; run `interp circuit --level "
            "features` again to rewrite it"
        )
    tokens = prompt_tokens(found.path, name)
    return feature_graph_data(found.tables["nodes"], found.summary, tokens), found


def write_feature_graph_files(run: Run, name: str) -> list[Path]:
    """graph.json and the standalone graph.html of feature circuit ``name``, beside its tables
    in ``feature_circuits/<name>/``."""
    data, _ = load_feature_graph(run, name)
    texts = {
        "graph.json": json.dumps(data, indent=1, sort_keys=True, allow_nan=False) + "\n",
        "graph.html": feature_graph_html(data),
    }
    return [run.write_analysis_text(KIND, name, file, text) for file, text in texts.items()]


# --- the report's HTML ----------------------------------------------------------------------


def _e(value: Any) -> str:
    return html.escape(str(value))


def summary_html(summary: dict[str, Any], files: list[str], link_root: str) -> str:
    """One paragraph: example, rounds, both graphs' scores, the value at both rounds, the
    cross-check; and links to the standalone graph and circuit-tracer's files."""
    config = summary.get("config", {})
    example = summary.get("example", {})
    values = (summary.get("interventions") or [{}])[0]
    parts = []
    for label, r in (("target", config.get("target_round")), ("source", config.get("round"))):
        g = summary.get("graphs", {}).get(label, {})
        parts.append(
            f"round {_e(r)} ({label}): {_e(g.get('n_tokens'))} tokens, "
            f"{_e(g.get('attributed_features'))} of {_e(g.get('active_features'))} active "
            f"features attributed, replacement score {_plain(g.get('replacement_score'))}, "
            f"completeness {_plain(g.get('completeness_score'))}, value "
            f"{_fmt(values.get(f'{label}_value'))}"
        )
    check = summary.get("circuit_tracer_cross_check") or {}
    agree = (
        f" circuit-tracer's own intervention on the top feature agrees with ours to "
        f"{float(check['abs_diff']):.2g}."
        if check.get("checked")
        else ""
    )
    links = " · ".join(
        f'<a href="{_e(link_root)}/{_e(f)}">{_e(f)}</a>' for f in files if f.endswith(".json")
    )
    standalone = f'<a href="{_e(link_root)}/graph.html">graph.html</a>'
    return (
        f"<p>Example <code>{_e(example.get('id'))}</code> (index {_e(example.get('index'))}), "
        f"transcoders <code>{_e(Path(str(config.get('transcoders', ''))).name)}</code>. "
        + "; ".join(parts)
        + ". Value: logit(correct) − logit(stereotyped option) at the read-out. Markers: "
        "features (circles), error nodes (x), tokens (squares), sized by |total effect| on the "
        "value, blue raising it, red lowering it."
        + agree
        + f"</p>\n<p>Standalone: {standalone}. circuit-tracer's graph files (open them in its "
        f"viewer, edges included): {links or 'none'}.</p>"
    )


def comparison_html(comparison: pd.DataFrame, rows: int = TABLE_ROWS) -> str:
    """The features whose total effect changes most between the rounds."""
    head = comparison.sort_values("rank").head(rows)
    body = "".join(
        f"<tr><td>{int(r.rank)}</td><td>L{int(r.layer)} f{int(r.feature)}</td>"
        f"<td>{_e(r.place)}</td><td>{_fmt(r.total_effect_t)}</td>"
        f"<td>{_fmt(r.total_effect_s)}</td><td>{_fmt(r.change_total_effect)}</td>"
        f"<td>{r.activation_t:.2f} → {r.activation_s:.2f}</td></tr>"
        for r in head.itertuples(index=False)
    )
    return (
        f"<p>Features whose total effect on the value changes most (top {len(head)} of "
        f"{len(comparison)}; place: a shared-prefix position, the read-out, or a round's own "
        "position).</p>\n<table><tr><th>rank</th><th>feature</th><th>place</th>"
        "<th>total effect, target</th><th>total effect, source</th><th>change</th>"
        f"<th>activation</th></tr>{body}</table>"
    )


def interventions_html(interventions: pd.DataFrame) -> str:
    """k -> the source round's value with its top-k read-out features at target values."""
    body = "".join(
        f"<tr><td>{int(r.k)}</td><td>{_fmt(r.source_value)}</td><td>{_fmt(r.value)}</td>"
        f"<td>{_fmt(r.change)}</td><td>{_fmt(r.target_value)}</td>"
        f"<td>{sig3(r.share_of_gap, 'the rounds give the same value: no gap')}</td></tr>"
        for r in interventions.itertuples(index=False)
    )
    return (
        "<p>Interventions: the source round with its top-k read-out features (by |change of "
        "total effect|) set to their target-round activations.</p>\n<table><tr><th>k</th>"
        "<th>value, source</th><th>value, intervened</th><th>change</th><th>value, target</th>"
        f"<th>share of the gap</th></tr>{body}</table>"
    )


def _plain(value: Any) -> str:
    return sig3(value, "not given by circuit-tracer")
