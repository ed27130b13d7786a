"""The findings box at the top of ``index.html`` (issue 25): per round, the run's main effects
beside its control's, with intervals, each with its caveat beside it, and links to every
figure and graph file below.

Rows: behaviour (raw accuracy; debiased accuracy of a permuted run), the concept score at the
probe's chosen layer (run − control paired where a control is probed), patching's strongest
site and the circuit's size at faithfulness 0.8 (the band rule of ``interp.circuits``). The
caveats are the existing rules: the position floor (``interp.metrics.rounds.model_floor``),
the probe's read-out transfer warning, and intervals that cover 0. Everything is read from
the run directories (and the tables the export has already built): nothing is recomputed
with a model. Numbers: :func:`interp.stats.sig3`; a missing interval is "n/a" with its reason.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from interp.metrics.rounds import model_floor
from interp.report.html import Section, esc
from interp.runs.store import Run
from interp.stats import interval_text, no_interval_reason, sig3

FINDINGS_ID = "findings"


@dataclass
class Row:
    """One row of the box: a cell per round (HTML) and the caveats beside them."""

    title: str
    cells: dict[int, str] = field(default_factory=dict)
    caveats: list[str] = field(default_factory=list)
    span: str | None = None  # one cell across every round (e.g. why the row is empty)
    span_html: str | None = None  # one cell across every round, HTML (a round pair's value)


def _covers_zero(lo: Any, hi: Any) -> bool:
    try:
        return float(lo) <= 0.0 <= float(hi)
    except (TypeError, ValueError):
        return False


def _metric_reason(metrics: dict[str, Any]) -> str:
    boot = metrics.get("bootstrap") or {}
    cluster = boot.get("cluster") or {}
    return no_interval_reason(cluster.get("n_clusters"), boot.get("n_boot"))


def _value_ci(entry: dict[str, Any] | None, why: str) -> str:
    if not entry or entry.get("value") is None:
        return f"n/a ({why})" if why else "n/a"
    return f"{sig3(entry['value'])} <small>{esc(interval_text(entry.get('ci'), why))}</small>"


def _floor_caveat(label: str, metrics: dict[str, Any]) -> str | None:
    if metrics.get("task") == "winogender":
        return None
    floor = metrics.get("model_floor") or model_floor(metrics)
    if not floor.get("flag"):
        return None
    rounds = ", ".join(str(f["round"]) for f in floor.get("rounds", []))
    return (
        f"position floor ({label}, rounds {rounds}): one option letter takes over "
        f"{floor.get('share_threshold', 0.8):.0%} of the answers and accuracy's interval "
        f"includes chance {sig3(floor.get('chance'))}: behaviour says little about content"
    )


def behaviour_rows(main: dict[str, Any], control: tuple[str, dict[str, Any]] | None) -> list[Row]:
    """Raw accuracy per round (run beside control) and, for a permuted run, debiased."""
    raw = Row("behaviour: accuracy (raw)")
    why = _metric_reason(main)
    for entry in main.get("per_round", []):
        cell = f"run {_value_ci(entry.get('accuracy'), why)}"
        raw.cells[int(entry["round"])] = cell
    if control is not None:
        label, theirs = control
        why_c = _metric_reason(theirs)
        for entry in theirs.get("per_round", []):
            r = int(entry["round"])
            if r in raw.cells:
                raw.cells[r] += f"<br>control {_value_ci(entry.get('accuracy'), why_c)}"
        if caveat := _floor_caveat(label, theirs):
            raw.caveats.append(caveat)
    if caveat := _floor_caveat("run", main):
        raw.caveats.insert(0, caveat)
    debiased = Row("behaviour: accuracy (debiased)")
    deb = main.get("debiased")
    if deb:
        cluster = (deb.get("bootstrap") or {}).get("cluster") or {}
        why_d = no_interval_reason(
            cluster.get("n_clusters"), main.get("bootstrap", {}).get("n_boot")
        )
        for entry in deb.get("per_round", []):
            debiased.cells[int(entry["round"])] = f"run {_value_ci(entry.get('accuracy'), why_d)}"
        debiased.caveats.append(
            "each base example's option orders averaged: the position floor does not apply"
        )
    else:
        debiased.span = (
            "n/a (not a permuted run: `interp replay --permute cyclic` gives debiased scores)"
        )
    return [raw, debiased]


def concept_rows(probes: dict[str, dict[str, Any]]) -> list[Row]:
    """Per concept: the mean score per round at the chosen layer; run − control (paired)
    where a control was probed; the transfer and surface warnings; intervals covering 0."""
    rows = []
    for concept, tables in probes.items():
        summary = tables["summary"]
        if "best_layer" not in summary or "scores" not in tables:
            continue
        layer = int(summary["best_layer"])
        row = Row(f"concept score: {concept} (layer {layer})")
        why = no_interval_reason(
            (summary.get("cluster") or {}).get("n_clusters"), summary.get("n_boot")
        )
        scores = tables["scores"]
        for r in scores[scores["layer"] == layer].itertuples(index=False):
            ci = [r.lo, r.hi]
            row.cells[int(r.round)] = (
                f"run {sig3(r.mean)} <small>{esc(interval_text(ci, why))}</small>"
            )
        control = tables.get("control")
        covered = []
        if control is not None and len(control):
            for r in control[control["layer"] == layer].itertuples(index=False):
                rnd = int(r.round)
                if rnd not in row.cells:
                    continue
                row.cells[rnd] += (
                    f"<br>control {sig3(r.control)}<br>"
                    f"run − control {sig3(r.diff, sign=True)} "
                    f"<small>{esc(interval_text([r.lo, r.hi], why))}</small>"
                )
                if rnd > 0 and _covers_zero(r.lo, r.hi):
                    covered.append(str(rnd))
            if covered:
                row.caveats.append(
                    "run − control: the paired interval covers 0 in round "
                    f"{', '.join(covered)}: no difference from the control shown there"
                )
        else:
            row.caveats.append(
                "no control probed: a trend the control shares is not the instruction's effect "
                "(`interp probe --control-run`, or export the control with a second --run)"
            )
        transfer = summary.get("transfer") or {}
        if transfer.get("warning"):
            acc = transfer.get("transfer_centred_acc", transfer.get("transfer_acc"))
            row.caveats.insert(
                0,
                f"read-out transfer: the direction does not transfer to the chat read-out "
                f"({sig3(acc)} vs chance 0.5); the scores may not measure the concept",
            )
        if summary.get("surface_warning"):
            row.caveats.append(f"surface: {summary['surface_warning']}")
        rows.append(row)
    return rows


# What each patched component is called in the box: the analysis family of its rows.
SITE_FAMILIES = {
    "resid_pre": "resid (pre)",
    "resid_post": "resid",
    "attn_out": "attn",
    "mlp_out": "mlp",
    "heads": "heads",
    "sae": "SAE features",
}


def _number(value: Any) -> float | None:
    number = pd.to_numeric(pd.Series([value]), errors="coerce").iloc[0]
    return None if pd.isna(number) else float(number)


def _site(row: pd.Series) -> str:
    site = f"L{int(row['layer'])}"
    if "head" in row and pd.notna(row["head"]) and int(row["head"]) >= 0:
        site += f".h{int(row['head'])}"
    return site


def _control_cell(
    summary: dict[str, Any], best: pd.Series, value: str, why: str
) -> tuple[str, str | None]:
    """The control's value at the run's strongest site and run − control (paired interval),
    or "n/a" with why not; and a caveat where the difference's interval covers 0."""
    control = summary.get("control")
    if not control:
        return "control n/a (patched without --control-run)", None
    table = pd.DataFrame(control.get("table") or [])
    keys = ["layer", "component", "head"]
    if table.empty or not set(keys) <= set(table) or f"{value}_control" not in table:
        return "control n/a (the control's patching table has no such value)", None
    same = table[table["component"] == best["component"]]
    for key in ("layer", "head"):
        same = same[pd.to_numeric(same[key], errors="coerce") == float(best[key])]
    if "method" in same and "method" in best:
        same = same[same["method"] == best["method"]]
    if same.empty:
        return "control n/a (the control's patching has no row for this site)", None
    theirs = same.iloc[0]
    lo, hi = _number(theirs.get(f"{value}_diff_lo")), _number(theirs.get(f"{value}_diff_hi"))
    interval = esc(interval_text([lo, hi], why))
    cell = (
        f"control {sig3(_number(theirs[f'{value}_control']))}; run − control "
        f"{sig3(_number(theirs.get(f'{value}_diff')), sign=True)} <small>{interval}</small>"
    )
    caveat = (
        "run − control at this site: the paired interval covers 0" if _covers_zero(lo, hi) else None
    )
    return cell, caveat


