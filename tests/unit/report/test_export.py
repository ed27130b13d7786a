"""The visual export on the tiny model: figures, attention views, index.html, the command.

One tiny replay (6 examples, rounds 0..2) is shared: as it is ("bare": no probes, no
patching) and as a copy with probes and head patching added ("full").
"""

from __future__ import annotations

import html
import json
import re
import shutil
from pathlib import Path

import numpy as np
import plotly.graph_objects as go
import pytest
import torch
import typer
from export_runs import N_EXAMPLES, ROUNDS, build_runs
from typer.testing import CliRunner

from interp.cli import _user_errors
from interp.cli.export import export as export_command
from interp.errors import InterpError
from interp.metrics.rounds import compute_metrics
from interp.report import attention, figures
from interp.report.export import ExportConfig, export
from interp.report.run_page import load_metrics, load_patching, load_probes
from interp.runs.store import Run

N_LAYERS = 3  # the tiny model
N_HEADS = 4


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> tuple[Path, Path]:
    return build_runs(tmp_path_factory)


@pytest.fixture(scope="module")
def bare(runs) -> Run:
    return Run.open(runs[0])


@pytest.fixture(scope="module")
def full(runs) -> Run:
    return Run.open(runs[1])


@pytest.fixture(scope="module")
def exported(full, tiny_model, tmp_path_factory):
    """A copy of the full run, exported once: (result, bytes of every file written)."""
    run = _copy(full, tmp_path_factory.mktemp("exported"), "run")
    result = export([run], model=tiny_model)
    return result, {p.name: p.read_bytes() for p in [result.index, *result.figures]}


def _copy(run: Run, tmp_path: Path, name: str) -> Path:
    out = tmp_path / name
    shutil.copytree(run.path, out)
    return out


# --- figures ---------------------------------------------------------------------------------


def test_convergence_one_line_per_run_with_intervals(bare):
    # Resampling examples (6 clusters, above the floor): the run's 3 templates give none.
    metrics = compute_metrics(bare.rounds(), n_boot=200, cluster="example")
    fig = figures.convergence_figure({"plan A": metrics, "plan B": metrics})
    assert isinstance(fig, go.Figure)
    assert len(fig.data) == 2 * len(figures.CONVERGENCE_PANELS)
    assert {t.name for t in fig.data} == {"plan A", "plan B"}
    accuracy = fig.data[0]
    assert list(accuracy.x) == list(range(ROUNDS + 1))
    expected = [e["accuracy"]["value"] for e in metrics["per_round"]]
    assert list(accuracy.y) == pytest.approx(expected)
    lo = [e["accuracy"]["ci"][0] for e in metrics["per_round"]]
    assert np.asarray(accuracy.y) - np.asarray(accuracy.error_y.arrayminus) == pytest.approx(lo)
    changed = fig.data[len(figures.CONVERGENCE_PANELS) - 1]
    assert changed.y[0] is None  # no previous round at round 0


def test_convergence_needs_metrics():
    with pytest.raises(InterpError):
        figures.convergence_figure({})


@pytest.mark.parametrize("by", ["role", "option"])
def test_answer_flow_counts_every_example_between_rounds(bare, by):
    rounds = bare.rounds()
    fig = figures.answer_flow_figure(rounds, by=by)
    (sankey,) = fig.data
    assert sankey.type == "sankey"
    assert sum(sankey.link.value) == N_EXAMPLES * ROUNDS
    n_states = len(sankey.node.label) // (ROUNDS + 1)
    assert len(sankey.node.label) == n_states * (ROUNDS + 1)
    # Node labels carry the count of answers in that state at that round.
    counts = [int(re.search(r"\((\d+)\)$", label).group(1)) for label in sankey.node.label]
    assert sum(counts) == N_EXAMPLES * (ROUNDS + 1)


def test_answer_roles():
    import pandas as pd

    frame = pd.DataFrame(
        {"choice": [0, 1, 2, 1, -1], "label": [0, 2, 0, 0, 0], "target": [1, 1, 1, 2, 1]}
    ).assign(unknown=[2, 2, 2, 2, 2])
    assert figures.answer_roles(frame).tolist() == [
        "correct",
        "stereotyped",
        "unknown",
        "other",
        "unparsed",
    ]


