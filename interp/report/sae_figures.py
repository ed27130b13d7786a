"""Figures of ``interp sae features`` and feature patching, from the tables they write.

Plotly figures (one function each, returning a ``go.Figure``) and the circuitsvis context
dashboard of one latent (HTML with the bundle inline, a fixed element id). Each takes the
tables as ``<run>/sae/<name>/`` and ``patching/<name>.json`` store them, so a notebook can draw
an in-memory result the same way ``interp export`` does.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from interp.report.figures import PALETTE, finalize, patching_value, rounds_axis

MAX_HEATMAP_LATENTS = 24
SEPARATOR = " ⏎ "  # between two contexts of one latent in its dashboard


def latent_round_figure(latents: pd.DataFrame, top: Sequence[int], title: str = "") -> go.Figure:
    """Mean activation of the top latents (rows, strongest change first) per round, with the
    95% interval and the firing rate on hover."""
    top = [int(i) for i in top][:MAX_HEATMAP_LATENTS]
    rows = latents[latents["latent"].isin(top)]
    grid = rows.pivot_table(index="latent", columns="round", values="mean").reindex(top)
    custom = np.dstack(
        [
            rows.pivot_table(index="latent", columns="round", values=c).reindex(top).to_numpy()
            for c in ("mean_lo", "mean_hi", "rate")
        ]
    )
    labels = [f"latent {i}" for i in top]
    fig = go.Figure(
        go.Heatmap(
            z=grid.to_numpy(float),
            x=[int(r) for r in grid.columns],
            y=labels,
            customdata=custom,
            colorscale="Viridis",
            colorbar={"title": {"text": "mean"}, "thickness": 12},
            hovertemplate="%{y}, round %{x}: mean %{z:.3f} [%{customdata[0]:.3f}, "
            "%{customdata[1]:.3f}], fires in %{customdata[2]:.0%} of examples<extra></extra>",
        )
    )
    rounds_axis(fig, [int(r) for r in grid.columns])
    fig.update_yaxes(autorange="reversed", type="category")
    height = max(320, 80 + 22 * len(top))
    return finalize(fig, f"{title}: mean activation of the top latents per round", height)


def latent_change_figure(changes: pd.DataFrame, round: int | None = None) -> go.Figure:
    """The latents that change most from round 0 to ``round`` (default: the last), signed,
    with 95% intervals; dashed lines at ± the shuffled-round control's 95th percentile of the
    largest |change| (a change beyond them stands out from round-label noise)."""
    if round is None:
        round = int(changes["round"].max())
    rows = changes[changes["round"] == round].sort_values("rank")
    labels = [f"latent {int(i)}" for i in rows["latent"]]
    fig = go.Figure(
        go.Bar(
            x=labels,
            y=rows["change"],
            marker_color=[PALETTE[0] if v >= 0 else PALETTE[1] for v in rows["change"]],
            error_y={
                "type": "data",
                "symmetric": False,
                "array": (rows["change_hi"] - rows["change"]).to_numpy(),
                "arrayminus": (rows["change"] - rows["change_lo"]).to_numpy(),
            },
            customdata=rows[["p_shuffled"]].to_numpy(),
            hovertemplate="%{x}: %{y:.3f} (shuffled p = %{customdata[0]:.2f})<extra></extra>",
            name="change",
        )
    )
    threshold = float(rows["null_max_q95"].iloc[0]) if len(rows) else float("nan")
    if np.isfinite(threshold):
        for sign in (1, -1):
            fig.add_hline(y=sign * threshold, line_dash="dash", line_color="#777")
    fig.update_yaxes(title_text=f"mean activation, round {round} − round 0")
    return finalize(fig, f"Latents that change most from round 0 to round {round}", 420)


def feature_patching_figure(table: pd.DataFrame, title: str = "") -> go.Figure:
    """Feature patching as bars: all chosen latents together, then each alone; the normalised
    effect, or the logit-difference change when the rounds do not differ reliably
    (:func:`interp.report.figures.patching_value`), with 95% intervals."""
    rows = table[table["component"] == "sae"].sort_values("head")
    value = patching_value(rows)
    labels = ["all chosen" if h < 0 else f"latent {int(h)}" for h in rows["head"]]
    fig = go.Figure(
        go.Bar(
            x=labels,
            y=rows[value],
            marker_color=[PALETTE[3] if h < 0 else PALETTE[0] for h in rows["head"]],
            error_y={
                "type": "data",
                "symmetric": False,
                "array": (rows[f"{value}_hi"] - rows[value]).to_numpy(),
                "arrayminus": (rows[value] - rows[f"{value}_lo"]).to_numpy(),
            },
            hovertemplate="%{x}: %{y:.3f}<extra></extra>",
            name=value,
        )
    )
    axis = "normalised effect" if value == "effect" else "logit difference change"
    fig.update_yaxes(title_text=axis)
    fig.add_hline(y=0, line_dash="dot", line_color="#999")
    return finalize(fig, f"Feature patching {title}", 420)


def context_view(contexts: pd.DataFrame, latent: int, div_id: str) -> str:
    """circuitsvis' token view of one latent's max-activating contexts (strongest first),
    coloured by the latent's activation on each token; the bundle inline, ``div_id`` fixed."""
    import torch
    from circuitsvis.tokens import colored_tokens_multi

    from interp.report.attention import fixed_view_ids

    rows = contexts[contexts["latent"] == latent].sort_values("rank")
    tokens: list[str] = []
    values: list[float] = []
    for row in rows.itertuples():
        if tokens:
            tokens.append(SEPARATOR)
            values.append(0.0)
        tokens += [str(t) for t in row.tokens]
        values += [round(float(v), 3) for v in row.values]
    # the multi-column view: hovering a token shows its value, and the layout has room
    column = torch.tensor(values, dtype=torch.float64)[:, None]
    html = colored_tokens_multi(tokens, column, [f"latent {latent}"]).local_src
    return fixed_view_ids(html, div_id)
