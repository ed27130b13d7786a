"""Plotly figures of ``interp experiment``, one function per figure, from the experiment's tables.

Each function takes the tables as ``DIR/tables/<name>.parquet`` (or ``RUN/experiments/NAME/``)
store them, so a notebook can draw an in-memory ``ExperimentResult.tables`` the same way
``interp export`` does. Conventions follow :mod:`interp.report.figures`: rounds on the x axis, 95%
intervals as error bars or bands, one colour per plan.

A table with a ``plan`` column (an experiment with a control arm: the main plan and the
control plan) gets one trace per plan; without it, one trace. The figures never import the
experiments (they sit beside them in the layers): the saturating curve is written out here.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from interp.report.figures import PALETTE, finalize, rounds_axis, with_alpha

# Panel titles of the quantities the experiments know; any other quantity (a Winogender
# run's, say) is drawn under its own name.
QUANTITY_TITLES = {
    "accuracy": "accuracy",
    "entropy": "option entropy (nats)",
    "ece": "ECE (10 bins)",
    "concept": "concept score",
    "s_amb": "bias s_AMB (ambiguous)",
    "s_dis": "bias s_DIS (disambiguated)",
    "unknown": "answers unknown (correct)",
    "follows": "follows the evidence",
}
SUPERFICIAL_GROUPS = ("improved", "stayed_wrong", "stayed_right", "worsened")
GROUP_COLORS = {
    "improved": "#2ca02c",
    "stayed_wrong": "#d62728",
    "stayed_right": "#1f77b4",
    "worsened": "#ff7f0e",
}
DASHES = ("solid", "dash", "dot", "dashdot", "longdash")
CURVE_POINTS = 60  # points of the drawn saturating curve between round 0 and the last
Values = Sequence[Any] | pd.Series | np.ndarray  # a column, or its values


def plans_of(frame: pd.DataFrame) -> list[str | None]:
    """The ``plan`` values in the order they first appear; ``[None]`` without the column."""
    if "plan" not in frame.columns:
        return [None]
    return [str(p) for p in dict.fromkeys(frame["plan"].tolist())]


def _of_plan(frame: pd.DataFrame, plan: str | None) -> pd.DataFrame:
    return frame if plan is None else frame[frame["plan"].astype(str) == plan]


def _label(name: str, plan: str | None) -> str:
    return name if plan is None else f"{plan}: {name}" if name else plan


def _values(series: Values) -> list[float | None]:
    """Floats with NaN and infinities as None (plotly draws a gap; JSON stays valid)."""
    out: list[float | None] = []
    for v in series:
        f = float(v) if v is not None else math.nan
        out.append(f if math.isfinite(f) else None)
    return out


def _errors(values: Values, lo: Values, hi: Values, color: str) -> dict[str, Any]:
    """Asymmetric error bars from interval ends (a missing end draws no bar)."""
    v, lo, hi = _values(values), _values(lo), _values(hi)

    def gap(a: float | None, b: float | None) -> float | None:
        return None if a is None or b is None else max(0.0, a - b)

    return {
        "type": "data",
        "symmetric": False,
        "array": [gap(h, x) for x, h in zip(v, hi, strict=True)],
        "arrayminus": [gap(x, low) for x, low in zip(v, lo, strict=True)],
        "color": color,
        "thickness": 1.2,
        "width": 3,
    }


def _band(x: Values, lo: Values, hi: Values, color: str) -> go.Scatter:
    """A filled interval band; points without an interval are left out of it."""
    keep = [
        (a, low, h)
        for a, low, h in zip(x, _values(lo), _values(hi), strict=True)
        if low is not None and h is not None
    ]
    xs = [k[0] for k in keep]
    return go.Scatter(
        x=[*xs, *xs[::-1]],
        y=[*(k[2] for k in keep), *(k[1] for k in reversed(keep))],
        mode="lines",
        fill="toself",
        fillcolor=with_alpha(color, 0.16),
        line={"width": 0},
        hoverinfo="skip",
        showlegend=False,
    )


def _grid(n: int, cols: int = 3) -> tuple[int, int]:
    cols = min(cols, max(1, n))
    return math.ceil(n / cols), cols


def _at(i: int, cols: int) -> dict[str, int]:
    return {"row": i // cols + 1, "col": i % cols + 1}


# --- convergence -----------------------------------------------------------------------------


def saturating_curve(
    rounds: np.ndarray, y0: float, y_inf: float, lam: float
) -> np.ndarray:  # the experiments' model, y_inf + (y0 - y_inf) exp(-lam r)
    return y_inf + (y0 - y_inf) * np.exp(-lam * np.asarray(rounds, dtype=float))


def _fit_row(fits: pd.DataFrame | None, quantity: str, plan: str | None) -> dict[str, Any] | None:
    if fits is None or fits.empty:
        return None
    rows = _of_plan(fits, plan) if "plan" in fits.columns else fits
    rows = rows[rows["quantity"] == quantity]
    return None if rows.empty else rows.iloc[0].to_dict()


def convergence_figure(
    observed: pd.DataFrame, fits: pd.DataFrame | None = None, concept: str = ""
) -> go.Figure:
    """Per quantity a panel: the observed per-round means with their 95% intervals (markers)
    and the fitted saturating curve (dashed line; from ``fits`` drawn smoothly between the
    rounds, else the ``fitted`` column at the rounds). Two traces per quantity and plan.

    ``observed``: quantity, round, mean, lo, hi, fitted [, plan]; ``fits``: quantity, y0,
    y_inf, lam, settle, ... [, plan] (``fits.parquet``).
    """
    known = [q for q in QUANTITY_TITLES if q in set(observed["quantity"])]
    quantities = known + sorted(set(observed["quantity"]) - set(known))
    n_rows, cols = _grid(len(quantities))
    titles = [
        f"{QUANTITY_TITLES.get(q, q)}" + (f" ({concept})" if q == "concept" and concept else "")
        for q in quantities
    ]
    fig = make_subplots(rows=n_rows, cols=cols, subplot_titles=titles, vertical_spacing=0.18)
    plans = plans_of(observed)
    for i, quantity in enumerate(quantities):
        for p, plan in enumerate(plans):
            color = PALETTE[p % len(PALETTE)]
            rows = _of_plan(observed, plan)
            rows = rows[rows["quantity"] == quantity].sort_values("round")
            rounds = rows["round"].astype(int).tolist()
            name = _label("", plan) or "observed"
            fig.add_trace(
                go.Scatter(
                    x=rounds,
                    y=_values(rows["mean"]),
                    error_y=_errors(rows["mean"], rows["lo"], rows["hi"], color),
                    mode="markers",
                    marker={"color": color, "size": 8},
                    name=name,
                    legendgroup=name,
                    showlegend=i == 0,
                    hovertemplate=f"{name}<br>round %{{x}}: %{{y:.3f}}<extra></extra>",
                ),
                **_at(i, cols),
            )
            x, y, hover = _curve(rows, _fit_row(fits, quantity, plan))
            fig.add_trace(
                go.Scatter(
                    x=x,
                    y=y,
                    mode="lines",
                    line={"color": color, "dash": "dash", "width": 1.6},
                    name=_label("fitted curve", plan),
                    legendgroup=name,
                    showlegend=i == 0,
                    hovertemplate=hover + "<extra></extra>",
                ),
                **_at(i, cols),
            )
        if rounds:
            rounds_axis(fig, rounds, **_at(i, cols))
        if quantity == "accuracy":
            fig.update_yaxes(range=[-0.02, 1.02], **_at(i, cols))
    fig.update_layout(legend={"orientation": "h", "y": -0.12})
    return finalize(
        fig,
        "Convergence: observed means (95% intervals) and the fitted saturating curve",
        max(380, 320 * n_rows),
    )


def _curve(
    rows: pd.DataFrame, fit: dict[str, Any] | None
) -> tuple[list[float], list[float | None], str]:
    rounds = rows["round"].astype(float).to_numpy()
    if not len(rounds):
        return [], [], ""
    if fit is not None and all(
        isinstance(fit.get(k), int | float) and math.isfinite(fit[k]) for k in ("y0", "y_inf")
    ):
        lam = fit.get("lam")
        x = np.linspace(rounds.min(), rounds.max(), CURVE_POINTS)
        if isinstance(lam, int | float) and math.isfinite(lam):
            y = saturating_curve(x, fit["y0"], fit["y_inf"], lam)
            hover = f"y_inf {fit['y_inf']:.3g}, lam {lam:.3g}<br>round %{{x:.2f}}: %{{y:.3f}}"
        else:  # flat: no rate
            y = np.full_like(x, fit["y0"])
            hover = "flat: no rate<br>round %{x:.2f}: %{y:.3f}"
        return [float(v) for v in x], _values(y), hover
    return [float(v) for v in rounds], _values(rows["fitted"]), "round %{x}: %{y:.3f}"


# --- superficial -----------------------------------------------------------------------------

RANK_PANELS = (
    ("acc_first", "accuracy at round 0"),
    ("acc_last", "accuracy at the last round"),
    ("improved", "improved (wrong → right)"),
    ("worsened", "worsened (right → wrong)"),
)


def superficial_rank_figure(by_rank: pd.DataFrame) -> go.Figure:
    """(a) By the correct answer's rank at round 0 (1 = top): accuracy at round 0 and at the
    last round, and the shares that improve and worsen, as bars with 95% intervals; one bar
    per plan in each group. ``by_rank``: ``by_rank.parquet``."""
    panels = [(c, t) for c, t in RANK_PANELS if c in by_rank.columns]
    fig = make_subplots(rows=1, cols=len(panels), subplot_titles=[t for _, t in panels])
    for p, plan in enumerate(plans_of(by_rank)):
        color = PALETTE[p % len(PALETTE)]
        rows = _of_plan(by_rank, plan).sort_values("rank")
        x = [f"rank {int(r)}" for r in rows["rank"]]
        name = plan or "examples"
        for j, (column, _) in enumerate(panels, start=1):
            fig.add_trace(
                go.Bar(
                    x=x,
                    y=_values(rows[column]),
                    error_y=_errors(
                        rows[column], rows[f"{column}_lo"], rows[f"{column}_hi"], "#333"
                    ),
                    customdata=rows["n_examples"].astype(int).tolist(),
                    marker_color=color,
                    name=name,
                    legendgroup=name,
                    showlegend=j == 1 and plan is not None,
                    hovertemplate=f"{name}<br>%{{x}} (n = %{{customdata}}): %{{y:.3f}}"
                    "<extra></extra>",
                ),
                row=1,
                col=j,
            )
    fig.update_yaxes(range=[0, 1.05])
    fig.update_xaxes(title_text="rank of the correct answer at round 0", row=1, col=1)
    fig.update_layout(barmode="group")
    return finalize(fig, "Superficial (a): outcome by the correct answer's rank at round 0", 420)


def superficial_concept_figure(change: pd.DataFrame, concept: str = "") -> go.Figure:
    """(b) Per layer, the mean change of the concept score from round 0 to the last round by
    outcome group (lines with 95% bands; empty groups are left out), and improved − stayed
    wrong with its interval (right; 0 dotted). ``change``: ``concept_change.parquet``."""
    fig = make_subplots(
        rows=1,
        cols=2,
        subplot_titles=["change by outcome group", "improved − stayed wrong"],
        horizontal_spacing=0.1,
    )
    plans = plans_of(change)
    for p, plan in enumerate(plans):
        rows = _of_plan(change, plan)
        dash = DASHES[p % len(DASHES)]
        for group in SUPERFICIAL_GROUPS:
            g = rows[rows["group"] == group].sort_values("layer")
            if g.empty or not (g["n_examples"] > 0).any():
                continue
            color = GROUP_COLORS[group]
            layers = g["layer"].astype(int).tolist()
            fig.add_trace(_band(layers, g["lo"], g["hi"], color), row=1, col=1)
            name = _label(group.replace("_", " "), plan)
            fig.add_trace(
                go.Scatter(
                    x=layers,
                    y=_values(g["change"]),
                    mode="lines+markers",
                    line={"color": color, "dash": dash},
                    name=f"{name} (n = {int(g['n_examples'].iloc[0])})",
                    hovertemplate=f"{name}<br>layer %{{x}}: %{{y:.3f}}<extra></extra>",
                ),
                row=1,
                col=1,
            )
        d = rows[rows["group"] == "improved - stayed_wrong"].sort_values("layer")
        if not d.empty and d["change"].notna().any():
            color = PALETTE[p % len(PALETTE)]
            layers = d["layer"].astype(int).tolist()
            fig.add_trace(_band(layers, d["lo"], d["hi"], color), row=1, col=2)
            name = _label("improved − stayed wrong", plan)
            fig.add_trace(
                go.Scatter(
                    x=layers,
                    y=_values(d["change"]),
                    mode="lines+markers",
                    line={"color": color, "dash": dash},
                    name=name,
                    hovertemplate=f"{name}<br>layer %{{x}}: %{{y:.3f}}<extra></extra>",
                ),
                row=1,
                col=2,
            )
    fig.add_hline(y=0, line_dash="dot", line_color="#999", row=1, col=2)
    fig.update_xaxes(title_text="layer", tickmode="linear", tick0=0, dtick=1)
    fig.update_yaxes(title_text="score change (last round − round 0)", row=1, col=1)
    what = f"'{concept}' " if concept else ""
    return finalize(fig, f"Superficial (b): concept {what}score change per layer", 440)


# --- interactions ----------------------------------------------------------------------------

FACTOR_COLORS = {  # instruction x CoT; feedback is the dash
    ("none", "off"): "#7f7f7f",
    ("none", "on"): "#9467bd",
    ("self-correct", "off"): "#1f77b4",
    ("self-correct", "on"): "#2ca02c",
}


def _effect_order(effects: Sequence[str]) -> list[str]:
    """Main effects first, then the pairwise interactions, each in the order given."""
    names = list(dict.fromkeys(effects))
    return [e for e in names if " x " not in e] + [e for e in names if " x " in e]


def interactions_forest_figure(
    effects: pd.DataFrame,
    concept_effects: pd.DataFrame | None = None,
    *,
    round: int | None = None,
    layer: int | None = None,
) -> go.Figure:
    """A forest plot per metric at ``round`` (default: the last): each main effect and
    pairwise interaction with its 95% interval, 0 dotted; with ``concept_effects``, one more
    panel for the concept score at ``layer`` (default: the deepest). One trace per panel.
    ``effects``: metric, effect, round, value, lo, hi (``effects.parquet``)."""
    if round is None:
        round = int(effects["round"].max())
    at = effects[effects["round"] == round]
    panels: list[tuple[str, pd.DataFrame]] = [
        (QUANTITY_TITLES.get(m, m), at[at["metric"] == m]) for m in dict.fromkeys(at["metric"])
    ]
    if concept_effects is not None and not concept_effects.empty:
        if layer is None:
            layer = int(concept_effects["layer"].max())
        c = concept_effects
        rows = c[(c["round"] == round) & (c["layer"] == layer)]
        panels.append((f"concept score (layer {layer})", rows))
    n_rows, cols = _grid(len(panels))
    fig = make_subplots(
        rows=n_rows,
        cols=cols,
        subplot_titles=[t for t, _ in panels],
        shared_yaxes=True,
        vertical_spacing=0.2,
    )
    order = _effect_order(effects["effect"].tolist())
    for i, (title, rows) in enumerate(panels):
        rows = rows.set_index("effect").reindex(order)
        values = rows["value"].tolist()
        fig.add_trace(
            go.Scatter(
                x=_values(values),
                y=order,
                mode="markers",
                marker={"color": PALETTE[0], "size": 9, "symbol": "diamond"},
                error_x=_errors(values, rows["lo"].tolist(), rows["hi"].tolist(), PALETTE[0]),
                name=title,
                showlegend=False,
                hovertemplate="%{y}: %{x:.3f}<extra>" + title + "</extra>",
            ),
            **_at(i, cols),
        )
        fig.add_vline(x=0, line_dash="dot", line_color="#999", **_at(i, cols))
    fig.update_yaxes(autorange="reversed", type="category")
    return finalize(
        fig,
        f"Interactions at round {round}: main effects and pairwise interactions (95% intervals)",
        max(360, 300 * n_rows),
    )


def interactions_cells_figure(cells: pd.DataFrame) -> go.Figure:
    """Per metric, each cell's value per round with its 95% interval; colour: instruction x
    CoT, dash: feedback (solid none, dashed oracle). ``cells``: ``cells.parquet``."""
    metrics = list(dict.fromkeys(cells["metric"]))
    n_rows, cols = _grid(len(metrics), 2)
    fig = make_subplots(
        rows=n_rows,
        cols=cols,
        subplot_titles=[QUANTITY_TITLES.get(m, m) for m in metrics],
        vertical_spacing=0.16,
    )
    names = list(dict.fromkeys(cells["cell"]))
    for i, metric in enumerate(metrics):
        for cell in names:
            rows = cells[(cells["metric"] == metric) & (cells["cell"] == cell)].sort_values("round")
            first = rows.iloc[0]
            color = FACTOR_COLORS.get((first["instruction"], first["cot"]), PALETTE[0])
            dash = "dash" if first["feedback"] != "none" else "solid"
            label = (
                f"instruction {first['instruction']}, CoT {first['cot']}, "
                f"feedback {first['feedback']}"
            )
            fig.add_trace(
                go.Scatter(
                    x=rows["round"].astype(int).tolist(),
                    y=_values(rows["value"]),
                    error_y=_errors(rows["value"], rows["lo"], rows["hi"], color),
                    mode="lines+markers",
                    line={"color": color, "dash": dash},
                    name=label,
                    legendgroup=cell,
                    showlegend=i == 0,
                    hovertemplate=f"{label}<br>round %{{x}}: %{{y:.3f}}<extra></extra>",
                ),
                **_at(i, cols),
            )
        rounds_axis(fig, sorted(int(r) for r in cells["round"].unique()), **_at(i, cols))
    fig.update_layout(legend={"orientation": "h", "y": -0.1})
    return finalize(fig, "Interactions: cell means per round (95% intervals)", 340 * n_rows + 80)


# --- weak evidence ---------------------------------------------------------------------------

WEAK_MEASURES = ("unknown", "follows", "s_amb")


def weak_evidence_figure(rates: pd.DataFrame, group: str = "all") -> go.Figure:
    """Per round and plan: the share answering unknown (the correct answer), the share
    following the evidence and s_AMB, for ``group`` (all items, or those whose evidence
    names the target / the other person), with 95% intervals. ``rates``: ``rates.parquet``."""
    rows = rates[rates["group"] == group]
    measures = [m for m in WEAK_MEASURES if m in set(rows["measure"])]
    fig = make_subplots(
        rows=1, cols=len(measures), subplot_titles=[QUANTITY_TITLES[m] for m in measures]
    )
    for p, plan in enumerate(plans_of(rows)):
        color = PALETTE[p % len(PALETTE)]
        mine = _of_plan(rows, plan)
        for j, measure in enumerate(measures, start=1):
            m = mine[mine["measure"] == measure].sort_values("round")
            name = plan or group
            fig.add_trace(
                go.Scatter(
                    x=m["round"].astype(int).tolist(),
                    y=_values(m["value"]),
                    error_y=_errors(m["value"], m["lo"], m["hi"], color),
                    mode="lines+markers",
                    line={"color": color},
                    name=name,
                    legendgroup=name,
                    showlegend=j == 1,
                    hovertemplate=f"{name}<br>round %{{x}}: %{{y:.3f}}<extra></extra>",
                ),
                row=1,
                col=j,
            )
            rounds_axis(fig, m["round"].astype(int).tolist(), row=1, col=j)
    for j, measure in enumerate(measures, start=1):
        bounds = [-1.05, 1.05] if measure == "s_amb" else [-0.02, 1.02]
        fig.update_yaxes(range=bounds, row=1, col=j)
    what = "all items" if group == "all" else f"evidence naming the {group} person"
    return finalize(fig, f"Weak evidence per round ({what}; 95% intervals)", 420)


def weak_evidence_difference_figure(difference: pd.DataFrame) -> go.Figure:
    """Self-correct − baseline per round and measure, one line per group of items (all;
    evidence naming the target; naming the other person), with paired 95% bands; 0 dotted.
    ``difference``: ``difference.parquet``."""
    measures = [m for m in WEAK_MEASURES if m in set(difference["measure"])]
    fig = make_subplots(
        rows=1, cols=len(measures), subplot_titles=[QUANTITY_TITLES[m] for m in measures]
    )
    groups = list(dict.fromkeys(difference["group"]))
    for g, group in enumerate(groups):
        color = PALETTE[g % len(PALETTE)]
        for j, measure in enumerate(measures, start=1):
            rows = difference[(difference["group"] == group) & (difference["measure"] == measure)]
            rows = rows.sort_values("round")
            rounds = rows["round"].astype(int).tolist()
            fig.add_trace(_band(rounds, rows["lo"], rows["hi"], color), row=1, col=j)
            fig.add_trace(
                go.Scatter(
                    x=rounds,
                    y=_values(rows["value"]),
                    mode="lines+markers",
                    line={"color": color},
                    name=group,
                    legendgroup=group,
                    showlegend=j == 1,
                    hovertemplate=f"{group}<br>round %{{x}}: %{{y:+.3f}}<extra></extra>",
                ),
                row=1,
                col=j,
            )
            rounds_axis(fig, rounds, row=1, col=j)
            fig.add_hline(y=0, line_dash="dot", line_color="#999", row=1, col=j)
    return finalize(fig, "Weak evidence: self-correct − baseline (paired 95% intervals)", 400)


# --- self-distinguish ------------------------------------------------------------------------

DISTINGUISH_PANELS = (
    (
        "right in both orders",
        (
            ("both", "all examples", PALETTE[0]),
            ("both_own_right", "own answer right", PALETTE[2]),
            ("both_own_wrong", "own answer wrong", PALETTE[1]),
        ),
    ),
    (
        "per order (position bias)",
        (
            ("order_unbiased_first", "right, unbiased shown as (a)", PALETTE[3]),
            ("order_stereotyped_first", "right, stereotyped shown as (a)", PALETTE[4]),
            ("picks_a", "chooses (a)", "#7f7f7f"),
        ),
    ),
)


def self_distinguish_figure(per_round: pd.DataFrame) -> go.Figure:
    """Per round: the share that picks the unbiased answer in both presentation orders (all
    examples; those whose own answer that round was right; wrong), and the accuracy in each
    order with the share choosing (a); 95% intervals. ``per_round``: ``per_round.parquet``."""
    fig = make_subplots(
        rows=1, cols=len(DISTINGUISH_PANELS), subplot_titles=[t for t, _ in DISTINGUISH_PANELS]
    )
    for p, plan in enumerate(plans_of(per_round)):
        rows = _of_plan(per_round, plan).sort_values("round")
        rounds = rows["round"].astype(int).tolist()
        dash = DASHES[p % len(DASHES)]
        for j, (_, lines) in enumerate(DISTINGUISH_PANELS, start=1):
            for column, name, color in lines:
                if column not in rows.columns:
                    continue
                label = _label(name, plan)
                fig.add_trace(
                    go.Scatter(
                        x=rounds,
                        y=_values(rows[column]),
                        error_y=_errors(
                            rows[column], rows[f"{column}_lo"], rows[f"{column}_hi"], color
                        ),
                        mode="lines+markers",
                        line={"color": color, "dash": dash},
                        name=label,
                        hovertemplate=f"{label}<br>round %{{x}}: %{{y:.3f}}<extra></extra>",
                    ),
                    row=1,
                    col=j,
                )
            rounds_axis(fig, rounds, row=1, col=j)
    fig.update_yaxes(range=[-0.02, 1.02])
    fig.add_hline(y=0.5, line_dash="dot", line_color="#bbb", row=1, col=2)
    return finalize(fig, "Self-distinguish: which answer is less biased? (95% intervals)", 440)
