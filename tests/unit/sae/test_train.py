"""`interp.sae.corpus` and `interp.sae.train` on the tiny model: corpora, the sink exclusion,
training through sae-lens' runner, the saved folder and determinism."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

import pytest
import torch
from sae_lens import SAE
from safetensors.torch import load_file

from interp.errors import InterpError
from interp.inputs.tasks import load_builtin
from interp.replay.loop import ReplayConfig, replay
from interp.sae.corpus import (
    CorpusConfig,
    Document,
    build_corpus,
    pack,
    round0_prompts,
    split_documents,
)
from interp.sae.evals import scored_mask
from interp.sae.load import load_sae
from interp.sae.train import TrainConfig, count_trainable, make_runner, train_sae

HOOK = "blocks.1.hook_resid_post"
BUILTIN_FILE = str(resources.files("interp").joinpath("data/examples.jsonl"))


def _config(out: Path, **kw) -> TrainConfig:
    corpus = kw.pop("corpus", CorpusConfig(corpus=["concepts", "builtin"], context=32))
    base = dict(hook=HOOK, width=64, k=4, batch_tokens=128, tokens=8192, lr=3e-3, eval_tokens=512)
    return TrainConfig(out=str(out), corpus=corpus, **{**base, **kw})


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_model, one_torch_thread):
    return train_sae(tiny_model, _config(tmp_path_factory.mktemp("sae") / "a"), progress=False)


@pytest.fixture(scope="module")
def small_run(tmp_path_factory, tiny_model, one_torch_thread):
    out = tmp_path_factory.mktemp("run") / "run"
    config = ReplayConfig(out=str(out), model="tiny", rounds=1, limit=5, batch_size=5)
    return replay(config, model=tiny_model)


def test_bbq_corpus_is_replays_round0_prompt(small_run, tiny_model):
    examples = load_builtin()[:5]
    prompts = round0_prompts(tiny_model.tokenizer, examples, "self-correct")
    rounds = small_run.rounds()
    for i, tokens in enumerate(small_run.tokens()):
        readout = int(
            rounds[(rounds.example_index == i) & (rounds["round"] == 0)].readout_pos.iloc[0]
        )
        assert prompts[i] == tokens[: readout + 1]


def test_bbq_file_and_builtin_render_alike(tiny_model):
    # The built-in items are a BBQ-format file: read as --corpus bbq they give the same tokens.
    from interp.sae.corpus import kind_documents

    cfg = CorpusConfig(corpus=["bbq"], data=[BUILTIN_FILE])
    bbq = kind_documents("bbq", cfg, tiny_model)
    builtin = kind_documents("builtin", CorpusConfig(corpus=["builtin"]), tiny_model)
    assert [d.tokens for d in bbq] == [d.tokens for d in builtin]
    assert bbq[0].group == f"{load_builtin()[0].category}/{load_builtin()[0].question_index}"


def test_run_corpus_is_the_transcripts(small_run, tiny_model):
    from interp.sae.corpus import kind_documents

    docs = kind_documents(
        "run", CorpusConfig(corpus=["run"], runs=[str(small_run.path)]), tiny_model
    )
    assert [d.tokens for d in docs] == small_run.tokens()


def test_text_corpus_reads_paragraphs_and_jsonl(tmp_path, tiny_model):
    from interp.sae.corpus import kind_documents

    (tmp_path / "a.txt").write_text("Please answer.\nThe old man.\n\n\nUnknown.\n")
    (tmp_path / "b.jsonl").write_text('{"text": "Who was it?"}\n\n{"text": "The grandson."}\n')
    cfg = CorpusConfig(corpus=["text"], data=[str(tmp_path / "a.txt"), str(tmp_path / "b.jsonl")])
    docs = kind_documents("text", cfg, tiny_model)
    tok = tiny_model.tokenizer
    want = ["Please answer.\nThe old man.", "Unknown.", "Who was it?", "The grandson."]
    assert [d.tokens for d in docs] == [tok(t, add_special_tokens=False)["input_ids"] for t in want]
    (tmp_path / "c.jsonl").write_text('{"txt": "x"}\n')
    with pytest.raises(InterpError, match="c.jsonl:1"):
        kind_documents(
            "text", CorpusConfig(corpus=["text"], data=[str(tmp_path / "c.jsonl")]), tiny_model
        )


def test_split_keeps_groups_whole_and_is_seeded():
    docs = [Document("bbq", f"g{i % 40}", [i]) for i in range(400)]
    train, held = split_documents(docs, 0.25, seed=3)
    assert {d.group for d in train}.isdisjoint({d.group for d in held})
    assert 0 < len(held) < len(docs)
    again = split_documents(list(reversed(docs)), 0.25, seed=3)[1]
    assert {d.tokens[0] for d in again} == {d.tokens[0] for d in held}  # order does not matter
    other = split_documents(docs, 0.25, seed=4)[1]
    assert {d.group for d in other} != {d.group for d in held}


def test_pack_starts_every_sequence_with_the_sink():
    docs = [Document("text", str(i), list(range(100 * i, 100 * i + 7))) for i in range(5)]
    seq = pack(docs, 8, sink=1, seed=0)
    assert seq.shape == (5, 8) and bool((seq[:, 0] == 1).all())
    assert sorted(seq[:, 1:].flatten().tolist()) == sorted(t for d in docs for t in d.tokens)


def test_corpus_hash_follows_the_seed(tiny_model):
    a = build_corpus(CorpusConfig(corpus=["concepts"], context=32, seed=0), tiny_model)
    b = build_corpus(CorpusConfig(corpus=["concepts"], context=32, seed=0), tiny_model)
    c = build_corpus(CorpusConfig(corpus=["concepts"], context=32, seed=1), tiny_model)
    assert a.hash == b.hash != c.hash
    assert torch.equal(a.train, b.train)
    special = set(tiny_model.tokenizer.all_special_ids)
    assert a.sink_id in special and special <= set(a.exclude_ids)


def test_sink_and_special_tokens_never_reach_the_trainer(tiny_model, one_torch_thread, tmp_path):
    config = _config(tmp_path / "x")
    corpus = build_corpus(config.corpus, tiny_model)
    with torch.random.fork_rng(devices=[]):
        runner = make_runner(config, tiny_model, corpus, tiny_model.cfg.d_model, 2048)
        acts = runner.activations_store.get_filtered_llm_batch()
    batch = corpus.train[:8]  # the store reads the dataset in order, 8 sequences a batch
    _, cache = tiny_model.run_with_cache(batch, names_filter=[HOOK])
    keep = scored_mask(batch, corpus.exclude_ids)
    assert not bool(keep[:, :2].any())  # the sink (position 0) and its occasional twin (1)
    assert bool(keep[:, 2:].any()) and int(keep.sum()) < keep.numel()
    assert acts.shape[0] == count_trainable(batch, corpus.exclude_ids) == int(keep.sum())
    assert torch.allclose(acts, cache[HOOK][keep], atol=1e-6)


def test_training_reduces_reconstruction_loss(trained, tiny_model, tmp_path):
    config = _config(tmp_path / "y")
    corpus = build_corpus(config.corpus, tiny_model)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)  # the initialisation train_sae started from
        start = make_runner(config, tiny_model, corpus, tiny_model.cfg.d_model, 8192).sae
    _, cache = tiny_model.run_with_cache(corpus.heldout, names_filter=[HOOK])
    x = cache[HOOK][scored_mask(corpus.heldout, corpus.exclude_ids)]
    with torch.no_grad():
        before = (start.decode(start.encode(x)) - x).pow(2).sum(-1).mean()
        after = (trained.sae.decode(trained.sae.encode(x)) - x).pow(2).sum(-1).mean()
    assert after < 0.8 * before
    curve = trained.training["loss_curve"]
    assert curve[-1]["mse_loss"] < curve[0]["mse_loss"]


def test_saved_folder_loads_with_sae_lens(trained, tiny_model):
    path = trained.path
    assert {p.name for p in path.iterdir()} == {
        "cfg.json",
        "sae_weights.safetensors",
        "training.json",
        "evals.json",
    }
    loaded = SAE.load_from_disk(str(path))
    ours = load_sae(path, tiny_model)
    x = torch.randn(50, tiny_model.cfg.d_model) * 5
    with torch.no_grad():
        out = loaded.decode(loaded.encode(x))
        assert torch.equal(out, ours.decode(ours.encode(x)))
        # the folder holds the inference form of the trained SAE (decoder norms folded in)
        ref = trained.sae.decode(trained.sae.encode(x))
    assert torch.allclose(out, ref, atol=1e-4, rtol=1e-4)
    assert loaded.cfg.metadata.hook_name == HOOK


def test_training_record_and_evals(trained, tiny_model):
    record = json.loads((trained.path / "training.json").read_text())
    evals = json.loads((trained.path / "evals.json").read_text())
    assert record["model"]["weights_hash"] == tiny_model.interp_source.weights_hash
    assert record["hook"] == HOOK and record["tokens"]["trained"] == 8192
    assert record["corpus"]["hash"] == evals["corpus_hash"]
    assert record["loss_curve"] and record["seconds"]["train"] > 0
    for key in (
        "explained_variance",
        "mean_l0",
        "dead_fraction",
        "ce_loss_recovered",
        "kl_with_sae",
    ):
        assert isinstance(evals[key], float), key
    assert evals["mean_l0"] == pytest.approx(4.0)  # topk, k=4
    assert 0 < evals["scored_tokens"] <= 512


def test_same_seed_same_weights(trained, tiny_model, tmp_path, one_torch_thread):
    again = train_sae(tiny_model, _config(tmp_path / "b"), progress=False)
    other = train_sae(tiny_model, _config(tmp_path / "c", seed=1), progress=False)
    weights = [
        load_file(str(p / "sae_weights.safetensors"))
        for p in (trained.path, again.path, other.path)
    ]
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    assert not torch.equal(weights[0]["W_dec"], weights[2]["W_dec"])


@pytest.mark.parametrize("architecture", ["batchtopk", "jumprelu", "standard"])
def test_other_architectures_train(architecture, tiny_model, tmp_path, one_torch_thread):
    result = train_sae(
        tiny_model,
        _config(tmp_path / architecture, architecture=architecture, tokens=512),
        progress=False,
    )
    cfg = json.loads((result.path / "cfg.json").read_text())
    assert cfg["architecture"] == architecture or architecture == "batchtopk"
    assert SAE.load_from_disk(str(result.path)).cfg.d_sae == 64


def test_failed_training_leaves_nothing(tiny_model, tmp_path):
    out = tmp_path / "z"
    with pytest.raises(InterpError, match="fewer than one batch"):
        train_sae(tiny_model, _config(out, tokens=10), progress=False)
    assert list(tmp_path.iterdir()) == []
