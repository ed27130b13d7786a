"""Replay controls on the tiny model: option scores by whole text (summed and per token) and
the forced-history control (``force_round0``), checked against a fresh forward pass and
manual counts."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from interp.errors import InterpError
from interp.inputs.plans import option_letter
from interp.inputs.tasks import load_builtin
from interp.metrics.rounds import copy_rate
from interp.replay.loop import ReplayConfig, replay
from interp.runs.store import Run

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def by_example(run) -> dict[int, object]:
    frame = run.rounds().sort_values(["example_index", "round"])
    return {int(i): rows.reset_index(drop=True) for i, rows in frame.groupby("example_index")}


def continuation_logprobs(model, prompt: list[int], continuation: list[int]) -> torch.Tensor:
    """Each continuation token's log-prob after ``prompt``: one unpadded, uncached forward."""
    with torch.no_grad():
        logits = model(torch.tensor([prompt + continuation]))[0].double()
    logp = torch.log_softmax(logits, -1)
    start = len(prompt) - 1  # the logits at position p predict token p + 1
    return torch.stack([logp[start + j, t] for j, t in enumerate(continuation)])


# --- --score text / text-mean -------------------------------------------------------------------


@pytest.fixture(scope="module")
def text_runs(tmp_path_factory, tiny_model):
    runs = {}
    for score in ("text", "text-mean"):
        config = ReplayConfig(
            out=str(tmp_path_factory.mktemp(score) / "run"),
            model="tiny",
            rounds=1,
            limit=4,
            batch_size=3,  # left padding and a frozen cache under the scored continuation
            score=score,
        )
        runs[score] = replay(config, model=tiny_model)
    return runs


@pytest.mark.parametrize("score", ["text", "text-mean"])
def test_text_scores_equal_manual_token_logprobs(text_runs, tiny_model, score):
    run = text_runs[score]
    tok = tiny_model.tokenizer
    examples = load_builtin()[:4]
    tokens, rows = run.tokens(), by_example(run)
    lengths = set()
    for e, ex in enumerate(examples):
        for r in range(2):
            row = rows[e].iloc[r]
            prompt = tokens[e][: int(row["readout_pos"]) + 1]
            expected = []
            for i, option in enumerate(ex.options):
                cont = tok.encode(f"{option_letter(i)}) {option}", add_special_tokens=False)
                lengths.add(len(cont))
                lp = continuation_logprobs(tiny_model, prompt, cont)
                expected.append(float(lp.mean() if score == "text-mean" else lp.sum()))
            stored = [float(x) for x in row["option_logprobs"]]
            assert stored == pytest.approx(expected, abs=1e-4), f"example {e} round {r}"
            assert int(row["choice"]) == int(np.argmax(expected))
    assert len(lengths) > 1  # premise: options of different token lengths


def test_text_mean_differs_from_text(text_runs):
    # Per-token scores are the summed ones divided by a length that varies between options
    # (round 0 only: later prompts hold answers that the two scores chose differently).
    def round0(score: str) -> np.ndarray:
        frame = text_runs[score].rounds()
        return np.array(list(frame[frame["round"] == 0]["option_logprobs"]), dtype=float)

    a, b = round0("text"), round0("text-mean")
    ratio = a / b
    assert np.allclose(ratio, np.round(ratio), atol=1e-3)  # whole token counts
    assert len(np.unique(np.round(ratio))) > 1


def test_unknown_score_is_refused(tmp_path, tiny_model):
    config = ReplayConfig(out=str(tmp_path / "run"), model="tiny", score="text-sum")
    with pytest.raises(InterpError, match="unknown score"):
        replay(config, model=tiny_model)
    assert not (tmp_path / "run").exists()


# --- --force-round0: the forced-history control -------------------------------------------------

FORCE_ROUNDS = 2


@pytest.fixture(scope="module")
def varied_model():
    # Seed 3 chooses (a) and (b) on the built-in items (tests/unit/replay/test_loop.py): forcing (c)
    # overrides every round-0 choice, forcing (a) only some.
    from interp.model.loading import load_model

    return load_model("tiny", seed=3)


