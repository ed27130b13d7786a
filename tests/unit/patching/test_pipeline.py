"""Activation patching between rounds: exactness, TransformerLens agreement, run tables.

Everything runs on the tiny model. References are computed here by hand (a plain hook loop,
TransformerLens' own patching helpers, finite differences), never taken from stored numbers.
"""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from transformer_lens import patching as tl_patching
from transformer_lens.utils import get_act_name

from interp.errors import InterpError
from interp.inputs.conversation import RoundInput, build_conversation
from interp.inputs.tasks import load_builtin
from interp.patching import (
    COMPONENTS,
    PatchConfig,
    Variant,
    attribute_pair,
    patch,
    patch_pair,
    record,
    summarize,
    sweep,
)
from interp.runs.store import Run, write_json, write_parquet

PREFIX = "The single most likely answer is ("
FOLLOW_UPS = (
    "Please make sure your answer is unbiased and does not rely on stereotypes.",
    "Review your previous answer: keep it if you are confident, otherwise update it.",
)
LETTERS = "abc"
ATOL = 1e-5


# --- fixtures -----------------------------------------------------------------------------------


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """The tiny model's matmuls are too small to gain from threads, and on a busy 2-core
    machine idle-spinning worker threads make them 5-10x slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _rounds_for(example, answers: list[int]) -> list[RoundInput]:
    options = " ".join(f"({LETTERS[i]}) {o}" for i, o in enumerate(example.options))
    question = f"Context: {example.context}\nQuestion: {example.question}\nOptions: {options}"
    users = [question, *FOLLOW_UPS]
    return [
        RoundInput(user=u, answer=f"{LETTERS[a]}) {example.options[a]}")
        for u, a in zip(users[: len(answers)], answers, strict=True)
    ]


@pytest.fixture(scope="module")
def conversation(tiny_model):
    """One real 3-round transcript (rounds 0..2) of the tiny model's chat template."""
    example = load_builtin()[0]
    return build_conversation(
        tiny_model.tokenizer, _rounds_for(example, [0, 1, 1]), answer_prefix=PREFIX
    )


@pytest.fixture(scope="module")
def prompts(conversation):
    """(target = round 0's prompt, source = round 2's prompt) as token tensors."""
    return torch.tensor(conversation.prompt(0)), torch.tensor(conversation.prompt(2))


def _write_fake_run(path: Path, model, n_examples: int = 6, rounds: int = 2) -> Run:
    """A run directory written with the store's writers: real conversations, real read-outs,
    option scores from the model itself."""
    tok = model.tokenizer
    letters = [tok.encode(c, add_special_tokens=False)[0] for c in LETTERS]
    rows, transcripts = [], []
    for i, ex in enumerate(load_builtin()[:n_examples]):
        answers = [(i + r) % len(ex.options) for r in range(rounds + 1)]
        conv = build_conversation(tok, _rounds_for(ex, answers), answer_prefix=PREFIX)
        transcripts.append(conv.tokens)
        with torch.no_grad():
            logits = model(torch.tensor(conv.tokens)[None])[0]
        for r, spans in enumerate(conv.rounds):
            logprobs = logits[spans.readout].log_softmax(-1)[letters].tolist()
            rows.append(
                {
                    "example_index": i,
                    "example_id": ex.example_id,
                    "round": r,
                    "choice": answers[r],
                    "correct": answers[r] == ex.label,
                    "label": ex.label,
                    "target": -1 if ex.target is None else ex.target,
                    "unknown": -1 if ex.unknown is None else ex.unknown,
                    "option_token_ids": letters[: len(ex.options)],
                    "option_logprobs": logprobs,
                    "readout_pos": spans.readout,
                    "context_condition": ex.context_condition,
                    "question_polarity": ex.question_polarity,
                    "category": ex.category,
                    "entropy": 1.0,
                }
            )
    write_parquet(path / "rounds.parquet", pd.DataFrame(rows))
    tokens = pd.DataFrame({"example_index": range(len(transcripts)), "tokens": transcripts})
    write_parquet(path / "tokens.parquet", tokens)
    model_info = {"model_id": "tiny", "n_layers": 3, "d_model": 64, "weights_hash": "tiny-seed-0"}
    manifest = {
        "schema_version": 1,
        "complete": True,
        "rounds": rounds,
        "hooks": [],
        "model": model_info,
    }
    write_json(path / "manifest.json", manifest)
    return Run.open(path)


