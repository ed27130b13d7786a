"""interp.finetune.select: the selection scores equal a hand computation on the tiny model,
the top N and the random control follow their rules, and finetune.json records the
selection (issue 26 item 2)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file

from interp.errors import InterpError
from interp.finetune.config import FinetuneConfig
from interp.finetune.select import (
    check_folder_model,
    read_probe_folder,
    score_candidates,
    select_examples,
    top_n,
    training_tokens,
)
from interp.finetune.train import finetune
from interp.inputs.conversation import RoundInput, build_conversation
from interp.inputs.plans import load_plan
from interp.inputs.selection import Selection
from interp.inputs.tasks import load_task
from interp.replay.loop import ReplayConfig, replay

PREFIX = "The single most likely answer is ("  # the self-correct plan's answer prefix


@pytest.fixture(scope="module")
def concept_dir(tmp_path_factory, tiny_model):
    """A tiny-model run probed for the stereotype concept: ``<run>/probes/stereotype``."""
    from probes.api import probe
    from probes.config import ProbeConfig

    run = tmp_path_factory.mktemp("select") / "run"
    replay(ReplayConfig(out=str(run), model="tiny", rounds=1, limit=2), model=tiny_model)
    probe(run, ProbeConfig(concept="stereotype", n_boot=0, transfer=False), model=tiny_model)
    return run / "probes" / "stereotype"


def _by_hand(model, example, plan, layer: int, direction: np.ndarray) -> tuple[float, float]:
    """A fresh forward with run_with_cache; the dot product and the entropy in numpy."""
    conv = build_conversation(
        model.tokenizer, [RoundInput(*plan.user_turn(example, 0, None))], answer_prefix=PREFIX
    )
    assert conv.text.endswith(PREFIX)  # the read-out: the answer prefix's last token
    logits, cache = model.run_with_cache(torch.tensor([conv.tokens]))
    resid = cache[f"blocks.{layer}.hook_resid_post"][0, -1].double().numpy()
    unit = direction.astype(np.float64) / np.linalg.norm(direction)
    letters = [model.tokenizer.encode(c, add_special_tokens=False)[0] for c in "abc"]
    letters = letters[: len(example.options)]
    z = logits[0, -1].double().numpy()[letters]
    p = np.exp(z - z.max()) / np.exp(z - z.max()).sum()
    return float(resid @ unit), float(-(p * np.log(p)).sum())


def test_scores_equal_a_hand_computation(tiny_model, concept_dir):
    plan = load_plan("self-correct")
    assert plan.answer_prefix == PREFIX
    examples = load_task("builtin")[:5]
    folder = read_probe_folder(concept_dir)
    summary = json.loads((concept_dir / "summary.json").read_text())
    assert folder.layer == summary["best_layer"]
    rows = load_file(str(concept_dir / "directions.safetensors"))["directions"]
    direction = rows[summary["layers"].index(summary["best_layer"])]
    scores = score_candidates(tiny_model, examples, plan, folder)
    for i, ex in enumerate(examples):
        concept, entropy = _by_hand(tiny_model, ex, plan, folder.layer, direction)
        assert scores["concept"][i] == pytest.approx(concept, rel=1e-5, abs=1e-6)
        assert scores["entropy"][i] == pytest.approx(entropy, rel=1e-5, abs=1e-7)
    assert len(set(scores["concept"])) == 5 and 0 < max(scores["entropy"]) <= math.log(3)


def test_top_n_ranks_best_first_ties_by_example_order():
    scores = {"concept": [0.5, 2.0, 2.0, -1.0, 0.1], "entropy": [1.0, 0.1, 0.2, 0.9, 1.0]}
    assert top_n("concept", scores, 3)[0] == [1, 2, 0]
    assert top_n("uncertainty", scores, 2)[0] == [0, 4]
    # concept ranks 3,1,2,5,4; entropy ranks 1,5,4,3,2 -> means 2,3,3,4,3
    kept, key = top_n("concept+uncertainty", scores, 3)
    assert key == [2.0, 3.0, 3.0, 4.0, 3.0] and kept == [0, 1, 2]


def test_folder_of_another_model_is_refused(tiny_model, concept_dir):
    folder = read_probe_folder(concept_dir)
    check_folder_model(folder, tiny_model)  # its own model passes
    other = type(folder)(**{**folder.__dict__, "model": {**folder.model, "weights_hash": "x"}})
    with pytest.raises(InterpError, match="not on tiny"):
        check_folder_model(other, tiny_model)


def _config(tmp_path, name, **fields) -> FinetuneConfig:
    base = {"steps": 2, "rounds": 0, "selection": Selection(limit=8), "n": 3}
    return FinetuneConfig(out=str(tmp_path / name), **{**base, **fields})


def test_finetune_json_records_the_selection(tiny_model, concept_dir, tmp_path):
    examples = load_task("builtin")[:8]
    plan = load_plan("self-correct")
    scores = score_candidates(tiny_model, examples, plan, read_probe_folder(concept_dir))
    best = sorted(range(8), key=lambda i: (-scores["concept"][i], i))[:3]

    finetune("tiny", _config(tmp_path, "c", select="concept", concept=str(concept_dir)))
    info = json.loads((tmp_path / "c" / "finetune.json").read_text())
    sel = info["selection"]
    assert sel["example_ids"] == [examples[i].example_id for i in best]
    assert sel["scores"]["concept"] == pytest.approx([scores["concept"][i] for i in best])
    assert sel["concept"]["layer"] == read_probe_folder(concept_dir).layer
    assert info["examples"] == 3 and sel["candidates"] == 8
    lengths = [training_tokens(tiny_model.tokenizer, plan, examples[i], 0) for i in best]
    assert sel["tokens"] == sum(lengths)
    assert sel["tokens_trained"] > 0 and 0 < sel["answer_tokens"] < sel["tokens"]
    assert info["hyper_parameters"]["select"] == "concept"

    finetune("tiny", _config(tmp_path, "r", select="random", concept=str(concept_dir)))
    sel_r = json.loads((tmp_path / "r" / "finetune.json").read_text())["selection"]
    assert len(sel_r["example_ids"]) == 3
    match = sel_r["token_match"]
    assert match["target_tokens"] == sel["tokens"]  # matched to the concept arm's tokens
    assert sel_r["tokens"] == match["tokens"]
    gap = abs(match["tokens"] - match["target_tokens"])
    assert match["within"] == (gap <= 0.02 * sel["tokens"])


def test_random_follows_the_seed_and_all_keeps_everything(tiny_model):
    examples = load_task("builtin")[:8]
    picks = []
    for seed in (0, 0, 1):
        record: dict = {}
        config = FinetuneConfig(out="unused", select="random", n=4, seed=seed)
        kept = select_examples(tiny_model, examples, config, record)
        ids = [e.example_id for e in examples]
        assert [e.example_id for e in kept] == sorted(record["example_ids"], key=ids.index)
        picks.append(record["example_ids"])
    assert picks[0] == picks[1] and picks[0] != picks[2]
    assert select_examples(tiny_model, examples, FinetuneConfig(out="unused")) == examples


def test_token_matched_random_is_never_the_concept_selection(tiny_model, concept_dir):
    """On a small pool the draw nearest the concept arm's tokens is often the concept arm's
    own top N; the control skips it."""
    examples = load_task("builtin")[:5]
    fields = {"out": "unused", "n": 2, "concept": str(concept_dir), "rounds": 0}
    concept: dict = {}
    select_examples(tiny_model, examples, FinetuneConfig(select="concept", **fields), concept)
    for seed in range(4):
        record: dict = {}
        config = FinetuneConfig(select="random", seed=seed, **fields)
        select_examples(tiny_model, examples, config, record)
        assert set(record["example_ids"]) != set(concept["example_ids"])
        assert record["token_match"]["target_tokens"] > 0