def force_config(out, force: str | None, **overrides) -> ReplayConfig:
    fields = {"model": "tiny", "rounds": FORCE_ROUNDS, "limit": 7, "batch_size": 3, "seed": 3}
    return ReplayConfig(out=str(out), force_round0=force, **{**fields, **overrides})


@pytest.fixture(scope="module")
def forced_runs(tmp_path_factory, varied_model):
    base = tmp_path_factory.mktemp("forced")
    return {
        force: replay(force_config(base / str(force), force), model=varied_model)
        for force in (None, "a", "c", "target")
    }


@pytest.mark.parametrize("force", ["a", "c", "target"])
def test_forced_answer_is_written_into_the_transcript(forced_runs, varied_model, force):
    run, own = forced_runs[force], forced_runs[None]
    tok = varied_model.tokenizer
    letters = [tok.encode(option_letter(i), add_special_tokens=False)[0] for i in range(3)]
    examples = load_builtin()[:7]
    tokens, rows, own_rows = run.tokens(), by_example(run), by_example(own)
    overridden = 0
    for e, ex in enumerate(examples):
        want = ex.target if force == "target" else ord(force) - ord("a")
        first = rows[e].iloc[0]
        assert list(rows[e]["forced"]) == [want] + [-1] * FORCE_ROUNDS
        # The model's own round-0 scores and choice are recorded, as in the unforced run.
        assert int(first["choice"]) == int(own_rows[e].iloc[0]["choice"])
        assert list(first["option_logprobs"]) == pytest.approx(
            list(own_rows[e].iloc[0]["option_logprobs"]), abs=1e-6
        )
        overridden += int(first["choice"]) != want
        # The transcript goes on with the forced letter and option text ...
        read0, read1 = int(first["readout_pos"]), int(rows[e].iloc[1]["readout_pos"])
        assert tokens[e][read0 + 1] == letters[want]
        assert first["answer_text"] == f"{option_letter(want)}) {ex.options[want]}"
        # ... and round 1's prompt holds it as the assistant's previous answer.
        between = tok.decode(tokens[e][read0 + 1 : read1 + 1])
        assert between.startswith(f"{option_letter(want)}) {ex.options[want]}<|im_end|>")
    assert overridden > 0  # premise: forcing changed some round-0 answers


def test_forced_runs_copy_rate_equals_a_manual_count(forced_runs):
    for force in ("a", "c", "target"):
        run = forced_runs[force]
        frame = run.rounds()
        metrics = json.loads((run.path / "metrics.json").read_text())
        copy = metrics["copy_rate"]
        r0 = frame[frame["round"] == 0].set_index("example_index")
        assert copy["n"] == len(r0) and copy["agree_round0"] == int(
            (r0["choice"] == r0["forced"]).sum()
        )
        for entry in copy["per_round"]:
            at = frame[frame["round"] == entry["round"]].set_index("example_index")["choice"]
            copied = at == r0["forced"]
            over = r0["choice"] != r0["forced"]
            assert entry["copied"] == int(copied.sum()) and entry["n"] == len(r0)
            assert entry["value"] == pytest.approx(copied.mean())
            clusters = metrics["bootstrap"]["cluster"]["n_clusters"]
            if clusters >= metrics["bootstrap"]["floor"]:
                assert entry["ci"][0] <= entry["value"] <= entry["ci"][1]
            else:  # below the cluster floor: no interval (interp.stats.CLUSTER_FLOOR)
                assert entry["ci"] is None
            assert entry["overridden"]["n"] == int(over.sum())
            assert entry["overridden"]["copied"] == int((copied & over).sum())
        assert copy["round1"] == copy["per_round"][0] and copy["round1"]["round"] == 1
    assert json.loads((forced_runs[None].path / "metrics.json").read_text())["copy_rate"] is None


