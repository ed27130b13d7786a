"""Plotly figures of a run, one function per figure; each returns a ``go.Figure``.

Every function takes the data it plots, as the run directory stores it (a metrics dict, the
rounds table, a probe or patching table), so it works as well on an in-memory result in a
notebook as on a run read back from disk. ``interp.report.run_page`` reads the run directory
and puts the figures on one page.

Conventions: rounds on the x axis (0 = the question alone); layers on the y axis of
heatmaps, layer 0 at the bottom; intervals are the 95% bootstrap intervals the analyses wrote;
diverging colour scales are centred on 0.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from interp.errors import InterpError
from interp.inputs.plans import option_letter
from interp.patching.analysis import patching_value

TEMPLATE = "plotly_white"
PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2")
# Option letters get neutral colours: red and green would read as wrong and right.
OPTION_COLORS = ("#4c78a8", "#f58518", "#72b7b2", "#b279a2", "#9d755d", "#bab0ac")
# Convergence panels: (metric key in metrics.json, panel title).
CONVERGENCE_PANELS: tuple[tuple[str, str], ...] = (
    ("accuracy", "accuracy"),
    ("bias_amb", "bias s_AMB (ambiguous)"),
    ("bias_dis", "bias s_DIS (disambiguated)"),
    ("entropy", "option entropy (nats)"),
    ("ece", "ECE (10 bins)"),
    ("changed", "answers changed since previous round"),
)
# Fixed y ranges where a metric has natural bounds, so that runs and pages compare by eye.
PANEL_RANGES = {
    "accuracy": [-0.02, 1.02],
    "bias_amb": [-1.05, 1.05],
    "bias_dis": [-1.05, 1.05],
    "changed": [-0.02, 1.02],
}
# Answer roles for the flow diagram, in the order their nodes are stacked.
ROLES: tuple[str, ...] = ("correct", "stereotyped", "unknown", "other", "unparsed")
ROLE_COLORS = {
    "correct": "#2ca02c",
    "stereotyped": "#d62728",
    "unknown": "#7f7f7f",
    "other": "#ff7f0e",
    "unparsed": "#c7c7c7",
}
PATCH_COMPONENTS = ("resid_pre", "resid_post", "attn_out", "mlp_out")
# Layers are whole numbers: one tick each (plotly would otherwise label 0.5, 1.5, ...).
LAYER_TICKS: dict[str, Any] = {"tickmode": "linear", "tick0": 0, "dtick": 1}


def rounds_axis(fig: go.Figure, rounds: Sequence[int], **where: Any) -> None:
    fig.update_xaxes(tickmode="array", tickvals=list(rounds), title_text="round", **where)


def finalize(fig: go.Figure, title: str, height: int) -> go.Figure:
    fig.update_layout(
        template=TEMPLATE,
        title={"text": title, "x": 0.01},
        height=height,
        margin={"l": 60, "r": 30, "t": 70, "b": 50},
    )
    return fig


# --- behaviour across rounds ------------------------------------------------------------------


def convergence_figure(metrics: Mapping[str, Mapping[str, Any]]) -> go.Figure:
    """Accuracy, bias scores, entropy, ECE and changed answers per round, with intervals.

    Args:
        metrics: label (e.g. the plan's name) -> a metrics dict (``metrics.json``, i.e.
            ``compute_metrics`` output). One line per label, in the mapping's order.
    """
    if not metrics:
        raise InterpError("convergence_figure needs at least one metrics dict")
    titles = [title for _, title in CONVERGENCE_PANELS]
    fig = make_subplots(rows=2, cols=3, subplot_titles=titles, vertical_spacing=0.16)
    for i, (label, result) in enumerate(metrics.items()):
        color = PALETTE[i % len(PALETTE)]
        for j, (key, _) in enumerate(CONVERGENCE_PANELS):
            trace = _convergence_trace(result, key, label, color, first_panel=j == 0)
            fig.add_trace(trace, row=j // 3 + 1, col=j % 3 + 1)
    rounds = sorted({r for result in metrics.values() for r in result["rounds"]})
    rounds_axis(fig, rounds)
    for j, (key, _) in enumerate(CONVERGENCE_PANELS):
        if key in PANEL_RANGES:
            fig.update_yaxes(range=PANEL_RANGES[key], row=j // 3 + 1, col=j % 3 + 1)
    fig.update_layout(legend={"orientation": "h", "y": -0.12})
    return finalize(fig, "Convergence across rounds (95% bootstrap intervals)", 620)


def _convergence_trace(
    result: Mapping[str, Any], key: str, label: str, color: str, *, first_panel: bool
) -> go.Scatter:
    entries = result["per_round"]
    rounds = [e["round"] for e in entries]
    if key == "changed":
        n = result["n_examples"]
        values = [e["flips"]["changed"] / n if e["flips"] else None for e in entries]
        error = None
    else:
        values = [e[key]["value"] for e in entries]
        lows = [(e[key]["ci"] or [None, None])[0] for e in entries]
        highs = [(e[key]["ci"] or [None, None])[1] for e in entries]
        error = _error_bars(values, lows, highs, color)
    return go.Scatter(
        x=rounds,
        y=values,
        error_y=error,
        mode="lines+markers",
        name=label,
        legendgroup=label,
        showlegend=first_panel,
        line={"color": color},
        hovertemplate=f"{label}<br>round %{{x}}: %{{y:.3f}}<extra></extra>",
    )


def _error_bars(
    values: Sequence[float | None],
    lows: Sequence[float | None],
    highs: Sequence[float | None],
    color: str,
) -> dict[str, Any] | None:
    if all(lo is None for lo in lows):
        return None

    def gap(a: float | None, b: float | None) -> float | None:
        return None if a is None or b is None else max(0.0, a - b)

    return {
        "type": "data",
        "symmetric": False,
        "array": [gap(hi, v) for v, hi in zip(values, highs, strict=True)],
        "arrayminus": [gap(v, lo) for v, lo in zip(values, lows, strict=True)],
        "color": color,
        "thickness": 1.2,
        "width": 3,
    }


def answer_roles(rounds: pd.DataFrame) -> pd.Series:
    """Each row's answer role: correct, stereotyped, unknown, other (wrong), or unparsed."""
    choice = rounds["choice"].to_numpy()
    conditions = [
        choice < 0,
        choice == rounds["label"].to_numpy(),
        choice == rounds["target"].to_numpy(),
        choice == rounds["unknown"].to_numpy(),
    ]
    roles = np.select(conditions, ["unparsed", "correct", "stereotyped", "unknown"], "other")
    return pd.Series(roles, index=rounds.index, name="role")