def test_answer_flow_rejects_unknown_grouping(bare):
    with pytest.raises(InterpError):
        figures.answer_flow_figure(bare.rounds(), by="colour")


def test_position_bias_shares(bare):
    metrics = load_metrics(bare)
    fig = figures.position_bias_figure({"self-correct": metrics})
    n_options = len(metrics["per_round"][0]["position_share"])
    assert len(fig.data) == n_options
    totals = np.sum([np.asarray(bar.y, dtype=float) for bar in fig.data], axis=0)
    assert totals == pytest.approx(np.ones(ROUNDS + 1))


def test_probe_figures(full):
    tables = load_probes(full)["user-stereotype"]
    acc = figures.probe_accuracy_figure(tables["per_layer"], "stereotype")
    names = {t.name for t in acc.data}
    assert {"held-out accuracy", "control: shuffled labels", "control: random direction"} <= names
    line = next(t for t in acc.data if t.name == "held-out accuracy")
    assert list(line.x) == list(range(N_LAYERS))
    for name, column in [
        ("surface: bag of words", "bow_acc"),
        ("surface: length/punctuation", "length_acc"),
        ("validation accuracy (picks the layer)", "val_acc"),
        ("at the chat read-out (bare direction)", "transfer_centred_acc"),
    ]:
        trace = next(t for t in acc.data if t.name == name)
        assert list(trace.y) == pytest.approx(tables["per_layer"][column].tolist())
    (star,) = [t for t in acc.data if t.name == "layer chosen on validation"]
    assert star.x[0] == tables["summary"]["best_layer"]

    score = figures.concept_score_figure(tables["scores"], "stereotype")
    raw, change = score.data
    assert np.asarray(raw.z).shape == (N_LAYERS, ROUNDS + 1)
    assert np.asarray(change.z)[:, 0] == pytest.approx(np.zeros(N_LAYERS))
    grid = tables["scores"].pivot(index="layer", columns="round", values="mean")
    assert np.asarray(raw.z) == pytest.approx(grid.to_numpy())

    shift = figures.instruction_shift_figure(tables["shift"], "stereotype")
    assert len(shift.data) == 2 * ROUNDS  # cosine and norm, per round >= 1

    behaviour = figures.behaviour_probe_figure(tables["behaviour"])
    assert len(behaviour.data) == 3 * tables["behaviour"]["behaviour"].nunique()


def test_patching_figures(full):
    ((summary, table),) = load_patching(full).values()
    comps = figures.patching_components_figure(table, "r2 -> r0", value="effect")
    (heat,) = comps.data
    assert list(heat.x) == ["resid_post", "attn_out", "mlp_out"]
    z = np.asarray(heat.z, dtype=float)
    assert z.shape == (N_LAYERS, 3)
    # Must always hold: the final layer's residual stream at the read-out carries the whole
    # change, so patching it reproduces the source logits (effect 1.0).
    assert z[-1, 0] == pytest.approx(1.0, abs=1e-4)

    heads = figures.patching_heads_figure(table, "r2 -> r0")
    assert np.asarray(heads.data[0].z).shape == (N_LAYERS, N_HEADS)
    with pytest.raises(InterpError):
        figures.patching_heads_figure(table[table["component"] != "heads"])


def test_patching_figures_show_the_logit_change_when_the_rounds_do_not_differ(full):
    ((_, table),) = load_patching(full).values()
    reliable = table.assign(gap=1.0, gap_lo=0.5, gap_hi=1.5)
    unreliable = table.assign(gap=0.01, gap_lo=-0.2, gap_hi=0.3)
    assert figures.patching_value(reliable) == "effect"
    assert figures.patching_value(unreliable) == "delta"
    assert figures.patching_value(table.drop(columns=["gap_lo", "gap_hi"])) == "effect"
    fig = figures.patching_components_figure(unreliable, "r2 -> r0")
    assert "logit-difference change" in fig.layout.title.text
    rows = unreliable[unreliable["component"] == "mlp_out"].sort_values("layer")
    np.testing.assert_allclose(np.asarray(fig.data[0].z, float)[:, 2], rows["delta"])
    fig = figures.patching_components_figure(reliable, "r2 -> r0")
    assert "normalised effect" in fig.layout.title.text


