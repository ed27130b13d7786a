"""``interp sae features``: a run's stored read-out activations encoded by an SAE, its tables."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from sae_lens import TopKSAE, TopKSAEConfig
from sae_lens.saes.sae import SAEMetadata

from interp.replay.loop import ReplayConfig, replay
from interp.runs.store import AnalysisTensors, Run
from interp.sae.latent_changes import (
    FeaturesConfig,
    encode,
    encode_run,
    latent_tables,
    open_sae,
    permute_rounds,
    sae_features,
    shuffled_changes,
)

HOOK = "blocks.1.hook_resid_post"


def save_sae(folder, d_in: int = 64, hook: str = HOOK, d_sae: int = 48, k: int = 6) -> str:
    torch.manual_seed(0)
    sae = TopKSAE(TopKSAEConfig(d_in=d_in, d_sae=d_sae, k=k, metadata=SAEMetadata(hook_name=hook)))
    torch.nn.init.normal_(sae.W_enc)
    sae.save_model(folder)
    return str(folder)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, tiny_model):
    out = tmp_path_factory.mktemp("sae-features") / "run"
    replay(
        ReplayConfig(model="tiny", task="builtin", rounds=2, limit=8, out=str(out)),
        model=tiny_model,
    )
    return out


def test_features_equal_encoding_a_fresh_forward(run_dir, tiny_model, tmp_path):
    path = save_sae(tmp_path / "sae")
    run = Run.open(run_dir)
    sae = open_sae(path, run)
    stored = encode_run(run, sae)
    rounds = run.rounds().sort_values(["example_index", "round"])
    tokens = run.tokens()
    fresh = torch.zeros_like(stored)
    for e, transcript in enumerate(tokens):
        _, cache = tiny_model.run_with_cache(torch.tensor([transcript]), names_filter=HOOK)
        readouts = rounds[rounds["example_index"] == e]["readout_pos"].tolist()
        # the run stores float16: the same rounding, then the SAE's float32 encoding
        acts = cache[HOOK][0, readouts].to(torch.float16)
        fresh[e] = encode(sae, acts)
    assert torch.allclose(stored, fresh, atol=1e-4)

    result = sae_features(run, FeaturesConfig(sae=path, n_boot=50, n_shuffles=20))
    means = fresh.double().mean(dim=0).numpy()  # [round, latent]
    table = result.tables["latents"]
    got = table.pivot(index="round", columns="latent", values="mean")
    np.testing.assert_allclose(got.to_numpy(), means[:, got.columns], atol=1e-4)
    # every latent that never fires is left out, and counted
    fired = (fresh > 0).any(dim=1).any(dim=0)
    assert sorted(got.columns) == torch.nonzero(fired).ravel().tolist()
    assert result.summary["latents_never_fire"] == int((~fired).sum())
    # written through Run, and read back alike
    back = run.read_analysis("sae", "sae")
    assert set(back.tables) == set(result.tables)
    pd.testing.assert_frame_equal(back.tables["changes"], result.tables["changes"])
    assert back.summary["top_latents"] == result.summary["top_latents"]
    assert all(np.isfinite(table["mean_lo"])) and (table["mean_lo"] <= table["mean"] + 1e-9).all()


def test_permuted_rounds_are_permutations_within_examples():
    order = permute_rounds(50, 4, np.random.default_rng(0))
    assert order.shape == (50, 4)
    assert (np.sort(order, axis=1) == np.arange(4)).all()
    assert len({tuple(row) for row in order}) > 5  # not one fixed order


def _planted(n: int = 40, rounds: int = 3, latents: int = 10, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    acts = rng.exponential(1.0, size=(n, rounds, latents))
    acts[:, :, 3] += 5.0 * np.arange(rounds)  # latent 3 grows with the round, in every example
    return acts


def _rounds_table(n: int, rounds: int, correct: np.ndarray) -> pd.DataFrame:
    rows = [
        {
            "example_index": e,
            "round": r,
            "choice": 0,
            "target": 0 if e % 2 else 1,
            "correct": bool(correct[e]),
        }
        for e in range(n)
        for r in range(rounds)
    ]
    return pd.DataFrame(rows)


def test_shuffled_control_and_changes():
    acts = _planted()
    n, rounds, latents = acts.shape
    table, null = shuffled_changes(acts, 30, seed=0)
    assert list(table.columns) == ["shuffle", "round", "max_abs_change"]
    assert len(table) == 30 * (rounds - 1) and null.shape == (30, rounds, latents)
    assert (null[:, 0] == 0).all()
    config = FeaturesConfig(sae="-", top=4, n_boot=100, n_shuffles=50)
    tables = latent_tables(acts, _rounds_table(n, rounds, np.zeros(n)), np.arange(n), config)
    changes = tables["changes"]
    first = changes[changes["rank"] == 0]
    assert first["latent"].tolist() == [3, 3]
    expected = [(acts[:, r, 3] - acts[:, 0, 3]).mean() for r in (1, 2)]
    np.testing.assert_allclose(first["change"], expected, atol=1e-9)
    assert (first["p_shuffled"] < 0.05).all()
    assert (first["change"].abs() > first["null_max_q95"]).all()
    assert (first["change_lo"] < first["change"]).all() and (
        first["change"] < first["change_hi"]
    ).all()
    # no change at all: every shuffle gives 0 and p is 1
    flat = np.repeat(acts[:, :1], rounds, axis=1)
    flat_changes = latent_tables(flat, _rounds_table(n, rounds, np.zeros(n)), np.arange(n), config)
    assert (flat_changes["changes"]["change"] == 0).all()
    assert (flat_changes["changes"]["p_shuffled"] == 1).all()
    assert (flat_changes["shuffled"]["max_abs_change"] == 0).all()


def test_separation_finds_a_latent_that_tracks_correct_answers():
    acts = _planted()
    n, rounds, _ = acts.shape
    correct = np.arange(n) % 3 == 0
    acts[correct, :, 7] += 4.0
    config = FeaturesConfig(sae="-", top=3, n_boot=100, n_shuffles=0)
    sep = latent_tables(acts, _rounds_table(n, rounds, correct), np.arange(n), config)["separation"]
    best = sep[(sep["contrast"] == "correct") & (sep["rank"] == 0)]
    assert best["latent"].tolist() == [7] * rounds
    assert (best["diff_lo"] > 2).all()
    assert set(sep["contrast"]) == {"correct", "stereotyped"}
    assert (sep[sep["contrast"] == "correct"]["n_1"] == correct.sum()).all()


def test_concept_cosines_read_the_runs_probe_directions(run_dir, tmp_path, tiny_model):
    import shutil

    run_path = tmp_path / "run"
    shutil.copytree(run_dir, run_path)
    path = save_sae(tmp_path / "sae")
    run = Run.open(run_path)
    sae = open_sae(path, run)
    directions = torch.zeros(3, 64)
    directions[1] = -2.0 * sae.W_dec[5].detach()  # layer 1: latent 5's decoder row, flipped
    directions[0] = torch.randn(64)
    tensors = AnalysisTensors({"directions": directions}, {"layers": "0,1,2"})
    run.write_analysis("probes", "made", {}, {"concept": "made"}, tensors={"directions": tensors})
    result = sae_features(run, FeaturesConfig(sae=path, n_boot=0, n_shuffles=0), write=False)
    concepts = result.tables["concepts"]
    best = concepts[concepts["rank_in_sae"] == 0].iloc[0]
    assert (best["concept"], best["layer"], best["latent"]) == ("made", 1, 5)
    assert best["cosine"] == pytest.approx(-1.0, abs=1e-6)


def test_contexts_from_a_held_out_corpus(run_dir, tmp_path, tiny_model):
    path = save_sae(tmp_path / "sae")
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text('{"text": "The old man and the young woman went home."}\n{"text": "Why?"}\n')
    config = FeaturesConfig(
        sae=path, top=3, n_contexts=2, n_boot=0, n_shuffles=0, contexts=str(corpus)
    )
    result = sae_features(run_dir, config, model=tiny_model, write=False)
    contexts = result.tables["contexts"]
    assert set(contexts["latent"]) <= set(result.summary["top_latents"])
    for row in contexts.itertuples():
        assert len(row.tokens) == len(row.values)
        assert row.values[row.focus] == pytest.approx(row.activation)
        assert row.position > 0  # the sink position is never searched
    # chunks run batched and right-padded: the same activations as each chunk alone
    from interp.sae.latent_changes import corpus_chunks, read_corpus

    chunks, _ = corpus_chunks(tiny_model, read_corpus(corpus), config.context_len, 10_000)
    sae = open_sae(path, Run.open(run_dir))
    for row in contexts.itertuples():
        _, cache = tiny_model.run_with_cache(torch.tensor([chunks[row.chunk]]), names_filter=HOOK)
        alone = encode(sae, cache[HOOK][0, row.position])[row.latent]
        assert float(alone) == pytest.approx(row.activation, abs=1e-4)


def test_a_sample_reads_the_examples_select_rows_picks_and_stores_nothing(run_dir, tmp_path):
    from interp.inputs.selection import Selection, select_rows

    path = save_sae(tmp_path / "sae")
    run = Run.open(run_dir)
    full = sae_features(run, FeaturesConfig(sae=path, n_boot=20, n_shuffles=5, seed=1, top=48))
    stored = {p.name: p.read_bytes() for p in sorted((run_dir / "sae" / "sae").iterdir())}
    config = FeaturesConfig(sae=path, n_boot=20, n_shuffles=5, seed=1, top=48, sample=3)
    part = sae_features(run, config)
    kept = sorted(
        int(i)
        for i in select_rows(run.rounds(), Selection(sample=3, seed=1))["example_index"].unique()
    )
    assert kept != [0, 1, 2]  # a limit, or positions taken for indices, would read these
    acts = part.tables["example_acts"]
    assert sorted(acts["example_index"].unique()) == kept
    assert part.summary["n_examples"] == 3 and part.summary["selection"]["example_index"] == kept
    assert part.summary["config"]["sample"] == 3
    assert "sample" not in full.summary["config"]  # a full analysis records what it did
    # each selected example's activations are the full analysis's, row for row
    keys = ["example_index", "round", "latent"]
    both = acts.merge(full.tables["example_acts"], on=keys, suffixes=("", "_full"))
    assert len(both) > 0 and len(both) == acts["latent"].isin(both["latent"]).sum()
    np.testing.assert_array_equal(both["activation"], both["activation_full"])
    encoded = encode_run(run, open_sae(path, run)).double().numpy()[kept]
    got = part.tables["latents"].pivot(index="round", columns="latent", values="mean")
    np.testing.assert_allclose(got.to_numpy(), encoded.mean(axis=0)[:, got.columns], rtol=1e-12)
    # printed, not stored: the run's full result is left as it was
    assert part.paths == []
    after = {p.name: p.read_bytes() for p in sorted((run_dir / "sae" / "sae").iterdir())}
    assert after == stored


def test_a_selection_is_refused_in_one_line(run_dir, tmp_path):
    from interp.errors import InterpError

    path = save_sae(tmp_path / "sae")
    with pytest.raises(InterpError, match="no such examples in the run: nope/1"):
        sae_features(run_dir, FeaturesConfig(sae=path, examples=("nope/1",)))
    with pytest.raises(InterpError, match="--sample 9 exceeds the 8"):
        sae_features(run_dir, FeaturesConfig(sae=path, sample=9))
    with pytest.raises(InterpError, match="limit must be at least 1"):
        sae_features(run_dir, FeaturesConfig(sae=path, limit=0))
