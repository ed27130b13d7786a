"""``interp export``: every figure a run has data for, as files and one offline ``index.html``.

Written into the (first) run directory::

    figures/<name>.html    one page per figure (plotly: beside figures/plotly.min.js)
    figures/<name>.png     with ``png=True``, where a static exporter works here
    index.html             the manifest in brief, the metrics table, every figure and
                           attention view, notes on what has not been run

``index.html`` is self-contained: plotly.js is inlined once, circuitsvis views carry their
bundle, nothing is fetched. Element ids are fixed and nothing depends on the clock, so the
same run exports to the same bytes. With several runs (e.g. one per plan), convergence,
position bias, the manifest and the metrics compare them all; answer flow, probes, patching
and attention are drawn for the first.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from transformer_lens import HookedTransformer

from interp.errors import InterpError
from interp.metrics.debias import debiased_rounds, is_permuted
from interp.metrics.rounds import model_floor
from interp.metrics.winogender import format_winogender_metrics
from interp.report import attention, figures, sae_figures
from interp.report.findings import build_findings
from interp.report.html import (
    ExportResult,
    Figure,
    Section,
    anchor_slug,
    debiased_html,
    definitions_html,
    esc,
    load_metrics,
    manifest_html,
    metrics_html,
    render_page,
    write_figure_files,
    write_page_text,
    write_pngs,
)
from interp.report.tables import fixed
from interp.runs.lock import run_lock
from interp.runs.store import Run
from interp.stats import cluster_caveat, interval_text, sig3

MAX_HEADS = 4  # heads in the attention views when patching or the fallback chooses them


def write_run_pages(
    runs: Sequence[str | Path],
    *,
    heads: Sequence[str] | None = None,
    example: int = 0,
    png: bool = False,
    model: HookedTransformer | None = None,
) -> ExportResult:
    """What :func:`interp.report.export.export` (the verb, the entry to use) does, its config
    unpacked: the figures of ``runs`` and an ``index.html`` into the first run directory.

    Args:
        runs: run directories; the first is the one reported in depth, the others are
            compared with it (convergence, position bias, metrics).
        heads: heads for the attention views (``"12.3"`` = layer 12, head 3); default: the
            heads patching ranks highest, else those attending most to the instructions.
        example: the example (``example_index``) whose transcript the attention views show.
        png: also write ``figures/<name>.png`` where a static exporter works.
        model: the first run's model, if loaded (otherwise loaded for the attention views).
    """
    if not runs:
        raise InterpError("export needs at least one run directory (--run DIR)")
    from interp.report.experiment_page import export_experiment, is_experiment

    if any(is_experiment(path) for path in runs):  # an experiment directory: its own page
        if len(runs) > 1 or heads:
            raise InterpError(
                "an experiment directory exports on its own: give only --run DIR (and --png)"
            )
        return export_experiment(runs[0], png=png)
    opened = [Run.open(path) for path in runs]
    # One writer per run directory (interp.runs.lock): only the first run is written into.
    with run_lock(opened[0].path):
        return _export_locked(opened, heads, example, png, model)


def _export_locked(
    opened: list[Run],
    heads: Sequence[str] | None,
    example: int,
    png: bool,
    model: HookedTransformer | None,
) -> ExportResult:
    labels = run_labels(opened)
    metrics = {label: load_metrics(run) for label, run in zip(labels, opened, strict=True)}
    main = opened[0]
    # Attention first: it checks --example and --heads before the slower figures are made.
    attention_part = _attention_section(main, heads, example, model)
    wino = [m.get("task") == "winogender" for m in metrics.values()]
    if any(wino) and not all(wino):
        raise InterpError("export: Winogender runs compare only with Winogender runs")
    probes: dict[str, dict[str, Any]] = {}  # filled by the probe section (controls included)
    sections = [
        _overview_section(opened, labels, metrics),
        _winogender_section(metrics)
        if all(wino)
        else _behaviour_section(main, metrics, several=len(opened) > 1),
        _probe_section(main, opened[1:], probes),
        _patching_section(main),
        *_circuit_sections(main),
        *_feature_circuit_sections(main),
        *_sae_sections(main),
        attention_part,
        *_experiment_sections(main),
    ]
    folder = main.analysis_dir("figures")
    index = main.path / "index.html"
    # index.html is written last; removed first, so a killed export never leaves a page over
    # figures of two different exports. The manifest lists every file export may have made.
    index.unlink(missing_ok=True)
    before = main.export_files()
    planned = [f"{item.name}.html" for s in sections for item in s.items]
    planned += [f"{i.name}.json" for s in sections for i in s.items if i.data is not None]
    planned += [f"{i.name}.svg" for s in sections for i in s.items if i.svg is not None]
    if png:
        planned += [
            f"{item.name}.png" for s in sections for item in s.items if item.plot is not None
        ]
    main.write_export_files(before | set(planned))
    written = write_figure_files(folder, sections)
    # Each circuit's own drawings (circuits/<name>/graph.*) again: an SVG once Graphviz is
    # installed, without recomputing the circuit.
    for name in main.analyses("circuits"):
        from interp.circuits.export import write_graph_files

        write_graph_files(main, name)
    for name in main.analyses("feature_circuits"):  # and each feature circuit's graph.html
        from interp.circuits.feature_export import write_feature_graph_files

        with contextlib.suppress(InterpError):  # a damaged one: the section's note says so
            write_feature_graph_files(main, name)
    banners = floor_banners(labels, metrics)
    png_note = None
    if png:
        pngs, png_note = write_pngs(folder, sections)
        written += pngs
    # Figures of an earlier export that this one did not write (e.g. a removed analysis).
    main.remove_export_files(before - {p.name for p in written})
    main.write_export_files({p.name for p in written})
    findings = build_findings(
        main, labels, metrics, opened[1:], probes, load_patching(main), sections
    )
    page = render_page(main, labels, sections, banners=banners, findings=findings)
    write_page_text(index, page)
    notes = [f"{s.title}: {note}" for s in sections for note in s.notes]
    return ExportResult(index, written, notes, png_note)


# --- reading a run ----------------------------------------------------------------------------


def run_labels(runs: Sequence[Run]) -> list[str]:
    """The plan's name per run; with the run folder's name where plans repeat."""
    plans = [str(run.manifest["plan"]["name"]) for run in runs]
    labels = [
        plan if plans.count(plan) == 1 else f"{plan} ({run.path.name})"
        for plan, run in zip(plans, runs, strict=True)
    ]
    # Same plan and same folder name (a/run, b/run): number them, labels key the figures.
    return [
        label if labels.count(label) == 1 else f"{label} #{i + 1}" for i, label in enumerate(labels)
    ]


def floor_banners(labels: Sequence[str], metrics: dict[str, dict[str, Any]]) -> list[str]:
    """One line per run whose answers sit at the model's floor (``metrics.model_floor``;
    computed from the metrics dict for a metrics.json written before the field existed)."""
    lines = []
    for label in labels:
        if metrics[label].get("task") == "winogender":  # no options by position: no floor
            continue
        floor = metrics[label].get("model_floor") or model_floor(metrics[label])
        if floor["flag"]:
            prefix = f"{label}: " if len(labels) > 1 else ""
            lines.append(f"{prefix}{floor['line']}")
    return lines


def load_probes(run: Run) -> dict[str, dict[str, Any]]:
    """concept -> its tables (per_layer, scores, shift, behaviour; those present) and
    summary, from ``<run>/probes/<concept>/``."""
    out: dict[str, dict[str, Any]] = {}
    # Run.analyses lists complete ones only: a killed probe's folder has no summary.json.
    for concept in run.analyses("probes"):
        names = ("per_layer", "scores", "shift", "behaviour", "control")
        found = run.read_analysis("probes", concept, tables=names)
        if "per_layer" not in found.tables:
            continue  # not a probe's folder
        out[concept] = {**found.tables, "summary": found.summary}
    return out


def load_patching(run: Run) -> dict[str, tuple[dict[str, Any], pd.DataFrame]]:
    """name -> (JSON summary, summary table of its main method) from ``<run>/patching/``."""
    out: dict[str, tuple[dict[str, Any], pd.DataFrame]] = {}
    for name in run.analyses("patching"):
        found = run.read_analysis("patching", name, tables=[])
        summary = found.summary
        if "table" in summary:
            table = pd.DataFrame(summary["table"])
        elif (per_example := run.read_analysis("patching", name).tables.get("")) is not None:
            from interp.patching import summarize

            table = summarize(per_example, n_boot=0)
        else:
            continue
        for column in ("effect", "effect_lo", "effect_hi"):
            if column in table:
                table[column] = pd.to_numeric(table[column], errors="coerce")
        method = summary.get("config", {}).get("method")
        if method is not None and "method" in table:
            table = table[table["method"] == method]
        out[name] = (summary, table)
    return out


# --- sections ---------------------------------------------------------------------------------


def _overview_section(
    runs: Sequence[Run], labels: Sequence[str], metrics: dict[str, dict[str, Any]]
) -> Section:
    parts = []
    for run, label in zip(runs, labels, strict=True):
        parts.append(f"<h3>{esc(label)} <small>({esc(run.path.name)})</small></h3>")
        parts.append(manifest_html(run.manifest))
        if metrics[label].get("task") == "winogender":
            parts.append(f"<pre>{esc(format_winogender_metrics(metrics[label]))}</pre>")
        else:
            parts.append(metrics_html(metrics[label]))
        if metrics[label].get("debiased"):  # a permuted run: raw beside debiased
            parts.append(debiased_html(metrics[label]))
    first = next(iter(metrics.values()))
    parts.append(definitions_html(first.get("definitions", {})))
    return Section("Runs and metrics", intro="\n".join(parts))


def _winogender_section(metrics: dict[str, dict[str, Any]]) -> Section:
    section = Section("Winogender: P(female) against BLS % female")
    section.items.append(
        Figure(
            "winogender-scatter",
            "P(female) per occupation",
            figures.winogender_scatter_figure(metrics),
            caption="Each point an occupation: its items' mean P(female) / (P(female) + "
            "P(male)) at the read-out against the U.S. Bureau of Labor Statistics' % female; "
            "one panel per round, one colour per run; r is Pearson's.",
        )
    )
    return section


def _behaviour_section(main: Run, metrics: dict[str, dict[str, Any]], several: bool) -> Section:
    first = next(iter(metrics))
    compared = " (one line per plan)" if several else ""
    section = Section("Behaviour across rounds")
    flow_rounds, answers, letter = main.rounds(), "answers", "letter"
    if is_permuted(flow_rounds):  # flows of content answers, not of positions
        space = (metrics[first].get("debiased") or {}).get("space", "prob")
        flow_rounds = debiased_rounds(flow_rounds, space)
        answers = f"debiased answers (each base example's option orders averaged, {space} space)"
        letter = "(in the original order of the options)"
    section.items += [
        Figure(
            "convergence",
            "Convergence",
            figures.convergence_figure(metrics),
            caption=f"Per-round metrics with 95% bootstrap intervals{compared}.",
        ),
        Figure(
            "flow-role",
            "Answer flow by role",
            figures.answer_flow_figure(flow_rounds, by="role"),
            caption=f"{esc(first)}: how many {answers} moved between correct, stereotyped, "
            "unknown and other from one round to the next.",
        ),
        Figure(
            "flow-option",
            "Answer flow by option",
            figures.answer_flow_figure(flow_rounds, by="option"),
            caption=f"{esc(first)}: the same flows by the option {letter} chosen.",
        ),
        Figure(
            "position-bias",
            "Position bias",
            figures.position_bias_figure(metrics),
            caption="Share of answers per option letter; dashed: a uniform share.",
        ),
    ]
    return section


def _probe_section(
    main: Run, others: Sequence[Run] = (), found: dict[str, dict[str, Any]] | None = None
) -> Section:
    """The probe figures; ``found`` (if given) receives each concept's tables, a control's
    paired table included, for the findings box."""
    section = Section("Probes: concepts across rounds")
    probes = load_probes(main)
    if not probes:
        section.notes.append(
            "not run for this run; add them with `interp probe --run RUN --concept stereotype` "
            "(or interp.probe), then export again"
        )
    for concept, tables in probes.items():
        slug = anchor_slug(concept)
        summary = tables["summary"]
        builders = (
            ("per_layer", "accuracy", "Probe accuracy", figures.probe_accuracy_figure),
            ("scores", "score", "Concept score", figures.concept_score_figure),
            ("shift", "shift", "Instruction shift", figures.instruction_shift_figure),
        )
        for table, suffix, title, build in builders:
            if table not in tables:
                section.notes.append(f"{concept}: no {table}.parquet")
                continue
            caption = _probe_caption(summary) if table == "per_layer" else ""
            plot = build(tables[table], concept)
            section.items.append(Figure(f"probe-{slug}-{suffix}", title, plot, caption=caption))
        behaviour = tables.get("behaviour")
        if behaviour is not None and behaviour["acc"].notna().any():
            plot = figures.behaviour_probe_figure(behaviour)
            section.items.append(Figure(f"probe-{slug}-behaviour", "Behaviour probes", plot))
        elif summary.get("behaviour_skipped"):
            section.notes.append(
                f"{concept}: behaviour probes skipped ({summary['behaviour_skipped']})"
            )
        elif behaviour is not None:
            section.notes.append(f"{concept}: behaviour probes undefined (one answer class only)")
        if "control" not in tables:
            tables = {**tables, **_exported_control(main, others, concept, summary)}
        if found is not None:
            found[concept] = tables
        section.items += _probe_control_items(concept, slug, tables, summary)
    return section


# Probe settings that must agree for two runs' concept scores to lie on the same directions.
_SAME_PROBE = ("concept", "concept_source", "method", "position", "score", "seed", "test_size")


def _exported_control(
    main: Run, others: Sequence[Run], concept: str, summary: dict[str, Any]
) -> dict[str, Any]:
    """A control among the exported runs, probed separately with the same settings: its
    paired difference from both runs' stored example scores (nothing if none qualifies)."""
    from interp.runs.controls import check_control
    from interp.stats import example_clusters
    from probes.api import paired_score_table

    for other in others:
        if concept not in other.analyses("probes") or "layers" not in summary:
            continue
        theirs = other.read_analysis("probes", concept, tables=[]).summary
        if any(theirs.get(k) != summary.get(k) for k in (*_SAME_PROBE, "layers")):
            continue
        try:
            checks = check_control(main, other)
        except InterpError:
            continue  # not the same examples, model or rounds: not a control of this run
        cluster = summary.get("cluster", {}).get("requested", "template")
        ids = example_clusters(main.rounds(), cluster).ids
        mine = main.read_analysis("probes", concept, ["example_scores"]).tables["example_scores"]
        other_scores = other.read_analysis("probes", concept, ["example_scores"])
        other_scores = other_scores.tables["example_scores"]
        frames = [
            paired_score_table(
                layer,
                _score_grid(mine, layer),
                _score_grid(other_scores, layer),
                ids,
                seed=int(summary.get("seed", 0)),
            )
            for layer in summary["layers"]
        ]
        info = {**checks, "layer": summary.get("best_layer")}
        return {"control": pd.concat(frames, ignore_index=True), "control_info": info}
    return {}