def test_attention_pattern_figure_marks_rounds():
    patterns = torch.softmax(torch.randn(3, 12, 12), -1).numpy()
    fig = figures.attention_pattern_figure(
        patterns,
        ["L0.H0", "L1.H1", "L2.H3"],
        round_starts=[0, 5, 9],
        instruction_spans=[(6, 8)],
        readouts=[4, 8, 11],
    )
    heatmaps = [t for t in fig.data if t.type == "heatmap"]
    assert len(heatmaps) == 3
    z = np.asarray(heatmaps[0].z)
    assert z.dtype == np.uint8 and z.max() <= 100
    kinds = [shape.type for shape in fig.layout.shapes]
    assert kinds.count("rect") == 3  # the instruction span, on every panel
    with pytest.raises(InterpError):
        figures.attention_pattern_figure(patterns, ["one name"])


# --- attention -------------------------------------------------------------------------------


def test_transcript_marks_rounds_and_instructions(full, tiny_model):
    text = attention.transcript(full, 0, tiny_model.tokenizer)
    assert text.spans_known
    assert text.tokens == full.tokens()[0]
    rows = full.rounds()
    assert text.readouts == rows[rows["example_index"] == 0]["readout_pos"].tolist()
    assert text.round_of == sorted(text.round_of)  # rounds follow each other
    assert [text.round_of[p] for p in text.readouts] == list(range(ROUNDS + 1))
    assert len(text.instruction_spans) == ROUNDS  # self-correct: follow-ups are instructions
    for r in range(1, ROUNDS + 1):
        assert any(label.startswith(f"[R{r} instruction]") for label in text.labels)
        assert text.labels[text.readouts[r]].endswith(f"[R{r} read-out]")
    a, b = text.instruction_spans[0]
    decoded = tiny_model.tokenizer.decode(text.tokens[a:b])
    assert "unbiased" in decoded


def test_head_patterns_match_a_plain_cache(full, tiny_model):
    tokens = full.tokens()[1]
    patterns = attention.head_patterns(tiny_model, tokens, [(2, 1), (0, 3)])
    _, cache = tiny_model.run_with_cache(torch.tensor([tokens]))
    assert torch.allclose(patterns[0], cache["blocks.2.attn.hook_pattern"][0, 1])
    assert torch.allclose(patterns[1], cache["blocks.0.attn.hook_pattern"][0, 3])
    rows = attention.readout_rows(tiny_model, tokens, [5, len(tokens) - 1])
    assert torch.allclose(rows[2, 1, 1], patterns[0, -1])


def test_parse_and_rank_heads(full):
    assert attention.parse_heads(["2.3", "0.1,1.0", "L2.H3"], 3, 4) == [(2, 3), (0, 1), (1, 0)]
    for bad in (["3.0"], ["0.4"], ["x"]):
        with pytest.raises(InterpError):
            attention.parse_heads(bad, 3, 4)
    ((_, table),) = load_patching(full).values()
    top = attention.top_patched_heads(table, 2)
    heads = table[table["component"] == "heads"]
    best = heads.loc[heads["effect"].abs().idxmax()]
    assert top[0] == (int(best["layer"]), int(best["head"]))
    assert len(top) == 2


def test_readout_mass_sums_to_one(full, tiny_model):
    text = attention.transcript(full, 0, tiny_model.tokenizer)
    patterns = attention.head_patterns(tiny_model, text.tokens, [(1, 2)])
    mass = attention.readout_attention_mass(patterns, text, [(1, 2)])
    totals = mass.groupby("round")["mass"].sum()
    assert totals.to_numpy() == pytest.approx(np.ones(ROUNDS + 1), abs=0.01)
    fig = figures.readout_attention_figure(mass)
    assert len(fig.data) == mass["segment"].nunique()