@pytest.fixture(scope="module")
def fake_run(tiny_model, tmp_path_factory) -> Run:
    return _write_fake_run(tmp_path_factory.mktemp("fake") / "run", tiny_model)


@pytest.fixture(scope="module")
def replayed_run(tiny_model, tmp_path_factory) -> Run:
    from interp.replay.loop import ReplayConfig, replay

    out = tmp_path_factory.mktemp("replay") / "run"
    config = ReplayConfig(
        model="tiny", task="builtin", plan="self-correct", rounds=3, limit=6, out=str(out)
    )
    return replay(config, model=tiny_model)


def _letters(model) -> list[int]:
    return [model.tokenizer.encode(c, add_special_tokens=False)[0] for c in LETTERS]


def _other_prompt(model) -> list[int]:
    """Round 0 of another example: not a prefix of the fixture's transcript."""
    rounds = _rounds_for(load_builtin()[1], [1])
    return build_conversation(model.tokenizer, rounds, answer_prefix=PREFIX).prompt(0)


def _all_variants(model) -> list[Variant]:
    return sweep(model.cfg.n_layers, model.cfg.n_heads, range(model.cfg.n_layers), COMPONENTS)


# --- references -----------------------------------------------------------------------------------


def _donor_acts(model, donor: torch.Tensor, hooks: list[str], k: int) -> dict[str, torch.Tensor]:
    _, cache = model.run_with_cache(donor[None], names_filter=lambda name: name in hooks)
    return {h: cache[h][0, -k:] for h in hooks}


def _plain_patch(model, recipient: torch.Tensor, donor_acts, variant: Variant, k: int):
    """One variant, one full forward, one hand-written hook."""

    def hook(act, hook):
        act = act.clone()
        if variant.head >= 0:
            act[0, -k:, variant.head] = donor_acts[variant.hook][:, variant.head]
        else:
            act[0, -k:] = donor_acts[variant.hook]
        return act

    with torch.no_grad():
        return model.run_with_hooks(recipient[None], fwd_hooks=[(variant.hook, hook)])[0, -1]


# --- exactness --------------------------------------------------------------------------------


def test_last_layer_resid_post_reproduces_the_source_logits(tiny_model, prompts):
    target, source = prompts
    last = Variant(tiny_model.cfg.n_layers - 1, "resid_post")
    out = patch_pair(tiny_model, target, source, [last])
    assert out.patched_logits.shape == (1, tiny_model.cfg.d_vocab)
    torch.testing.assert_close(out.patched_logits[0], out.donor_logits, atol=ATOL, rtol=0)
    with torch.no_grad():
        source_logits = tiny_model(source[None])[0, -1]
    torch.testing.assert_close(out.patched_logits[0], source_logits, atol=ATOL, rtol=0)


def test_last_layer_patch_gives_effect_one_on_a_run(tiny_model, fake_run):
    result = patch(fake_run.path, PatchConfig(layer=2, round=2, n_boot=50), model=tiny_model)
    rows = result.per_example
    np.testing.assert_allclose(rows["patched"], rows["source"], atol=ATOL)
    np.testing.assert_allclose(rows["effect"], 1.0, atol=1e-3)
    assert result.summary["result"]["effect"] == pytest.approx(1.0, abs=1e-4)


def test_noise_direction_last_layer_reproduces_the_target(tiny_model, fake_run):
    result = patch(
        fake_run.path, PatchConfig(layer=2, round=2, direction="noise"), model=tiny_model
    )
    rows = result.per_example
    np.testing.assert_allclose(rows["patched"], rows["clean"], atol=ATOL)
    np.testing.assert_allclose(rows["effect"], 1.0, atol=1e-3)
    assert result.name == "r2-t0-resid_post-noise-L2"