def patching_rows(patching: dict[str, tuple[dict[str, Any], pd.DataFrame]]) -> list[Row]:
    """Per patching analysis and per site family (resid, attn, mlp, heads, SAE features): the
    strongest site (largest |value|), one cell across the rounds (the value is the round
    pair's), labelled with the analysis's method,
    direction and round pair, and beside it the control run's value at the same site (with
    run − control and its paired interval) where the analysis patched a control run, else
    why not. The value is the report's: the normalised effect, or the logit change (delta)
    where the rounds do not differ reliably (:func:`interp.patching.analysis.patching_value`).
    """
    from interp.patching.analysis import patching_value

    rows = []
    for name, (summary, table) in patching.items():
        config = summary.get("config") or {}
        if config.get("round") is None or "component" not in table or not len(table):
            continue
        value = patching_value(table)
        if value not in table:
            continue
        cluster = summary.get("cluster") or {}
        why = no_interval_reason(cluster.get("n_clusters"), config.get("n_boot"))
        direction = config.get("direction", "denoise")
        how = esc(str(config.get("method", "?")))
        how += "" if direction == "denoise" else f", {esc(str(direction))}"
        components = list(dict.fromkeys(table["component"]))
        order = [c for c in SITE_FAMILIES if c in components] + [
            c for c in components if c not in SITE_FAMILIES
        ]
        for component in order:
            rows_of = table[table["component"] == component]
            size = pd.to_numeric(rows_of[value], errors="coerce").abs()
            if size.isna().all():
                continue
            best = rows_of.loc[size.idxmax()]
            family = SITE_FAMILIES.get(component, component)
            row = Row(
                f'<span title="patching analysis {esc(name)}">patching: strongest '
                f"{esc(family)} site ({how}, round {config.get('round')} → "
                f"{config.get('target_round')})</span>"
            )
            ci = [_number(best.get(f"{value}_lo")), _number(best.get(f"{value}_hi"))]
            interval = esc(interval_text(ci, why))
            label = "effect" if value == "effect" else "logit change (delta)"
            control, control_caveat = _control_cell(summary, best, value, why)
            row.span_html = (  # one line across the rounds: the value is the pair's
                f"run {esc(_site(best))}: {label} {sig3(_number(best[value]))} "
                f"<small>{interval}</small>; {control}"
            )
            if value == "delta":
                row.caveats.append(
                    "the rounds do not differ reliably (source − target covers 0): the logit "
                    "change is shown, not the normalised effect"
                )
            if _covers_zero(*ci):
                row.caveats.append("the strongest site's interval covers 0")
            elif interval_text(ci) == "n/a":
                row.caveats.append(f"no interval ({why}): the strongest site may be noise")
            if control_caveat:
                row.caveats.append(control_caveat)
            if not summary.get("control") and component == order[0]:
                row.caveats.append(
                    "no control beside it: `interp patch --control-run BASELINE` patches the "
                    "control the same way"
                )
            rows.append(row)
    return rows


