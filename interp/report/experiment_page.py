"""The report of ``interp experiment``: ``interp export --run DIR`` on an experiment directory,
and the experiment sections of a run that holds ``RUN/experiments/NAME/``.

An experiment directory's export writes, beside its tables::

    DIR/figures/<name>.html    one page per figure (plotly: beside figures/plotly.min.js)
    DIR/figures/<name>.json    the table rows the figure is drawn from (non-finite: null)
    DIR/figures/<name>.png     with ``png=True``, where a static exporter works
    DIR/index.html             the experiment's section (the design in two lines, the reading
                               of summary.json, the headline tables with their intervals, the
                               figures, every other table folded) and one on its arms (each
                               arm is a run: plan, metrics, a link to its own report)

The page is the run report's (``interp.report.run_page``: same style, plotly.js inlined once, no
network, fixed element ids), so the same experiment exports to the same bytes. The
experiment must be complete (its ``summary.json`` is written last); an unfinished one is
refused before anything is written.

``interp.report.run_page`` imports this module (inside its functions: it appends these sections
to a run's page); both build on the page machinery in :mod:`interp.report.html`, and this
module never imports the run's page.
"""

from __future__ import annotations

import html
import json
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from interp.errors import InterpError
from interp.metrics.winogender import format_winogender_metrics
from interp.report import experiment_figures as ef
from interp.report.html import (
    PAGE_STYLE,
    ExportResult,
    Figure,
    Section,
    anchor_slug,
    load_metrics,
    metrics_html,
    section_html,
    write_figure_files,
    write_page_text,
    write_pngs,
)
from interp.runs.lock import run_lock
from interp.runs.store import EXPORT_FILES, Run, atomic_write

# The tables each experiment's section needs; an experiment directory without one of them is
# incomplete (any other table is shown folded, whatever its name).
REQUIRED = {
    "convergence": ("fits", "observed"),
    "superficial": ("by_rank",),
    "interactions": ("cells", "effects"),
    "weak-evidence": ("rates", "difference"),
    "self-distinguish": ("per_round",),
}
MAX_ROWS = 60  # rows of a folded table shown on the page (the parquet file has them all)
# Estimate columns drawn as "value [lo, hi]" when the table has bare lo / hi columns.
VALUE_COLUMNS = ("value", "mean", "change", "pearson")
WHOLE = ("settle", "layer", "rank", "round", "n_")  # columns whose whole floats print as ints


@dataclass(frozen=True)
class Experiment:
    """A complete experiment directory, read."""

    path: Path
    name: str
    manifest: dict[str, Any]
    summary: dict[str, Any]
    tables: dict[str, pd.DataFrame]