def answer_flow_figure(rounds: pd.DataFrame, *, by: str = "role") -> go.Figure:
    """How many answers moved from each option to each other, round to round (a Sankey).

    Args:
        rounds: the rounds table (``run.rounds()``).
        by: ``"role"`` (correct / stereotyped / unknown / other / unparsed; what an answer
            means for the example) or ``"option"`` (the letter chosen: position).
    """
    if by not in ("role", "option"):
        raise InterpError(f"answer_flow_figure: by must be 'role' or 'option', not {by!r}")
    frame = rounds.assign(state=_flow_states(rounds, by))
    states = _state_order(frame["state"], by)
    round_values = sorted(int(r) for r in frame["round"].unique())
    nodes = [(r, s) for r in round_values for s in states]
    index = {node: i for i, node in enumerate(nodes)}
    counts = frame.groupby(["round", "state"]).size()
    pivot = frame.pivot(index="example_index", columns="round", values="state")
    links = _flow_links(pivot, round_values, index)
    colors = [_state_color(s, by) for _, s in nodes]
    labels = [f"R{r} {s} ({int(counts.get((r, s), 0))})" for r, s in nodes]
    sankey = go.Sankey(
        arrangement="fixed",
        node={
            "label": labels,
            "color": colors,
            "pad": 12,
            "thickness": 14,
            "x": [_spread(round_values.index(r), len(round_values)) for r, _ in nodes],
            "y": [_spread(states.index(s), len(states)) for _, s in nodes],
        },
        link={
            "source": [index[a] for a, _, _ in links],
            "target": [index[b] for _, b, _ in links],
            "value": [n for _, _, n in links],
            "color": [with_alpha(_state_color(a[1], by), 0.35) for a, _, _ in links],
        },
    )
    title = "Answer flow between rounds, by " + ("answer role" if by == "role" else "option")
    return finalize(go.Figure(sankey), title, 460)


def _flow_states(rounds: pd.DataFrame, by: str) -> pd.Series:
    if by == "role":
        return answer_roles(rounds)
    return rounds["choice"].map(lambda c: "unparsed" if c < 0 else f"({option_letter(int(c))})")


def _state_order(states: pd.Series, by: str) -> list[str]:
    present = set(states)
    if by == "role":
        return [r for r in ROLES if r in present]
    return sorted(present, key=lambda s: (s == "unparsed", s))


def _flow_links(
    pivot: pd.DataFrame, rounds: list[int], index: Mapping[tuple[int, str], int]
) -> list[tuple[tuple[int, str], tuple[int, str], int]]:
    links = []
    for a, b in zip(rounds, rounds[1:], strict=False):
        pairs = pivot[[a, b]].value_counts().sort_index()
        links.extend(((a, sa), (b, sb), int(n)) for (sa, sb), n in pairs.items())
    return links