def test_circuitsvis_views_are_inline_and_fixed(full, tiny_model):
    text = attention.transcript(full, 0, tiny_model.tokenizer)
    heads = [(0, 1), (2, 2)]
    patterns = attention.head_patterns(tiny_model, text.tokens, heads)
    first = attention.readout_tokens_view(patterns, text, heads, div_id="a")
    again = attention.readout_tokens_view(patterns, text, heads, div_id="a")
    assert first == again  # no random ids
    assert 'id="a"' in first and "circuits-vis-" not in first
    assert "unpkg.com" not in first and "var CircuitsVis=" in first  # the bundle, inline
    grid = attention.attention_heads_view(patterns, text, heads, div_id="b")
    shared = attention.share_bundle([first, grid])
    assert "var CircuitsVis=" in shared[0] and "var CircuitsVis=" not in shared[1]
    assert len(shared[1]) < len(grid) - 1_000_000 and 'id="b"' in shared[1]


# --- the report ------------------------------------------------------------------------------


def _no_cdn(page: str) -> None:
    remote = re.findall(
        r"<(?:script|link|img|iframe)\b[^>]*\b(?:src|href)\s*=\s*[\"']?(?:https?:)?//", page
    )
    assert remote == []


def test_full_report_has_every_section(full, exported):
    result, _ = exported
    run = result.index.parent
    assert result.index == run / "index.html"
    assert result.notes == [
        "Attention over the transcript: circuitsvis' attention-heads view, for "
        f"{len(full.tokens()[0])} tokens (it draws slowly past "
        f"{attention.MAX_HEADS_VIEW_TOKENS}); the pattern heatmap shows the same patterns"
    ]
    names = {p.stem for p in result.figures}
    assert {
        "convergence",
        "flow-role",
        "flow-option",
        "position-bias",
        "probe-user-stereotype-accuracy",
        "probe-user-stereotype-score",
        "probe-user-stereotype-shift",
        "attention-readout",
        "attention-patterns",
        "attention-readout-mass",
    } <= names
    assert any(n.startswith("patching-") and n.endswith("-heads") for n in names)
    assert any(n.startswith("patching-") and n.endswith("-components") for n in names)
    page = result.index.read_text()
    for name in names:
        assert f'data-target="{name}"' in page
    assert "the heads with the largest |normalised effect|" in page
    probe_summary = load_probes(full)["user-stereotype"]["summary"]
    assert f"layer {probe_summary['best_layer']} chosen on a validation split" in page
    assert "Surface baselines on the same split: bag of words" in page
    if probe_summary["surface_warning"]:  # escaped, as the page shows it
        assert f"Warning: {html.escape(probe_summary['surface_warning'])}" in page
    assert page.count("var CircuitsVis=") == 1  # the bundle once
    assert page.count("Plotly.newPlot") == sum(1 for n in names if n != "attention-readout")
    _no_cdn(page)
    assert "not run for this run" not in page
    manifest = Run.open(run).manifest
    for text in (manifest["plan"]["followups"][0], "tiny", "builtin"):
        assert text in page


def test_bare_report_notes_what_is_missing(bare, tiny_model, tmp_path, monkeypatch):
    import interp.report.html as page_html

    monkeypatch.setattr(page_html, "chromium_path", lambda: None)  # and kaleido is not here
    run = _copy(bare, tmp_path, "run")
    result = export([run], ExportConfig(png=True), model=tiny_model)
    assert result.png is not None and "\n" not in result.png
    pngs = list((run / "figures").glob("*.png"))
    assert result.png.startswith("PNG skipped") == (pngs == [])
    page = result.index.read_text()
    assert any(n.startswith("Probes") and "not run" in n for n in result.notes)
    assert any(n.startswith("Patching") and "not run" in n for n in result.notes)
    assert page.count("not run for this run") == 2
    assert "probe-" not in " ".join(p.name for p in result.figures)
    # No head patching: the heads attending most to the instructions, said as such.
    assert "no head patching in this run" in page
    assert (run / "figures" / "attention-readout.html").is_file()


