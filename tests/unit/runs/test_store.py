"""Run as the one reader and writer of the run directory: analyses round-trip, unfinished
ones are not listed, and hook names agree with TransformerLens."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
import torch

from interp.errors import InterpError
from interp.model.hooknames import ATTN_KINDS, BLOCK_KINDS, act_layer, act_name, is_act
from interp.runs.store import AnalysisTensors, Run


@pytest.fixture(scope="module")
def replayed(tiny_model, tmp_path_factory) -> Path:
    from interp.replay.loop import ReplayConfig, replay

    out = tmp_path_factory.mktemp("store") / "run"
    replay(
        ReplayConfig(
            model="tiny", task="builtin", plan="self-correct", rounds=2, limit=3, out=str(out)
        ),
        model=tiny_model,
    )
    return out


@pytest.fixture
def run(replayed: Path, tmp_path: Path) -> Run:
    shutil.copytree(replayed, tmp_path / "run")
    return Run.open(tmp_path / "run")


def test_hook_names_agree_with_transformer_lens() -> None:
    from transformer_lens.utilities import get_act_name

    for layer in (0, 3, 27):
        for kind in (*BLOCK_KINDS, *ATTN_KINDS):
            name = act_name(kind, layer)
            assert name == get_act_name(kind, layer)
            assert is_act(name, kind) and act_layer(name) == layer
    assert not is_act("blocks.2.hook_resid_pre", "resid_post")
    assert not is_act("blocks.2.attn.hook_resid_post", "resid_post")


def test_folder_analysis_round_trip(run: Run) -> None:
    tables = {
        "per_layer": pd.DataFrame({"layer": [0, 1], "acc": [0.5, 0.75]}),
        "scores": pd.DataFrame({"x": [1.0]}),
    }
    vectors = torch.arange(6, dtype=torch.float32).reshape(2, 3)
    summary = {"best_layer": 1, "nested": {"a": [1, 2]}}
    written = run.write_analysis(
        "probes",
        "c",
        tables,
        summary,
        tensors={"directions": AnalysisTensors({"directions": vectors}, {"layers": "0,1"})},
    )
    assert written[-1] == run.path / "probes" / "c" / "summary.json"
    assert run.analyses("probes") == ["c"]
    back = run.read_analysis("probes", "c")
    assert back.summary == summary
    assert set(back.tables) == set(tables)
    for key, frame in tables.items():
        pd.testing.assert_frame_equal(back.tables[key], frame)
    assert set(run.read_analysis("probes", "c", ["scores", "absent"]).tables) == {"scores"}
    stored = run.analysis_tensors("probes", "c", "directions")
    assert torch.equal(stored.tensors["directions"], vectors)
    assert stored.metadata == {"layers": "0,1"}
    # A second write without an optional table removes the first write's copy of it.
    run.write_analysis("probes", "c", {"per_layer": tables["per_layer"]}, summary)
    assert set(run.read_analysis("probes", "c").tables) == {"per_layer"}


def test_flat_analysis_round_trip(run: Run) -> None:
    frame = pd.DataFrame({"layer": [0, 1], "effect": [0.1, float("nan")]})
    written = run.write_analysis("patching", "r2-t0", {"": frame}, {"config": {"method": "x"}})
    assert written == [
        run.path / "patching" / "r2-t0.parquet",
        run.path / "patching" / "r2-t0.json",
    ]
    back = run.read_analysis("patching", "r2-t0")
    pd.testing.assert_frame_equal(back.tables[""], frame)
    assert back.summary == {"config": {"method": "x"}}
    with pytest.raises(ValueError):
        run.write_analysis("patching", "bad", {"a": frame, "b": frame}, {})


def test_unfinished_analyses_are_not_listed(run: Run) -> None:
    frame = pd.DataFrame({"a": [1]})
    run.write_analysis("probes", "done", {"per_layer": frame}, {})
    run.write_analysis("patching", "done", {"": frame}, {})
    # A killed writer: tables written, marker not (write_analysis removes it first).
    (run.path / "probes" / "killed").mkdir()
    frame.to_parquet(run.path / "probes" / "killed" / "per_layer.parquet")
    frame.to_parquet(run.path / "patching" / "killed.parquet")
    run.write_analysis("probes", "again", {"per_layer": frame}, {})
    (run.path / "probes" / "again" / "summary.json").unlink()
    assert run.analyses("probes") == ["done"]
    assert run.analyses("patching") == ["done"]
    assert run.analyses("sae") == []
    with pytest.raises(InterpError, match="no complete probes analysis 'killed'"):
        run.read_analysis("probes", "killed")


def test_flat_names_keep_file_name_order(run: Run) -> None:
    # Export has always listed patching results in file-name order ("a-b.json" < "a.json").
    frame = pd.DataFrame({"a": [1]})
    for name in ("a", "a-b"):
        run.write_analysis("patching", name, {"": frame}, {})
    assert run.analyses("patching") == ["a-b", "a"]


def test_read_metrics(run: Run) -> None:
    path = run.path / "metrics.json"
    path.write_text(json.dumps({"rounds": []}))
    assert run.read_metrics() == {"rounds": []}
    path.write_text("{not json")
    assert run.read_metrics() is None
    path.unlink()
    assert run.read_metrics() is None


def _rebuilt_spans(run: Run, example: int, tokenizer):
    """The reference: round spans rebuilt from the plan's texts, the task and the stored
    answers, with the conversation builder replay uses."""
    from interp.inputs.conversation import RoundInput, build_conversation
    from interp.inputs.plans import Plan
    from interp.inputs.tasks import load_task
    from interp.replay.loop import ReplayConfig, select_examples

    config = ReplayConfig(**run.manifest["config"])
    ex = select_examples(load_task(config.task, config.data or None), config)[example]
    fields = dict(run.manifest["plan"])
    plan = Plan(**{**fields, "followups": tuple(fields["followups"])})
    rows = run.rounds().query("example_index == @example").sort_values("round")
    inputs = []
    for r, answer in zip(rows["round"], rows["answer_text"], strict=True):
        user, instruction = plan.user_turn(ex, int(r))
        inputs.append(RoundInput(user=user, instruction=instruction, answer=str(answer)))
    conv = build_conversation(
        tokenizer, inputs, answer_prefix=plan.answer_prefix, system=config.system
    )
    assert conv.tokens == run.tokens()[example]
    return conv.rounds


def test_stored_spans_equal_the_rebuilt_ones(run: Run, tiny_model) -> None:
    """Replay stores the round spans that the conversation builder made; the attention views
    mark instruction spans from them, and a run without spans.parquet shows read-out marks
    only (the report never imports replay)."""
    from interp.report.attention import transcript

    for e in range(3):
        assert run.round_spans(e) == _rebuilt_spans(run, e, tiny_model.tokenizer)
    stored = [transcript(run, e, tiny_model.tokenizer) for e in range(3)]
    assert all(t.spans_known and t.instruction_spans for t in stored)
    (run.path / "spans.parquet").unlink()
    old = Run.open(run.path)
    assert old.round_spans(0) is None
    assert not any(transcript(old, e, tiny_model.tokenizer).spans_known for e in range(3))


# --- a run in a notebook: short repr, small HTML card, one transcript's ActivationCache ------


def test_run_repr_is_short_and_names_the_run(run: Run) -> None:
    text = repr(run)
    assert len(text) <= 200, text
    assert "\n" not in text
    for fact in (run.path.name, "tiny", "builtin", "self-correct", "0..2", "examples 3"):
        assert fact in text, (fact, text)
    assert "complete True" in text
    assert "fingerprint" not in text  # not the manifest


def test_run_repr_html_parses_and_escapes(run: Run) -> None:
    from html.parser import HTMLParser

    run.manifest["plan"]["name"] = "<b>plan & co</b>"
    page = run._repr_html_()
    assert "<b>plan" not in page and "&lt;b&gt;plan &amp; co&lt;/b&gt;" in page
    cells: list[str] = []

    class Cells(HTMLParser):
        def handle_data(self, data: str) -> None:
            cells.append(data)

    Cells().feed(page)
    assert "<b>plan & co</b>" in cells and "tiny" in cells
    assert len(page) < 2000


def test_run_cache_matches_the_stored_activations(run: Run, tiny_model) -> None:
    """The cache's hook at the read-out equals what replay stored for that example x round,
    for every stored hook: a transcript cut at another position would not."""
    from transformer_lens import ActivationCache

    checked = 0
    for example in range(3):
        for round in range(run.n_rounds):
            cache = run.cache(example, round, tiny_model)
            assert isinstance(cache, ActivationCache)
            readout = run.round_spans(example)[round].readout
            assert cache[run.hooks[0]].shape[1] == readout + 1
            for hook in run.hooks:
                stored = run.activations(hook)[example, round].float()
                got = cache[hook][0, -1].float()
                torch.testing.assert_close(got, stored, atol=2e-2, rtol=1e-2)
                checked += 1
    assert checked == 3 * run.n_rounds * len(run.hooks) > 0


def test_run_cache_refuses_what_it_cannot_cut(run: Run, tiny_model) -> None:
    from interp.model.loading import load_model

    with pytest.raises(InterpError, match="example 3 is out of range"):
        run.cache(3, 0, tiny_model)
    with pytest.raises(InterpError, match="example -1 is out of range"):
        run.cache(-1, 0, tiny_model)
    with pytest.raises(InterpError, match=f"round {run.n_rounds} is out of range"):
        run.cache(0, run.n_rounds, tiny_model)
    other = load_model("tiny", seed=1)
    with pytest.raises(InterpError, match="run's model") as err:
        run.cache(0, 0, other)
    assert "\n" not in str(err.value)