def _state_color(state: str, by: str) -> str:
    if by == "role":
        return ROLE_COLORS[state]
    if state == "unparsed":
        return ROLE_COLORS["unparsed"]
    return OPTION_COLORS[(ord(state[1]) - ord("a")) % len(OPTION_COLORS)]


def _spread(i: int, n: int) -> float:
    """Node positions in (0, 1): plotly's fixed arrangement rejects exactly 0 and 1."""
    return 0.01 + 0.98 * (i / (n - 1) if n > 1 else 0.5)


def with_alpha(color: str, alpha: float) -> str:
    r, g, b = (int(color[i : i + 2], 16) for i in (1, 3, 5))
    return f"rgba({r},{g},{b},{alpha})"


def position_bias_figure(metrics: Mapping[str, Mapping[str, Any]]) -> go.Figure:
    """Share of answers per option letter and round, one panel per run.

    A model without position bias spreads its answers as the correct options are spread
    (dashed line: uniform share); the embedded model prefers (c).
    """
    if not metrics:
        raise InterpError("position_bias_figure needs at least one metrics dict")
    labels = list(metrics)
    fig = make_subplots(rows=1, cols=len(labels), subplot_titles=labels, shared_yaxes=True)
    for col, label in enumerate(labels, start=1):
        entries = metrics[label]["per_round"]
        n_options = max(len(e["position_share"]) for e in entries)
        for i in range(n_options):
            fig.add_trace(_position_bar(entries, i, showlegend=col == 1), row=1, col=col)
        fig.add_hline(y=1 / n_options, line_dash="dash", line_color="#555", row=1, col=col)
        rounds_axis(fig, [e["round"] for e in entries], row=1, col=col)
    fig.update_yaxes(title_text="share of parsed answers", range=[0, 1], row=1, col=1)
    fig.update_layout(barmode="group", legend_title_text="option")
    return finalize(fig, "Position bias: which option letter is chosen, per round", 420)


def _position_bar(entries: Sequence[Mapping[str, Any]], i: int, *, showlegend: bool) -> go.Bar:
    letter = f"({option_letter(i)})"
    shares = [e["position_share"][i] if i < len(e["position_share"]) else None for e in entries]
    return go.Bar(
        x=[e["round"] for e in entries],
        y=shares,
        name=letter,
        legendgroup=letter,
        showlegend=showlegend,
        marker_color=OPTION_COLORS[i % len(OPTION_COLORS)],
        hovertemplate=f"{letter} round %{{x}}: %{{y:.2f}}<extra></extra>",
    )


# --- probes -----------------------------------------------------------------------------------


def _band(
    x: Sequence[Any], lo: Sequence[float], hi: Sequence[float], color: str, name: str
) -> go.Scatter:
    """A filled interval band (upper edge, then lower edge reversed)."""
    return go.Scatter(
        x=[*x, *x[::-1]],
        y=[*hi, *lo[::-1]],
        mode="lines",
        fill="toself",
        fillcolor=with_alpha(color, 0.18),
        line={"width": 0},
        hoverinfo="skip",
        name=name,
        showlegend=False,
    )


def probe_accuracy_figure(per_layer: pd.DataFrame, concept: str = "") -> go.Figure:
    """Held-out probe accuracy per layer with its interval, next to its controls.

    ``per_layer`` is ``probes/<concept>/per_layer.parquet``: layer, acc, acc_lo, acc_hi,
    train_acc, val_acc (the validation accuracy that picks the headline layer, marked),
    shuffled_acc (labels shuffled before fitting), random_acc (a random direction), the
    surface baselines bow_acc and length_acc (text only: flat lines), and, when transfer was
    measured, transfer_centred_acc (the direction at the chat read-out) and wrapped_acc. A
    layer carries the concept only where acc clears the controls and the surface baselines.
    """
    t = per_layer.sort_values("layer")
    layers = t["layer"].tolist()
    fig = go.Figure()
    fig.add_trace(_band(layers, t["acc_lo"].tolist(), t["acc_hi"].tolist(), PALETTE[0], "95%"))
    lines = (
        ("acc", "held-out accuracy", PALETTE[0], "solid"),
        ("train_acc", "train accuracy", PALETTE[0], "dot"),
        ("val_acc", "validation accuracy (picks the layer)", PALETTE[0], "dashdot"),
        ("shuffled_acc", "control: shuffled labels", "#7f7f7f", "dash"),
        ("random_acc", "control: random direction", "#bcbd22", "dash"),
        ("bow_acc", "surface: bag of words", "#d62728", "longdash"),
        ("length_acc", "surface: length/punctuation", "#ff7f0e", "longdash"),
        ("transfer_centred_acc", "at the chat read-out (bare direction)", "#9467bd", "solid"),
        ("wrapped_acc", "at the chat read-out (fitted there)", "#9467bd", "dot"),
    )
    for column, name, color, dash in lines:
        if column in t:
            fig.add_trace(
                go.Scatter(
                    x=layers,
                    y=t[column],
                    name=name,
                    mode="lines+markers" if column == "acc" else "lines",
                    line={"color": color, "dash": dash},
                )
            )
    if "val_acc" in t and t["val_acc"].notna().any():
        # The headline layer: best validation accuracy, earliest on ties (probes.directions).
        chosen = t.iloc[int(np.nanargmax(t["val_acc"].to_numpy(dtype=float)))]
        fig.add_trace(
            go.Scatter(
                x=[chosen["layer"]],
                y=[chosen["acc"]],
                name="layer chosen on validation",
                mode="markers",
                marker={"symbol": "star", "size": 14, "color": PALETTE[0]},
            )
        )
    fig.add_hline(y=0.5, line_dash="dot", line_color="#999")
    fig.update_xaxes(title_text="layer", **LAYER_TICKS)
    fig.update_yaxes(title_text="accuracy", range=[0, 1.02])
    return finalize(fig, f"Probe '{concept}': held-out accuracy per layer", 420)


