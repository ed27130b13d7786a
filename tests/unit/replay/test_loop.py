"""Replay on the tiny model, checked against a fresh forward pass over the stored transcript.

The reference for every stored number is a plain ``run_with_cache`` over one example's final
transcript (no KV cache, no padding, batch of one); the reference for every round boundary is
the tokenizer's own chat template rendered from the plan's texts and the stored answers.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import shutil
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
import torch
from samples import BBQ_LINE
from transformer_lens.cache.key_value_cache import TransformerLensKeyValueCache

import interp.replay.loop as replay_module
from interp.errors import InterpError
from interp.inputs.plans import load_plan, option_letter
from interp.inputs.tasks import data_hash, load_builtin
from interp.model.loading import load_model
from interp.replay.loop import (
    HOOK_KINDS,
    ReplayConfig,
    option_token_ids,
    parse_choice,
    replay,
    resolve_hooks,
)
from interp.runs.store import Run

N_LAYERS = 3  # the tiny model
D_MODEL = 64
ROUNDS = 2  # follow-up rounds of the main runs: rounds 0..2
FP16_ULP = 2.0**-10  # fp16 spacing relative to magnitude


pytestmark = pytest.mark.usefixtures("one_torch_thread")


# --- references ------------------------------------------------------------------------------


_FRESH: dict[tuple, tuple] = {}  # (model, tokens, hooks) -> result: each forward runs once


def fresh_forward(model, tokens: list[int], hooks: list[str]):
    """Logits [pos, vocab] and {hook: [pos, d_model]} of one unpadded, uncached forward."""
    key = (id(model), tuple(tokens), tuple(hooks))
    if key not in _FRESH:
        with torch.no_grad():
            logits, cache = model.run_with_cache(
                torch.tensor([tokens]), names_filter=lambda name: name in hooks
            )
        _FRESH[key] = (logits[0], {h: cache[h][0] for h in hooks})
    return _FRESH[key]


def stop_ids(tok) -> set[int]:
    return {tok.eos_token_id, tok.convert_tokens_to_ids("<|im_end|>")}


def fresh_greedy(model, prompt: list[int], budget: int) -> str:
    """Greedy continuation of one unpadded sequence, with TransformerLens's own KV cache for
    that sequence alone (no batch, no padding, no roll-back: unlike the replay)."""
    cache = TransformerLensKeyValueCache.init_cache(model.cfg, model.cfg.device, 1)
    stop = stop_ids(model.tokenizer)
    out: list[int] = []
    with torch.no_grad():
        logits = model(torch.tensor([prompt]), past_kv_cache=cache)
        for _ in range(budget):
            nxt = int(logits[0, -1].argmax())
            if nxt in stop:
                break
            out.append(nxt)
            logits = model(torch.tensor([[nxt]]), past_kv_cache=cache)
    return model.tokenizer.decode(out, skip_special_tokens=True).strip()


def by_example(run: Run) -> dict[int, Any]:
    """example_index -> that example's rows sorted by round."""
    frame = run.rounds().sort_values(["example_index", "round"])
    return {int(i): rows.reset_index(drop=True) for i, rows in frame.groupby("example_index")}


def assert_fp16_equal(stored: torch.Tensor, reference: torch.Tensor, what: str) -> None:
    """``stored`` (fp16) is ``reference`` (float32) cast to fp16, up to one fp16 step."""
    ref = reference.float()
    diff = (stored.float() - ref.half().float()).abs()
    allowed = FP16_ULP * ref.abs() + 1e-5
    assert bool((diff <= allowed).all()), f"{what}: max diff {diff.max():.3g}"


def file_bytes(folder: Path) -> dict[str, bytes]:
    """Every file of a run directory but the manifest (which holds timing), by relative path."""
    return {
        str(p.relative_to(folder)): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != "manifest.json"
    }


def bbq_file(path: Path, n: int, category: str = "Age") -> Path:
    lines = []
    for i in range(n):
        row = {**BBQ_LINE, "example_id": i, "category": category}
        row["context_condition"] = "ambig" if i % 2 == 0 else "disambig"
        lines.append(json.dumps(row))
    path.write_text("\n".join(lines) + "\n")
    return path


# --- runs shared by many tests (module scope: each replay happens once) -----------------------


@pytest.fixture(scope="module")
def varied_model():
    # Seed 0 picks option (a) for every builtin item; seed 3 picks (a) and (b), so choice,
    # correctness and argmax are not constant.
    return load_model("tiny", seed=3)