def _score_grid(example_scores: pd.DataFrame, layer: int) -> Any:
    rows = example_scores[example_scores["layer"] == layer]
    return rows.pivot(index="example_index", columns="round", values="score").to_numpy()


def _probe_control_items(
    concept: str, slug: str, tables: dict[str, Any], summary: dict[str, Any]
) -> list[Figure]:
    """The run beside its control run (``interp probe --control-run``), at the best layer."""
    control = tables.get("control")
    info = summary.get("control") or tables.get("control_info")
    if control is None or not info or "best_layer" not in summary:
        return []
    layer = int(summary["best_layer"])
    label = f"control ({info.get('plan')})"
    plot = figures.probe_control_figure(control, layer, concept, control_label=label)
    caption = (
        f"Left: mean concept score per round of this run and of its control run "
        f"<code>{esc(Path(str(info.get('run'))).name)}</code> (plan {esc(info.get('plan'))}: the "
        "same examples, model and rounds), projected on the same direction. Right: run − "
        "control with paired cluster-bootstrap 95% intervals; a trend the control shares is "
        "not an effect of the instruction."
    )
    return [Figure(f"probe-{slug}-control", "Run beside its control", plot, caption=caption)]


def _probe_caption(summary: dict[str, Any]) -> str:
    if "best_layer" not in summary:
        return ""
    acc = summary.get("accuracy", {})
    controls = summary.get("controls", {})
    text = (
        f"Method {esc(summary.get('method', '?'))}; layer {summary['best_layer']} chosen on a "
        f"validation split of the training pairs: test accuracy {fixed(acc.get('acc'))} "
        f"(shuffled-label control {fixed(controls.get('shuffled_acc'))}, random direction "
        f"{fixed(controls.get('random_acc'))})."
    )
    test = summary.get("test_chosen")
    if test:
        text += (
            f" Optimistic: layer {test['layer']} has the best test accuracy, "
            f"{fixed(test.get('acc'))}, chosen on the test split itself."
        )
    surface = summary.get("surface_baselines")
    if surface:
        text += (
            f" Surface baselines on the same split: bag of words {fixed(surface.get('bow_acc'))},"
            f" length/punctuation {fixed(surface.get('length_acc'))}."
        )
    if summary.get("surface_warning"):
        text += f" <strong>Warning: {esc(summary['surface_warning'])}.</strong>"
    transfer = summary.get("transfer") or {}
    if "transfer_centred_acc" in transfer:
        text += (
            " At the chat read-out (each statement as a user message, read at the end of the "
            f"answer prefix): bare direction {fixed(transfer.get('transfer_centred_acc'))} with "
            f"its threshold re-set ({fixed(transfer.get('transfer_acc'))} as learned), fitted "
            f"there {fixed(transfer.get('wrapped_acc'))}."
        )
    if transfer.get("warning"):
        text += f" <strong>Warning: {esc(transfer['warning'])}.</strong>"
    return text


