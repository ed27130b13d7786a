"""The page machinery every HTML page here shares: figures and sections, the metrics table,
the page style, the standalone figure files and their PNGs (plotly's exporter or Chromium).

:mod:`~interp.report.run_page` (a run's page) and :mod:`~interp.report.experiment_page` (an
experiment's) both build on it; it imports neither.
"""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import plotly.graph_objects as go
import plotly.io as pio

from interp.metrics.rounds import compute_metrics, metrics_table
from interp.metrics.winogender import winogender_metrics
from interp.report import attention
from interp.report.tables import fixed
from interp.runs.store import EXPORT_FILES, Run, atomic_write

PLOTLY_CONFIG = {"displaylogo": False, "responsive": True}


@dataclass(frozen=True)
class Figure:
    """One exported figure: a plotly figure or a circuitsvis view (HTML)."""

    name: str  # file stem and element id, [a-z0-9-]
    title: str
    plot: go.Figure | None = None
    view: str | None = None  # circuitsvis HTML (bundle inline)
    caption: str = ""
    data: dict[str, Any] | None = None  # the JSON it is drawn from: figures/<name>.json
    svg: str | None = None  # a static SVG of it: figures/<name>.svg


@dataclass
class Section:
    title: str
    intro: str = ""  # HTML
    items: list[Figure] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # what is missing here, and how to add it


@dataclass(frozen=True)
class ExportResult:
    index: Path
    figures: list[Path]
    notes: list[str]  # one line per section or figure left out, with the reason
    png: str | None  # one line on static images (None: not asked for)

    def __repr__(self) -> str:
        return (
            f"ExportResult({self.index}: {len(self.figures)} figures, "
            f"{len(self.notes)} sections left out)"
        )

    def _repr_html_(self) -> str:
        """A small HTML card for notebooks (:func:`interp.runs.display.html_card`)."""
        from interp.runs.display import html_card

        facts = [("index", self.index), ("figures", len(self.figures))]
        facts += [("left out", note) for note in self.notes[:5]]
        if len(self.notes) > 5:
            facts.append(("left out", f"... and {len(self.notes) - 5} more"))
        if self.png:
            facts.append(("images", self.png))
        return html_card(f"ExportResult {self.index.parent.name}", facts)


def load_metrics(run: Run) -> dict[str, Any]:
    """``metrics.json`` of a run (computed from rounds.parquet, not written, if missing)."""
    stored = run.read_metrics()  # None if missing or damaged (`interp metrics` rewrites it)
    if stored is not None:
        return stored
    if run.manifest.get("task", {}).get("name") == "winogender":
        return winogender_metrics(run.rounds(), seed=int(run.manifest.get("seed", 0)))
    return compute_metrics(run.rounds(), seed=int(run.manifest.get("seed", 0)))


def esc(text: Any) -> str:
    return html.escape(str(text), quote=True)


def anchor_slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "x"


def manifest_html(manifest: dict[str, Any]) -> str:
    """The manifest in brief: model, task, plan and its texts, rounds, examples."""
    model, task, plan = manifest.get("model", {}), manifest.get("task", {}), manifest["plan"]
    config = manifest.get("config", {})
    files = ", ".join(Path(f).name for f in task.get("files", [])) or "built in"
    rows = [
        (
            "model",
            f"{model.get('model_id')} ({model.get('kind')}, {model.get('n_layers')} layers, "
            f"d_model {model.get('d_model')}, weights {str(model.get('weights_hash'))[:12]})",
        ),
        (
            "task",
            f"{task.get('name')}: {task.get('n_examples')} examples ({files}; data "
            f"{str(task.get('data_hash'))[:12]})",
        ),
        (
            "rounds",
            f"0..{manifest['rounds']} (round 0: the question; {manifest['rounds']} "
            "follow-up rounds)",
        ),
        (
            "mode",
            f"{manifest.get('mode')}, score {config.get('score', '-')}, seed "
            f"{manifest.get('seed')}",
        ),
        ("plan", f"{plan['name']}: {plan.get('description', '')}"),
        ("round 0 question", plan.get("question", "")),
        ("round 0 instruction", plan.get("first") or "(none)"),
        *[(f"round {i} follow-up", text) for i, text in enumerate(plan["followups"], start=1)],
        ("answer prefix", plan.get("answer_prefix", "")),
        ("stored activations", f"{len(manifest.get('hooks', []))} hooks"),
        ("command", manifest.get("command", "")),
    ]
    body = "\n".join(f"<tr><th>{esc(k)}</th><td><pre>{esc(v)}</pre></td></tr>" for k, v in rows)
    return f'<table class="manifest">\n{body}\n</table>'