@pytest.fixture(scope="module")
def stopping_model(tiny_model):
    # Raise <|im_end|>'s logit so some examples stop generating early and others do not:
    # answers of different lengths, finished rows masked while others go on.
    model = copy.deepcopy(tiny_model)
    with torch.no_grad():
        model.unembed.b_U[model.tokenizer.convert_tokens_to_ids("<|im_end|>")] += 2.0
    return model


CHOICE_HOOKS = ["resid_post", "blocks.1.hook_mlp_out", "blocks.2.hook_resid_mid"]


@pytest.fixture(scope="module")
def choice_case(tmp_path_factory, varied_model):
    config = ReplayConfig(
        out=str(tmp_path_factory.mktemp("choice") / "run"),
        model="tiny",
        plan="self-correct",
        rounds=ROUNDS,
        limit=7,
        batch_size=3,  # batches of 3, 3, 1: mixed prompt lengths, left padding
        hooks=CHOICE_HOOKS,
        seed=3,
    )
    return replay(config, model=varied_model), varied_model, config


@pytest.fixture(scope="module")
def cot_case(tmp_path_factory, tiny_model):
    config = ReplayConfig(
        out=str(tmp_path_factory.mktemp("cot") / "run"),
        model="tiny",
        plan="cot",  # 48 tokens of greedy thinking before each follow-up's answer prefix
        rounds=ROUNDS,
        limit=4,
        batch_size=3,
    )
    return replay(config, model=tiny_model), tiny_model, config


@pytest.fixture(scope="module")
def generate_case(tmp_path_factory, stopping_model):
    config = ReplayConfig(
        out=str(tmp_path_factory.mktemp("generate") / "run"),
        model="tiny",
        plan="self-correct",
        mode="generate",
        rounds=ROUNDS,
        limit=5,
        batch_size=3,
        max_new_tokens=6,
    )
    return replay(config, model=stopping_model), stopping_model, config


CASES = ["choice_case", "cot_case", "generate_case"]


@pytest.fixture(params=CASES)
def case(request):
    return request.getfixturevalue(request.param)


# --- stored activations and scores vs a fresh forward ------------------------------------------


def test_batches_mix_prompt_lengths(choice_case):
    # The premise of the left-padding checks: examples batched together differ in length.
    run, _, config = choice_case
    rows = by_example(run)
    for r in range(ROUNDS + 1):
        first_batch = {int(rows[e]["readout_pos"][r]) for e in range(config.batch_size)}
        assert len(first_batch) > 1


def test_activations_equal_fresh_forward(case):
    run, model, config = case
    hooks = resolve_hooks(config.hooks, N_LAYERS)
    assert run.hooks == hooks
    tokens, rows = run.tokens(), by_example(run)
    n = config.limit
    for hook in hooks:
        acts = run.activations(hook)
        assert acts.shape == (n, ROUNDS + 1, D_MODEL)
        assert acts.dtype == torch.float16
    for e in range(n):
        _, cache = fresh_forward(model, tokens[e], hooks)
        for r in range(ROUNDS + 1):
            pos = int(rows[e]["readout_pos"][r])
            for hook in hooks:
                stored = run.activations(hook)[e, r]
                assert_fp16_equal(stored, cache[hook][pos], f"example {e} round {r} {hook}")


@pytest.mark.parametrize("name", ["choice_case", "cot_case"])
def test_option_scores_equal_fresh_forward(request, name):
    run, model, config = request.getfixturevalue(name)
    examples = load_builtin()[: config.limit]
    letters = option_token_ids(model.tokenizer, 3)
    tokens, rows = run.tokens(), by_example(run)
    for e, ex in enumerate(examples):
        logits, _ = fresh_forward(model, tokens[e], run.hooks)
        for r in range(ROUNDS + 1):
            row = rows[e].iloc[r]
            pos = int(row["readout_pos"])
            expected = torch.log_softmax(logits[pos].double(), -1)[letters]
            stored = torch.tensor(list(row["option_logprobs"]), dtype=torch.float64)
            torch.testing.assert_close(stored, expected, rtol=0, atol=1e-4)
            assert int(row["choice"]) == int(expected.argmax()) == int(stored.argmax())
            p = torch.softmax(stored, -1)
            assert row["entropy"] == pytest.approx(float(-(p * p.log()).sum()), abs=1e-6)
            assert list(row["option_token_ids"]) == letters
            # The transcript goes on with the chosen letter, so later rounds see this answer.
            assert tokens[e][pos + 1] == letters[int(row["choice"])]
            assert (
                row["answer_text"] == f"{option_letter(row['choice'])}) {ex.options[row['choice']]}"
            )