def concept_score_figure(scores: pd.DataFrame, concept: str = "") -> go.Figure:
    """Mean concept score as a layer x round heatmap, and its change since round 0.

    ``scores`` is ``probes/<concept>/scores.parquet``: layer, round, mean, lo, hi, n. Raw
    scores grow with depth (the residual norm does), so the right panel subtracts each
    layer's round-0 score: what the instructions moved.
    """
    grid = scores.pivot(index="layer", columns="round", values="mean").sort_index()
    lo = scores.pivot(index="layer", columns="round", values="lo").reindex_like(grid)
    hi = scores.pivot(index="layer", columns="round", values="hi").reindex_like(grid)
    change = grid.sub(grid[grid.columns[0]], axis=0)
    fig = make_subplots(
        rows=1,
        cols=2,
        subplot_titles=["mean score", f"change since round {grid.columns[0]}"],
        horizontal_spacing=0.14,
    )
    custom = np.dstack([lo.to_numpy(), hi.to_numpy()])
    fig.add_trace(
        _heatmap(grid, "score", colorbar_x=0.43, customdata=custom, ci=True), row=1, col=1
    )
    fig.add_trace(_heatmap(change, "change", colorbar_x=1.0), row=1, col=2)
    rounds_axis(fig, list(grid.columns))
    fig.update_yaxes(title_text="layer", row=1, col=1)
    fig.update_yaxes(**LAYER_TICKS)
    return finalize(fig, f"Concept '{concept}' at the read-out: layer x round", 520)


def _heatmap(
    grid: pd.DataFrame,
    name: str,
    *,
    colorbar_x: float,
    customdata: np.ndarray | None = None,
    ci: bool = False,
    zmax: float | None = None,
) -> go.Heatmap:
    values = grid.to_numpy(dtype=float)
    bound = zmax if zmax is not None else _symmetric_bound(values)
    hover = f"{grid.columns.name or 'x'} %{{x}}, {grid.index.name or 'y'} %{{y}}: %{{z:.3f}}"
    if ci:
        hover += " [%{customdata[0]:.3f}, %{customdata[1]:.3f}]"
    return go.Heatmap(
        z=values,
        x=[str(c) if not isinstance(c, int | np.integer) else int(c) for c in grid.columns],
        y=[int(i) for i in grid.index],
        colorscale="RdBu_r",
        zmid=0,
        zmin=-bound,
        zmax=bound,
        customdata=customdata,
        name=name,
        colorbar={"x": colorbar_x, "len": 0.9, "thickness": 12},
        hovertemplate=hover + "<extra></extra>",
    )


def _symmetric_bound(values: np.ndarray, cap: float | None = None) -> float:
    finite = np.abs(values[np.isfinite(values)])
    bound = float(finite.max()) if finite.size else 1.0
    if cap is not None:
        bound = min(bound, cap)
    return bound if bound > 0 else 1.0


def instruction_shift_figure(shift: pd.DataFrame, concept: str = "") -> go.Figure:
    """The instruction shift per layer: mean state at round r minus round 0, its cosine
    with the concept direction (left) and its norm (right), one line per round r >= 1.

    ``shift`` is ``probes/<concept>/shift.parquet``: layer, round, norm, cosine, projection.
    """
    fig = make_subplots(
        rows=1, cols=2, subplot_titles=["cosine with the concept direction", "norm"]
    )
    for i, (r, rows) in enumerate(shift.sort_values("layer").groupby("round", sort=True)):
        color = PALETTE[i % len(PALETTE)]
        for col, column in ((1, "cosine"), (2, "norm")):
            fig.add_trace(
                go.Scatter(
                    x=rows["layer"],
                    y=rows[column],
                    name=f"round {r} - round 0",
                    legendgroup=str(r),
                    showlegend=col == 1,
                    mode="lines+markers",
                    line={"color": color},
                ),
                row=1,
                col=col,
            )
    fig.add_hline(y=0, line_color="#999", row=1, col=1)
    fig.update_xaxes(title_text="layer", **LAYER_TICKS)
    return finalize(fig, f"Instruction shift along '{concept}', per layer", 420)