_METRIC_COLUMNS = (
    ("accuracy", "accuracy"),
    ("accuracy_ambig", "acc ambig"),
    ("accuracy_disambig", "acc disambig"),
    ("bias_amb", "s_AMB"),
    ("bias_dis", "s_DIS"),
    ("entropy", "entropy"),
    ("ece", "ECE"),
)


def metrics_html(result: dict[str, Any]) -> str:
    """The per-round metrics table (values with 95% intervals) and the convergence round."""
    table = metrics_table(result)
    head = ["round", *[title for _, title in _METRIC_COLUMNS], "unknown", "Brier"]
    head += ["R→W", "W→R", "changed", "unparsed"]
    rows = []
    for _, row in table.iterrows():
        cells = [esc(row["round"])]
        for name, _ in _METRIC_COLUMNS:
            cells.append(_ci_cell(row[name], row[f"{name}_lo"], row[f"{name}_hi"]))
        cells += [esc(fixed(row["unknown_rate"])), esc(fixed(row["brier"]))]
        for column in ("flips_right_to_wrong", "flips_wrong_to_right", "flips_changed", "unparsed"):
            cells.append("-" if pd.isna(row[column]) else str(int(row[column])))
        rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    conv = result["convergence"]
    converged = conv["round"] if conv["round"] is not None else "not converged"
    return (
        '<div class="wide"><table class="metrics">\n<tr>'
        + "".join(f"<th>{esc(h)}</th>" for h in head)
        + "</tr>\n"
        + "\n".join(rows)
        + f"\n</table></div>\n<p>n = {result['n_examples']} examples; convergence round: "
        f"{esc(converged)} (accuracy moves ≤ {conv['tol_acc']}, ≤ {conv['tol_change']:.0%} of "
        f"answers change). {esc(_cluster_text(result))}</p>"
    )


def debiased_html(result: dict[str, Any]) -> str:
    """A permuted run: per round, raw (every order pooled) beside debiased (orders averaged per
    base example) accuracy, s_AMB, s_DIS and entropy, and the agreement across orders."""
    deb = result["debiased"]

    def cell(entry: dict[str, Any] | None) -> str:
        if entry is None or entry.get("value") is None:
            return "-"
        ci = entry.get("ci") or [None, None]
        return _ci_cell(entry["value"], *(float("nan") if c is None else c for c in ci))

    names = (("accuracy", "accuracy"), ("s_AMB", "bias_amb"), ("s_DIS", "bias_dis"))
    names += (("entropy", "entropy"),)
    head = ["round"] + [f"{w} {n}" for n, _ in names for w in ("raw", "debiased")]
    head.append("agreement")
    rows = []
    structural = ("bias_amb", "bias_dis")  # pooled over orders: 0 for a position picker
    for raw, d, agree in zip(result["per_round"], deb["per_round"], deb["agreement"], strict=True):
        cells = [str(raw["round"])]
        for _, key in names:
            pooled = raw.get(key) or {}
            if key in structural and pooled.get("value") is not None:
                cells += [f"{pooled['value']:.3f}*", cell(d.get(key))]
            else:
                cells += [cell(raw.get(key)), cell(d.get(key))]
        cells.append(cell(agree))
        rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    cluster = deb.get("bootstrap", {}).get("cluster") or {}
    return (
        f"<p>Raw vs debiased: {deb['n_orders']} option orders per base example, "
        f"{deb['n_base_examples']} base examples; debiased = each order's option probabilities "
        f"mapped back to the original options and averaged ({esc(deb['space'])} space); "
        "agreement = share of base examples whose orders all give the same content answer. "
        "* raw s_AMB / s_DIS pool every order: a model that answers by position scores 0 there "
        "by construction, so they are structural, not estimates (no interval; `interp metrics` "
        "prints them per order). "
        f"Intervals resample {cluster.get('n_clusters', '?')} {esc(cluster.get('key', '?'))} "
        "clusters of base examples.</p>\n"
        '<div class="wide"><table class="metrics debiased">\n<tr>'
        + "".join(f"<th>{esc(h)}</th>" for h in head)
        + "</tr>\n"
        + "\n".join(rows)
        + "\n</table></div>"
    )


def _cluster_text(result: dict[str, Any]) -> str:
    cluster = result.get("bootstrap", {}).get("cluster")
    if not cluster:
        return "Intervals resample examples."
    note = f" ({cluster['note']})" if cluster.get("note") else ""
    return (
        f"Intervals resample {cluster['n_clusters']} {cluster['key']} clusters of "
        f"{cluster['n_examples']} examples{note}."
    )