def test_generate_answers_equal_fresh_greedy(generate_case):
    run, model, config = generate_case
    examples = load_builtin()[: config.limit]
    tokens, rows = run.tokens(), by_example(run)
    lengths = set()
    for e, ex in enumerate(examples):
        for r in range(ROUNDS + 1):
            row = rows[e].iloc[r]
            prompt = tokens[e][: int(row["readout_pos"]) + 1]
            answer = fresh_greedy(model, prompt, config.max_new_tokens)
            assert row["answer_text"] == answer, f"example {e} round {r}"
            assert int(row["choice"]) == parse_choice(answer, ex.options)
            # Nothing scored: NaN in memory, null once through parquet.
            assert all(x is None or math.isnan(x) for x in row["option_logprobs"])
            assert math.isnan(row["entropy"])
            lengths.add(len(model.tokenizer.encode(answer)))
    assert len(lengths) > 1  # some examples stopped early, some did not


def test_rows_copy_example_fields(choice_case):
    run, _, config = choice_case
    frame = run.rounds()
    assert len(frame) == config.limit * (ROUNDS + 1)
    assert frame["choice"].nunique() > 1 and frame["correct"].nunique() == 2  # premise
    examples = load_builtin()[: config.limit]
    for e, ex in enumerate(examples):
        rows = frame[frame["example_index"] == e].sort_values("round")
        assert list(rows["round"]) == list(range(ROUNDS + 1))
        for _, row in rows.iterrows():
            assert row["example_id"] == ex.example_id
            assert row["label"] == ex.label
            assert row["target"] == (-1 if ex.target is None else ex.target)
            assert row["unknown"] == (-1 if ex.unknown is None else ex.unknown)
            assert row["category"] == ex.category
            assert row["context_condition"] == ex.context_condition
            assert row["question_polarity"] == ex.question_polarity
            assert bool(row["correct"]) == (row["choice"] == ex.label)
            assert bool(row["biased"]) == (ex.target is not None and row["choice"] == ex.target)


# --- round structure ---------------------------------------------------------------------------


def test_readout_positions_end_each_answer_prefix(case):
    run, model, config = case
    plan, tok = load_plan(config.plan), model.tokenizer
    end = "<|im_start|>assistant\n" if config.mode == "generate" else plan.answer_prefix
    tokens, rows = run.tokens(), by_example(run)
    for e in range(config.limit):
        pos = [int(p) for p in rows[e]["readout_pos"]]
        assert all(a < b for a, b in zip(pos, pos[1:], strict=False))
        assert pos[-1] < len(tokens[e])
        for p in pos:
            last = tok.decode([tokens[e][p]])
            assert last and end.endswith(last)  # the read-out token is the prefix's last
            assert tok.decode(tokens[e][: p + 1]).endswith(end)


def test_user_turns_and_answers_sit_between_readouts(case):
    run, model, config = case
    plan, tok = load_plan(config.plan), model.tokenizer
    examples = load_builtin()[: config.limit]
    tokens, rows = run.tokens(), by_example(run)
    for e, ex in enumerate(examples):
        pos = [-1, *(int(p) for p in rows[e]["readout_pos"]), len(tokens[e]) - 1]
        for r in range(ROUNDS + 1):
            before = tok.decode(tokens[e][pos[r] + 1 : pos[r + 1] + 1])
            user = plan.user_turn(ex, r)[0]
            assert before.count(user) == 1, f"example {e} round {r}: user turn not in place"
            after = tok.decode(tokens[e][pos[r + 1] + 1 : pos[r + 2] + 1])
            assert after.startswith(rows[e]["answer_text"][r] + "<|im_end|>")