def _patching_section(main: Run) -> Section:
    section = Section("Patching between rounds")
    results = load_patching(main)
    if not results:
        section.notes.append(
            "not run for this run; add it with `interp patch --run RUN --layer all --round "
            f"{main.n_rounds - 1} --component all` (or interp.patch), then export "
            "again"
        )
    for name, (summary, table) in results.items():
        slug, title = anchor_slug(name), _patch_title(summary, name)
        caption = _patch_caption(summary, table)
        if table["component"].isin(figures.PATCH_COMPONENTS).any():
            plot = figures.patching_components_figure(table, title)
            section.items.append(
                Figure(f"patching-{slug}-components", f"Patching {title}", plot, caption=caption)
            )
        if (table["component"] == "heads").any():
            plot = figures.patching_heads_figure(table, title)
            section.items.append(
                Figure(f"patching-{slug}-heads", f"Patching {title}, heads", plot, caption=caption)
            )
        control = summary.get("control")
        rows = pd.DataFrame(control["table"]) if control else None
        if rows is not None and rows["component"].isin(figures.PATCH_COMPONENTS).any():
            plot = figures.patching_control_figure(rows, title)
            section.items.append(
                Figure(
                    f"patching-{slug}-control",
                    f"Patching {title}: run beside its control",
                    plot,
                    caption=f"Patched − clean logit difference of this run, of its control run "
                    f"<code>{esc(Path(str(control.get('run'))).name)}</code> (plan "
                    f"{esc(control.get('plan'))}, patched the same way) and run − control; hover "
                    "the difference for its paired cluster-bootstrap 95% interval.",
                )
            )
    return section