def circuit_rows(main: Run) -> list[Row]:
    """Per circuit: the smallest N from which faithfulness stays within its band."""
    rows = []
    for name in main.analyses("circuits"):
        summary = main.read_analysis("circuits", name, tables=[]).summary
        config = summary.get("config") or {}
        row = Row(
            f"circuit size at faithfulness {sig3((summary.get('faithful_band') or [0.8])[0])} "
            f"({esc(str(summary.get('method', '?')).upper())}, round {config.get('round')} → "
            f"{config.get('target_round')})"
        )
        band = summary.get("faithful_band") or [0.8, 1.2]
        if summary.get("faithful_refused"):
            cell = f"n/a ({esc(summary['faithful_refused'])})"
            row.caveats.append(
                "no faithfulness headline: the normaliser's interval is unknown or covers 0"
            )
        elif summary.get("faithful_n") is None:
            cell = f"n/a (faithfulness never stays within [{sig3(band[0])}, {sig3(band[1])}])"
        else:
            cell = (
                f"{summary['faithful_n']} of {summary.get('n_edges')} edges "
                f"(faithfulness within [{sig3(band[0])}, {sig3(band[1])}] from there on)"
            )
        verify = summary.get("verify") or {}
        if verify.get("spearman") is not None and verify.get("spearman") < 0.5:
            row.caveats.append(
                f"scores agree poorly with exact patching (ρ = {sig3(verify['spearman'])})"
            )
        row.cells[int(config.get("round", 0))] = cell
        rows.append(row)
    return rows