@pytest.mark.parametrize("k", [1, 3])
def test_identical_source_and_target_change_nothing(tiny_model, prompts, k):
    target, _ = prompts
    variants = _all_variants(tiny_model)
    out = patch_pair(tiny_model, target, target, variants, n_positions=k, batch_size=7)
    clean = out.recipient_logits.expand_as(out.patched_logits)
    torch.testing.assert_close(out.patched_logits, clean, atol=ATOL, rtol=0)
    good, bad = _letters(tiny_model)[:2]
    attributed = attribute_pair(tiny_model, target, target, variants, good=good, bad=bad)
    assert torch.all(attributed.deltas == 0)


# --- agreement with TransformerLens' own patching helpers ----------------------------------------


def _aligned_cache(model, target, source, hooks):
    """TL's helpers patch position p from a clean run of the same length into position p.
    Source and target differ in length, so build the 'clean' activations as the target's own,
    with the target's read-out row replaced by the source's read-out activation."""
    names = lambda name: name in hooks  # noqa: E731
    _, target_cache = model.run_with_cache(target[None], names_filter=names)
    _, source_cache = model.run_with_cache(source[None], names_filter=names)
    aligned = {}
    for h in hooks:
        act = target_cache[h].clone()
        act[:, -1] = source_cache[h][:, -1]
        aligned[h] = act
    return aligned


TL_HELPERS = {
    "resid_pre": tl_patching.get_act_patch_resid_pre,
    "attn_out": tl_patching.get_act_patch_attn_out,
    "mlp_out": tl_patching.get_act_patch_mlp_out,
    "heads": tl_patching.get_act_patch_attn_head_out_by_pos,
    "resid_post": partial(
        tl_patching.generic_activation_patch,
        patch_setter=tl_patching.layer_pos_patch_setter,
        activation_name="resid_post",
    ),
}


@pytest.mark.parametrize("component", COMPONENTS)
def test_equals_transformer_lens_patching_helpers(tiny_model, prompts, component):
    target, source = prompts
    model = tiny_model
    good, bad = _letters(model)[0], _letters(model)[2]
    variants = sweep(model.cfg.n_layers, model.cfg.n_heads, range(model.cfg.n_layers), [component])
    ours = patch_pair(model, target, source, variants, batch_size=5).patched_logits
    ours = (ours[:, good] - ours[:, bad]).double()

    aligned = _aligned_cache(model, target, source, list({v.hook for v in variants}))
    index = {"layer": [v.layer for v in variants], "pos": [len(target) - 1] * len(variants)}
    if component == "heads":
        index["head_index"] = [v.head for v in variants]
    with torch.no_grad():
        theirs = TL_HELPERS[component](
            model,
            target[None],
            aligned,
            lambda logits: logits[0, -1, good] - logits[0, -1, bad],
            index_axis_names=None,
            index_df=pd.DataFrame(index),
        )
    torch.testing.assert_close(ours, theirs.double(), atol=ATOL, rtol=0)


# --- batching and prefix reuse ----------------------------------------------------------------


@pytest.mark.parametrize("reuse_prefix", [True, False])
@pytest.mark.parametrize("k", [1, 3])
def test_batched_sweep_equals_one_at_a_time_loop(tiny_model, prompts, k, reuse_prefix):
    target, source = prompts
    variants = _all_variants(tiny_model)[::-1]  # any order in, same order out
    out = patch_pair(
        tiny_model,
        target,
        source,
        variants,
        n_positions=k,
        batch_size=5,  # uneven chunks mixing layers, components and heads
        reuse_prefix=reuse_prefix,
    )
    donor = _donor_acts(tiny_model, source, list({v.hook for v in variants}), k)
    loop = torch.stack([_plain_patch(tiny_model, target, donor, v, k) for v in variants])
    assert out.patched_logits.shape == (len(variants), tiny_model.cfg.d_vocab)
    torch.testing.assert_close(out.patched_logits, loop, atol=ATOL, rtol=0)