def _circuit_sections(main: Run) -> list[Section]:
    """The circuits of ``interp circuit`` as graphs; no section when the run has none."""
    from interp.circuits.export import graph_data, graph_figure, graph_title, graphviz_svg

    names = main.analyses("circuits")
    if not names:
        return []
    section = Section("Circuits between rounds")
    for name in names:
        found = main.read_analysis("circuits", name, ["edges", "nodes", "faithfulness"])
        summary = found.summary
        data = graph_data(
            found.tables["edges"], found.tables["nodes"], summary, found.tables.get("faithfulness")
        )
        svg, svg_note = graphviz_svg(data, int(summary.get("top", 50)))
        if svg is None:
            section.notes.append(f"{name}: {svg_note}")
        verify = summary.get("verify") or {}
        why = data["interval_note"]
        files = " · ".join(
            f'<a href="circuits/{esc(name)}/{f}">{f}</a>'
            for f in ("graph.html", "graph.svg", "graph.dot", "graph.json")
            if (found.path / f).is_file() or f != "graph.svg"
        )
        caption = (
            f"<code>{esc(name)}</code>: {esc(summary.get('method'))} edge scores over "
            f"{summary.get('n_examples')} examples, round {summary['config']['round']} into round "
            f"{summary['config']['target_round']} at the read-out; value "
            f"{sig3(summary.get('target_value'))} (target) → "
            f"{sig3(summary.get('source_value'))} (source). {esc(_faithful_caption(summary))}; "
            f"top-{verify.get('k')} rank agreement with exact edge patching ρ = "
            f"{sig3(verify.get('spearman'), 'fewer than 3 edges verified')} (95% CI "
            f"{esc(interval_text(verify.get('ci'), why))}). "
            "Blue edges raise the value (towards the unbiased option), red lower it. "
            f"Files: {files}."
        )
        plot = graph_figure(data)
        section.items.append(
            Figure(
                f"circuit-{anchor_slug(name)}",
                graph_title(data),
                plot,
                caption=caption,
                data=data,
                svg=svg,
            )
        )
    return [section]