def links_html(sections: Sequence[Section], main: Run) -> str:
    """Every figure (its place on the page and its own file) and every graph file."""
    figures = []
    for section in sections:
        for item in section.items:
            figures.append(
                f'<a href="#fig-{esc(item.name)}">{esc(item.title)}</a> '
                f'<a class="file" href="figures/{esc(item.name)}.html" title="own page">↗</a>'
            )
    graphs = []
    for kind in ("circuits", "feature_circuits"):
        for name in main.analyses(kind):
            folder = main.path / kind / name
            files = [
                f'<a href="{kind}/{esc(name)}/{f}">{f.split(".")[1]}</a>'
                for f in ("graph.html", "graph.svg", "graph.dot", "graph.json")
                if (folder / f).is_file()
            ]
            if files:
                graphs.append(f"<code>{esc(name)}</code> " + " ".join(files))
    out = f'<p class="links"><b>Figures:</b> {" · ".join(figures) or "none"}</p>'
    if graphs:
        out += f'<p class="links"><b>Graph files:</b> {" · ".join(graphs)}</p>'
    return out


def findings_html(
    rounds: Sequence[int],
    rows: Sequence[Row],
    links: str,
    control: str | None,
) -> str:
    """The box: a table of rows × rounds with a caveat column, then the links."""
    head = "".join(f"<th>round {r}</th>" for r in rounds)
    body = []
    for row in rows:
        if row.span is not None:
            cells = f'<td colspan="{len(rounds)}">{esc(row.span)}</td>'
        elif row.span_html is not None:
            cells = f'<td colspan="{len(rounds)}">{row.span_html}</td>'
        else:
            cells = "".join(f"<td>{row.cells.get(r, '—')}</td>" for r in rounds)
        caveat = "<br>".join(esc(c) for c in row.caveats) or "—"
        body.append(f'<tr><th>{row.title}</th>{cells}<td class="caveat">{caveat}</td></tr>')
    beside = (
        f"beside its control <code>{esc(control)}</code>"
        if control
        else "no control run exported (give it as a second --run to compare)"
    )
    return (
        f'<section id="{FINDINGS_ID}" class="findings">\n<h2>Findings at a glance</h2>\n'
        f"<p>Per round, this run's main effects {beside}; 95% intervals in brackets; "
        "caveats on the right.</p>\n"
        '<table class="findings">\n<tr><th class="q">quantity</th>'
        f'{head}<th class="cv">caveat</th></tr>\n'
        + "\n".join(body)
        + f"\n</table>\n{links}\n</section>"
    )


def build_findings(
    main: Run,
    labels: Sequence[str],
    metrics: dict[str, dict[str, Any]],
    others: Sequence[Run],
    probes: dict[str, dict[str, Any]],
    patching: dict[str, tuple[dict[str, Any], pd.DataFrame]],
    sections: Sequence[Section],
) -> str:
    """The findings box of ``main`` (the first run) beside the first exported run that is its
    control (``interp.runs.controls.check_control``: same examples, model and rounds)."""
    from interp.errors import InterpError
    from interp.runs.controls import check_control

    main_metrics = metrics[labels[0]]
    control = None
    for label, other in zip(labels[1:], others, strict=True):
        try:
            check_control(main, other)
        except InterpError:
            continue
        control = (label, metrics[label])
        break
    rows: list[Row] = []
    if main_metrics.get("task") != "winogender":
        rows += behaviour_rows(main_metrics, control)
    rows += concept_rows(probes)
    rows += patching_rows(patching)
    rows += circuit_rows(main)
    rounds = [int(r) for r in main_metrics.get("rounds", range(main.n_rounds))]
    name = None
    if control is not None:
        name = f"{control[0]} ({Path(str(others[labels.index(control[0]) - 1].path)).name})"
    return findings_html(rounds, rows, links_html(sections, main), name)
