"""Patching controls on the tiny model: aligned positions must hold the same tokens in both
rounds, ``sample`` draws a seeded subset, and the CLI names the roles in TransformerLens'
words."""

from __future__ import annotations

import re

import pytest
import torch
from typer.testing import CliRunner
from unit.patching.test_pipeline import _write_fake_run

from interp.cli import app
from interp.errors import InterpError
from interp.patching import PatchConfig, check_alignment, patch, select_items


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def fake_run(tiny_model, tmp_path_factory):
    return _write_fake_run(tmp_path_factory.mktemp("fake") / "run", tiny_model, n_examples=8)


def shared_tails(run, source: int, target: int) -> dict[str, int]:
    """example id -> how many tokens the two rounds' prompts share at their end, by hand."""
    rounds, tokens = run.rounds(), run.tokens()
    out = {}
    for index, rows in rounds.groupby("example_index"):
        ends = rows.set_index("round")["readout_pos"]
        a = tokens[index][: ends[source] + 1]
        b = tokens[index][: ends[target] + 1]
        n = 0
        while n < min(len(a), len(b)) and a[-1 - n] == b[-1 - n]:
            n += 1
        out[rows["example_id"].iloc[0]] = n
    return out


def used_ids(run, **kwargs) -> list[str]:
    items, _ = select_items(run.rounds(), PatchConfig(layer=0, round=2, **kwargs))
    return [item.example_id for item in items]


# --- --positions last:K alignment ---------------------------------------------------------------


def test_positions_beyond_the_shared_tail_are_refused(tiny_model, fake_run):
    tails = {k: v for k, v in shared_tails(fake_run, 2, 0).items() if k in used_ids(fake_run)}
    shortest = min(tails.values())
    assert shortest > 1  # premise: the rounds share a tail (header, answer prefix)
    k = shortest + 1
    with pytest.raises(InterpError) as err:
        patch(fake_run.path, PatchConfig(layer=0, round=2, positions=f"last:{k}"), model=tiny_model)
    message = str(err.value)
    n_bad = sum(t < k for t in tails.values())
    assert f"differ in their last {k} tokens in {n_bad} of {len(tails)} examples" in message
    example = re.search(r"e\.g\. (\S+):", message).group(1)
    assert tails[example] == shortest
    assert f"{shortest} of {k} aligned tokens identical, shared tail {shortest}" in message
    assert f"Use --positions last:{shortest} or fewer" in message


def test_positions_within_the_shared_tail_run_and_are_reported(tiny_model, fake_run):
    tails = {k: v for k, v in shared_tails(fake_run, 2, 0).items() if k in used_ids(fake_run)}
    shortest = min(tails.values())
    result = patch(
        fake_run.path,
        PatchConfig(layer=2, round=2, positions=f"last:{shortest}", n_boot=0),
        model=tiny_model,
    )
    assert result.summary["alignment"] == {
        "positions": shortest,
        "shared_tail_min": shortest,
        "shared_tail_max": max(tails.values()),
    }
    # Patching the last layer's residual stream at the aligned tail still gives the source.
    rows = result.per_example
    torch.testing.assert_close(
        torch.tensor(rows["patched"].to_numpy()), torch.tensor(rows["source"].to_numpy())
    )


def test_differing_readout_tokens_are_refused(fake_run):
    config = PatchConfig(layer=0, round=2)
    items, _ = select_items(fake_run.rounds(), config)
    tokens = [list(t) for t in fake_run.tokens()]
    first = items[0]
    tokens[first.index][first.readout[2]] += 1  # a different token at round 2's read-out
    with pytest.raises(
        InterpError, match=f"read-out tokens of rounds 2 and 0 differ .*{first.example_id}"
    ):
        check_alignment(items, tokens, config)
    assert check_alignment(items, fake_run.tokens(), config)["positions"] == 1


# --- --sample -----------------------------------------------------------------------------------


def test_sample_is_seeded_and_kept_in_run_order(fake_run):
    everyone = used_ids(fake_run)
    assert len(everyone) >= 5  # premise: something to choose from
    picks = {seed: used_ids(fake_run, sample=3, seed=seed) for seed in range(6)}
    for seed, ids in picks.items():
        assert ids == used_ids(fake_run, sample=3, seed=seed)  # same seed, same examples
        assert len(ids) == 3 and ids == [e for e in everyone if e in ids]
    assert len({tuple(ids) for ids in picks.values()}) > 1  # seeds differ
    assert used_ids(fake_run, sample=3, seed=1, limit=2) == picks[1][:2]
    name = PatchConfig(layer=0, round=2, sample=3, seed=1).name()
    assert "-sel" in name and name != PatchConfig(layer=0, round=2, sample=3, seed=2).name()
    assert PatchConfig(layer=0, round=2).name() == "r2-t0-resid_post-denoise-L0"


def test_sample_larger_than_the_examples_is_refused(tiny_model, fake_run):
    n = len(used_ids(fake_run))
    with pytest.raises(InterpError, match=f"--sample {n + 1} exceeds the {n} examples left"):
        patch(fake_run.path, PatchConfig(layer=0, round=2, sample=n + 1), model=tiny_model)
    with pytest.raises(InterpError, match="--sample must be at least 1"):
        patch(fake_run.path, PatchConfig(layer=0, round=2, sample=0), model=tiny_model)


@pytest.mark.parametrize(("field", "flag"), [("limit", "--limit"), ("batch_size", "--batch-size")])
def test_library_error_names_the_field_and_the_cli_the_flag(fake_run, field, flag):
    with pytest.raises(InterpError, match=rf"^{field} must be at least 1 \(got 0\)$"):
        patch(fake_run.path, PatchConfig(layer=0, round=2, **{field: 0}))
    args = ["patch", "--run", str(fake_run.path), "--layers", "0", "--round", "2", flag, "0"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2
    assert result.stderr.strip() == f"error: {flag} must be at least 1 (got 0)"


# --- the CLI: sample, and the roles in TransformerLens' words ----------------------------------


def test_cli_names_the_roles_and_samples(fake_run):
    args = ["patch", "--run", str(fake_run.path), "--layers", "2", "--round", "2"]
    result = CliRunner().invoke(app, [*args, "--sample", "3", "--seed", "4", "--n-boot", "0"])
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "n = 3 examples" in out
    assert "source = round 2 = TL's clean run; target = round 0 = TL's corrupted run" in out
    assert "(TL's denoising: clean -> corrupted)" in out
    header = next(line for line in out.splitlines() if line.startswith("method"))
    assert header.split()[4:7] == ["target", "source", "patched"]
    noise = CliRunner().invoke(app, [*args, "--direction", "noise", "--n-boot", "0"])
    assert "patched = the round-2 run with round 0's activation (noising" in noise.stdout
    help_text = CliRunner().invoke(app, ["patch", "--help"]).stdout
    assert "corrupted" in help_text and "--sample" in help_text