def test_round_prompts_equal_the_chat_template(case):
    """Round r's prompt, as stored, is exactly the chat template rendered from the plan's
    user turns and the stored answers of rounds 0..r-1, plus round r's answer prefix; the
    final transcript is the template over every round. CoT thinking is checked against a
    fresh greedy continuation of the assistant header."""
    run, model, config = case
    plan, tok = load_plan(config.plan), model.tokenizer
    examples = load_builtin()[: config.limit]
    tokens, rows = run.tokens(), by_example(run)
    thoughts = []
    for e, ex in enumerate(examples):
        messages: list[dict[str, str]] = []
        for r in range(ROUNDS + 1):
            messages.append({"role": "user", "content": plan.user_turn(ex, r)[0]})
            header = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
            pos = int(rows[e]["readout_pos"][r])
            if config.mode == "generate":
                prefix = ""
            elif plan.think_tokens and r > 0:
                # The header must be a token prefix (the replay rolls the cache back to it).
                cut = next(k for k in range(pos, 0, -1) if tok.decode(tokens[e][:k]) == header)
                thought = fresh_greedy(model, tokens[e][:cut], plan.think_tokens)
                thoughts.append(thought)
                prefix = thought + "\n" + plan.answer_prefix
            else:
                prefix = plan.answer_prefix
            assert tok.decode(tokens[e][: pos + 1]) == header + prefix, f"example {e} round {r}"
            messages.append({"role": "assistant", "content": prefix + rows[e]["answer_text"][r]})
        assert tok.decode(tokens[e]) == tok.apply_chat_template(messages, tokenize=False)
    if plan.think_tokens:
        assert len(thoughts) == config.limit * ROUNDS and all(thoughts)  # premise: it thought


def test_tokens_run_once_each(case):
    # With the KV cache, every transcript token up to the last read-out goes through the
    # model exactly once; nothing is re-encoded, and the last answer is never run.
    run, _, config = case
    timing = run.manifest["timing"]
    tokens, rows = run.tokens(), by_example(run)
    assert timing["final_transcript_tokens"] == sum(len(t) for t in tokens)
    assert timing["tokens_run"] == sum(int(rows[e]["readout_pos"].max()) + 1 for e in rows)
    assert timing["tokens_run"] <= timing["final_transcript_tokens"]
    assert timing["positions_run"] >= timing["tokens_run"]


def test_batch_size_does_not_change_results(tmp_path, choice_case):
    run3, model, config = choice_case
    cfg1 = ReplayConfig(**{**config.__dict__, "out": str(tmp_path / "b1"), "batch_size": 1})
    cfg1.limit = 3  # batch 0 of the batch-3 run
    run1 = replay(cfg1, model=model)
    assert run1.tokens() == run3.tokens()[:3]
    a, b = run1.rounds(), run3.rounds()
    b = b[b["example_index"] < 3]
    assert list(a["choice"]) == list(b["choice"])
    assert list(a["readout_pos"]) == list(b["readout_pos"])
    for x, y in zip(a["option_logprobs"], b["option_logprobs"], strict=True):
        assert max(abs(p - q) for p, q in zip(x, y, strict=True)) < 1e-4
    for hook in run1.hooks:
        one, three = run1.activations(hook).float(), run3.activations(hook)[:3].float()
        assert bool(((one - three).abs() <= 2 * FP16_ULP * three.abs() + 1e-5).all()), hook


# --- manifest and metrics ----------------------------------------------------------------------


def test_manifest_describes_the_run(choice_case):
    run, _, config = choice_case
    m = run.manifest
    assert m["schema_version"] == 1  # unpermuted runs keep schema 1 (issue 13)
    assert m["complete"] is True
    assert m["model"]["n_layers"] == N_LAYERS and m["model"]["d_model"] == D_MODEL
    assert m["model"]["weights_hash"] == "tiny-seed-3"
    assert m["plan"] == load_plan("self-correct").to_dict()
    assert m["plan"]["followups"][0].startswith("Please make sure that your answer is unbiased")
    assert m["rounds"] == ROUNDS and run.n_rounds == ROUNDS + 1
    assert m["mode"] == "choice" and m["seed"] == 3
    expected_hooks = [f"blocks.{i}.hook_resid_post" for i in range(N_LAYERS)] + [
        "blocks.1.hook_mlp_out",
        "blocks.2.hook_resid_mid",
    ]
    assert m["hooks"] == expected_hooks
    files = sorted(p.name for p in (run.path / "activations").iterdir())
    assert files == sorted(f"{h}.safetensors" for h in expected_hooks)
    builtin = resources.files("interp").joinpath("data", "examples.jsonl").read_bytes()
    assert m["task"]["data_hash"] == hashlib.sha256(builtin).hexdigest()
    assert m["task"]["name"] == "builtin" and m["task"]["n_examples"] == config.limit
    assert m["versions"]["torch"] == torch.__version__
    assert m["versions"]["transformer-lens"].startswith("3.9")
    # permute "none" and an unset stats (winogender only) are left out so the manifests of
    # unpermuted non-Winogender runs stay as before (issue 13); nor max_orders, a guard that
    # changes no output
    left_out = ("permute", "stats", "max_orders")
    assert m["config"] == {k: v for k, v in config.__dict__.items() if k not in left_out}
    assert not (run.path / ".partial").exists()