def behaviour_probe_figure(behaviour: pd.DataFrame) -> go.Figure:
    """How well each layer's read-out predicts the model's own answer (stereotyped, correct),
    against shuffled labels and the majority class.

    ``behaviour`` is ``probes/<concept>/behaviour.parquet``: behaviour, layer, acc, acc_lo,
    acc_hi, shuffled_acc, majority_acc, ... (NaN where one class only).
    """
    fig = go.Figure()
    for i, (name, rows) in enumerate(behaviour.groupby("behaviour", sort=False)):
        rows = rows.sort_values("layer")
        color = PALETTE[i % len(PALETTE)]
        layers = rows["layer"].tolist()
        fig.add_trace(_band(layers, rows["acc_lo"].tolist(), rows["acc_hi"].tolist(), color, ""))
        fig.add_trace(go.Scatter(x=layers, y=rows["acc"], name=f"{name}", line={"color": color}))
        fig.add_trace(
            go.Scatter(
                x=layers,
                y=rows["majority_acc"],
                name=f"{name}: majority class",
                line={"color": color, "dash": "dot"},
            )
        )
    fig.update_xaxes(title_text="layer", **LAYER_TICKS)
    fig.update_yaxes(title_text="held-out accuracy", range=[0, 1.02])
    return finalize(fig, "Behaviour probes: does the read-out predict the model's answer?", 400)


def probe_control_figure(
    control: pd.DataFrame, layer: int, concept: str = "", control_label: str = "control"
) -> go.Figure:
    """The run and its control run side by side at one layer: mean concept score per round of
    each (left), and run - control with its paired 95% interval (right), both as levels and
    as each run's change since round 0.

    ``control`` is ``probes/<concept>/control.parquet``: layer, round, run, control, diff,
    lo, hi, change_diff, change_lo, change_hi.
    """
    rows = control[control["layer"] == layer].sort_values("round")
    rounds = rows["round"].tolist()
    fig = make_subplots(
        rows=1,
        cols=2,
        subplot_titles=[
            f"mean score at layer {layer}",
            "run − control (paired 95% CI)",
        ],
        horizontal_spacing=0.12,
    )
    for column, name, color in (("run", "run", PALETTE[0]), ("control", control_label, "#7f7f7f")):
        fig.add_trace(
            go.Scatter(x=rounds, y=rows[column], name=name, line={"color": color}), row=1, col=1
        )
    for prefix, name, color, dash in (
        ("", "level", PALETTE[1], "solid"),
        ("change_", "change since round 0", PALETTE[3], "dash"),
    ):
        lo, hi = rows[f"{prefix}lo"].tolist(), rows[f"{prefix}hi"].tolist()
        fig.add_trace(_band(rounds, lo, hi, color, ""), row=1, col=2)
        fig.add_trace(
            go.Scatter(
                x=rounds,
                y=rows[f"{prefix}diff"],
                name=f"difference: {name}",
                line={"color": color, "dash": dash},
            ),
            row=1,
            col=2,
        )
    fig.add_hline(y=0, line_dash="dot", line_color="#999", row=1, col=2)
    rounds_axis(fig, rounds)
    return finalize(fig, f"Concept '{concept}': the run beside its control", 420)


def patching_control_figure(
    control: pd.DataFrame, title: str = "", value: str = "delta"
) -> go.Figure:
    """Patching of the run, of its control run and their difference side by side, as layer x
    component heatmaps of ``value`` (``delta``: patched − clean in logits, comparable across
    runs; ``effect`` divides by each run's own gap).

    ``control`` is the ``control.table`` of ``patching/<name>.json``: layer, component, head,
    ``<value>_run``, ``<value>_control``, ``<value>_diff``, ``_diff_lo``, ``_diff_hi``.
    """
    rows = control[control["component"].isin(PATCH_COMPONENTS)]
    if rows.empty:
        raise InterpError("the control table has no residual/attention/MLP rows to plot")
    panels = [
        ("run", f"{value}_run"),
        ("control", f"{value}_control"),
        ("run − control", f"{value}_diff"),
    ]
    order = [c for c in PATCH_COMPONENTS if c in set(rows["component"])]
    grids = []
    for _, column in panels:
        grid = rows.pivot_table(index="layer", columns="component", values=column, dropna=False)
        grid = grid[order].sort_index()
        grid.columns.name, grid.index.name = "component", "layer"
        grids.append(grid)
    bound = _symmetric_bound(np.concatenate([g.to_numpy(float).ravel() for g in grids]))
    fig = make_subplots(
        rows=1, cols=3, subplot_titles=[p for p, _ in panels], horizontal_spacing=0.08
    )
    lo = rows.pivot_table(
        index="layer", columns="component", values=f"{value}_diff_lo", dropna=False
    )
    hi = rows.pivot_table(
        index="layer", columns="component", values=f"{value}_diff_hi", dropna=False
    )
    custom = np.dstack([lo.reindex_like(grids[2]).to_numpy(), hi.reindex_like(grids[2]).to_numpy()])
    for i, grid in enumerate(grids):
        diff = i == 2
        trace = _heatmap(
            grid,
            panels[i][0],
            colorbar_x=1.0,
            customdata=custom if diff else None,
            ci=diff,
            zmax=bound,
        )
        trace.showscale = diff
        fig.add_trace(trace, row=1, col=i + 1)
    fig.update_yaxes(title_text="layer", row=1, col=1)
    fig.update_yaxes(**LAYER_TICKS)
    height = max(360, 60 + 16 * len(grids[0]))
    return finalize(fig, f"Patching {title}: {value} of the run beside its control", height)


