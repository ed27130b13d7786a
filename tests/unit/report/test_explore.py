"""The explorer's views (interp.report.explore) against the run's own tables, and the widget's
state -> data (interp.report.explore_widget), on the shared tiny runs (tests/export_runs.py)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from export_runs import N_EXAMPLES, ROUNDS, build_runs

from interp.errors import InterpError
from interp.report.explore import FILTERS, Explorer, view_state


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return build_runs(tmp_path_factory)


@pytest.fixture(scope="module")
def control(runs, tiny_model, tmp_path_factory):
    """The same examples under the baseline plan: a control run."""
    from interp.replay.loop import ReplayConfig, replay

    out = tmp_path_factory.mktemp("explore") / "control"
    replay(
        ReplayConfig(
            model="tiny",
            task="builtin",
            rounds=ROUNDS,
            limit=N_EXAMPLES,
            plan="baseline",
            out=str(out),
        ),
        model=tiny_model,
        progress=False,
    )
    return out


@pytest.fixture(scope="module")
def explorer(runs, control, tiny_model):
    return Explorer(runs[1], control=control, model=tiny_model)


def test_option_probabilities_are_the_rows_own_beside_the_controls(explorer, runs, control):
    rounds = pd.read_parquet(runs[1] / "rounds.parquet")
    theirs = pd.read_parquet(control / "rounds.parquet")
    for example in (0, 3):
        view = explorer.example_view(example, 1)
        assert view["round"] == 1 and len(view["rounds"]) == ROUNDS + 1
        for entry in view["rounds"]:
            row = rounds[(rounds.example_index == example) & (rounds["round"] == entry["round"])]
            other = theirs[
                (theirs.example_id == row.example_id.iloc[0]) & (theirs["round"] == entry["round"])
            ]
            assert np.allclose(entry["raw"], np.exp(row.option_logprobs.iloc[0]))
            assert np.allclose(entry["control"], np.exp(other.option_logprobs.iloc[0]))
            assert entry["choice"] == row.choice.iloc[0]
            assert entry["debiased"] is None  # not a permuted run
    json.dumps(view)  # JSON-ready


def test_transcript_marks_each_rounds_readout(explorer, runs):
    rounds = pd.read_parquet(runs[1] / "rounds.parquet")
    segments = explorer.example_view(2)["transcript"]["segments"]
    readouts = [s for s in segments if s["readout"]]
    expected = rounds[rounds.example_index == 2].sort_values("round")
    assert [(s["round"], s["start"]) for s in readouts] == list(
        zip(expected["round"], expected["readout_pos"], strict=True)
    )
    assert all(s["end"] == s["start"] + 1 for s in readouts)
    # the segments tile the transcript, and the instructions are marked in rounds 1..
    assert [s["start"] for s in segments[1:]] == [s["end"] for s in segments[:-1]]
    assert {s["round"] for s in segments if s["kind"] == "instruction"} == set(range(1, ROUNDS + 1))


def test_heatmap_is_the_stored_example_scores(explorer, runs):
    stored = pd.read_parquet(runs[1] / "probes" / "user-stereotype" / "example_scores.parquet")
    means = pd.read_parquet(runs[1] / "probes" / "user-stereotype" / "scores.parquet")
    view = explorer.concept_heatmap(4)
    for i, layer in enumerate(view["layers"]):
        for j, r in enumerate(view["rounds"]):
            cell = stored[
                (stored.layer == layer) & (stored.example_index == 4) & (stored["round"] == r)
            ]
            assert view["example"][i][j] == pytest.approx(float(cell.score.iloc[0]))
            mean = means[(means.layer == layer) & (means["round"] == r)]
            assert view["run_mean"][i][j] == pytest.approx(float(mean["mean"].iloc[0]))
    assert "interp probe --run" in view["control"]["missing"]  # the control has no probe


def test_heatmap_colour_scale_spans_the_values_shown(explorer):
    """The state's heatmap carries one colour scale for its maps: their values' range, and
    symmetric about 0 (diverging) where they straddle it."""
    view = view_state(explorer, {"example": 4})["heatmap"]
    values = [v for k in ("example", "run_mean") for row in view[k] for v in row if v is not None]
    scale = view["scale"]
    assert scale["min"] == pytest.approx(min(values)) and scale["max"] == pytest.approx(max(values))
    assert scale["lo"] <= min(values) and max(values) <= scale["hi"]
    if min(values) < 0 < max(values):
        assert scale["kind"] == "diverging"
        assert scale["lo"] == -scale["hi"] == pytest.approx(-max(-min(values), max(values)))
    else:
        assert scale["kind"] == "sequential"
        assert (scale["lo"], scale["hi"]) == pytest.approx((min(values), max(values)))


def test_colour_scale_diverges_only_across_zero():
    from interp.report.explore import colour_scale

    assert colour_scale([[[-1.0, 3.0], [None, 0.5]]]) == {
        "kind": "diverging",
        "lo": -3.0,
        "hi": 3.0,
        "min": -1.0,
        "max": 3.0,
    }
    assert colour_scale([[[1.0, 3.0]], [[2.0, None]]]) == {
        "kind": "sequential",
        "lo": 1.0,
        "hi": 3.0,
        "min": 1.0,
        "max": 3.0,
    }
    assert colour_scale([[[-4.0, -2.0]]])["kind"] == "sequential"
    assert colour_scale([[[None]]]) is None and colour_scale([]) is None


def test_filters_select_what_the_rounds_table_says(explorer, runs):
    rounds = pd.read_parquet(runs[1] / "rounds.parquet").sort_values(["example_index", "round"])
    first = rounds.groupby("example_index").first()
    last = rounds.groupby("example_index").last()
    expected = {
        "changed": first.choice != last.choice,
        "right_to_wrong": first.correct & ~last.correct,
        "wrong_to_right": ~first.correct & last.correct,
        "stereotyped": last.biased,
        "ambiguous": first.context_condition == "ambig",
        "disambiguated": first.context_condition == "disambig",
    }
    assert set(expected) == set(FILTERS)
    for name, mask in expected.items():
        assert list(explorer.examples("", [name]).example_index) == list(mask[mask].index), name
    both = expected["ambiguous"] & expected["stereotyped"]
    assert list(explorer.examples("", ["ambiguous", "stereotyped"]).example_index) == list(
        both[both].index
    )
    assert list(explorer.examples("builtin/3").example_index) == [3]
    with pytest.raises(InterpError, match="unknown filter"):
        explorer.examples("", ["nonsense"])


def test_patching_rows_are_the_examples(explorer, runs):
    name = next((runs[1] / "patching").glob("*.parquet"))
    stored = pd.read_parquet(name)
    view = explorer.patching_rows(1, layer=2)
    rows = view["analyses"][0]["rows"]
    mine = stored[(stored.example_index == 1) & (stored.layer == 2)]
    assert len(rows) == len(mine) > 0
    assert [r["effect"] for r in rows] == pytest.approx(list(mine.effect), abs=1e-5)


def test_views_without_data_name_their_command(runs):
    bare = Explorer(runs[0])
    assert "interp probe --run" in bare.concept_heatmap(0)["missing"]
    assert "interp patch --run" in bare.patching_rows(0)["missing"]
    assert "interp sae features --run" in bare.sae_latents(0)["missing"]
    assert "interp circuit --run" in bare.circuit_edges()["missing"]
    assert "control" in bare.metrics_tab()["control"]["missing"]


def test_metrics_tab_is_the_runs_metrics(explorer, runs, control):
    from interp.metrics.rounds import metrics_table

    stored = json.loads((runs[1] / "metrics.json").read_text())
    tab = explorer.metrics_tab()
    assert [r["accuracy"] for r in tab["raw"]] == pytest.approx(
        list(metrics_table(stored)["accuracy"]), abs=1e-6
    )
    theirs = json.loads((control / "metrics.json").read_text())
    assert [r["entropy"] for r in tab["control"]] == pytest.approx(
        list(metrics_table(theirs)["entropy"]), abs=1e-6
    )
    assert "permute" in tab["debiased"]["missing"]


def test_state_refuses_an_example_the_run_lacks(explorer):
    with pytest.raises(InterpError, match="example 99"):
        view_state(explorer, {"example": 99})
    with pytest.raises(InterpError, match="round 9"):
        view_state(explorer, {"round": 9})


def test_a_control_of_the_same_plan_is_refused(runs):
    with pytest.raises(InterpError, match="same plan"):
        Explorer(runs[1], control=runs[0])


def test_widget_traits_follow_the_state(runs, control, tiny_model):
    pytest.importorskip("anywidget")
    from interp.report.explore_widget import ExploreWidget, explore

    widget = explore(runs[1], control=control, model=tiny_model)
    assert isinstance(widget, ExploreWidget)
    assert (widget.example, widget.round) == (0, ROUNDS)  # the first example, the last round
    assert widget.data["example"]["example_index"] == 0
    widget.example = 3
    assert widget.data["example"]["example_index"] == 3
    assert widget.data["state"]["example"] == 3
    widget.round = 1
    assert widget.data["example"]["round"] == 1 and widget.data["state"]["round"] == 1
    widget.layer = 2
    assert {r["layer"] for r in widget.data["patching"]["analyses"][0]["rows"]} == {2}
    widget.head = 1
    assert (widget.data["attention"]["layer"], widget.data["attention"]["head"]) == (2, 1)
    widget.filters = ["disambiguated"]
    listed = [r["example_index"] for r in widget.data["examples"]]
    assert listed == [1, 3, 5] and widget.data["n_listed"] == 3
    widget.query = "builtin/5"
    assert [r["example_index"] for r in widget.data["examples"]] == [5]
    assert widget.example == 5  # the filters left example 3 out: the first they keep
    with pytest.raises(InterpError):
        widget.example = 99
    assert widget.example == 5 and widget.data["state"]["example"] == 5
    assert "export default" in widget._esm and "http" not in widget._esm.split("//")[0]


def test_widget_refuses_sae(runs):
    pytest.importorskip("anywidget")
    from interp.report.explore_widget import explore

    with pytest.raises(InterpError, match="sae features"):
        explore(runs[1], sae="some/sae")


@pytest.fixture(scope="module")
def permuted(tiny_model, tmp_path_factory):
    from interp.replay.loop import ReplayConfig, replay

    out = tmp_path_factory.mktemp("explore") / "permuted"
    replay(
        ReplayConfig(
            model="tiny", task="builtin", rounds=1, limit=3, permute="cyclic", out=str(out)
        ),
        model=tiny_model,
        progress=False,
    )
    return out


def test_permuted_run_debiases_as_the_run_does_and_lists_the_orders(permuted, tiny_model):
    from interp.metrics.debias import debiased_rounds

    rounds = pd.read_parquet(permuted / "rounds.parquet")
    expected = debiased_rounds(rounds)
    explorer = Explorer(permuted, model=tiny_model)
    view = explorer.example_view(4)  # base example 1, its second order
    base = int(rounds.loc[rounds.example_index == 4, "base_index"].iloc[0])
    same = rounds[rounds.base_index == base]
    assert [o["example_index"] for o in view["orders"]] == sorted(same.example_index.unique())
    for entry in view["rounds"]:
        row = expected[(expected.example_index == base) & (expected["round"] == entry["round"])]
        assert entry["debiased"] == pytest.approx(list(np.exp(row.option_logprobs.iloc[0])))
    assert isinstance(explorer.metrics_tab()["debiased"], list)


def test_search_reads_the_question_text(explorer, runs, tiny_model):
    """A word only in the question (round 0's user message, decoded from the stored tokens)
    finds the example; every word of the query must match."""
    from interp.runs.store import Run

    run = Run.open(runs[1])
    span = run.round_spans(0)[0].user
    question = tiny_model.tokenizer.decode(run.tokens()[0][span[0] : span[1]])
    assert explorer.question_texts[0] == question
    assert "evening coding class" in question
    row = explorer.table[explorer.table.example_index == 0].iloc[0]
    assert "coding" not in " ".join(map(str, row.to_dict().values())).lower()  # the question only
    with_word = [e for e, text in explorer.question_texts.items() if "coding" in text.lower()]
    assert explorer.examples("Coding")["example_index"].tolist() == with_word
    assert 0 in with_word
    both = explorer.examples("coding retiree")["example_index"].tolist()
    assert 0 in both and set(both) <= set(with_word)
    assert explorer.examples("coding no-such-word").empty
    assert view_state(explorer, {"query": "coding"})["n_listed"] == len(with_word)


def test_option_order_filter_of_a_permuted_run(permuted, tiny_model, runs):
    rounds = pd.read_parquet(permuted / "rounds.parquet")
    firsts = rounds.groupby("example_index").first()
    perms = firsts["permutation"].map(lambda p: ",".join(str(int(i)) for i in p))
    explorer = Explorer(permuted, model=tiny_model)
    assert explorer.orders() == sorted(set(perms))
    assert len(explorer.orders()) == 3
    for order in explorer.orders():
        listed = explorer.examples(order=order)["example_index"].tolist()
        assert listed == sorted(perms.index[perms == order].tolist())
    # the state keeps the chosen example's base example, in the order kept
    example = int(perms.index[perms == explorer.orders()[0]][1])
    other = explorer.orders()[1]
    state = view_state(explorer, {"example": example, "order": other})
    shown = state["state"]["example"]
    assert perms[shown] == other and state["state"]["order"] == other
    assert firsts.loc[shown, "base_index"] == firsts.loc[example, "base_index"]
    assert state["run"]["orders"] == explorer.orders()
    assert {r["permutation"] for r in state["examples"]} == {other}
    with pytest.raises(InterpError, match="not in the run"):
        view_state(explorer, {"order": "9,9,9"})
    with pytest.raises(InterpError, match="not a permuted run"):
        view_state(Explorer(runs[1]), {"order": "0,1,2"})


def test_sae_latents_and_circuit_edges_read_the_stored_tables(runs, tmp_path):
    import shutil

    from interp.runs.store import Run

    path = tmp_path / "run"
    shutil.copytree(runs[0], path)
    run = Run.open(path)
    acts = pd.DataFrame(
        {
            "example_index": [1] * 6 + [2] * 6,
            "round": [0, 2, 0, 2, 0, 2] * 2,
            "latent": [7, 7, 8, 8, 9, 9] * 2,
            # example 1: latent 8 moves most (-3), then 9 (+2), then 7 (+0.5)
            "activation": [1.0, 1.5, 4.0, 1.0, 0.0, 2.0, 0, 9, 0, 0, 0, 0],
        }
    )
    contexts = pd.DataFrame({"latent": [8, 9], "text": ["ctx of 8", "ctx of 9"]})
    run.write_analysis("sae", "some-sae", {"example_acts": acts, "contexts": contexts}, {})
    edges = pd.DataFrame({"source": ["a", "b", "c"], "target": ["x"] * 3, "score": [0.1, -2, 1]})
    run.write_analysis("circuits", "some-circuit", {"edges": edges}, {})
    explorer = Explorer(path)
    view = explorer.sae_latents(1, round=2)["analyses"][0]
    assert [x["latent"] for x in view["latents"]] == [8, 9, 7]
    assert [x["change"] for x in view["latents"]] == pytest.approx([-3, 2, 0.5])
    assert view["latents"][0]["contexts"] == [{"latent": 8, "text": "ctx of 8"}]
    shown = explorer.circuit_edges()["analyses"][0]["edges"]
    assert [e["source"] for e in shown] == ["b", "c", "a"]  # strongest |score| first


def test_attention_is_computed_with_the_model(explorer, runs, tiny_model):
    from interp.report.attention import head_patterns

    rounds = pd.read_parquet(runs[1] / "rounds.parquet")
    tokens = pd.read_parquet(runs[1] / "tokens.parquet")
    ids = [int(t) for t in tokens.loc[tokens.example_index == 3, "tokens"].iloc[0]]
    view = explorer.attention(3, layer=1, head=2)
    pattern = head_patterns(tiny_model, ids, [(1, 2)])[0].numpy()
    readouts = list(rounds[rounds.example_index == 3].sort_values("round").readout_pos)
    for r, entry in enumerate(view["rounds"]):
        row = pattern[readouts[r], : readouts[r] + 1]
        assert entry["readout_pos"] == readouts[r]
        assert [t["pos"] for t in entry["top"]] == list(np.argsort(-row, kind="stable")[:8])
        assert [t["weight"] for t in entry["top"]] == pytest.approx(sorted(row)[::-1][:8], abs=1e-5)
        assert sum(entry["per_round"]) == pytest.approx(1.0, abs=1e-4)
    with pytest.raises(InterpError, match="head 1.99"):
        explorer.attention(3, layer=1, head=99)
    assert "pass model=" in Explorer(runs[1]).attention(3)["missing"]


def test_import_interp_loads_no_anywidget():
    import subprocess
    import sys

    code = "import sys, interp; interp.explore; assert 'anywidget' in sys.modules\n"
    lazy = "import sys, interp; assert 'anywidget' not in sys.modules, 'anywidget at import'\n"
    for script in (lazy, code):
        done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr


def test_a_selection_lists_only_its_examples(runs):
    """``interp explore --sample 2 --seed 1``: the picker holds the examples select_rows keeps
    (the one rule of every verb), and an example outside it is refused."""
    from interp.inputs.selection import Selection, select_rows
    from interp.runs.store import Run

    chosen = Selection(sample=2, seed=1)
    want = sorted(set(select_rows(Run.open(runs[0]).rounds(), chosen)["example_index"]))
    explorer = Explorer(runs[0], selection=chosen)
    assert sorted(explorer.examples()["example_index"].tolist()) == want
    assert len(want) == 2
    outside = next(i for i in range(10) if i not in want)
    with pytest.raises(InterpError):
        explorer.example_view(outside, 0)