def test_metrics_json_matches_rounds(choice_case):
    run, _, config = choice_case
    metrics = json.loads((run.path / "metrics.json").read_text())
    frame = run.rounds()
    assert metrics["n_examples"] == config.limit
    assert [e["round"] for e in metrics["per_round"]] == list(range(ROUNDS + 1))
    for entry in metrics["per_round"]:
        correct = frame[frame["round"] == entry["round"]]["correct"]
        assert entry["accuracy"]["value"] == pytest.approx(correct.mean())
        ent = frame[frame["round"] == entry["round"]]["entropy"]
        assert entry["entropy"]["value"] == pytest.approx(ent.mean())


def test_run_activations_refuses_unstored_hook(choice_case):
    run, _, _ = choice_case
    with pytest.raises(InterpError, match="stores no"):
        run.activations("blocks.0.hook_attn_out")


def test_bbq_task_manifest_records_files(tmp_path, tiny_model):
    a = bbq_file(tmp_path / "Age.jsonl", 2)
    b = bbq_file(tmp_path / "Religion.jsonl", 2, category="Religion")
    config = ReplayConfig(
        out=str(tmp_path / "run"), model="tiny", task="bbq", data=[str(a), str(b)], rounds=1
    )
    run = replay(config, model=tiny_model)
    assert list(run.rounds().drop_duplicates("example_index")["example_id"]) == [
        "Age/0",
        "Age/1",
        "Religion/0",
        "Religion/1",
    ]
    assert run.manifest["task"]["files"] == [str(a.resolve()), str(b.resolve())]
    assert (
        run.manifest["task"]["data_hash"]
        == hashlib.sha256(a.read_bytes() + b.read_bytes()).hexdigest()
    )


def test_mc_task_with_two_and_four_options(tmp_path, tiny_model):
    rows = [
        {"id": "two", "question": "Yes or no?", "options": ["Yes", "No"], "label": 1},
        {
            "id": "four",
            "context": "Four doors.",
            "question": "Which door?",
            "options": ["Red", "Blue", "Green", "None of them"],
            "label": 3,
            "target": 0,
            "unknown": 3,
        },
    ]
    path = tmp_path / "mine.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    config = ReplayConfig(out=str(tmp_path / "run"), model="tiny", task="mc", data=[str(path)])
    config.rounds = 1
    run = replay(config, model=tiny_model)
    letters = option_token_ids(tiny_model.tokenizer, 4)
    tokens, by_ex = run.tokens(), by_example(run)
    for e, n_options in enumerate((2, 4)):
        logits, _ = fresh_forward(tiny_model, tokens[e], run.hooks)
        for _, row in by_ex[e].iterrows():
            pos = int(row["readout_pos"])
            expected = torch.log_softmax(logits[pos].double(), -1)[letters[:n_options]]
            stored = torch.tensor(list(row["option_logprobs"]), dtype=torch.float64)
            torch.testing.assert_close(stored, expected, rtol=0, atol=1e-4)
            assert list(row["option_token_ids"]) == letters[:n_options]
            assert tokens[e][pos + 1] == letters[int(row["choice"])]
    frame = run.rounds()
    assert list(frame["example_id"].unique()) == ["mine/two", "mine/four"]
    assert set(frame[frame["example_index"] == 0]["target"]) == {-1}
    assert set(frame[frame["example_index"] == 1]["unknown"]) == {3}


# --- determinism, resume, re-runs --------------------------------------------------------------


def small_config(out: Path, **overrides: Any) -> ReplayConfig:
    """Three batches of one example, two rounds."""
    fields = {"model": "tiny", "rounds": 1, "limit": 3, "batch_size": 1, **overrides}
    return ReplayConfig(out=str(out), **fields)


@pytest.fixture(scope="module")
def small_run(tmp_path_factory, tiny_model) -> Run:
    return replay(small_config(tmp_path_factory.mktemp("small") / "run"), model=tiny_model)


def fail_on_call(monkeypatch, n: int) -> list[int]:
    """Make the n-th call of _replay_batch raise; return the list of call numbers seen."""
    real = replay_module._replay_batch
    calls: list[int] = []

    def wrapper(*args, **kwargs):
        calls.append(len(calls) + 1)
        if len(calls) == n:
            raise RuntimeError("killed")
        return real(*args, **kwargs)

    monkeypatch.setattr(replay_module, "_replay_batch", wrapper)
    return calls