def _faithful_caption(summary: dict[str, Any]) -> str:
    """The faithfulness headline (``interp.circuits`` band rule), or why there is none."""
    if summary.get("faithful_refused"):
        return f"No faithfulness headline: {summary['faithful_refused']}"
    band = summary.get("faithful_band")
    if not band:  # a summary written before the band rule
        return (
            f"Smallest N reaching {summary.get('faithful_threshold')} of the full patch: "
            f"{summary.get('faithful_n')}"
        )
    shape = "monotone" if summary.get("faithful_monotone") else "not monotone"
    return (
        f"From N = {summary.get('faithful_n')} edges on, faithfulness stays within "
        f"[{band[0]:g}, {band[1]:g}] (curve {shape})"
    )


def _feature_circuit_sections(main: Run) -> list[Section]:
    """The feature circuits of ``interp feature-circuit``: both rounds' attribution graphs,
    their scores, the comparison and the interventions; no section when the run has none."""
    from interp.circuits import feature_export as fx

    names = main.analyses(fx.KIND)
    if not names:
        return []
    section = Section("Feature circuits between rounds")
    for name in names:
        try:
            data, found = fx.load_feature_graph(main, name)
        except InterpError as err:  # a damaged folder: the rest of the report still exports
            section.notes.append(str(err))
            continue
        files = sorted(
            p.name for p in found.path.iterdir() if p.name not in ("summary.json", "graph.json")
        )
        caption = (
            fx.summary_html(found.summary, files, f"{fx.KIND}/{name}")
            + fx.interventions_html(found.tables["interventions"])
            + fx.comparison_html(found.tables["comparison"])
        )
        section.items.append(
            Figure(
                f"feature-circuit-{anchor_slug(name)}",
                fx.feature_graph_title(data),
                fx.feature_graph_figure(data),
                caption=caption,
                data=data,
            )
        )
    return [section]