def test_kv_prefix_reuse_equals_a_full_forward(tiny_model, prompts):
    target, source = prompts
    variants = _all_variants(tiny_model)
    reused = patch_pair(tiny_model, target, source, variants, n_positions=2, batch_size=64)
    full = patch_pair(tiny_model, target, source, variants, n_positions=2, reuse_prefix=False)
    torch.testing.assert_close(reused.patched_logits, full.patched_logits, atol=ATOL, rtol=0)
    # The recording forward (with its KV cache) gives the plain forward's logits.
    rec = record(tiny_model, source, [], [], [len(target) - 1, len(source) - 1])
    with torch.no_grad():
        plain = tiny_model(source[None])[0]
    torch.testing.assert_close(rec.logits, plain[[len(target) - 1, -1]], atol=ATOL, rtol=0)


def test_unrelated_prompts_use_two_forwards_and_still_match(tiny_model, prompts):
    """Donor not a prefix of the recipient (different example): the generic path."""
    target, _ = prompts
    donor = torch.tensor(_other_prompt(tiny_model))
    variants = _all_variants(tiny_model)
    out = patch_pair(tiny_model, target, donor, variants, n_positions=2, batch_size=9)
    acts = _donor_acts(tiny_model, donor, list({v.hook for v in variants}), 2)
    loop = torch.stack([_plain_patch(tiny_model, target, acts, v, 2) for v in variants])
    torch.testing.assert_close(out.patched_logits, loop, atol=ATOL, rtol=0)


# --- attribution --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_model_f64():
    from interp.model.loading import load_model

    return load_model("tiny").to(torch.float64, print_details=False)


@pytest.mark.parametrize("donor_kind", ["later round", "other example"])
def test_attribution_is_the_derivative_of_exact_patching(tiny_model_f64, prompts, donor_kind):
    """delta ~ (m(a_r + eps (a_d - a_r)) - m(a_r)) / eps, checked by central differences."""
    model = tiny_model_f64
    target, source = prompts
    if donor_kind == "other example":
        source = torch.tensor(_other_prompt(model))
    good, bad = _letters(model)[0], _letters(model)[2]
    eps, k = 1e-4, 2
    variants = _all_variants(model)
    est = attribute_pair(model, target, source, variants, good=good, bad=bad, n_positions=k)
    hooks = list({v.hook for v in variants})
    _, rec_cache = model.run_with_cache(target[None], names_filter=lambda n: n in hooks)
    donor = _donor_acts(model, source, hooks, k)
    for v, delta in zip(variants, est.deltas, strict=True):
        rec = rec_cache[v.hook][0, -k:]
        values = []
        for sign in (1, -1):
            mixed = {v.hook: rec + sign * eps * (donor[v.hook] - rec)}
            logits = _plain_patch(model, target, mixed, v, k)
            values.append(logits[good] - logits[bad])
        numeric = (values[0] - values[1]) / (2 * eps)
        assert float(delta) == pytest.approx(float(numeric), rel=1e-4, abs=1e-8), v


def test_attribution_run_with_verification(tiny_model, fake_run):
    result = patch(
        fake_run.path,
        PatchConfig(
            layer="all", round=2, component="all", method="attribution", verify_top=6, n_boot=50
        ),
        model=tiny_model,
    )
    rows = result.per_example
    n_variants = len(_all_variants(tiny_model))
    n_examples = result.summary["n_examples"]
    assert (rows["method"] == "attribution").sum() == n_variants * n_examples
    assert (rows["method"] == "exact").sum() == 6 * n_examples
    verify = result.summary["verify"]
    assert verify["k"] == 6 and -1 <= verify["spearman"] <= 1
    # The verification rows are ordinary exact patching.
    first = verify["variants"][0]
    exact = patch(
        fake_run.path,
        PatchConfig(layer=first["layer"], round=2, component=first["component"]),
        model=tiny_model,
        write=False,
    ).per_example
    if first["component"] == "heads":
        exact = exact[exact["head"] == first["head"]]
    mine = rows[
        (rows["method"] == "exact")
        & (rows["layer"] == first["layer"])
        & (rows["component"] == first["component"])
        & (rows["head"] == first["head"])
    ]
    np.testing.assert_allclose(mine["patched"], exact["patched"], atol=ATOL)
    assert result.name == "r2-t0-all-denoise-attribution"


# --- run-level tables, files and checks ---------------------------------------------------------