def test_identical_replays_write_identical_files(tmp_path, tiny_model, small_run):
    again = replay(small_config(tmp_path / "again"), model=tiny_model)
    first, second = file_bytes(small_run.path), file_bytes(again.path)
    assert set(first) == {
        "rounds.parquet",
        "tokens.parquet",
        "spans.parquet",
        "metrics.json",
        *(f"activations/blocks.{i}.hook_resid_post.safetensors" for i in range(N_LAYERS)),
    }
    assert first == second
    m1, m2 = small_run.manifest, again.manifest
    for m in (m1, m2):
        m.pop("timing")
        m["config"].pop("out")
    assert m1 == m2


def test_killed_replay_resumes_with_the_next_batch(tmp_path, tiny_model, small_run, monkeypatch):
    out = tmp_path / "run"
    calls = fail_on_call(monkeypatch, 2)
    with pytest.raises(RuntimeError, match="killed"):
        replay(small_config(out), model=tiny_model)
    assert calls == [1, 2]
    assert not (out / "manifest.json").exists()
    assert sorted(p.name for p in (out / ".partial").glob("batch-*.safetensors")) == [
        "batch-00000.safetensors"
    ]
    with pytest.raises(InterpError):
        Run.open(out)
    monkeypatch.undo()
    calls = fail_on_call(monkeypatch, 99)  # counts calls, never fails
    run = replay(small_config(out), model=tiny_model)
    assert calls == [1, 2]  # batches 1 and 2 only: batch 0 came from .partial
    assert not (out / ".partial").exists()
    assert file_bytes(run.path) == file_bytes(small_run.path)


def test_run_open_says_interrupted_replay_is_unfinished(tmp_path, tiny_model, monkeypatch):
    out = tmp_path / "run"
    fail_on_call(monkeypatch, 2)
    with pytest.raises(RuntimeError):
        replay(small_config(out), model=tiny_model)
    with pytest.raises(InterpError, match="unfinished"):
        Run.open(out)


def test_complete_replay_is_returned_without_recomputing(tmp_path, small_run, monkeypatch):
    out = tmp_path / "copy"
    shutil.copytree(small_run.path, out)
    before = file_bytes(out)

    def refuse(*args, **kwargs):
        raise AssertionError("recomputed")

    monkeypatch.setattr(replay_module, "_replay_batch", refuse)
    monkeypatch.setattr(replay_module, "load_model", refuse)
    config = small_config(out)
    run = replay(config)  # no model given: it must not even load one
    assert run.path == out and run.manifest["complete"]
    assert file_bytes(out) == before


def test_different_config_on_complete_run_is_refused(tmp_path, tiny_model, small_run):
    out = tmp_path / "copy"
    shutil.copytree(small_run.path, out)
    before = file_bytes(out)
    with pytest.raises(InterpError, match="different run"):
        replay(small_config(out, rounds=2), model=tiny_model)
    assert file_bytes(out) == before


def test_different_config_on_unfinished_run_is_refused(tmp_path, tiny_model, monkeypatch):
    out = tmp_path / "run"
    fail_on_call(monkeypatch, 2)
    with pytest.raises(RuntimeError):
        replay(small_config(out), model=tiny_model)
    monkeypatch.undo()
    with pytest.raises(InterpError, match="unfinished different replay"):
        replay(small_config(out, plan="baseline"), model=tiny_model)
    assert sorted(p.name for p in (out / ".partial").iterdir()) == [
        "batch-00000.safetensors",
        "config.json",
    ]


def test_foreign_directory_is_refused(tmp_path, tiny_model):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    with pytest.raises(InterpError, match="not empty"):
        replay(small_config(out), model=tiny_model)
    assert [p.name for p in out.iterdir()] == ["notes.txt"]
    assert (out / "notes.txt").read_text() == "keep me"


def test_out_that_is_a_file_is_refused(tmp_path, tiny_model):
    out = tmp_path / "file"
    out.write_text("x")
    with pytest.raises(InterpError, match="file"):
        replay(small_config(out), model=tiny_model)
    assert out.read_text() == "x"


def test_empty_existing_directory_is_used(tmp_path, tiny_model):
    out = tmp_path / "empty"
    out.mkdir()
    run = replay(small_config(out, limit=1), model=tiny_model)
    assert len(run.rounds()) == 2


# --- bad input ---------------------------------------------------------------------------------