def _experiment_sections(main: Run) -> list[Section]:
    """``interp experiment NAME --run RUN`` analyses (RUN/experiments/NAME/), one section
    each; none when the run has none."""
    if not main.analyses("experiments"):
        return []
    from interp.report.experiment_page import run_experiment_sections

    return run_experiment_sections(main)


MAX_DASHBOARDS = 6  # context dashboards per SAE (each a circuitsvis view)


def _sae_sections(main: Run) -> list[Section]:
    """The "SAE features" section, only for a run with ``interp sae features`` outputs: per
    SAE the latent x round heatmap of its top latents, their changes against the shuffled
    control, the context dashboards, and feature patching with that SAE."""
    names = main.analyses("sae")
    if not names:
        return []
    section = Section("SAE features")
    patched = {
        name: (summary, table)
        for name, (summary, table) in load_patching(main).items()
        if isinstance(summary.get("sae"), dict)
    }
    for name in names:
        found = main.read_analysis("sae", name)
        summary, tables, slug = found.summary, found.tables, anchor_slug(name)
        top, hook = summary.get("top_latents", []), summary.get("sae", {}).get("hook", "")
        if not top:
            section.notes.append(f"{name}: no latent fires in the run")
            continue
        title = f"{name} at {hook}"
        plot = sae_figures.latent_round_figure(tables["latents"], top, title)
        caption = (
            f"{esc(name)}: {summary['latents_active']} of {summary['sae']['d_sae']} latents fire "
            f"in this run; rows are the {len(top)} latents whose mean activation changes most "
            "from round 0 (strongest first). Hover for the 95% interval and the firing rate."
        )
        section.items.append(
            Figure(f"sae-{slug}-latents", f"Latents x rounds: {title}", plot, caption=caption)
        )
        plot = sae_figures.latent_change_figure(tables["changes"])
        caption = (
            "Mean of (activation at the last round − at round 0) per example, 95% cluster-"
            "bootstrap interval. Dashed: the shuffled-round control (round labels permuted within "
            "each example), 95th percentile of the largest |change| of any latent."
        )
        section.items.append(
            Figure(f"sae-{slug}-changes", f"Changes: {title}", plot, caption=caption)
        )
        contexts = tables.get("contexts")
        if contexts is None or contexts.empty:
            section.notes.append(
                f"{name}: context dashboards; add them with `interp sae features --run RUN --sae "
                "SAE --contexts FILE` (a held-out text corpus)"
            )
        else:
            shown = [i for i in top if i in set(contexts["latent"])][:MAX_DASHBOARDS]
            for latent in shown:
                fig_id = f"sae-{slug}-contexts-{latent}"
                section.items.append(
                    Figure(
                        fig_id,
                        f"Latent {latent}: max-activating contexts",
                        view=sae_figures.context_view(contexts, latent, fig_id),
                        caption="Held-out corpus windows where the latent is strongest (strongest "
                        "first, separated by ⏎); each token coloured by the latent's activation.",
                    )
                )
        mine = {k: v for k, v in patched.items() if v[0]["sae"].get("name") == name}
        if not mine:
            section.notes.append(
                f"{name}: feature patching; add it with `interp patch --run RUN --round "
                f"{main.n_rounds - 1} --sae SAE --features top:8`"
            )
        for patch_name, (patch_summary, table) in mine.items():
            plot = sae_figures.feature_patching_figure(
                table, _patch_title(patch_summary, patch_name)
            )
            section.items.append(
                Figure(
                    f"sae-{slug}-patching-{anchor_slug(patch_name)}",
                    f"Feature patching: {patch_name}",
                    plot,
                    caption=_feature_patch_caption(patch_summary, table),
                )
            )
    return [section]