def _ci_cell(value: Any, lo: Any, hi: Any) -> str:
    """A table cell's HTML: the value, its interval on a line of its own (narrow columns)."""
    text = _with_ci(value, lo, hi)
    head, _, ci = text.partition(" [")
    return esc(head) + (f'<span class="ci">[{esc(ci)}</span>' if ci else "")


def _with_ci(value: Any, lo: Any, hi: Any) -> str:
    if pd.isna(value):
        return "-"
    if pd.isna(lo):
        return f"{value:.3f}"
    return f"{value:.3f} [{lo:.2f}, {hi:.2f}]"


def definitions_html(definitions: dict[str, str]) -> str:
    if not definitions:
        return ""
    items = "\n".join(f"<dt>{esc(k)}</dt><dd>{esc(v)}</dd>" for k, v in definitions.items())
    return f"<details><summary>Metric definitions</summary><dl>\n{items}\n</dl></details>"


def _figure_html(item: Figure, view: str | None) -> str:
    if item.plot is not None:
        body = pio.to_html(
            item.plot,
            full_html=False,
            include_plotlyjs=False,
            div_id=item.name,
            config=PLOTLY_CONFIG,
        )
        kind = "plotly"
    else:
        body, kind = view or "", "circuitsvis"
    caption = f"<figcaption>{item.caption}</figcaption>" if item.caption else ""
    return (
        f'<figure class="fig" data-kind="{kind}" data-target="{item.name}" id="fig-{item.name}">\n'
        f'<h3>{esc(item.title)}</h3>\n{caption}\n<div class="body">{body}</div>\n</figure>'
    )


def section_html(section: Section, views: dict[str, str]) -> str:
    notes = "".join(f'<p class="note">Not shown: {esc(n)}</p>\n' for n in section.notes)
    items = "\n".join(_figure_html(item, views.get(item.name)) for item in section.items)
    anchor = anchor_slug(section.title)
    heading = f'<section id="{anchor}">\n<h2>{esc(section.title)}</h2>'
    return f"{heading}\n{section.intro}\n{notes}{items}\n</section>"


PAGE_STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0 auto;
       max-width: 1280px; padding: 0 24px 48px; color: #222; }