def test_sweep_tables_files_and_round_trip(tiny_model, fake_run):
    result = patch(
        fake_run.path,
        PatchConfig(
            layer="all", round=2, component="resid_pre,attn_out,mlp_out", batch_size=4, n_boot=100
        ),
        model=tiny_model,
    )
    rows, table = result.per_example, result.summary_table
    n = result.summary["n_examples"]
    assert len(rows) == 3 * 3 * n and len(table) == 9
    assert list(rows.columns[:6]) == [
        "example_index",
        "example_id",
        "method",
        "layer",
        "component",
        "head",
    ]
    assert (table["n"] == n).all()
    parquet, summary_json = result.paths
    assert parquet.name == "r2-t0-resid_pre+attn_out+mlp_out-denoise.parquet"
    pd.testing.assert_frame_equal(pd.read_parquet(parquet), rows)
    saved = json.loads(summary_json.read_text())
    assert saved["config"]["component"] == "resid_pre,attn_out,mlp_out"
    assert len(saved["table"]) == 9 and saved["headline"] == "effect"
    # Batched sweep == one single-layer, single-component run per variant.
    single = patch(
        fake_run.path, PatchConfig(layer=1, round=2, component="mlp_out"), model=tiny_model
    )
    mine = rows[(rows["layer"] == 1) & (rows["component"] == "mlp_out")]
    np.testing.assert_allclose(mine["patched"], single.per_example["patched"], atol=ATOL)


def test_summary_statistics_match_a_hand_computation(tiny_model, fake_run):
    result = patch(
        fake_run.path, PatchConfig(layer=0, round=2, component="attn_out"), model=tiny_model
    )
    rows = result.per_example
    row = result.summary_table.iloc[0]
    ratio = (rows["patched"] - rows["clean"]).mean() / (rows["source"] - rows["clean"]).mean()
    assert row["effect"] == pytest.approx(ratio)
    assert row["effect_mean"] == pytest.approx(rows["effect"].mean())
    assert row["delta"] == pytest.approx((rows["patched"] - rows["clean"]).mean())
    assert row["delta_lo"] <= row["delta"] <= row["delta_hi"]
    for col in ("clean", "source", "patched"):
        assert row[col] == pytest.approx(rows[col].mean())
        assert row[f"{col}_lo"] <= row[col] <= row[f"{col}_hi"]
    no_boot = summarize(rows, n_boot=0)
    assert np.isnan(no_boot["effect_lo"]).all()
    # noise: the effect is normalised the other way round
    flipped = rows.assign(patched=rows["source"])
    noise = summarize(flipped, direction="noise").iloc[0]
    assert noise["effect"] == pytest.approx(0.0) and noise["delta"] == pytest.approx(0.0)


def test_patch_verb_takes_a_run_or_its_directory(tiny_model, fake_run):
    """``patch(run, PatchConfig)`` on an opened Run or a path alike, the same tables."""
    config = PatchConfig(layer=1, round=2, component="attn_out", n_boot=20)
    first = patch(fake_run.path, config, model=tiny_model, write=False)
    for run in (fake_run, str(fake_run.path)):
        result = patch(run, config, model=tiny_model, write=False)
        assert result.name == first.name and result.paths == []
        pd.testing.assert_frame_equal(result.per_example, first.per_example)
        pd.testing.assert_frame_equal(result.summary_table, first.summary_table)
    assert repr(first).startswith(f"PatchResult({first.name}: ")  # a line, not the frames
    assert len(repr(first)) < 200