# --- patching ---------------------------------------------------------------------------------


_VALUE_TITLES = {
    "effect": "normalised effect",
    "delta": "logit-difference change (patched − clean; the rounds do not differ reliably)",
}


def _effect_grid(
    table: pd.DataFrame, columns: str, value: str = "effect"
) -> tuple[pd.DataFrame, np.ndarray]:
    grid = table.pivot_table(index="layer", columns=columns, values=value, dropna=False)
    lo = table.pivot_table(index="layer", columns=columns, values=f"{value}_lo", dropna=False)
    hi = table.pivot_table(index="layer", columns=columns, values=f"{value}_hi", dropna=False)
    custom = np.dstack([lo.reindex_like(grid).to_numpy(), hi.reindex_like(grid).to_numpy()])
    return grid.sort_index(), custom


def _main_method(table: pd.DataFrame, method: str | None) -> pd.DataFrame:
    if "method" not in table or table.empty:
        return table
    chosen = method if method is not None else str(table["method"].iloc[0])
    return table[table["method"] == chosen]


def patching_components_figure(
    table: pd.DataFrame, title: str = "", *, method: str | None = None, value: str = "auto"
) -> go.Figure:
    """Normalised patching effect as a layer x component heatmap (1: the patch carries the
    whole change between the rounds; 0: none).

    ``table`` is a patching summary table (``PatchResult.summary_table`` or the ``table`` of
    ``patching/<name>.json``): method, layer, component, head, effect, effect_lo,
    effect_hi, ... ``method`` picks exact or attribution rows (default: the first found).
    ``value``: ``effect``, ``delta`` (patched − clean, in logits) or ``auto``
    (:func:`patching_value`).
    """
    rows = _main_method(table, method)
    rows = rows[rows["component"].isin(PATCH_COMPONENTS)]
    if rows.empty:
        raise InterpError("the patching table has no residual/attention/MLP rows to plot")
    value = patching_value(rows) if value == "auto" else value
    grid, custom = _effect_grid(rows, "component", value)
    order = [c for c in PATCH_COMPONENTS if c in grid.columns]
    custom = custom[:, [list(grid.columns).index(c) for c in order]]
    grid = grid[order]
    grid.columns.name = "component"
    return _patching_heatmap(grid, custom, value, f"Patching {title}", {})


def patching_heads_figure(
    table: pd.DataFrame, title: str = "", *, method: str | None = None, value: str = "auto"
) -> go.Figure:
    """Patching of each attention head's output (normalised effect or delta), layer x head.

    ``table`` and ``value`` as for :func:`patching_components_figure`; rows with component
    ``heads``.
    """
    rows = _main_method(table, method)
    rows = rows[rows["component"] == "heads"]
    if rows.empty:
        raise InterpError("the patching table has no head rows (patch with --component heads)")
    value = patching_value(rows) if value == "auto" else value
    grid, custom = _effect_grid(rows, "head", value)
    grid.columns = [int(h) for h in grid.columns]
    grid.columns.name = "head"
    ticks = {"tickmode": "array", "tickvals": list(grid.columns)}
    return _patching_heatmap(grid, custom, value, f"Patching {title}", ticks)


def _patching_heatmap(
    grid: pd.DataFrame, custom: np.ndarray, value: str, title: str, x_ticks: dict[str, Any]
) -> go.Figure:
    """A layer x (component or head) heatmap of ``value``, with its interval on hover."""
    grid.index.name = "layer"
    bound = _symmetric_bound(grid.to_numpy(float), cap=2.0 if value == "effect" else None)
    fig = go.Figure(_heatmap(grid, value, colorbar_x=1.0, customdata=custom, ci=True, zmax=bound))
    fig.update_xaxes(title_text=grid.columns.name, **x_ticks)
    fig.update_yaxes(title_text="layer", **LAYER_TICKS)
    height = max(360, 60 + 16 * len(grid))
    return finalize(fig, f"{title}: {_VALUE_TITLES[value]} per layer x {grid.columns.name}", height)