def test_export_twice_gives_identical_bytes(full, exported, tiny_model, tmp_path):
    first, before = exported
    second = export([first.index.parent], model=tiny_model)
    after = {p.name: p.read_bytes() for p in [second.index, *second.figures]}
    assert before == after
    # The same run in another folder gives the same page: nothing depends on where it is.
    (tmp_path / "elsewhere").mkdir()
    moved = _copy(full, tmp_path / "elsewhere", "run")
    assert export([moved], model=tiny_model).index.read_bytes() == before["index.html"]


def test_standalone_figure_pages_work_offline(exported):
    result, _ = exported
    folder = result.index.parent / "figures"
    assert (folder / "plotly.min.js").is_file()
    for path in result.figures:
        page = path.read_text()
        _no_cdn(page)
        assert path.stem in page


def test_several_runs_are_compared(full, bare, tiny_model, tmp_path):
    first, second = _copy(full, tmp_path, "a"), _copy(bare, tmp_path, "b")
    result = export([first, second], model=tiny_model)
    page = result.index.read_text()
    assert "self-correct (a)" in page and "self-correct (b)" in page
    assert result.index.parent == first
    assert not (second / "index.html").exists()


def test_named_heads_and_example(full, tiny_model, tmp_path):
    run = _copy(full, tmp_path, "run")
    result = export([run], ExportConfig(heads=("2.3", "0.0"), example_index=3), model=tiny_model)
    page = result.index.read_text()
    assert "Heads L2.H3, L0.H0: heads named on the command line" in page
    assert "Example 3 (" in page


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"example_index": 99}, "out of range"),
        ({"heads": ("7.0",)}, "layers 0..2"),
    ],
)
def test_bad_options_are_user_errors(full, tiny_model, tmp_path, kwargs, message):
    run = _copy(full, tmp_path, "run")
    with pytest.raises(InterpError, match=message):
        export([run], ExportConfig(**kwargs), model=tiny_model)


def test_missing_run_dir_is_a_user_error(tmp_path):
    with pytest.raises(InterpError, match="no run directory"):
        export([tmp_path / "nowhere"])
    with pytest.raises(InterpError):
        export([])


# --- the command ------------------------------------------------------------------------------


def _app() -> typer.Typer:
    app = typer.Typer()
    app.command("export")(_user_errors(export_command))

    @app.command("other")
    def other() -> None:  # a second command, so that "export" is a subcommand
        pass

    return app


def test_command_prints_the_index_path_last(full, tmp_path):
    run = _copy(full, tmp_path, "run")
    result = CliRunner().invoke(_app(), ["export", "--run", str(run), "--heads", "1.2"])
    assert result.exit_code == 0, result.output
    assert result.output.strip().splitlines()[-1] == f"wrote {run / 'index.html'}"
    result = CliRunner().invoke(_app(), ["export", "--run", str(run), "--json"])
    assert json.loads(result.output)["index"] == str(run / "index.html")


def test_command_user_errors_exit_2(tmp_path):
    result = CliRunner().invoke(_app(), ["export", "--run", str(tmp_path / "missing")])
    assert result.exit_code == 2
    assert "error: no run directory" in result.output


# --- issue 25: the answer at a glance --------------------------------------------------------


def test_attention_pattern_ticks_never_overlap():
    """Each read-out sits just before the next round's start: their labels share one tick."""
    ticks, labels = figures.pattern_ticks(300, [0, 100, 200], [96, 196, 299])
    assert ticks == [0, 96, 196, 299]
    assert labels == ["R0", "R0 read-out / R1", "R1 read-out / R2", "R2 read-out"]
    assert all(b - a >= 300 / 25 for a, b in zip(ticks, ticks[1:], strict=False))
    # far apart, every tick keeps its own label
    assert figures.pattern_ticks(300, [0, 150], [100, 299])[1] == [
        "R0",
        "R0 read-out",
        "R1",
        "R1 read-out",
    ]