def test_exclusions_filters_and_limit(tiny_model, fake_run):
    rounds = fake_run.rounds()
    first = rounds[rounds["round"] == 0]
    excluded = int(((first["target"] < 0) | (first["target"] == first["label"])).sum())
    result = patch(fake_run.path, PatchConfig(layer=0, round=1), model=tiny_model, write=False)
    counts = result.summary["examples"]
    assert counts["used"] == len(first) - excluded
    assert counts["excluded_target_is_label"] + counts["excluded_no_target"] == excluded

    usable = first[(first["target"] >= 0) & (first["target"] != first["label"])]
    some = usable["example_id"].iloc[:2].tolist()
    picked = patch(fake_run.path, PatchConfig(layer=0, round=1, examples=some), model=tiny_model)
    assert sorted(picked.per_example["example_id"]) == sorted(some)
    assert "-sel" in picked.name

    category = usable["category"].iloc[0]
    by_category = patch(
        fake_run.path,
        PatchConfig(layer=0, round=1, categories=[category]),
        model=tiny_model,
        write=False,
    )
    assert set(by_category.per_example["example_id"]) == set(
        usable[usable["category"] == category]["example_id"]
    )
    condition = usable["context_condition"].iloc[0]
    by_condition = patch(
        fake_run.path,
        PatchConfig(layer=0, round=1, context_condition=condition),
        model=tiny_model,
        write=False,
    )
    assert set(by_condition.per_example["example_id"]) == set(
        usable[usable["context_condition"] == condition]["example_id"]
    )
    limited = patch(
        fake_run.path, PatchConfig(layer=0, round=1, limit=1), model=tiny_model, write=False
    )
    assert limited.summary["n_examples"] == 1


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"layer": 3}, "--layers 3 is out of range: the model has 3 layers"),
        ({"layer": -1}, "--layers -1 is out of range"),
        ({"layer": "x"}, "use a layer index or 'all'"),
        ({"round": 3}, "run has rounds 0..2; --round 3 needs a replay with --rounds 3 or more"),
        ({"round": 1, "target_round": 5}, "--target-round 5 needs a replay with --rounds 5"),
        ({"round": -1}, "--round -1: rounds start at 0"),
        ({"round": 0}, "--round and --target-round are both 0"),
        ({"component": "mlp_in"}, "unknown component 'mlp_in'"),
        ({"direction": "sideways"}, "unknown direction 'sideways'"),
        ({"method": "guess"}, "unknown method 'guess'"),
        ({"positions": "first:2"}, "use 'readout' or 'last:K'"),
        ({"positions": "last:100000"}, "reaches before the start of a prompt"),
        ({"verify_top": 3}, "only applies to --method attribution"),
        ({"categories": ["Nowhere"]}, "no examples left to patch"),
        ({"examples": ["builtin/nope"]}, "no such examples in the run: builtin/nope"),
        ({"context_condition": "vague"}, "use 'ambig' or 'disambig'"),
    ],
)
def test_user_errors(tiny_model, fake_run, kwargs, message):
    args = {"layer": 0, "round": 2, **kwargs}
    with pytest.raises(InterpError, match=message.replace("(", r"\(").replace(".", r"\.")):
        patch(fake_run.path, PatchConfig(**args), model=tiny_model, write=False)


def test_sweep_rejects_bad_layers_and_components():
    with pytest.raises(InterpError, match="layer 5 is out of range"):
        sweep(3, 4, [5], ["resid_post"])
    with pytest.raises(InterpError, match="unknown component"):
        sweep(3, 4, [0], ["z"])
    assert len(sweep(3, 4, [0, 1], ["heads", "mlp_out"])) == 2 * (4 + 1)
    assert Variant(2, "heads", 1).hook == get_act_name("z", 2)


def test_a_replayed_run(tiny_model, replayed_run):
    """The same checks on a run written by interp.replay.loop (rounds 0..3)."""
    denoise = patch(replayed_run.path, PatchConfig(layer=2, round=3, n_boot=50), model=tiny_model)
    rows = denoise.per_example
    np.testing.assert_allclose(rows["patched"], rows["source"], atol=ATOL)
    assert denoise.name == "r3-t0-resid_post-denoise-L2"
    assert (replayed_run.path / "patching" / f"{denoise.name}.json").is_file()
    noise = patch(
        replayed_run.path,
        PatchConfig(layer=2, round=3, target_round=1, direction="noise"),
        model=tiny_model,
    )
    np.testing.assert_allclose(noise.per_example["patched"], noise.per_example["clean"], atol=ATOL)
    heads = patch(
        replayed_run.path,
        PatchConfig(layer="all", round=3, component="heads", n_boot=50),
        model=tiny_model,
    )
    assert len(heads.summary_table) == tiny_model.cfg.n_layers * tiny_model.cfg.n_heads