# --- attention (numbers behind the circuitsvis views) -----------------------------------------


def readout_attention_figure(mass: pd.DataFrame) -> go.Figure:
    """Where each round's read-out position puts its attention, per head (stacked bars).

    ``mass`` is ``interp.report.attention.readout_attention_mass`` output: head, round, segment,
    mass (the shares over segments sum to 1 for each head x round).
    """
    heads = list(dict.fromkeys(mass["head"]))
    segments = list(dict.fromkeys(mass["segment"]))
    fig = make_subplots(rows=1, cols=len(heads), subplot_titles=heads, shared_yaxes=True)
    for col, head in enumerate(heads, start=1):
        rows = mass[mass["head"] == head]
        for i, segment in enumerate(segments):
            part = rows[rows["segment"] == segment]
            fig.add_trace(
                go.Bar(
                    x=part["round"],
                    y=part["mass"],
                    name=segment,
                    legendgroup=segment,
                    showlegend=col == 1,
                    marker_color=_segment_color(segment, i),
                    hovertemplate=f"{segment}: %{{y:.2f}}<extra>{head} R%{{x}}</extra>",
                ),
                row=1,
                col=col,
            )
        rounds_axis(fig, sorted(set(rows["round"])), row=1, col=col)
    fig.update_layout(barmode="stack", legend={"orientation": "h", "y": -0.2})
    fig.update_yaxes(title_text="attention share", range=[0, 1], row=1, col=1)
    return finalize(fig, "What each round's read-out attends to", 440)


def _segment_color(segment: str, i: int) -> str:
    fixed = {"first token (sink)": "#c7c7c7", "instructions": "#d62728"}
    return fixed.get(segment, PALETTE[(i + 2) % len(PALETTE)])