def _feature_patch_caption(summary: dict[str, Any], table: pd.DataFrame) -> str:
    value = figures.patching_value(table[table["component"] == "sae"])
    what = (
        "normalised effect (patched − target) / (source − target)"
        if value == "effect"
        else "change of the logit difference (patched − target; the rounds do not differ "
        "reliably on this measure, so the ratio is not shown)"
    )
    return (
        f"{esc(summary.get('name', ''))}: {what} of the logit difference (correct − stereotyped "
        f"option), mean over {summary.get('n_examples')} examples, 95% cluster-bootstrap "
        "interval. Bars: the chosen latents swapped together, then each alone; the target's "
        "reconstruction error is kept, so swapping nothing changes nothing."
    )


def _patch_title(summary: dict[str, Any], name: str) -> str:
    config = summary.get("config", {})
    if "round" not in config:
        return name
    return (
        f"round {config['round']} → round {config.get('target_round', 0)} "
        f"({config.get('direction', 'denoise')}, {config.get('method', 'exact')})"
    )


def _patch_caption(summary: dict[str, Any], table: pd.DataFrame) -> str:
    n = summary.get("n_examples")
    base = (summary.get("cluster") or {}).get("n_base_examples")
    if base is not None:  # a permuted run: rows are (example, order) pairs
        n = (
            f"{n} option orders of {base} base examples (each scored with its own letters; "
            "intervals resample base examples)"
        )
    name = esc(str(summary.get("name", "")))
    k = (summary.get("cluster") or {}).get("n_clusters")
    caveat = cluster_caveat(int(k)) if k is not None else None
    name += f" (intervals: {esc(caveat)})" if caveat else ""
    if figures.patching_value(table) == "delta":
        gap = table.iloc[0]
        return (
            f"{name}: change of the logit difference (correct − stereotyped option) that the "
            f"patch makes, mean over {n} examples. Shown instead of the normalised effect "
            f"because the rounds do not differ reliably on this measure: source − target = "
            f"{fixed(gap['gap'])} [{fixed(gap['gap_lo'])}, {fixed(gap['gap_hi'])}]. Hover for "
            "values and intervals."
        )
    return (
        f"{name}: normalised effect (patched − target) / "
        f"(source − target) of the logit difference (correct − stereotyped option), mean over "
        f"{n} examples; 1 = the patch carries the whole change between the rounds. Colours "
        "are capped at ±2; hover for values and intervals."
    )


def _attention_section(
    main: Run, heads: Sequence[str] | None, example: int, model: HookedTransformer | None
) -> Section:
    section = Section("Attention over the transcript")
    n_examples = len(main.tokens())
    if not 0 <= example < n_examples:
        raise InterpError(
            f"--example-index {example} is out of range: the run has examples 0..{n_examples - 1}"
        )
    model = model if model is not None else _load_run_model(main, section)
    if model is None:
        return section
    from interp.model.loading import check_run_model  # torch and TL load only for attention

    check_run_model(model, main.manifest.get("model", {}))
    text = attention.transcript(main, example, model.tokenizer)
    chosen, how = _choose_heads(main, model, text, heads)
    if not chosen:
        section.notes.append(how)
        return section
    patterns = attention.head_patterns(model, text.tokens, chosen)
    section.intro = _attention_intro(main, example, text, chosen, how)
    section.items += _attention_items(patterns, text, chosen, section)
    return section