h1 { margin-top: 24px; }
h2 { border-bottom: 1px solid #ddd; padding-bottom: 4px; margin-top: 40px; }
table { border-collapse: collapse; font-size: 13px; margin: 8px 0; }
th, td { border: 1px solid #ddd; padding: 3px 8px; text-align: left; vertical-align: top; }
table.metrics td { font-variant-numeric: tabular-nums; white-space: nowrap; }
table.metrics .ci { display: block; color: #666; font-size: 11px; }
.findings { background: #f5f9fd; border: 1px solid #c9dcef; padding: 2px 14px 6px;
            margin: 8px 0 16px; }
.findings h2 { margin: 8px 0 4px; border: 0; padding: 0; font-size: 20px; }
.findings p { margin: 4px 0; font-size: 13px; }
table.findings { width: 100%; table-layout: fixed; font-size: 12px; background: #fff; }
table.findings th, table.findings td { overflow-wrap: anywhere; padding: 2px 6px; }
table.findings th.q { width: 17%; } table.findings th.cv { width: 30%; }
table.findings td.caveat { color: #8a4b00; }
p.links { line-height: 1.5; } p.links a.file { text-decoration: none; font-size: 11px; }
table.manifest pre { margin: 0; white-space: pre-wrap; font-size: 12px; }
.banner { background: #fde8e8; border-left: 4px solid #c62828; padding: 8px 12px;
          font-weight: 600; }
.note { background: #fff7e0; border-left: 4px solid #e0a800; padding: 6px 10px; }
figure.fig { margin: 24px 0; } figcaption { color: #555; font-size: 13px; margin-bottom: 6px; }
nav a { margin-right: 14px; }
.wide { overflow-x: auto; }
/* circuitsvis' token view keeps 280px below its tokens for its hover box: a blank gap */
.body [style*="padding-bottom: 280px"] { padding-bottom: 24px !important; }
"""


def render_page(
    main: Run,
    labels: Sequence[str],
    sections: Sequence[Section],
    banners: Sequence[str] = (),
    findings: str = "",
) -> str:
    """The whole ``index.html``: plotly.js once, the findings box (``findings``, HTML: see
    :mod:`interp.report.findings`) first, then ``banners`` (warnings that change how the
    whole page reads), then every section."""
    from plotly.offline import get_plotlyjs

    viewed = [item for s in sections for item in s.items if item.view is not None]
    shared = attention.share_bundle([item.view for item in viewed])
    views = {item.name: view for item, view in zip(viewed, shared, strict=True)}
    nav = " ".join(f'<a href="#{anchor_slug(s.title)}">{esc(s.title)}</a>' for s in sections)
    compared = ", ".join(labels[1:])
    subtitle = f"compared with: {esc(compared)}" if compared else ""
    return "\n".join(
        [
            "<!DOCTYPE html>",
            '<html lang="en">\n<head>\n<meta charset="utf-8">',
            f"<title>interp report: {esc(main.path.name)}</title>",
            f"<style>{PAGE_STYLE}</style>",
            "<script>window.PlotlyConfig = {MathJaxConfig: 'local'};</script>",
            f'<script charset="utf-8">{get_plotlyjs()}</script>',
            "</head>\n<body>",
            f"<h1>interp report: {esc(main.path.name)} <small>({esc(labels[0])})</small></h1>",
            findings,
            *[f'<p class="banner">Warning: {esc(line)}</p>' for line in banners],
            f"<p>{subtitle}</p>" if subtitle else "",
            f"<nav>{nav}</nav>",
            *[section_html(s, views) for s in sections],
            "</body>\n</html>\n",
        ]
    )


def _standalone(item: Figure) -> str:
    if item.plot is not None:
        return pio.to_html(
            item.plot,
            full_html=True,
            include_plotlyjs="directory",
            div_id=item.name,
            config=PLOTLY_CONFIG,
        )
    return (
        f'<!DOCTYPE html>\n<html lang="en">\n<head><meta charset="utf-8">'
        f"<title>{esc(item.title)}</title></head>\n<body>\n<h3>{esc(item.title)}</h3>\n"
        f"{item.view}\n</body>\n</html>\n"
    )


def write_page_text(path: Path, text: str) -> None:
    if path.is_file() and path.read_text(encoding="utf-8") == text:
        return  # unchanged: keep the file as it is
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))
    path.chmod(0o644)  # a page to share (the temp file it was renamed from is private)


def write_figure_files(folder: Path, sections: Sequence[Section]) -> list[Path]:
    from plotly.offline import get_plotlyjs

    written = []
    items = [item for s in sections for item in s.items]
    if any(item.plot is not None for item in items):
        write_page_text(folder / "plotly.min.js", get_plotlyjs())
    for item in items:
        path = folder / f"{item.name}.html"
        write_page_text(path, _standalone(item))
        written.append(path)
        if item.data is not None:  # a circuit's graph: the numbers it is drawn from
            data = json.dumps(item.data, indent=1, sort_keys=True, allow_nan=False) + "\n"
            write_page_text(folder / f"{item.name}.json", data)
            written.append(folder / f"{item.name}.json")
        if item.svg is not None:
            write_page_text(folder / f"{item.name}.svg", item.svg)
            written.append(folder / f"{item.name}.svg")
    return written


OWN_FILES = EXPORT_FILES  # in figures/: the html/png files export wrote there (see Run)


def write_pngs(folder: Path, sections: Sequence[Section]) -> tuple[list[Path], str]:
    """Static PNGs of the plotly figures, with kaleido or else headless Chromium; one line
    says what happened (nothing fails when neither works)."""
    items = [item for s in sections for item in s.items if item.plot is not None]
    try:
        paths = [_kaleido_png(folder, item) for item in items]
        return paths, f"PNG: {len(paths)} images written with kaleido into {folder}"
    except Exception as err:  # kaleido missing, or it cannot start its browser
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
    browser = chromium_path()
    if browser is None:
        return [], (
            f"PNG skipped: no static exporter here (kaleido: {reason}; no chromium on PATH)"
        )
    paths = [_chromium_png(browser, folder, item) for item in items]
    done = [p for p in paths if p is not None]
    return done, f"PNG: {len(done)} of {len(items)} images written with headless Chromium"


def _kaleido_png(folder: Path, item: Figure) -> Path:
    import kaleido  # noqa: F401  (the import error is the message when it is missing)

    path = folder / f"{item.name}.png"
    item.plot.write_image(str(path), width=1100, height=item.plot.layout.height or 500)
    return path


def chromium_path() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


def _chromium_png(browser: str, folder: Path, item: Figure) -> Path | None:
    path = folder / f"{item.name}.png"
    height = int(item.plot.layout.height or 500) + 40
    command = [
        browser,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--hide-scrollbars",
        f"--screenshot={path}",
        f"--window-size=1100,{height}",
        "--virtual-time-budget=5000",
        (folder / f"{item.name}.html").resolve().as_uri(),
    ]
    try:
        subprocess.run(command, capture_output=True, timeout=60, check=True)
    except (subprocess.SubprocessError, OSError):
        return None
    return path if path.is_file() else None