def _metrics(acc: list[float], ci: list | None, flag: bool) -> dict:
    per_round = [
        {"round": r, "accuracy": {"value": a, "ci": ci}, "position_share": [1.0, 0.0, 0.0]}
        for r, a in enumerate(acc)
    ]
    floor = {
        "flag": flag,
        "chance": 1 / 3,
        "share_threshold": 0.8,
        "rounds": [{"round": r} for r in range(len(acc))] if flag else [],
        "line": "answers are driven by position",
    }
    return {
        "rounds": list(range(len(acc))),
        "n_examples": 8,
        "per_round": per_round,
        "model_floor": floor,
        "bootstrap": {"n_boot": 1000, "cluster": {"n_clusters": 3}},
    }


def test_findings_rows_put_the_run_beside_its_control_with_caveats():
    import pandas as pd

    from interp.report.findings import behaviour_rows, concept_rows, findings_html

    main = _metrics([0.25, 0.5], None, flag=True)
    control = _metrics([0.3, 0.31], [0.1, 0.5], flag=False)
    raw, debiased = behaviour_rows(main, ("baseline", control))
    assert raw.cells[1] == (
        "run 0.500 <small>n/a (3 clusters &lt; floor 5)</small><br>"
        "control 0.310 <small>[0.100, 0.500]</small>"
    )
    assert raw.caveats == [
        "position floor (run, rounds 0, 1): one option letter takes over 80% of the answers "
        "and accuracy's interval includes chance 0.333: behaviour says little about content"
    ]
    assert debiased.span.startswith("n/a (not a permuted run")
    scores = pd.DataFrame(
        {
            "layer": [2, 2],
            "round": [0, 1],
            "mean": [-0.5, -0.7],
            "lo": [-0.6, -0.8],
            "hi": [-0.4, -0.6],
            "n": [8, 8],
        }
    )
    paired = pd.DataFrame(
        {
            "layer": [2, 2],
            "round": [0, 1],
            "run": [-0.5, -0.7],
            "control": [-0.5, -0.65],
            "diff": [0.0, -0.05],
            "lo": [0.0, -0.1],
            "hi": [0.0, 0.02],
        }
    )
    summary = {
        "best_layer": 2,
        "n_boot": 1000,
        "cluster": {"n_clusters": 12},
        "transfer": {"transfer_centred_acc": 0.49, "warning": "does not separate them"},
    }
    (row,) = concept_rows({"stereotype": {"summary": summary, "scores": scores, "control": paired}})
    assert "run − control -0.0500 <small>[-0.100, 0.0200]</small>" in row.cells[1]
    assert row.caveats[0].startswith(
        "read-out transfer: the direction does not transfer to the "
        "chat read-out (0.490 vs chance 0.5)"
    )
    assert "covers 0 in round 1" in row.caveats[1]
    box = findings_html([0, 1], [raw, debiased, row], "<p>links</p>", "baseline (B)")
    assert box.startswith('<section id="findings"')
    assert box.count("<tr>") == 4 and "<p>links</p>" in box


def test_findings_box_opens_the_page_and_its_links_resolve(exported):
    result, _ = exported
    page = result.index.read_text()
    box = page[page.index('<section id="findings"') : page.index("</section>")]
    # first on the page: before the warnings, the manifest and every section
    assert page.index('<section id="findings"') < min(
        page.index(s)
        for s in ('class="banner"', "<nav>", '<section id="runs-and-metrics"')
        if s in page
    )
    for row in (
        "behaviour: accuracy (raw)",
        "concept score: user-stereotype",
        "patching: strongest",
    ):
        assert row in box
    anchors = re.findall(r'href="#([^"]+)"', box)
    files = re.findall(r'href="([^"#][^"]*)"', box)
    assert anchors and files
    for anchor in anchors:
        assert f'id="{anchor}"' in page
    for file in files:
        assert (result.index.parent / html.unescape(file)).is_file(), file
    figures_on_page = re.findall(
        r'<figure class="fig" data-kind="\w+" data-target="([\w-]+)"', page
    )
    assert sorted(anchors) == sorted(f"fig-{n}" for n in figures_on_page)  # every figure