def _malformed_bbq(tmp_path: Path) -> list[str]:
    path = bbq_file(tmp_path / "Age.jsonl", 2)
    path.write_text(path.read_text() + json.dumps({**BBQ_LINE, "label": 7}) + "\n")
    return [str(path)]


def _bad_json_bbq(tmp_path: Path) -> list[str]:
    path = tmp_path / "Age.jsonl"
    path.write_text(json.dumps(BBQ_LINE) + "\n{not json\n")
    return [str(path)]


BAD_INPUTS = {
    "rounds 0": ({"rounds": 0}, "rounds"),
    "limit 0": ({"limit": 0}, "limit"),
    "batch_size 0": ({"batch_size": 0}, "batch_size"),  # the field: the API speaks fields
    "max_new_tokens 0": ({"max_new_tokens": 0}, "max_new_tokens"),
    "unknown mode": ({"mode": "sample"}, "unknown mode"),
    "unknown plan": ({"plan": "be-nice"}, "unknown plan.*self-correct"),
    "missing plan file": ({"plan": "nowhere/plan.yaml"}, "no such plan file"),
    "unknown task": ({"task": "trivia"}, "unknown task"),
    "missing data file": ({"task": "bbq", "data": ["nowhere/Age.jsonl"]}, "file not found"),
    "bbq without data": ({"task": "bbq"}, "needs at least one data file"),
    "malformed bbq line": ({"task": "bbq", "data": _malformed_bbq}, r"Age\.jsonl:3: .*label"),
    "bbq line not json": ({"task": "bbq", "data": _bad_json_bbq}, r"Age\.jsonl:2: invalid JSON"),
    "unknown hook": ({"hooks": ["resid_postt"]}, "unknown hook"),
    "unknown hook name": ({"hooks": ["blocks.1.hook_z"]}, "unknown hook"),
    "hook layer out of range": ({"hooks": ["blocks.3.hook_resid_post"]}, "out of range"),
    "no hooks": ({"hooks": []}, "at least one hook"),
}


@pytest.mark.parametrize("case_name", list(BAD_INPUTS))
def test_bad_input_raises_and_writes_nothing(tmp_path, tiny_model, case_name):
    overrides, message = BAD_INPUTS[case_name]
    overrides = dict(overrides)
    if callable(overrides.get("data")):
        overrides["data"] = overrides["data"](tmp_path)
    out = tmp_path / "parent" / "run"
    config = ReplayConfig(**{"out": str(out), "model": "tiny", "limit": 2, **overrides})
    with pytest.raises(InterpError, match=message):
        replay(config, model=tiny_model)
    assert not (tmp_path / "parent").exists()


# --- resolve_hooks, option_token_ids, parse_choice ---------------------------------------------


@pytest.mark.parametrize("kind", HOOK_KINDS)
def test_hook_kinds_expand_to_real_hook_points_of_every_layer(tiny_model, kind):
    names = resolve_hooks([kind], N_LAYERS)
    assert names == [f"blocks.{i}.hook_{kind}" for i in range(N_LAYERS)]
    assert all(name in tiny_model.hook_dict for name in names)


def test_resolve_hooks_keeps_order_and_drops_duplicates():
    names = resolve_hooks(["blocks.2.hook_mlp_out", "resid_pre", "blocks.1.hook_resid_pre"], 3)
    assert names == [
        "blocks.2.hook_mlp_out",
        "blocks.0.hook_resid_pre",
        "blocks.1.hook_resid_pre",
        "blocks.2.hook_resid_pre",
    ]
    assert resolve_hooks(["blocks.11.hook_attn_out"], 12) == ["blocks.11.hook_attn_out"]


@pytest.mark.parametrize(
    "hook",
    [
        "blocks.3.hook_resid_post",
        "blocks.-1.hook_resid_post",
        "blocks.1.hook_z",
        "blocks.1.attn.hook_z",
        "hook_resid_post",
        "resid",
        "",
        "blocks.1.hook_resid_post ",
    ],
)
def test_resolve_hooks_rejects_bad_names(hook):
    with pytest.raises(InterpError):
        resolve_hooks([hook], N_LAYERS)


def test_hook_name_with_leading_zero_is_refused_or_normalised(tmp_path, tiny_model):
    out = tmp_path / "run"
    try:
        run = replay(
            small_config(out, limit=1, hooks=["blocks.01.hook_resid_post"]), model=tiny_model
        )
    except InterpError:
        assert not out.exists()
        return
    assert run.hooks == ["blocks.1.hook_resid_post"]