def is_experiment(path: str | Path) -> bool:
    """True when ``path/manifest.json`` is an experiment's (it names the experiment)."""
    try:
        manifest = json.loads((Path(path) / "manifest.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(manifest, dict) and "experiment" in manifest


def read_experiment(path: str | Path) -> Experiment:
    """The manifest, summary and tables of a complete experiment directory; InterpError
    (one line, saying how to finish it) when it is unfinished or a file is damaged."""
    path = Path(path)
    manifest = _read_json(path / "manifest.json", path)
    name = str(manifest.get("experiment"))
    again = f"run the same `interp experiment {name}` command again to finish it"
    if not manifest.get("complete") or not (path / "summary.json").is_file():
        raise InterpError(f"{path} is an unfinished experiment ({name}); {again}")
    summary = _read_json(path / "summary.json", path)
    tables = {}
    for file in sorted((path / "tables").glob("*.parquet")):
        try:
            tables[file.stem] = pd.read_parquet(file)
        except Exception as err:  # any failure to read it means it is damaged
            reason = str(err).splitlines()[0] if str(err) else type(err).__name__
            raise InterpError(f"{file} is damaged ({reason}); {again}") from None
    missing = [t for t in REQUIRED.get(name, ()) if t not in tables]
    if missing:
        raise InterpError(f"{path}/tables/{missing[0]}.parquet is missing; {again}")
    return Experiment(path, name, manifest, summary, tables)


def _read_json(file: Path, path: Path) -> dict[str, Any]:
    try:
        data = json.loads(file.read_text())
    except FileNotFoundError:
        raise InterpError(f"{path} has no {file.name}; it is not an experiment directory") from None
    except (OSError, ValueError) as err:
        raise InterpError(f"{file} is not valid JSON ({err}); run the experiment again") from None
    if not isinstance(data, dict):
        raise InterpError(f"{file} is not an experiment's {file.name}; run the experiment again")
    return data


# --- the export of an experiment directory ---------------------------------------------------


def export_experiment(path: str | Path, *, png: bool = False) -> ExportResult:
    """Write ``DIR/figures/`` and ``DIR/index.html`` for the experiment directory ``path``."""
    path = Path(path)
    with run_lock(path):
        exp = read_experiment(path)
        sections = [
            experiment_section(exp.name, exp.tables, exp.summary, _info(exp)),
            arms_section(exp),
        ]
        page = render_experiment_page(exp, sections)  # built before anything is written
        folder = path / "figures"
        index = path / "index.html"
        index.unlink(missing_ok=True)  # written last: never a page over mixed figures
        folder.mkdir(exist_ok=True)
        before = _export_files(folder)
        planned = {f"{i.name}.html" for s in sections for i in s.items}
        planned |= {f"{i.name}.json" for s in sections for i in s.items if i.data is not None}
        if png:
            planned |= {f"{i.name}.png" for s in sections for i in s.items if i.plot is not None}
        _write_export_files(folder, before | planned)
        written = write_figure_files(folder, sections)
        png_note = None
        if png:
            pngs, png_note = write_pngs(folder, sections)
            written += pngs
        _remove_export_files(folder, before - {p.name for p in written})
        _write_export_files(folder, {p.name for p in written})
        write_page_text(index, page)
    notes = [f"{s.title}: {note}" for s in sections for note in s.notes]
    return ExportResult(index, written, notes, png_note)


# figures/.export-files.json: the files an export wrote there (as interp.runs.store.Run keeps it
# for a run); only those are ever removed, so a user's own files in figures/ stay.


def _export_files(folder: Path) -> set[str]:
    try:
        names = json.loads((folder / EXPORT_FILES).read_text())
    except (OSError, ValueError):
        return set()
    return {n for n in names if isinstance(n, str) and "/" not in n and n not in ("", ".", "..")}


def _write_export_files(folder: Path, names: set[str]) -> None:
    text = json.dumps(sorted(names), indent=1) + "\n"
    atomic_write(folder / EXPORT_FILES, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def _remove_export_files(folder: Path, names: set[str]) -> None:
    for name in sorted(names):
        file = folder / name
        if file.suffix in (".html", ".png", ".json") and name != EXPORT_FILES and file.is_file():
            file.unlink()


def render_experiment_page(exp: Experiment, sections: Sequence[Section]) -> str:
    """The whole ``index.html`` of an experiment: the run report's style, plotly.js once."""
    from plotly.offline import get_plotlyjs

    nav = " ".join(f'<a href="#{anchor_slug(s.title)}">{_e(s.title)}</a>' for s in sections)
    title = f"interp experiment: {exp.name} ({exp.path.name})"
    return "\n".join(
        [
            "<!DOCTYPE html>",
            '<html lang="en">\n<head>\n<meta charset="utf-8">',
            f"<title>{_e(title)}</title>",
            f"<style>{PAGE_STYLE}</style>",
            "<script>window.PlotlyConfig = {MathJaxConfig: 'local'};</script>",
            f'<script charset="utf-8">{get_plotlyjs()}</script>',
            "</head>\n<body>",
            f"<h1>{_e(title)}</h1>",
            f"<nav>{nav}</nav>",
            *[section_html(s, {}) for s in sections],
            "</body>\n</html>\n",
        ]
    )


# --- the sections of a run that holds RUN/experiments/NAME/ ----------------------------------


def run_experiment_sections(run: Run) -> list[Section]:
    """One section per complete analysis under ``RUN/experiments/`` (none: no section)."""
    sections = []
    for name in run.analyses("experiments"):
        where = f"experiments/{name}"
        try:
            found = run.read_analysis("experiments", name)
            kind = str(found.summary.get("experiment", name))
            missing = [t for t in REQUIRED.get(kind, ()) if t not in found.tables]
            if missing:
                raise InterpError(f"{missing[0]}.parquet is missing")
        except Exception as err:  # a damaged analysis is a note; the run's report stands
            reason = str(err).splitlines()[0] if str(err) else type(err).__name__
            section = Section(f"Experiment: {name} ({where})")
            section.notes.append(
                f"{where} is damaged ({reason}); run `interp experiment {name} --run "
                f"{run.path}` again"
            )
            sections.append(section)
            continue
        info = _run_info(run, found.summary)
        sections.append(experiment_section(kind, found.tables, found.summary, info, where))
    return sections


# --- one experiment's section ----------------------------------------------------------------


def experiment_section(
    name: str,
    tables: dict[str, pd.DataFrame],
    summary: dict[str, Any],
    info: dict[str, Any],
    where: str = "",
) -> Section:
    """The design in two lines, the reading, the headline tables (intervals in brackets), the
    figures and, folded, every other table."""
    title = f"Experiment: {name}" + (f" ({where})" if where else "")
    section = Section(title)
    parts = [f'<p class="design">{_e(line)}</p>' for line in design_lines(name, info, summary)]
    reading = summary.get("reading") or []
    if reading:
        items = "\n".join(f"<li>{_e(line)}</li>" for line in reading)
        parts.append(f"<h3>Reading</h3>\n<ul>\n{items}\n</ul>")
    shown: set[str] = set()
    for caption, key, frame in headline_tables(name, tables, summary, info):
        parts.append(f"<h3>{_e(caption)}</h3>\n{table_html(frame)}")
        shown.add(key)
    others = [k for k in tables if k not in shown]
    for key in others:
        frame = tables[key]
        more = (
            f" (the first {MAX_ROWS} of {len(frame)} rows; all in tables/{key}.parquet)"
            if len(frame) > MAX_ROWS
            else ""
        )
        parts.append(
            f"<details><summary>Table {_e(key)}: {len(frame)} rows{_e(more)}</summary>\n"
            f"{table_html(frame.head(MAX_ROWS))}\n</details>"
        )
    section.intro = "\n".join(parts)
    if summary.get("concept_note"):
        section.notes.append(str(summary["concept_note"]))
    prefix = "exp-" + anchor_slug(name)  # unique on a page: one section per experiment kind
    section.items += experiment_figures(name, tables, summary, info, prefix, section)
    return section


def design_lines(name: str, info: dict[str, Any], summary: dict[str, Any]) -> list[str]:
    """What was done, in two lines."""
    who = _who(info)
    boot = f"{info.get('n_boot', '?')} cluster-bootstrap resamples ({info.get('cluster', '?')})"
    concept = info.get("concept") or "stereotype"
    if name == "convergence":
        layer = (summary.get("concept") or {}).get("layer")
        at = f" (layer {layer})" if layer is not None else ""
        return [
            f"Replays the plan {info.get('plan', '?')} on {who}; reads the {concept} probe's "
            f"score{at} at each round's read-out.",
            "Fits y_r = y_inf + (y_0 − y_inf)·exp(−λr) to each quantity's per-round mean "
            f"(least squares, 0 ≤ λ ≤ 50); 95% intervals refit {boot}.",
        ]
    if name == "superficial":
        return [
            f"Replays the plan {info.get('plan', '?')} on {who}; groups the examples by the "
            "correct answer's rank at round 0 and by their outcome from round 0 to the last.",
            f"(a) outcome by rank; (b) the {concept} score's change per layer, improved vs "
            f"stayed wrong; 95% intervals from {boot}.",
        ]
    if name == "interactions":
        return [
            "The 2×2×2 design instruction (none / self-correct) × CoT (off / on) × feedback "
            f"(none / oracle): 8 replays of {who}.",
            "Main effect = mean with the factor on − off; A × B = half the difference of "
            f"differences (0: they add up); paired 95% intervals from {boot}.",
        ]
    if name == "weak-evidence":
        points = summary.get("points_at") or {}
        return [
            f"{summary.get('n_items', '?')} ambiguous items of {who} get one weak sentence "
            f"naming one person ({points.get('target', '?')} the stereotyped one, "
            f"{points.get('other', '?')} the other); replayed under baseline and self-correct.",
            "Per round: the share answering unknown (the correct answer), following the "
            f"evidence, and s_AMB; self-correct − baseline paired; 95% intervals from {boot}.",
        ]
    if name == "self-distinguish":
        return [
            f"After each round of a {info.get('plan', '?')} replay of {who}, the model is asked "
            "which of the unbiased and the stereotyped answer is less biased, in both orders "
            f"({summary.get('n_examples', '?')} examples with a distinct stereotyped answer).",
            "Per round: right in both orders, per-order accuracy (position bias), split by "
            f"whether its own answer was right; 95% intervals from {boot}.",
        ]
    return [f"The experiment {name} on {who}.", f"Intervals: {boot}."]


def _who(info: dict[str, Any]) -> str:
    n = info.get("n_examples")
    task = info.get("task", "?")
    what = f"{n} examples of {task}" if n is not None else f"the examples of {task}"
    return (
        f"{what} (model {info.get('model', '?')}, rounds 0..{info.get('rounds', '?')}, "
        f"seed {info.get('seed', '?')})"
    )


def _info(exp: Experiment) -> dict[str, Any]:
    """What the design lines and figures need, from an experiment's manifest."""
    config = exp.manifest.get("config", {})
    sizes = exp.manifest.get("sizes", {})
    info = {k: config.get(k) for k in ("model", "task", "rounds", "seed", "plan", "concept")}
    info["n_boot"] = config.get("n_boot")
    info["cluster"] = config.get("cluster")
    info["n_examples"] = sizes.get("n_examples", sizes.get("n_selected"))
    layers = [
        arm["probe"]["best_layer"]
        for arm in exp.manifest.get("arms", {}).values()
        if isinstance(arm.get("probe"), dict) and arm["probe"].get("best_layer") is not None
    ]
    if layers:  # the probes' most common headline layer (the smallest on ties)
        counts = Counter(int(x) for x in layers)
        info["layer"] = min(counts, key=lambda la: (-counts[la], la))
    return info


def _run_info(run: Run, summary: dict[str, Any]) -> dict[str, Any]:
    manifest = run.manifest
    concept = summary.get("concept")
    return {
        "model": manifest.get("model", {}).get("model_id"),
        "task": manifest.get("task", {}).get("name"),
        "n_examples": manifest.get("task", {}).get("n_examples"),
        "rounds": manifest.get("rounds"),
        "seed": manifest.get("seed"),
        "plan": summary.get("plan") or manifest.get("plan", {}).get("name"),
        "concept": concept.get("name") if isinstance(concept, dict) else concept,
        "n_boot": summary.get("n_boot"),
        "cluster": (summary.get("cluster") or {}).get("requested"),
    }


# --- headline tables -------------------------------------------------------------------------


def headline_tables(
    name: str, tables: dict[str, pd.DataFrame], summary: dict[str, Any], info: dict[str, Any]
) -> list[tuple[str, str, pd.DataFrame]]:
    """(caption, table name, rows) of the tables the section shows in full."""
    out: list[tuple[str, str, pd.DataFrame]] = []
    t = tables
    if name == "convergence":
        columns = ["quantity", "y0", "y_inf", "lam", "settle", "eps", "rmse", "note"]
        out.append(("Fitted curves", "fits", _pick(t["fits"], columns)))
        if "correlation" in t:
            columns = ["x", "y", "layer", "n_examples", "pearson", "spearman"]
            out.append(
                (
                    "Per-example entropy drop vs concept-score change",
                    "correlation",
                    _pick(t["correlation"], columns),
                )
            )
    elif name == "superficial":
        columns = ["rank", "n_examples", "share", "acc_first", "acc_last", "improved", "worsened"]
        out.append(
            ("(a) By the correct answer's rank at round 0", "by_rank", _pick(t["by_rank"], columns))
        )
        if "concept_change" in t:
            change = t["concept_change"]
            diff = change[change["group"] == "improved - stayed_wrong"]
            out.append(
                (
                    "(b) Concept-score change, improved − stayed wrong, per layer",
                    "concept_change",
                    _pick(diff, ["layer", "n_examples", "change"]),
                )
            )
    elif name == "interactions":
        effects = t["effects"]
        last = int(effects["round"].max())
        wide = _wide(effects[effects["round"] == last], "effect", "metric")
        out.append((f"Effects at round {last}", "effects", wide))
        if "concept_effects" in t:
            c = t["concept_effects"]
            layer = info.get("layer", int(c["layer"].max()))
            rows = c[(c["round"] == last) & (c["layer"] == layer)]
            out.append(
                (
                    f"Concept-score effects at round {last}, layer {layer}",
                    "concept_effects",
                    _pick(rows, ["effect", "value"]),
                )
            )
    elif name == "weak-evidence":
        rates, diff = t["rates"], t["difference"]
        last = int(rates["round"].max())
        keys = [k for k in ("plan", "group") if k in rates.columns]
        out.append(
            (
                f"Rates at round {last}",
                "rates",
                _wide(rates[rates["round"] == last], keys, "measure"),
            )
        )
        out.append(
            (
                f"Self-correct − baseline at round {last}",
                "difference",
                _wide(diff[diff["round"] == last], "group", "measure"),
            )
        )
    elif name == "self-distinguish":
        columns = [
            "round",
            "n_examples",
            "both",
            "order_unbiased_first",
            "order_stereotyped_first",
            "picks_a",
            "both_own_right",
            "both_own_wrong",
            "n_own_right",
        ]
        out.append(("Per round", "per_round", _pick(t["per_round"], columns)))
    return out


def _pick(frame: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    """``columns`` (those present) with their interval columns, and ``plan`` first when the
    table has one; a value with bare lo / hi keeps them."""
    keep = ["plan"] if "plan" in frame.columns else []
    for c in columns:
        if c not in frame.columns:
            continue
        keep.append(c)
        keep += [x for x in (f"{c}_lo", f"{c}_hi") if x in frame.columns]
        if c in VALUE_COLUMNS and "lo" not in keep:
            keep += [x for x in ("lo", "hi") if x in frame.columns]
    return frame[keep].reset_index(drop=True)


def _wide(frame: pd.DataFrame, index: str | list[str], columns: str) -> pd.DataFrame:
    """One row per ``index``, one "value [lo, hi]" column per value of ``columns``."""
    index = [index] if isinstance(index, str) else list(index)
    cells = frame.assign(cell=[_estimate(v, lo, hi) for v, lo, hi in _triples(frame)])
    order = list(dict.fromkeys(frame[columns]))
    wide = cells.pivot(index=index, columns=columns, values="cell")
    rows = list(dict.fromkeys(map(tuple, frame[index].to_numpy().tolist())))
    wide = wide.reindex([r if len(index) > 1 else r[0] for r in rows])[order]
    return wide.reset_index().rename_axis(columns=None)


def _triples(frame: pd.DataFrame):
    return zip(frame["value"], frame["lo"], frame["hi"], strict=True)


# --- HTML tables -----------------------------------------------------------------------------


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _num(value: Any, column: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, bool | np.bool_):
        return "yes" if value else "no"
    if isinstance(value, int | np.integer):
        return str(int(value))
    if not isinstance(value, float | np.floating):
        return str(value)
    f = float(value)
    if math.isnan(f):
        return "-"
    if math.isinf(f):
        return "∞" if f > 0 else "−∞"
    if f.is_integer() and abs(f) < 1e4 and column.startswith(WHOLE):
        return str(int(f))
    if f != 0 and (abs(f) >= 1e4 or abs(f) < 1e-3):
        return f"{f:.3g}"
    return f"{f:.3f}"


def _estimate(value: Any, lo: Any, hi: Any, column: str = "") -> str:
    text = _num(value, column)
    if text == "-" or _num(lo) == "-" or _num(hi) == "-":
        return text
    return f"{text} [{_num(lo, column)}, {_num(hi, column)}]"


def table_html(frame: pd.DataFrame) -> str:
    """A table whose estimates carry their interval: ``X`` with ``X_lo`` / ``X_hi``, and a
    value column (value, mean, change, ...) with bare ``lo`` / ``hi``, print as
    "X [lo, hi]"."""
    columns = list(frame.columns)
    bare = next((c for c in VALUE_COLUMNS if c in columns), None)
    bare = bare if {"lo", "hi"} <= set(columns) else None
    shown = [
        c
        for c in columns
        if not (c.endswith(("_lo", "_hi")) and c[:-3] in columns)
        and not (bare is not None and c in ("lo", "hi"))
    ]
    rows = []
    for rec in frame.to_dict("records"):
        cells = []
        for c in shown:
            if f"{c}_lo" in columns and f"{c}_hi" in columns:
                cells.append(_estimate(rec[c], rec[f"{c}_lo"], rec[f"{c}_hi"], c))
            elif c == bare:
                cells.append(_estimate(rec[c], rec["lo"], rec["hi"], c))
            else:
                cells.append(_num(rec[c], c))
        rows.append("<tr>" + "".join(f"<td>{_e(x)}</td>" for x in cells) + "</tr>")
    head = "".join(f"<th>{_e(c)}</th>" for c in shown)
    return (
        f'<div class="wide"><table class="metrics">\n<tr>{head}</tr>\n'
        + "\n".join(rows)
        + "\n</table></div>"
    )


# --- figures ---------------------------------------------------------------------------------


def records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """Rows as JSON-safe dicts (NaN and infinities as null), for figures/<name>.json."""
    out = []
    for rec in frame.to_dict("records"):
        out.append({str(k): _json(v) for k, v in rec.items()})
    return out


def _json(value: Any) -> Any:
    if isinstance(value, bool | np.bool_):
        return bool(value)
    if isinstance(value, int | np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        return float(value) if math.isfinite(value) else None
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, np.ndarray | list | tuple):
        return [_json(v) for v in value]
    return str(value)


def _data(**frames: pd.DataFrame | None) -> dict[str, Any]:
    return {"tables": {k: records(v) for k, v in frames.items() if v is not None}}


def experiment_figures(
    name: str,
    tables: dict[str, pd.DataFrame],
    summary: dict[str, Any],
    info: dict[str, Any],
    prefix: str,
    section: Section,
) -> list[Figure]:
    """The figures of one experiment; a part without data is a note of the section."""
    t, items = tables, []
    interval = "95% cluster-bootstrap intervals"
    if name == "convergence":
        concept = summary.get("concept") or {}
        label = f"{concept.get('name', '')} layer {concept.get('layer')}" if concept else ""
        items.append(
            Figure(
                f"{prefix}-curves",
                "Convergence fit",
                ef.convergence_figure(t["observed"], t.get("fits"), label),
                caption=f"Markers: each quantity's mean per round with {interval}; dashed: the "
                "fitted saturating curve y_inf + (y_0 − y_inf)·exp(−λr); one colour per plan.",
                data=_data(observed=t["observed"], fits=t.get("fits")),
            )
        )
    elif name == "superficial":
        items.append(
            Figure(
                f"{prefix}-rank",
                "Outcome by round-0 rank",
                ef.superficial_rank_figure(t["by_rank"]),
                caption="Examples grouped by the rank of the correct option at round 0 (1 = most "
                f"probable); bars with {interval}; hover for the group's size.",
                data=_data(by_rank=t["by_rank"]),
            )
        )
        if "concept_change" in t:
            items.append(
                Figure(
                    f"{prefix}-concept",
                    "Concept-score change by outcome",
                    ef.superficial_concept_figure(
                        t["concept_change"], str(info.get("concept") or "")
                    ),
                    caption="Mean change of the concept score from round 0 to the last round "
                    "per layer, per outcome group (bands: 95% intervals; empty groups left out); "
                    "right: improved − stayed wrong. An interval that excludes 0 there is a "
                    "hidden-state change that goes with the improvement.",
                    data=_data(concept_change=t["concept_change"]),
                )
            )
        else:
            section.notes.append("(b) the concept-score change: the run has no probe scores")
    elif name == "interactions":
        concept = t.get("concept_effects")
        layer = info.get("layer")
        items.append(
            Figure(
                f"{prefix}-forest",
                "Main effects and interactions",
                ef.interactions_forest_figure(t["effects"], concept, layer=layer),
                caption="At the last round, per metric: each factor's main effect (on − off, the "
                "others averaged) and each pairwise interaction (half the difference of "
                f"differences), with paired {interval}; 0 dotted.",
                data=_data(effects=t["effects"], concept_effects=concept),
            )
        )
        items.append(
            Figure(
                f"{prefix}-cells",
                "Cell means per round",
                ef.interactions_cells_figure(t["cells"]),
                caption=f"Each cell's value per round with {interval}. Colour: instruction × "
                "CoT; dashed: oracle feedback.",
                data=_data(cells=t["cells"]),
            )
        )
    elif name == "weak-evidence":
        items.append(
            Figure(
                f"{prefix}-rates",
                "Unknown, follows the evidence, s_AMB",
                ef.weak_evidence_figure(t["rates"]),
                caption=f"All items, per round and plan, with {interval}. The correct answer is "
                "always unknown; following the evidence means choosing the person it names.",
                data=_data(rates=t["rates"][t["rates"]["group"] == "all"]),
            )
        )
        items.append(
            Figure(
                f"{prefix}-difference",
                "Self-correct − baseline",
                ef.weak_evidence_difference_figure(t["difference"]),
                caption="Paired difference per round (same items, same resamples), for all items "
                "and by whom the evidence names; bands: 95% intervals.",
                data=_data(difference=t["difference"]),
            )
        )
    elif name == "self-distinguish":
        items.append(
            Figure(
                f"{prefix}-per-round",
                "Distinguishing the less biased answer",
                ef.self_distinguish_figure(t["per_round"]),
                caption="Left: share choosing the unbiased answer in both presentation orders, "
                "for all examples and split by whether the model's own answer that round was "
                "right. Right: accuracy in each order and the share choosing (a); a model that "
                f"always answers (a) scores 1 and 0. {interval.capitalize()}.",
                data=_data(per_round=t["per_round"]),
            )
        )
    else:
        section.notes.append(f"figures: this interp draws none for the experiment {name!r}")
    return items


# --- the arms --------------------------------------------------------------------------------


def arms_section(exp: Experiment) -> Section:
    """Each arm (a run): its plan, size, accuracy and s_AMB at round 0 and the last round,
    a link to its own report where exported, and its metrics table folded."""
    section = Section("Arms (one run each)")
    head = ["arm", "plan", "run", "examples", "rounds", "accuracy", "s_AMB"]
    rows, details = [], []
    for arm, entry in exp.manifest.get("arms", {}).items():
        rel = str(entry.get("run", f"runs/{arm}"))
        try:
            run = Run.open(exp.path / rel)
        except InterpError as err:
            section.notes.append(f"arm {arm}: {err}")
            continue
        metrics = load_metrics(run)
        plan = (entry.get("plan") or {}).get("name") or run.manifest["plan"]["name"]
        report = exp.path / rel / "index.html"
        link = (
            f'<a href="{_e(rel)}/index.html">{_e(rel)}</a>'
            if report.is_file()
            else f"<code>{_e(rel)}</code>"
        )
        winogender = metrics.get("task") == "winogender"
        cells = [
            _e(arm),
            _e(plan),
            link,
            _e(metrics.get("n_examples", run.manifest["task"].get("n_examples"))),
            f"0..{_e(run.manifest['rounds'])}",
            "-" if winogender else _e(_first_last(metrics, "accuracy")),
            "-" if winogender else _e(_first_last(metrics, "bias_amb")),
        ]
        rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
        body = (
            f"<pre>{_e(format_winogender_metrics(metrics))}</pre>"
            if winogender
            else metrics_html(metrics)
        )
        details.append(
            f"<details><summary>Arm {_e(arm)} ({_e(plan)}): metrics per round</summary>\n"
            f"{body}\n</details>"
        )
    table = (
        '<div class="wide"><table class="metrics">\n<tr>'
        + "".join(f"<th>{_e(h)}</th>" for h in head)
        + "</tr>\n"
        + "\n".join(rows)
        + "\n</table></div>"
    )
    hint = (
        "<p>Each arm is an ordinary run: <code>interp export --run DIR/runs/ARM</code> writes "
        "its full report (linked here once written). Accuracy and s_AMB: round 0 → the last "
        "round, 95% intervals.</p>"
    )
    settings = _settings_html(exp)
    section.intro = "\n".join([hint, table, *details, settings])
    return section


def _first_last(metrics: dict[str, Any], key: str) -> str:
    per_round = metrics.get("per_round") or []
    if not per_round:
        return "-"

    def one(entry: dict[str, Any]) -> str:
        item = entry.get(key) or {}
        ci = item.get("ci") or [None, None]
        return _estimate(item.get("value"), ci[0], ci[1])

    return f"{one(per_round[0])} → {one(per_round[-1])}"


def _settings_html(exp: Experiment) -> str:
    m = exp.manifest
    config = m.get("config", {})
    rows = [
        ("experiment", exp.name),
        ("model", config.get("model")),
        ("task", config.get("task")),
        ("data", ", ".join(Path(str(f)).name for f in config.get("data") or []) or "built in"),
        ("sample / limit", f"{config.get('sample')} / {config.get('limit')}"),
        ("rounds", f"0..{config.get('rounds')}"),
        ("seed", m.get("seed")),
        ("bootstrap", f"{config.get('n_boot')} resamples of {config.get('cluster')} clusters"),
        ("sizes", json.dumps(m.get("sizes", {}), sort_keys=True)),
        ("seconds", m.get("seconds")),
        ("command", m.get("command", "")),
    ]
    if m.get("inputs"):
        rows.append(("inputs", json.dumps(m["inputs"], indent=1, sort_keys=True)))
    body = "\n".join(f"<tr><th>{_e(k)}</th><td><pre>{_e(v)}</pre></td></tr>" for k, v in rows)
    return (
        "<details><summary>Settings (manifest.json)</summary>\n"
        f'<table class="manifest">\n{body}\n</table>\n</details>'
    )
