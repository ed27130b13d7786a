"""Probes: directions per layer, controls, split discipline, encodings and their cache, concept
scores across the rounds of a run. Unit tests use synthetic activations and the tiny model;
the integration test uses the embedded model."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats
from sklearn.feature_extraction.text import CountVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from interp.cli.format import format_probe
from interp.errors import InterpError
from interp.model.loading import load_model
from interp.runs.store import SCHEMA_VERSION, Run, write_activations, write_json, write_parquet
from interp.stats import wilson_interval
from probes.api import ProbeResult, probe
from probes.behaviour import behaviour_labels, behaviour_probes, split_examples
from probes.concepts import ConceptData, load_concept, split_pairs
from probes.config import ProbeConfig
from probes.directions import (
    METHODS,
    choose_layer,
    fit_directions,
    probe_layers,
    validation_split,
)
from probes.encode import encode_texts, encode_token_ids, encodings_key, encodings_path
from probes.logistic import fit_logistic
from probes.scores import concept_scores, instruction_shift, score_entropy_correlation
from probes.stats import balanced_permutation
from probes.surface import compare_to_surface, length_features
from probes.transfer import (
    cached_wrapped_encodings,
    encode_last_shared_prefix,
    wrap_statements,
)

N_LAYERS, D_MODEL = 3, 64  # the tiny model
ANSWER_PREFIX = "The single most likely answer is ("


@pytest.fixture(scope="module")
def tiny_model():
    return load_model("tiny")


# ---------------------------------------------------------------------------------------------
# Synthetic data


def planted(
    n_pairs: int,
    d: int,
    *,
    n_layers: int = 3,
    signal: float = 2.0,
    pair_sd: float = 0.7,
    noise_sd: float = 0.7,
    nuisance: int = 0,
    nuisance_sd: float = 5.0,
    seed: int = 0,
) -> tuple[ConceptData, torch.Tensor, torch.Tensor]:
    """Paired concept data whose encodings ([item, layer, d]) carry ``signal`` along one unit
    direction per layer (returned, [layer, d]) for label 1 only. Pair members share a random
    base (like a shared topic); ``nuisance`` high-variance directions orthogonal to the
    concept stand in for the residual stream's big unrelated features."""
    rng = np.random.default_rng(seed)
    basis, _ = np.linalg.qr(rng.standard_normal((n_layers, d, nuisance + 1)))
    direction = basis[..., 0]
    labels = np.tile([1, 0], n_pairs)
    base = np.repeat(rng.standard_normal((n_pairs, n_layers, d)) * pair_sd, 2, axis=0)
    x = base + noise_sd * rng.standard_normal(base.shape)
    x += signal * labels[:, None, None] * direction[None]
    if nuisance:
        coef = nuisance_sd * rng.standard_normal((2 * n_pairs, n_layers, nuisance))
        x += np.einsum("iln,ldn->ild", coef, basis[..., 1:])
    pair = [f"p{i // 2}" for i in range(2 * n_pairs)]
    items = pd.DataFrame(
        {
            "id": [f"{p}/{label}" for p, label in zip(pair, labels, strict=True)],
            "pair": pair,
            "text": [f"statement {i}" for i in range(2 * n_pairs)],
            "label": labels.astype(np.int64),
            "category": [("a", "b", "c")[(i // 2) % 3] for i in range(2 * n_pairs)],
        }
    )
    data = ConceptData("synthetic", items, "synthetic")
    return data, torch.tensor(x, dtype=torch.float32), torch.tensor(direction)


def write_concept(path: Path, n_pairs: int = 12) -> Path:
    """A small paired concept file in the tiny tokenizer's vocabulary (short to encode)."""
    people = ("old man", "young woman", "grandson", "grandfather")
    rows = []
    for i in range(n_pairs):
        who = people[i % len(people)]
        pair = f"tiny/{i:03d}"
        texts = {
            1: f"The {who} was struggling with the phone {i}.",
            0: f"The {who} was not struggling with the app {i}.",
        }
        for label, text in texts.items():
            item = {"id": f"{pair}/{label}", "pair": pair, "label": label, "category": "age"}
            rows.append({**item, "text": text})
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def make_run(path: Path, *, n_examples: int = 10, rounds: int = 2, seed: int = 0) -> Path:
    """A run directory written with interp.runs.store's writers, as a replay of the tiny model
    would leave it: resid_post of every layer, [example, round, d_model] fp16."""
    rng = np.random.default_rng(seed)
    hooks = [f"blocks.{layer}.hook_resid_post" for layer in range(N_LAYERS)]
    for hook in hooks:
        acts = torch.from_numpy(rng.standard_normal((n_examples, rounds + 1, D_MODEL)))
        write_activations(path / "activations" / f"{hook}.safetensors", acts)
    n_rows = n_examples * (rounds + 1)
    label = np.repeat(rng.integers(0, 3, n_examples), rounds + 1)
    choice = rng.integers(-1, 3, n_rows)
    frame = pd.DataFrame(
        {
            "example_index": np.repeat(np.arange(n_examples), rounds + 1),
            "example_id": [f"ex/{i}" for i in np.repeat(np.arange(n_examples), rounds + 1)],
            "round": np.tile(np.arange(rounds + 1), n_examples),
            "choice": choice,
            "correct": choice == label,
            "label": label,
            "target": np.repeat(rng.integers(-1, 3, n_examples), rounds + 1),
            "unknown": 2,
            "entropy": rng.uniform(0.2, 1.1, n_rows),
        }
    )
    write_parquet(path / "rounds.parquet", frame)
    model = {
        "model_id": "tiny",
        "n_layers": N_LAYERS,
        "d_model": D_MODEL,
        "weights_hash": "tiny-seed-0",
    }
    manifest = {
        "schema_version": SCHEMA_VERSION,
        "complete": True,
        "rounds": rounds,
        "hooks": hooks,
        "model": model,
        "plan": {"answer_prefix": ANSWER_PREFIX},
        "config": {"system": None},
    }
    write_json(path / "manifest.json", manifest)
    return path


@pytest.fixture(scope="module")
def concept_file(tmp_path_factory) -> Path:
    return write_concept(tmp_path_factory.mktemp("concept") / "tinyconcept.jsonl")


@pytest.fixture(scope="module")
def probed(tmp_path_factory, tiny_model, concept_file) -> tuple[Path, ProbeResult]:
    run_dir = make_run(tmp_path_factory.mktemp("runs") / "run")
    return run_dir, probe(run_dir, ProbeConfig(concept=concept_file, n_boot=200), model=tiny_model)


# ---------------------------------------------------------------------------------------------
# Directions and controls


@pytest.mark.parametrize("method", METHODS)
def test_planted_direction_is_recovered(method):
    data, x, direction = planted(400, 16, seed=1)
    probe = probe_layers(x, data, method=method, seed=1)
    cosine = (probe.directions.vectors.float() * direction.float()).sum(-1)
    assert (cosine > 0.95).all(), cosine
    assert (probe.table["acc"] > 0.75).all()


@pytest.mark.parametrize("method", METHODS)
def test_shuffled_labels_and_random_direction_give_chance(method):
    """Tolerance: 4 binomial standard deviations of the held-out accuracy, 4 * 0.5 /
    sqrt(n_test) = 0.18 for 120 test items, which a label-free classifier exceeds about once
    in 15,000 layers. The concept carries under 1% of the variance here, as in a residual
    stream (big unrelated directions); where it dominates instead, label-free directions
    partly align with it and the controls scatter more widely around 0.5 (still centred)."""
    data, x, _ = planted(200, 64, signal=3.0, pair_sd=1.0, noise_sd=1.0, nuisance=6, seed=2)
    table = probe_layers(x, data, method=method, seed=2).table
    tolerance = 4 * 0.5 / math.sqrt(table["n_test"].iloc[0])
    assert (table["shuffled_acc"] - 0.5).abs().max() < tolerance
    assert (table["random_acc"] - 0.5).abs().max() < tolerance
    if method == "probe":  # mean-diff and pca are not whitened: the nuisance swamps them
        assert (table["acc"] > 0.5 + tolerance).all()


def test_shuffled_labels_are_a_balanced_permutation():
    """Shuffled labels keep the label counts and agree with the true labels no more than
    chance: each true class gets label 1 in the overall share."""
    y = np.array([1] * 40 + [0] * 60)
    shuffled = balanced_permutation(y, np.random.default_rng(0))
    assert shuffled.sum() == 40
    assert shuffled[y == 1].sum() == 16 and shuffled[y == 0].sum() == 24  # 40% of each
    assert np.corrcoef(y, shuffled)[0, 1] == pytest.approx(0.0, abs=1e-12)
    again = balanced_permutation(y, np.random.default_rng(0))
    assert np.array_equal(shuffled, again)


def test_probe_layers_is_deterministic_for_a_seed():
    data, x, _ = planted(100, 16, seed=3)
    first = probe_layers(x, data, seed=5)
    again = probe_layers(x, data, seed=5)
    pd.testing.assert_frame_equal(first.table, again.table)
    assert torch.equal(first.directions.vectors, again.directions.vectors)


@pytest.mark.parametrize("n_items, d", [(120, 200), (400, 24)])
def test_probe_fit_agrees_with_a_sklearn_pipeline_per_layer(n_items, d):
    """Fewer items than features and more: the weights mapped back to raw activations are
    those of StandardScaler + LogisticRegression (lbfgs, tight tolerance)."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(4, n_items, d, generator=gen) * (0.5 + 3 * torch.rand(d, generator=gen))
    x += torch.randn(d, generator=gen)  # offsets, so standardisation matters
    y = (torch.rand(n_items, generator=gen) < 0.5).long()
    x[:, :, :3] += 0.8 * y[:, None].float()
    fit = fit_logistic(x, y)
    assert fit.converged.all()
    for layer in range(4):
        features = x[layer].double().numpy()
        scaler = StandardScaler().fit(features)
        clf = LogisticRegression(C=1.0, tol=1e-10, max_iter=100_000)
        clf.fit(scaler.transform(features), y.numpy())
        weight = clf.coef_[0] / scaler.scale_
        bias = clf.intercept_[0] - weight @ scaler.mean_
        np.testing.assert_allclose(fit.weight[layer].numpy(), weight, rtol=1e-4, atol=1e-6)
        assert fit.bias[layer].item() == pytest.approx(bias, rel=1e-4, abs=1e-6)
        ours = (x[layer].double() @ fit.weight[layer] + fit.bias[layer] > 0).numpy()
        np.testing.assert_array_equal(ours, clf.predict(scaler.transform(features)) == 1)


def test_wilson_interval_matches_reference_values():
    # Wilson (1927) / Newcombe (1998) table: 81 of 263 -> (0.2553, 0.3662)
    lo, hi = wilson_interval(81, 263)
    assert (lo, hi) == (pytest.approx(0.2553, abs=1e-4), pytest.approx(0.3662, abs=1e-4))
    assert wilson_interval(10, 10)[1] == pytest.approx(1.0)
    assert all(math.isnan(v) for v in wilson_interval(0, 0))


# ---------------------------------------------------------------------------------------------
# Controls that can fail: the layer chosen on validation, surface baselines, transfer


def test_headline_layer_is_chosen_on_validation_not_on_test():
    """Layer 0 carries the concept on the training items (validation part included) but not
    on the test items; layer 1 on the fitting and test items but not on the validation part.
    Validation must pick layer 0 although layer 1 has the best test accuracy, which stays
    beside it as the optimistic figure."""
    data, x, direction = planted(90, 16, n_layers=2, signal=0.0, seed=7)
    train, test = split_pairs(data, seed=7)
    _, val = validation_split(data, train, seed=7)
    labels = torch.tensor(data.labels(), dtype=torch.float64)[:, None]
    plant = 6.0 * labels * direction.double()[:, None]  # [layer, item, d]
    x = x.double()
    layer0 = np.setdiff1d(np.arange(len(labels)), test)
    layer1 = np.setdiff1d(np.arange(len(labels)), val)
    x[layer0, 0] += plant[0][layer0]
    x[layer1, 1] += plant[1][layer1]
    probe = probe_layers(x.float(), data, seed=7)
    table = probe.table.set_index("layer")
    assert table.loc[0, "val_acc"] > 0.9 and table.loc[1, "val_acc"] < 0.75
    assert table.loc[1, "acc"] > 0.75 > table.loc[0, "acc"]
    assert probe.val_layer == 0 and probe.test_layer == 1
    assert choose_layer(probe.table, "val_acc") == 0


def test_validation_part_lies_inside_the_training_pairs():
    data, x, _ = planted(60, 8, seed=4)
    probe = probe_layers(x, data, seed=4)
    pairs = data.items["pair"].to_numpy()
    assert set(probe.val_idx) < set(probe.train_idx)
    fit = np.setdiff1d(probe.train_idx, probe.val_idx)
    assert not set(pairs[probe.val_idx]) & set(pairs[fit])  # pairs kept whole
    assert (probe.table["n_val"] == len(probe.val_idx)).all()
    assert len(probe.val_idx) // 2 == round(len(probe.train_idx) // 2 * 0.3)


@pytest.mark.parametrize("method", METHODS)
def test_validation_choice_never_sees_the_test_items(method):
    data, x, _ = planted(60, 8, seed=5)
    _, test = split_pairs(data, seed=5)
    before = probe_layers(x, data, method=method, seed=5)
    corrupted = x.clone()
    corrupted[test] = 100 * torch.randn(len(test), *x.shape[1:])
    after = probe_layers(corrupted, data, method=method, seed=5)
    pd.testing.assert_series_equal(before.table["val_acc"], after.table["val_acc"])
    assert before.val_layer == after.val_layer


def test_choose_layer_takes_the_earliest_of_ties_and_skips_nan():
    table = pd.DataFrame({"layer": [3, 5, 8, 9], "val_acc": [0.6, 0.8, 0.8, np.nan]})
    assert choose_layer(table) == 5
    assert choose_layer(table.assign(val_acc=np.nan)) == 3


def test_surface_baselines_equal_a_manual_sklearn_fit_on_the_same_split():
    data = load_concept("stereotype")
    x = torch.randn(len(data.items), 2, 8, generator=torch.Generator().manual_seed(0))
    table = probe_layers(x, data, seed=3).table
    train, test = split_pairs(data, seed=3)
    texts, labels = np.array(data.texts()), data.labels()
    vectorizer = CountVectorizer()
    bow = LogisticRegression(max_iter=2000)
    bow.fit(vectorizer.fit_transform(texts[train]), labels[train])
    expected = (bow.predict(vectorizer.transform(texts[test])) == labels[test]).mean()
    assert (table["bow_acc"] == expected).all()  # constant across layers
    length = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    length.fit(length_features(texts[train]), labels[train])
    expected = (length.predict(length_features(texts[test])) == labels[test]).mean()
    assert (table["length_acc"] == expected).all()


def test_length_features_count_length_and_punctuation():
    (row,) = length_features(["Oh no, it's (really) bad!"])
    assert row[:3].tolist() == [25.0, 5.0, pytest.approx(21 / 5)]
    counts = dict(zip(",.;:!?'\"-()", row[3:], strict=True))
    assert counts == {**dict.fromkeys(counts, 0.0), ",": 1, "'": 1, "(": 1, ")": 1, "!": 1}


def test_surface_comparison_in_plain_words():
    n = 100
    perfect, half = np.ones(n, bool), np.arange(n) % 2 == 0
    check = compare_to_surface(perfect, {"bow": half, "length": ~half}, layer=4)
    assert check.beats and check.warning is None and check.p_value < 1e-10
    losing = compare_to_surface(half, {"bow": perfect, "length": half}, layer=4)
    assert not losing.beats and losing.baseline == "bow"
    assert losing.warning.startswith("the probe does not beat the surface baseline")
    assert "bag-of-words" in losing.warning and "layer 4" in losing.warning
    slightly = half.copy()
    slightly[1] = True  # 51 against 50: higher, but no evidence
    close = compare_to_surface(slightly, {"bow": half, "length": half}, layer=2)
    assert not close.beats and close.p_value == pytest.approx(0.5)
    assert close.warning.startswith("the probe is not reliably better than the surface")


def test_surface_warning_reaches_the_summary_and_the_cli(probed):
    """The tiny concept file gives its labels away in words ("not", "app"): a bag of words is
    perfect and the probe on a random tiny model cannot beat it."""
    _, result = probed
    summary = result.summary
    assert summary["surface_baselines"]["bow_acc"] == 1.0
    assert summary["surface_baselines"]["probe_beats_surface"] is False
    assert summary["surface_warning"].startswith("the probe does not beat the surface baseline")
    printed = format_probe(result)
    assert f"WARNING: {summary['surface_warning']}" in printed.splitlines()


def test_no_surface_warning_when_the_probe_wins():
    data, x, _ = planted(150, 16, signal=4.0, seed=8)
    probe = probe_layers(x, data, seed=8)
    assert probe.table["bow_acc"].iloc[0] < 0.65  # texts "statement i" carry no label
    assert probe.surface.beats and probe.surface.warning is None


def test_summary_headline_is_the_validation_layer(probed):
    _, result = probed
    summary, table = result.summary, result.per_layer.set_index("layer")
    assert summary["best_layer"] == choose_layer(result.per_layer, "val_acc")
    assert summary["accuracy"]["acc"] == pytest.approx(table.loc[summary["best_layer"], "acc"])
    test = summary["test_chosen"]
    assert test["layer"] == choose_layer(result.per_layer, "acc")
    assert test["acc"] == table["acc"].max() and "optimistic" in test["rule"]


def test_chat_wrapped_read_out_is_the_last_token_of_the_answer_prefix(tiny_model):
    tok = tiny_model.tokenizer
    texts = ["The old man was struggling with the phone.", "The young woman was not."]
    for text, ids in zip(
        texts, wrap_statements(tok, texts, answer_prefix=ANSWER_PREFIX), strict=True
    ):
        rendered = tok.decode(ids)
        assert rendered.endswith(ANSWER_PREFIX)
        assert rendered.index(text) < rendered.rindex(ANSWER_PREFIX)
        # the user turn, then the assistant's generation prompt, then the prefix
        prompt = tok.apply_chat_template(
            [{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True
        )
        assert rendered == prompt + ANSWER_PREFIX
        prefix_ids = tok(ANSWER_PREFIX, add_special_tokens=False)["input_ids"]
        assert ids[-len(prefix_ids) :] == prefix_ids  # the read-out is the prefix's last token


def test_chat_wrapped_encodings_read_the_last_token(tmp_path, tiny_model):
    texts = ["The old man was tired.", "Who was not comfortable using the phone?"]
    calls = []

    def get_model():
        calls.append(1)
        return tiny_model

    kwargs = dict(
        name="t",
        answer_prefix=ANSWER_PREFIX,
        system=None,
        weights_hash="tiny-seed-0",
        cache_dir=tmp_path,
        get_model=get_model,
    )
    encodings = cached_wrapped_encodings(texts, **kwargs)
    again = cached_wrapped_encodings(texts, **kwargs)
    assert len(calls) == 1 and torch.equal(encodings, again)
    other = cached_wrapped_encodings(texts, **{**kwargs, "system": "Be brief."})
    assert len(calls) == 2 and not torch.equal(encodings, other)
    ids = wrap_statements(tiny_model.tokenizer, texts, answer_prefix=ANSWER_PREFIX)
    for i, seq in enumerate(ids):
        _, cache = tiny_model.run_with_cache(torch.tensor([seq]))
        for layer in range(N_LAYERS):
            resid = cache[f"blocks.{layer}.hook_resid_post"][0, -1]
            torch.testing.assert_close(encodings[i, layer], resid, atol=1e-5, rtol=1e-5)


def test_shared_prefix_encoding_equals_running_every_sequence_whole(tiny_model):
    """Batches of unequal lengths (left-padded after the shared start), a last batch smaller
    than the rest, and one sequence that is nearly all shared start."""
    texts = ["The old man.", "Who was not comfortable using the phone at the store?", "Unknown"]
    texts += ["The grandson was struggling with the app.", "I kept the wallet."]
    ids = wrap_statements(tiny_model.tokenizer, texts, answer_prefix=ANSWER_PREFIX)
    shared = encode_last_shared_prefix(tiny_model, ids, batch_size=2)
    whole = encode_token_ids(tiny_model, ids, position="last", batch_size=1)
    torch.testing.assert_close(shared, whole, atol=1e-5, rtol=1e-5)


def test_transfer_columns_follow_their_definitions(probed, tiny_model, concept_file):
    run_dir, result = probed
    data = load_concept(concept_file)
    bare = encode_texts(tiny_model, data.texts())
    ids = wrap_statements(tiny_model.tokenizer, data.texts(), answer_prefix=ANSWER_PREFIX)
    wrapped = torch.stack([_last_resid(tiny_model, seq) for seq in ids])
    probe = probe_layers(bare, data, seed=0)
    on_wrapped = probe_layers(wrapped, data, seed=0)
    train, test = probe.train_idx, probe.test_idx
    y = data.labels()
    table = result.per_layer.set_index("layer")
    for layer in range(N_LAYERS):
        v, t = probe.directions.vectors[layer].double(), probe.directions.thresholds[layer]
        proj = wrapped[:, layer].double() @ v
        raw = ((proj[test] > t).numpy() == y[test]).mean()
        mid = (proj[train][y[train] == 1].mean() + proj[train][y[train] == 0].mean()) / 2
        centred = ((proj[test] > mid).numpy() == y[test]).mean()
        assert table.loc[layer, "transfer_acc"] == pytest.approx(raw)
        assert table.loc[layer, "transfer_centred_acc"] == pytest.approx(centred)
        assert table.loc[layer, "wrapped_acc"] == on_wrapped.table["acc"].iloc[layer]
    transfer = result.summary["transfer"]
    assert transfer["answer_prefix"] == ANSWER_PREFIX and transfer["system"] is None
    best = table.loc[result.summary["best_layer"]]
    assert transfer["wrapped_acc"] == best["wrapped_acc"]
    # 24 test statements: the interval reaches 0.5 unless nearly all are right
    lo, _ = wilson_interval(round(best["transfer_centred_acc"] * 24), 24)
    assert (transfer["warning"] is None) == (lo > 0.5)
    if transfer["warning"]:
        assert transfer["warning"].startswith("the direction learned on bare statements does")
        assert f"WARNING: {transfer['warning']}" in format_probe(result).splitlines()


def test_transfer_can_be_skipped(tmp_path, tiny_model, concept_file):
    run_dir = make_run(tmp_path / "run")
    result = probe(
        run_dir, ProbeConfig(concept=concept_file, n_boot=0, transfer=False), model=tiny_model
    )
    assert "transfer_acc" not in result.per_layer
    assert result.summary["transfer"] == {"skipped": "not requested"}
    assert "transfer to the chat read-out: not measured" in format_probe(result)


def _last_resid(model, seq: list[int]) -> torch.Tensor:
    _, cache = model.run_with_cache(torch.tensor([seq]))
    return torch.stack(
        [cache[f"blocks.{layer}.hook_resid_post"][0, -1] for layer in range(N_LAYERS)]
    )


# ---------------------------------------------------------------------------------------------
# Split discipline


def test_concept_split_keeps_pairs_whole():
    data, x, _ = planted(60, 8, seed=4)
    probe = probe_layers(x, data, seed=4)
    pairs = data.items["pair"].to_numpy()
    assert not set(pairs[probe.train_idx]) & set(pairs[probe.test_idx])
    assert len(probe.train_idx) + len(probe.test_idx) == len(data.items)
    expected = split_pairs(data, seed=4)
    assert np.array_equal(probe.train_idx, expected[0])


@pytest.mark.parametrize("method", METHODS)
def test_directions_see_training_items_only(method):
    """Every statistic comes after the split: rewriting the held-out items' activations must
    not change a single direction or threshold."""
    data, x, _ = planted(60, 8, seed=5)
    train, test = split_pairs(data, seed=5)
    before = probe_layers(x, data, method=method, seed=5).directions
    corrupted = x.clone()
    corrupted[test] = 100 * torch.randn(len(test), *x.shape[1:])
    after = probe_layers(corrupted, data, method=method, seed=5).directions
    assert torch.equal(before.vectors, after.vectors)
    assert torch.equal(before.thresholds, after.thresholds)


def test_behaviour_split_is_by_example(tmp_path):
    rounds = pd.read_parquet(make_run(tmp_path / "run", n_examples=20) / "rounds.parquet")
    train, test = split_examples(20, test_size=0.3, seed=0)
    assert not set(train) & set(test)
    assert sorted([*train, *test]) == list(range(20)) and len(test) == 6
    for behaviour in ("stereotyped", "correct"):
        items = behaviour_labels(rounds, behaviour)
        in_train = items["example_index"].isin(train)
        # all rounds of an example sit on one side
        assert not set(items[in_train]["example_index"]) & set(items[~in_train]["example_index"])


def test_behaviour_labels_definitions():
    rounds = pd.DataFrame(
        {
            "example_index": [0, 0, 1, 1, 2],
            "round": [0, 1, 0, 1, 0],
            "choice": [1, -1, 0, 2, 1],
            "target": [1, 1, -1, -1, 0],
            "correct": [True, False, True, False, False],
        }
    )
    stereo = behaviour_labels(rounds, "stereotyped")
    assert stereo[["example_index", "round", "y"]].values.tolist() == [[0, 0, 1], [2, 0, 0]]
    correct = behaviour_labels(rounds, "correct")
    assert correct["y"].tolist() == [1, 1, 0, 0]  # the unparsed answer (choice -1) is left out


def test_behaviour_probe_finds_a_planted_answer_signal():
    n_examples, n_rounds, d = 120, 3, 16
    rng = np.random.default_rng(0)
    acts = torch.from_numpy(rng.standard_normal((2, n_examples, n_rounds, d)))
    choice = rng.integers(0, 2, (n_examples, n_rounds))
    acts[1, ..., 0] += 3.0 * torch.from_numpy(choice == 1)  # layer 1 knows the answer
    rounds = pd.DataFrame(
        {
            "example_index": np.repeat(np.arange(n_examples), n_rounds),
            "round": np.tile(np.arange(n_rounds), n_examples),
            "choice": choice.reshape(-1),
            "target": 1,
            "correct": (choice == 0).reshape(-1),
        }
    )
    table = behaviour_probes(acts, rounds, [4, 7], seed=0).set_index(["behaviour", "layer"])
    assert table.loc[("stereotyped", 7), "acc"] > 0.85
    assert table.loc[("correct", 7), "acc"] > 0.85
    assert abs(table.loc[("stereotyped", 4), "acc"] - 0.5) < 0.15
    assert abs(table.loc[("stereotyped", 7), "shuffled_acc"] - 0.5) < 0.15


# ---------------------------------------------------------------------------------------------
# Encoding and its cache


def test_last_token_encoding_equals_a_single_sequence_run(tiny_model):
    texts = ["The old man.", "Who was not comfortable using the phone at the store?", "Unknown"]
    batched = encode_texts(tiny_model, texts, position="last")
    means = encode_texts(tiny_model, texts, position="mean")
    assert batched.shape == (3, N_LAYERS, D_MODEL)
    for i, text in enumerate(texts):
        ids = tiny_model.tokenizer(text, add_special_tokens=False)["input_ids"]
        _, cache = tiny_model.run_with_cache(torch.tensor([ids]))
        for layer in range(N_LAYERS):
            resid = cache[f"blocks.{layer}.hook_resid_post"][0]
            torch.testing.assert_close(batched[i, layer], resid[-1], atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(means[i, layer], resid.mean(0), atol=1e-5, rtol=1e-5)


def test_encodings_are_cached_and_reused_without_the_model(
    tmp_path, tiny_model, concept_file, monkeypatch
):
    run_dir = make_run(tmp_path / "run")
    calls: list[int] = []
    tiny_model.add_hook("hook_embed", lambda tensor, hook: calls.append(tensor.shape[0]))
    try:
        first = probe(run_dir, ProbeConfig(concept=concept_file, n_boot=0), model=tiny_model)
        n_first = len(calls)
        second = probe(run_dir, ProbeConfig(concept=concept_file, n_boot=0), model=tiny_model)
    finally:
        tiny_model.reset_hooks()
    assert n_first > 0 and len(calls) == n_first
    data = load_concept(concept_file)
    key = encodings_key(data.texts(), "tiny-seed-0")
    cache_dir = Path(run_dir) / "probes" / "encodings"
    assert encodings_path(cache_dir, data.name, "last", key).is_file()
    pd.testing.assert_frame_equal(first.per_layer, second.per_layer)

    # a cache hit needs no model at all; another position is another file
    def no_loading(*args, **kwargs):
        raise AssertionError("the model was loaded although the encodings are cached")

    monkeypatch.setattr("interp.model.loading.load_model", no_loading)
    third = probe(run_dir, ProbeConfig(concept=concept_file, n_boot=0))
    pd.testing.assert_frame_equal(first.per_layer, third.per_layer)
    probe(run_dir, ProbeConfig(concept=concept_file, position="mean", n_boot=0), model=tiny_model)
    # last, mean, and the chat-wrapped read-out (one file whatever the position)
    assert len(list(cache_dir.glob("*.safetensors"))) == 3


# ---------------------------------------------------------------------------------------------
# Scores across rounds


def test_projection_of_stored_activations_matches_manual(probed):
    run_dir, result = probed
    run = Run.open(run_dir)
    scores = result.example_scores.set_index(["layer", "example_index", "round"])["score"]
    for i, layer in enumerate(result.per_layer["layer"]):
        acts = run.activations(f"blocks.{layer}.hook_resid_post").double()
        d = result.directions[i].double()
        for e, r in [(0, 0), (3, 2), (9, 1)]:
            manual = float(acts[e, r] @ d / d.norm())
            assert scores[(layer, e, r)] == pytest.approx(manual, rel=1e-5, abs=1e-6)
    acts = run.activations("blocks.1.hook_resid_post")
    d = result.directions[1]
    cosine = concept_scores(acts, d, kind="cosine")
    expected = torch.nn.functional.cosine_similarity(acts.double(), d.double()[None, None], dim=-1)
    torch.testing.assert_close(cosine, expected)


def test_score_table_and_shift_follow_the_example_scores(probed):
    run_dir, result = probed
    means = result.example_scores.groupby(["layer", "round"])["score"].mean()
    table = result.scores.set_index(["layer", "round"])
    np.testing.assert_allclose(table["mean"], means.loc[table.index])
    assert (table["lo"] <= table["mean"]).all() and (table["mean"] <= table["hi"]).all()
    # shift's projection on the direction is the change in mean score from round 0
    shift = result.shift.set_index(["layer", "round"])
    for (layer, r), row in shift.iterrows():
        assert row["projection"] == pytest.approx(means[(layer, r)] - means[(layer, 0)])
        assert row["cosine"] == pytest.approx(row["projection"] / row["norm"])


def test_instruction_shift_of_a_planted_move():
    acts = torch.zeros(5, 3, 4)
    acts[:, 1] = torch.tensor([2.0, 0, 0, 0])
    acts[:, 2] = torch.tensor([0.0, 3, 0, 0])
    table = instruction_shift(acts, torch.tensor([1.0, 0, 0, 0]), layer=7)
    assert table["round"].tolist() == [1, 2]
    np.testing.assert_allclose(table["norm"], [2.0, 3.0])
    np.testing.assert_allclose(table["cosine"], [1.0, 0.0])


def test_score_entropy_correlation_matches_scipy():
    rng = np.random.default_rng(0)
    scores = rng.standard_normal((30, 4)) + np.arange(4)
    entropy = 2.0 - 0.3 * scores + 0.1 * rng.standard_normal((30, 4))
    entropy[0, 0] = np.nan  # left out
    table = score_entropy_correlation(scores, entropy, layer=2).set_index("level")
    ok = np.isfinite(entropy)
    pooled = stats.pearsonr(scores[ok], entropy[ok])
    assert table.loc["example-round", "pearson_r"] == pytest.approx(pooled.statistic)
    assert table.loc["example-round", "n"] == ok.sum()
    assert table.loc["round-means", "spearman_r"] == pytest.approx(-1.0)
    assert table.loc["round-means", "n"] == 4
    # Cells are not independent, and 4 round means are too few: no p-value, with the reason.
    assert table["pearson_p"].isna().all() and table["spearman_p"].isna().all()
    assert "4 round means" in table.loc["round-means", "p_note"]
    assert "clustered" in table.loc["example-round", "p_note"]
    five = score_entropy_correlation(
        np.column_stack([scores, scores[:, -1] + 1]),
        np.column_stack([entropy, entropy[:, -1] - 0.3]),
        layer=2,
    ).set_index("level")
    means = stats.pearsonr(
        np.append(scores[ok[:, 0], 0].mean(), scores[:, 1:].mean(0)).tolist()
        + [scores[:, -1].mean() + 1],
        np.append(entropy[ok[:, 0], 0].mean(), entropy[:, 1:].mean(0)).tolist()
        + [entropy[:, -1].mean() - 0.3],
    )
    assert five.loc["round-means", "pearson_p"] == pytest.approx(means.pvalue)
    flat = score_entropy_correlation(scores[:, :2], entropy[:, :2], layer=2)
    assert flat.set_index("level").loc["round-means"].isna()["pearson_r"]  # 2 rounds: undefined


def test_within_round_correlation_removes_the_round_trend():
    # Rounds shift both score and entropy together (a strong pooled correlation), while within
    # each round a higher score goes with a *higher* entropy.
    rng = np.random.default_rng(1)
    x = rng.standard_normal((200, 5))
    trend = 3.0 * np.arange(5)
    scores, entropy = x + trend, 0.5 * x - trend + 0.1 * rng.standard_normal((200, 5))
    table = score_entropy_correlation(scores, entropy, layer=0).set_index("level")
    assert table.loc["example-round", "pearson_r"] < -0.8
    within = stats.pearsonr((scores - scores.mean(0)).ravel(), (entropy - entropy.mean(0)).ravel())
    assert table.loc["within-round", "pearson_r"] == pytest.approx(within.statistic)
    assert table.loc["within-round", "pearson_r"] > 0.9
    assert table.loc["within-round", "n"] == 1000


# ---------------------------------------------------------------------------------------------
# probe


def test_probe_writes_its_tables(probed):
    run_dir, result = probed
    out = Path(run_dir) / "probes" / result.concept
    assert result.out_dir == out
    for name in ("per_layer", "scores", "shift", "correlation", "behaviour", "example_scores"):
        pd.testing.assert_frame_equal(
            pd.read_parquet(out / f"{name}.parquet"), getattr(result, name)
        )
    assert json.loads((out / "summary.json").read_text()) == result.summary
    expected = ["layer", "acc", "acc_lo", "acc_hi", "shuffled_acc", "random_acc", "n_train"]
    assert set(expected) | {"n_test"} <= set(result.per_layer.columns)
    assert len(result.scores) == N_LAYERS * 3 and len(result.shift) == N_LAYERS * 2
    assert len(result.example_scores) == N_LAYERS * 10 * 3
    assert set(result.behaviour["behaviour"]) == {"stereotyped", "correct"}
    summary = result.summary
    assert summary["best_layer"] in range(N_LAYERS)
    assert [row["round"] for row in summary["scores_by_round"]] == [0, 1, 2]
    assert {row["level"] for row in summary["correlation"]} == {
        "round-means",
        "example-round",
        "within-round",
    }


def test_probe_is_deterministic(probed, tiny_model, concept_file):
    run_dir, result = probed
    again = probe(run_dir, ProbeConfig(concept=concept_file, n_boot=200), model=tiny_model)
    assert again.summary == result.summary
    pd.testing.assert_frame_equal(again.scores, result.scores)


def test_probe_layer_subset(probed, concept_file):
    run_dir, _ = probed
    result = probe(
        run_dir, ProbeConfig(concept=concept_file, layers=[2, 0], method="mean-diff", n_boot=0)
    )
    assert result.per_layer["layer"].tolist() == [0, 2]
    assert sorted(result.scores["layer"].unique()) == [0, 2]


@pytest.mark.parametrize("layers", [[3], [-1], [0, 7], []])
def test_bad_layers_are_user_errors(probed, concept_file, layers):
    run_dir, _ = probed
    with pytest.raises(InterpError, match="layer"):
        probe(run_dir, ProbeConfig(concept=concept_file, layers=layers))
    data, x, _ = planted(20, 4)
    with pytest.raises(InterpError, match="layer"):
        probe_layers(x, data, layers=layers)


def test_other_user_errors(probed, concept_file, tmp_path):
    run_dir, _ = probed
    with pytest.raises(InterpError, match="unknown concept"):
        probe(run_dir, ProbeConfig(concept="no-such-concept"))
    with pytest.raises(InterpError, match="file not found"):
        probe(run_dir, ProbeConfig(concept=tmp_path / "missing.jsonl"))
    with pytest.raises(InterpError, match="unknown method"):
        probe(run_dir, ProbeConfig(concept=concept_file, method="svm"))
    with pytest.raises(InterpError, match="unknown position"):
        probe(run_dir, ProbeConfig(concept=concept_file, position="first"))
    with pytest.raises(InterpError, match="not the run's model"):
        probe(run_dir, ProbeConfig(concept=concept_file), model=load_model("tiny", seed=1))
    with pytest.raises(InterpError, match="no run directory"):
        probe(tmp_path / "nowhere", ProbeConfig(concept=concept_file))


def test_pca_needs_pairs():
    data, x, _ = planted(20, 4)
    unpaired = ConceptData("u", data.items.assign(pair=None), "u.jsonl")
    with pytest.raises(InterpError, match="pair"):
        probe_layers(x, unpaired, method="pca")
    direction = fit_directions(x[:, :1].transpose(0, 1), data.labels(), method="mean-diff")
    assert direction.vectors.shape == (1, 4)


def test_probe_on_a_real_replay(tmp_path, tiny_model, concept_file):
    from interp.replay.loop import ReplayConfig, replay

    config = ReplayConfig(
        model="tiny",
        task="builtin",
        plan="self-correct",
        rounds=2,
        limit=8,
        out=str(tmp_path / "run"),
    )
    run = replay(config, model=tiny_model)
    result = probe(run.path, ProbeConfig(concept=concept_file, n_boot=100), model=tiny_model)
    assert result.per_layer["layer"].tolist() == list(range(N_LAYERS))
    assert len(result.example_scores) == N_LAYERS * 8 * 3
    assert (run.path / "probes" / result.concept / "summary.json").is_file()
    acts = run.activations("blocks.2.hook_resid_post").double()
    d = result.directions[2].double()
    expected = (acts @ d / d.norm()).mean(0).numpy()
    got = result.scores[result.scores["layer"] == 2].sort_values("round")["mean"].to_numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-6)


# ---------------------------------------------------------------------------------------------
# Integration: the embedded model


def test_cell_correlation_interval_is_a_cluster_bootstrap():
    """The example-round and within-round intervals of r resample whole clusters of examples
    (all their rounds together), as a plain loop over resamples does."""
    from interp.stats import bootstrap_weights

    rng = np.random.default_rng(3)
    scores = rng.standard_normal((24, 3)) + np.arange(3)
    entropy = 1.0 - 0.4 * scores + 0.5 * rng.standard_normal((24, 3))
    clusters = np.repeat(np.arange(8), 3)  # three examples per template
    table = score_entropy_correlation(scores, entropy, 0, clusters=clusters, n_boot=300, seed=4)
    table = table.set_index("level")
    weights = bootstrap_weights(clusters, 300, 4).astype(int)
    pooled, within = [], []
    for w in weights:
        rows = np.repeat(np.arange(24), w)  # the resample, duplicates included
        x, y = scores[rows], entropy[rows]
        pooled.append(stats.pearsonr(x.ravel(), y.ravel()).statistic)
        centred = (x - x.mean(0)).ravel(), (y - y.mean(0)).ravel()
        within.append(stats.pearsonr(*centred).statistic)
    for level, manual in (("example-round", pooled), ("within-round", within)):
        lo, hi = np.percentile(manual, [2.5, 97.5])
        assert table.loc[level, "pearson_lo"] == pytest.approx(lo)
        assert table.loc[level, "pearson_hi"] == pytest.approx(hi)


def test_behaviour_split_keeps_clusters_whole_and_interval_is_a_cluster_bootstrap():
    clusters = np.repeat(np.arange(10), 4)  # four variants per template
    train, test = split_examples(40, test_size=0.3, seed=2, clusters=clusters)
    assert not set(clusters[train]) & set(clusters[test])
    assert len(set(clusters[test])) == 3 and sorted([*train, *test]) == list(range(40))
    # Identical answers within a template: only 10 independent units, a wider interval than
    # a binomial over 40 x 3 cells would give.
    n_rounds, d = 3, 8
    rng = np.random.default_rng(0)
    choice = np.repeat(rng.integers(0, 2, 10), 4)[:, None].repeat(n_rounds, 1)
    acts = torch.from_numpy(rng.standard_normal((1, 40, n_rounds, d)))
    rounds = pd.DataFrame(
        {
            "example_index": np.repeat(np.arange(40), n_rounds),
            "round": np.tile(np.arange(n_rounds), 40),
            "choice": choice.reshape(-1),
            "target": 1,
            "correct": (choice == 0).reshape(-1),
        }
    )
    table = behaviour_probes(acts, rounds, [0], seed=2, clusters=clusters, n_boot=300)
    row = table[table["behaviour"] == "correct"].iloc[0]
    assert row["n_test"] == 12 * n_rounds
    lo, hi = wilson_interval(int(round(row["acc"] * row["n_test"])), int(row["n_test"]))
    assert row["acc_hi"] - row["acc_lo"] > hi - lo


# ---------------------------------------------------------------------------------------------
# A selection of the run's examples (issue 24): scored as the full probe scores them, not stored


def _digest(root: Path) -> dict[str, bytes]:
    files = sorted(p for p in root.rglob("*") if p.is_file())
    return {str(p.relative_to(root)): p.read_bytes() for p in files}


def _kept(run_dir: Path, selection) -> list[int]:
    from interp.inputs.selection import select_rows

    rows = select_rows(Run.open(run_dir).rounds(), selection)
    return sorted(int(i) for i in rows["example_index"].unique())


def test_a_sample_scores_the_examples_select_rows_picks_as_the_full_probe_does(
    tmp_path, tiny_model, concept_file
):
    from interp.inputs.selection import Selection

    run_dir = make_run(tmp_path / "run")
    config = ProbeConfig(concept=concept_file, n_boot=50, seed=1, transfer=False)
    full = probe(run_dir, config, model=tiny_model)
    stored = _digest(run_dir / "probes" / full.concept)
    chosen = ProbeConfig(concept=concept_file, n_boot=50, seed=1, transfer=False, sample=3)
    part = probe(run_dir, chosen, model=tiny_model)
    kept = _kept(run_dir, Selection(sample=3, seed=1))
    assert kept != [0, 1, 2]  # a limit, or positions taken for indices, would score these
    assert sorted(part.example_scores["example_index"].unique()) == kept
    assert part.summary["n_examples"] == 3 and part.summary["selection"]["example_index"] == kept
    expected = full.example_scores[full.example_scores["example_index"].isin(kept)]
    pd.testing.assert_frame_equal(
        part.example_scores.reset_index(drop=True), expected.reset_index(drop=True)
    )
    torch.testing.assert_close(part.directions, full.directions, rtol=0, atol=0)
    # the mean score per round is the mean of the selected examples' scores
    means = expected.groupby(["layer", "round"])["score"].mean().to_numpy()
    np.testing.assert_allclose(part.scores["mean"].to_numpy(), means, rtol=1e-12)
    # printed, not stored: the run's full result is left as it was
    assert part.out_dir is None
    assert _digest(run_dir / "probes" / full.concept) == stored


def test_a_selection_on_a_permuted_run_keeps_every_order_of_a_base_example(
    tmp_path, tiny_model, concept_file
):
    from interp.inputs.selection import Selection

    run_dir = make_run(tmp_path / "run", n_examples=12)
    rounds = pd.read_parquet(run_dir / "rounds.parquet")
    rounds["base_index"] = rounds["example_index"] // 3  # four base examples, three orders
    write_parquet(run_dir / "rounds.parquet", rounds)
    config = ProbeConfig(concept=concept_file, n_boot=0, transfer=False, sample=2, seed=3)
    part = probe(run_dir, config, model=tiny_model)
    kept = _kept(run_dir, Selection(sample=2, seed=3))
    assert len(kept) == 6 and {i // 3 for i in kept} == {i // 3 for i in kept[::3]}
    assert sorted(part.example_scores["example_index"].unique()) == kept


def test_a_selection_with_a_control_run_reads_the_same_examples_of_both(
    tmp_path, tiny_model, concept_file
):
    run_dir = make_run(tmp_path / "run")
    control_dir = make_run(tmp_path / "control", seed=5)
    manifest = json.loads((control_dir / "manifest.json").read_text())
    manifest["plan"] = {"answer_prefix": ANSWER_PREFIX, "name": "baseline", "texts": ["x"]}
    write_json(control_dir / "manifest.json", manifest)
    config = ProbeConfig(
        concept=concept_file,
        n_boot=0,
        transfer=False,
        control_run=control_dir,
        examples=("ex/7", 2, "ex/4"),
    )
    part = probe(run_dir, config, model=tiny_model)
    assert sorted(part.example_scores["example_index"].unique()) == [2, 4, 7]
    control = Run.open(control_dir)
    for i, layer in enumerate(part.per_layer["layer"]):
        acts = control.activations(f"blocks.{layer}.hook_resid_post").float()[[2, 4, 7]]
        means = concept_scores(acts, part.directions[i]).numpy().mean(axis=0)
        rows = part.control[part.control["layer"] == layer]
        np.testing.assert_allclose(rows["control"].to_numpy(), means, rtol=1e-6)
    assert part.out_dir is None and not (run_dir / "probes" / part.concept).exists()


def test_a_selection_is_refused_before_anything_is_read(tmp_path, tiny_model, concept_file):
    run_dir = make_run(tmp_path / "run")
    with pytest.raises(InterpError, match="no such examples"):
        probe(run_dir, ProbeConfig(concept=concept_file, examples=("ex/99",)), model=tiny_model)
    with pytest.raises(InterpError, match="--sample 11 exceeds the 10"):
        probe(run_dir, ProbeConfig(concept=concept_file, sample=11), model=tiny_model)
    with pytest.raises(InterpError, match="limit must be at least 1"):
        probe(run_dir, ProbeConfig(concept=concept_file, limit=0), model=tiny_model)
    assert not (run_dir / "probes").exists()