def test_option_token_ids_are_single_letter_tokens(tiny_model):
    tok = tiny_model.tokenizer
    ids = option_token_ids(tok, 6)
    assert [tok.decode([i]) for i in ids] == list("abcdef")
    assert len(set(ids)) == 6


def test_option_token_ids_refuse_split_letters():
    class Splitting:
        def encode(self, text, add_special_tokens=False):
            return [1, 2] if text == "b" else [0]

    with pytest.raises(InterpError, match="'b'"):
        option_token_ids(Splitting(), 3)


OPTIONS = ("The grandfather", "The grandson", "Can't be determined")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("(b) The grandson", 1),
        ("(B)", 1),
        ("The answer is c", 2),
        ("The answer is: (a)", 0),
        ("c) Can't be determined", 2),
        ("I think it was the grandson.", 1),
        ("Can't be determined from the context", 2),
        ("xq zzv ####", -1),
        ("", -1),
        ("the grandfather or the grandson", -1),  # names two options: no guess
        ("(d) none of these", -1),  # no option (d), and no option text named
        ("(d) the grandson", 1),  # letter out of range, but the text names one option
    ],
)
def test_parse_choice(text, expected):
    assert parse_choice(text, OPTIONS) == expected


def test_parse_choice_does_not_read_the_article_a_as_a_letter():
    options = ("The retiree", "Can't be determined", "A college student")
    assert parse_choice("The answer is a college student.", options) == 2


# --- config fields that must reach the model --------------------------------------------------


def test_system_prompt_reaches_the_transcript(tmp_path, tiny_model):
    run = replay(small_config(tmp_path / "run", limit=1, system="Be careful."), model=tiny_model)
    text = tiny_model.tokenizer.decode(run.tokens()[0])
    assert text.startswith("<|im_start|>system\nBe careful.<|im_end|>\n")


def test_seed_selects_the_tiny_model(tmp_path):
    run = replay(small_config(tmp_path / "run", limit=1, seed=3))
    assert run.manifest["model"]["weights_hash"] == "tiny-seed-3"


def test_changed_data_file_is_not_served_stale(tmp_path, tiny_model):
    path = bbq_file(tmp_path / "Age.jsonl", 2)
    config = ReplayConfig(out=str(tmp_path / "run"), model="tiny", task="bbq", data=[str(path)])
    config.rounds = 1
    replay(config, model=tiny_model)
    path.write_text(path.read_text().replace("outside the store", "inside the library"))
    try:
        run = replay(config, model=tiny_model)
    except InterpError:
        return  # refusing is fine too
    assert run.manifest["task"]["data_hash"] == data_hash([path])
    assert "inside the library" in tiny_model.tokenizer.decode(run.tokens()[0])


# --- the embedded model ------------------------------------------------------------------------


def test_a_base_models_run_renders_plain_text_and_its_manifest_says_so(tmp_path, small_run):
    """A tokenizer without a chat template (a base model: Gemma 3 270M) is not refused: the
    plain-text template renders the rounds, the stored transcript is that text, and the
    manifest names the template; a chat model's manifest has no such record."""
    from interp.inputs.conversation import PLAIN_TEMPLATE

    model = load_model("tiny")  # its own copy: the tokenizer is changed
    model.tokenizer = copy.deepcopy(model.tokenizer)
    model.tokenizer.chat_template = None
    run = replay(small_config(tmp_path / "plain", limit=1), model=model)
    manifest = json.loads((run.path / "manifest.json").read_text())
    assert manifest["template"]["name"] == "plain-text"
    assert manifest["template"]["template"] == PLAIN_TEMPLATE
    assert "template" not in json.loads((small_run.path / "manifest.json").read_text())
    text = model.tokenizer.decode(run.tokens()[0])
    assert text.startswith(model.tokenizer.bos_token + "User:\n")
    assert text.count("\n\nAssistant:\nThe single most likely answer is (") == 2


def test_a_base_models_continuation_is_cut_where_it_writes_the_next_turn():
    """Generated text (cot thinking, generate mode) under the plain template keeps only the
    model's own turn: a base model goes on to write "User:" / "Assistant:" turns itself."""
    own_turn = replay_module._own_turn
    assert own_turn("b) The grandson.\n\nUser:\nAnd now?\n\nAssistant:\n(c") == "b) The grandson."
    assert own_turn("Let me think.\nAssistant: (a)") == "Let me think."
    assert own_turn(" (c) Can't be determined ") == "(c) Can't be determined"