def attention_pattern_figure(
    patterns: np.ndarray,
    head_names: Sequence[str],
    *,
    round_starts: Sequence[int] = (),
    instruction_spans: Sequence[tuple[int, int]] = (),
    readouts: Sequence[int] = (),
) -> go.Figure:
    """Query x key attention of each head over a transcript, with the rounds marked.

    Args:
        patterns: ``[head, query, key]`` attention probabilities.
        head_names: a title per head (e.g. ``"L12.H3"``).
        round_starts: first token of each round: drawn as grey lines (and tick labels).
        instruction_spans: ``[start, end)`` of each instruction text: shaded key columns.
        readouts: each round's read-out position: dotted query rows.

    Values are stored as whole percent (uint8), which keeps a 300-token, 4-head figure
    under half a megabyte; colours saturate towards 100%.
    """
    values = np.asarray(patterns, dtype=float)
    if values.ndim != 3 or len(head_names) != values.shape[0]:
        raise InterpError("attention_pattern_figure: patterns must be [head, query, key]")
    percent = np.clip(np.round(values * 100), 0, 100).astype(np.uint8)
    cols = min(2, len(head_names))
    rows = -(-len(head_names) // cols)
    fig = make_subplots(
        rows=rows, cols=cols, subplot_titles=list(head_names), horizontal_spacing=0.08
    )
    for i in range(len(head_names)):
        fig.add_trace(
            _pattern_heatmap(percent[i], show_scale=i == 0), row=i // cols + 1, col=i % cols + 1
        )
    _mark_rounds(fig, len(head_names), values.shape[-1], round_starts, instruction_spans, readouts)
    fig.update_yaxes(autorange="reversed")
    return finalize(fig, "Attention patterns over the transcript (query x key)", 430 * rows + 60)


def _shape(
    kind: str,
    x: tuple[float | int, float | int],
    y: tuple[float | int, float | int],
    ref: dict[str, str],
    color: str,
    *,
    fill: bool = False,
    dash: str = "solid",
) -> dict[str, Any]:
    shape = {"type": kind, "x0": x[0], "x1": x[1], "y0": y[0], "y1": y[1], **ref}
    if fill:
        return {**shape, "fillcolor": color, "opacity": 0.12, "line": {"width": 0}}
    return {**shape, "line": {"color": color, "width": 1, "dash": dash}}


_PATTERN_SCALE = [
    [0, "#ffffff"],
    [0.05, "#c6dbef"],
    [0.2, "#6baed6"],
    [0.5, "#2171b5"],
    [1, "#08306b"],
]


def _pattern_heatmap(percent: np.ndarray, *, show_scale: bool) -> go.Heatmap:
    return go.Heatmap(
        z=percent,
        zmin=0,
        zmax=100,
        colorscale=_PATTERN_SCALE,
        showscale=show_scale,
        colorbar={"title": {"text": "%"}, "thickness": 12},
        hovertemplate="query %{y} → key %{x}: %{z}%<extra></extra>",
    )


def _mark_rounds(
    fig: go.Figure,
    n_panels: int,
    n_tokens: int,
    round_starts: Sequence[int],
    instruction_spans: Sequence[tuple[int, int]],
    readouts: Sequence[int],
) -> None:
    # Shapes as plain dicts, set once: add_vline(row="all") re-validates the whole layout
    # per call, seconds for a few dozen lines.
    edge = (-0.5, n_tokens - 0.5)
    shapes = []
    for i in range(1, n_panels + 1):
        ref = {"xref": f"x{i if i > 1 else ''}", "yref": f"y{i if i > 1 else ''}"}
        for a, b in instruction_spans:
            shapes.append(_shape("rect", (a - 0.5, b - 0.5), edge, ref, "#d62728", fill=True))
        for start in round_starts[1:]:
            shapes.append(_shape("line", (start - 0.5,) * 2, edge, ref, "#555"))
            shapes.append(_shape("line", edge, (start - 0.5,) * 2, ref, "#555"))
        for pos in readouts:
            shapes.append(_shape("line", edge, (pos, pos), ref, "#d62728", dash="dot"))
    fig.update_layout(shapes=shapes)
    ticks, labels = pattern_ticks(n_tokens, round_starts, readouts)
    fig.update_xaxes(tickmode="array", tickvals=ticks, ticktext=labels, tickangle=-45)
    fig.update_yaxes(tickmode="array", tickvals=ticks, ticktext=labels)


TICK_GAP = 1 / 25  # of the transcript's length: closer ticks share one label


def pattern_ticks(
    n_tokens: int, round_starts: Sequence[int], readouts: Sequence[int]
) -> tuple[list[int], list[str]]:
    """Tick positions and labels of the attention heatmaps: each round's start (R1) and
    read-out (R0 read-out); a tick closer than ``TICK_GAP`` of the transcript to the one
    before joins that one's label ("R0 read-out / R1") so that labels never overlap."""
    text = {s: f"R{r}" for r, s in enumerate(round_starts)}
    for r, p in enumerate(readouts):
        text[p] = f"{text[p]} / R{r} read-out" if p in text else f"R{r} read-out"
    gap = max(1.0, n_tokens * TICK_GAP)
    ticks: list[int] = []
    labels: list[str] = []
    for t in sorted(text):
        if ticks and t - ticks[-1] < gap:
            labels[-1] += f" / {text[t]}"
            continue
        ticks.append(t)
        labels.append(text[t])
    return ticks, labels


# --- Winogender -------------------------------------------------------------------------------


def winogender_scatter_figure(metrics: Mapping[str, Mapping[str, Any]]) -> go.Figure:
    """BLS % female (x) vs the model's P(female) / (P(female) + P(male)) per occupation (y),
    one panel per round, one colour per run; each point an occupation (mean over its items),
    the panel title giving each run's Pearson r."""
    tables = {label: pd.DataFrame(result["per_occupation"]) for label, result in metrics.items()}
    rounds = sorted({int(r) for t in tables.values() for r in t["round"]})
    titles = []
    for r in rounds:
        rs = []
        for result in metrics.values():
            entry = next((m for m in result["per_round"] if m["round"] == r), None)
            rs.append(
                "n/a" if entry is None or entry["pearson"] is None else f"{entry['pearson']:+.2f}"
            )
        titles.append(f"round {r}: r = {', '.join(rs)}")
    fig = make_subplots(
        rows=1, cols=len(rounds), subplot_titles=titles, shared_yaxes=True, horizontal_spacing=0.03
    )
    for i, (label, table) in enumerate(tables.items()):
        color = PALETTE[i % len(PALETTE)]
        for col, r in enumerate(rounds, start=1):
            part = table[table["round"] == r]
            fig.add_trace(
                go.Scatter(
                    x=part["bls"],
                    y=part["pf"],
                    mode="markers",
                    name=label,
                    legendgroup=label,
                    showlegend=col == 1,
                    marker={"color": color, "size": 7},
                    text=part["occupation"],
                    hovertemplate="%{text}: BLS %{x:.1f}% female, P(female) %{y:.3f}<extra>"
                    + label
                    + "</extra>",
                ),
                row=1,
                col=col,
            )
    fig.update_xaxes(title_text="BLS % female", range=[0, 100])
    fig.update_yaxes(title_text="P(female) / (P(female) + P(male))", row=1, col=1)
    fig.update_yaxes(range=[0, 1])
    return finalize(fig, "Winogender: occupations' P(female) against BLS % female", 420)