def test_copy_rate_on_a_hand_made_table():
    # Four examples forced to (c); round 1 repeats it for examples 0, 1, 3; round 2 for 0.
    rows = []
    own0, r1, r2 = [2, 0, 1, 2], [2, 2, 0, 2], [2, 1, 1, 0]
    for e in range(4):
        for r, choice in enumerate((own0[e], r1[e], r2[e])):
            rows.append(
                {"example_index": e, "round": r, "choice": choice, "forced": 2 if r == 0 else -1}
            )
    copy = copy_rate(pd.DataFrame(rows), n_boot=200, seed=1)
    assert copy["n"] == 4 and copy["agree_round0"] == 2
    first, second = copy["per_round"]
    assert (first["copied"], first["value"]) == (3, 0.75)
    assert (first["overridden"]["n"], first["overridden"]["copied"]) == (2, 1)
    assert (second["copied"], second["value"]) == (1, 0.25)
    assert copy_rate(pd.DataFrame(rows), n_boot=200, seed=1) == copy  # seeded


def test_forced_runs_without_that_option_are_left_out_and_counted(tmp_path, tiny_model):
    rows = [
        {"id": "two", "question": "Yes or no?", "options": ["Yes", "No"], "label": 1},
        {"id": "three", "question": "Which?", "options": ["A", "B", "C"], "label": 0, "target": 2},
    ]
    path = tmp_path / "mine.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    common = {"task": "mc", "data": [str(path)], "rounds": 1, "seed": 0, "limit": None}
    for force, kept in (("target", "mine/three"), ("c", "mine/three"), ("b", None)):
        run = replay(force_config(tmp_path / force, force, **common), model=tiny_model)
        info = run.manifest["force_round0"]
        ids = list(run.rounds()["example_id"].unique())
        if kept is None:
            assert info["skipped"] == [] and ids == ["mine/two", "mine/three"]
        else:
            assert info == {"option": force, "n_selected": 2, "skipped": ["mine/two"]}
            assert ids == [kept]
    with pytest.raises(InterpError, match="none of the 2 selected examples"):
        replay(force_config(tmp_path / "d", "d", **common), model=tiny_model)
    assert not (tmp_path / "d").exists()


@pytest.mark.parametrize(
    ("force", "overrides", "message"),
    [
        ("B", {}, "use label, target, unknown or an option letter"),
        ("wrong", {}, "use label, target, unknown"),
        ("a", {"mode": "generate"}, "needs --mode choice"),
    ],
)
def test_bad_force_round0_is_refused(tmp_path, tiny_model, force, overrides, message):
    with pytest.raises(InterpError, match=message):
        replay(force_config(tmp_path / "run", force, **overrides), model=tiny_model)
    assert not (tmp_path / "run").exists()


def test_cli_prints_the_copy_rate_and_the_left_out_examples(tmp_path):
    from typer.testing import CliRunner

    from interp.cli import app

    rows = [
        {"id": "two", "question": "Yes or no?", "options": ["Yes", "No"], "label": 1},
        {"id": "three", "question": "Which?", "options": ["A", "B", "C"], "label": 0, "target": 2},
    ]
    path = tmp_path / "mine.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    args = ["replay", "--model", "tiny", "--task", "mc", "--data", str(path), "--rounds", "1"]
    result = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "run"), "--force-round0", "c"])
    assert result.exit_code == 0, result.output
    assert "warning: --force-round0 c: 1 of the 2 selected examples" in result.stderr
    frame = Run.open(tmp_path / "run").rounds()
    copied = int(frame[frame["round"] == 1]["choice"].iloc[0] == 2)
    result = CliRunner().invoke(app, ["metrics", "--run", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    line = next(x for x in result.stdout.splitlines() if x.startswith("copy rate"))
    assert f"({copied}/1)" in line
    result = CliRunner().invoke(app, ["metrics", "--run", str(tmp_path / "run"), "--json"])
    assert json.loads(result.stdout)["copy_rate"]["round1"]["copied"] == copied