def _load_run_model(run: Run, section: Section) -> HookedTransformer | None:
    from interp.model.loading import load_run_model

    model_id = run.manifest.get("model", {}).get("model_id")
    if model_id is None:
        section.notes.append("the manifest names no model, so attention cannot be computed")
        return None
    try:
        return load_run_model(run.manifest["model"])
    except InterpError as err:
        section.notes.append(f"the run's model ({model_id}) does not load here: {err}")
        return None


def _choose_heads(
    run: Run, model: HookedTransformer, text: attention.Transcript, heads: Sequence[str] | None
) -> tuple[list[attention.Head], str]:
    if heads:
        return attention.parse_heads(heads, model.cfg.n_layers, model.cfg.n_heads), (
            "heads named on the command line"
        )
    tables = [table for _, table in load_patching(run).values()]
    head_rows = [t for t in tables if (t["component"] == "heads").any()]
    if head_rows:
        chosen = attention.top_patched_heads(pd.concat(head_rows), attention_k(model))
        return chosen, "the heads with the largest |normalised effect| in head patching"
    chosen = attention.instruction_attention_heads(model, text, attention_k(model))
    if chosen:
        return chosen, (
            "no head patching in this run: the heads whose last read-out attends most to "
            "the instruction texts (pass --heads, or patch with --component heads)"
        )
    return [], (
        "no head patching in this run and no instruction spans to rank heads by; pass "
        "--heads LAYER.HEAD or run `interp patch ... --component heads`"
    )


def attention_k(model: HookedTransformer) -> int:
    return min(MAX_HEADS, model.cfg.n_layers * model.cfg.n_heads)


def _attention_intro(
    run: Run, example: int, text: attention.Transcript, chosen: list[attention.Head], how: str
) -> str:
    rows = run.rounds()
    example_id = rows.loc[rows["example_index"] == example, "example_id"].iloc[0]
    names = ", ".join(attention.head_name(h) for h in chosen)
    marks = (
        "Tokens are marked [R<i>] where round i's user message starts, "
        "[R<i> instruction] where an instruction starts, and [R<i> read-out] at each "
        "read-out position."
        if text.spans_known
        else "Only read-out positions mark the rounds ([R<i> read-out]): the round texts "
        "could not be rebuilt exactly from the manifest (e.g. a thinking plan)."
    )
    return (
        f"<p>Example {example} (<code>{esc(str(example_id))}</code>), "
        f"{len(text.tokens)} tokens. Heads {esc(names)}: {esc(how)}. {esc(marks)}</p>"
    )


def _attention_items(
    patterns: torch.Tensor,
    text: attention.Transcript,
    chosen: list[attention.Head],
    section: Section,
) -> list[Figure]:
    mass = attention.readout_attention_mass(patterns, text, chosen)
    items = [
        Figure(
            "attention-readout-mass",
            "Read-out attention by transcript part",
            figures.readout_attention_figure(mass),
            caption="Share of each head's attention from round r's read-out position.",
        ),
        Figure(
            "attention-readout",
            "Read-out attention over the tokens",
            view=attention.readout_tokens_view(patterns, text, chosen),
            caption="Pick a column: a head's attention from one round's read-out, the round "
            "of each token, or the instruction texts. Hover a token for all its values.",
        ),
    ]
    items.append(
        Figure(
            "attention-patterns",
            "Attention patterns",
            figures.attention_pattern_figure(
                patterns.numpy(),
                [attention.head_name(h) for h in chosen],
                round_starts=text.round_starts,
                instruction_spans=text.instruction_spans,
                readouts=text.readouts,
            ),
            caption="Query × key attention of each head. Grey lines: round boundaries; red "
            "columns: instruction texts; dotted red rows: read-out positions.",
        )
    )
    if len(text.tokens) <= attention.MAX_HEADS_VIEW_TOKENS:
        items.append(
            Figure(
                "attention-heads",
                "Attention patterns (circuitsvis)",
                view=attention.attention_heads_view(patterns, text, chosen),
                caption="Query × key attention of each head over the marked tokens; pick a "
                "head to enlarge it.",
            )
        )
    else:
        section.notes.append(
            f"circuitsvis' attention-heads view, for {len(text.tokens)} tokens (it draws "
            f"slowly past {attention.MAX_HEADS_VIEW_TOKENS}); the pattern heatmap shows the "
            "same patterns"
        )
    return items


# --- HTML -------------------------------------------------------------------------------------


# --- files ------------------------------------------------------------------------------------
