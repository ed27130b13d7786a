"""Option-order permutations (``--permute``) and the debiased scores (issue 13, part 1)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from interp.cli import app
from interp.errors import InterpError
from interp.inputs.permute import expand, orders, permute_example, to_original, to_shown
from interp.inputs.tasks import load_builtin
from interp.metrics.debias import debiased_rounds
from interp.metrics.rounds import compute_metrics
from interp.replay.loop import ReplayConfig, option_token_ids, replay
from interp.runs.store import Run

BIAS = 40.0  # added to letter (c)'s logit at the read-out (the tiny model prefers (a)): it wins


@pytest.mark.parametrize("k", [2, 3, 4])
@pytest.mark.parametrize("mode", ["cyclic", "all"])
def test_mapping_back_and_forth_is_the_identity(k: int, mode: str) -> None:
    perms = orders(k, mode)
    assert len(perms) == (k if mode == "cyclic" else math.factorial(k))
    assert perms[0] == tuple(range(k)) and len(set(perms)) == len(perms)
    for perm in perms:
        for i in range(k):
            assert to_original(to_shown(i, perm), perm) == i
            assert to_shown(to_original(i, perm), perm) == i
    if mode == "cyclic":  # every option at every position exactly once
        assert all(len({p[j] for p in perms}) == k for j in range(k))


def test_permuted_examples_carry_their_roles() -> None:
    example = next(e for e in load_builtin() if e.target is not None and e.unknown is not None)
    for perm in orders(3, "all"):
        shown = permute_example(example, perm)
        assert [example.options[perm[j]] for j in range(3)] == list(shown.options)
        assert shown.options[shown.label] == example.options[example.label]
        assert shown.options[shown.target] == example.options[example.target]
        assert shown.options[shown.unknown] == example.options[example.unknown]
        assert to_original(shown.label, perm) == example.label
    rows, views = expand([example, example], "cyclic")
    assert len(rows) == 6 and [b for b, _ in views] == [0, 0, 0, 1, 1, 1]
    assert expand([example], "none")[1] == [(0, (0, 1, 2))]


def _replay(model, out: Path, permute: str):
    config = ReplayConfig(
        out=str(out), model="tiny", limit=4, rounds=1, plan="baseline", permute=permute
    )
    return replay(config, model=model)


def test_a_position_bias_is_removed_by_debiasing(tiny_model, tmp_path: Path) -> None:
    plain = _replay(tiny_model, tmp_path / "plain", "cyclic").rounds()
    letter_c = option_token_ids(tiny_model.tokenizer, 3)[2]

    def bias(module, inputs, output):
        output = output.clone()
        output[..., letter_c] += BIAS
        return output

    handle = tiny_model.unembed.register_forward_hook(bias)
    try:
        biased = _replay(tiny_model, tmp_path / "biased", "cyclic").rounds()
    finally:
        handle.remove()
    # Round 0 only: later rounds continue from different (biased) answers.
    plain, biased = plain[plain["round"] == 0], biased[biased["round"] == 0]
    assert (plain["choice"] != 2).any()  # the hook changes answers...
    assert (biased["choice"] == 2).all()  # raw: always the third letter...
    raw = debiased_rounds(biased)
    assert not raw["agree"].any()  # ...so the orders never agree on the content
    # Log space cancels an additive logit bias exactly (each option is first once).
    want, got = debiased_rounds(plain, "log"), debiased_rounds(biased, "log")
    assert list(got["choice"]) == list(want["choice"])
    np.testing.assert_allclose(
        np.stack(got["option_logprobs"]), np.stack(want["option_logprobs"]), atol=1e-3
    )
    np.testing.assert_allclose(got["entropy"], want["entropy"], atol=1e-3)


def test_permuted_run_directory_and_metrics(tiny_model, tmp_path: Path) -> None:
    run = _replay(tiny_model, tmp_path / "p", "all")
    rounds = run.rounds()
    assert run.manifest["schema_version"] == 2 and run.manifest["permute"]["mode"] == "all"
    assert len(rounds) == 4 * 6 * 2 and rounds["base_index"].nunique() == 4
    for row in rounds.itertuples():
        perm = list(row.permutation)
        assert row.choice_orig == perm[row.choice] and row.label_orig == perm[row.label]
    assert Run.open(run.path).rounds().equals(rounds)
    metrics = compute_metrics(rounds, n_boot=50)
    deb = metrics["debiased"]
    assert deb["n_base_examples"] == 4 and deb["n_orders"] == 6
    assert len(deb["agreement"]) == 2 and 0 <= deb["agreement"][0]["value"] <= 1
    # intervals resample base examples: every order of one example together
    example = compute_metrics(rounds, n_boot=10, cluster="example")["bootstrap"]["cluster"]
    assert example["n_clusters"] == 4
    out = CliRunner().invoke(app, ["metrics", "--run", str(run.path), "--n-boot", "20"])
    assert out.exit_code == 0, out.output
    assert "debiased" in out.output and "agreement" in out.output


def test_permute_none_keeps_the_old_run(tiny_model, tmp_path: Path) -> None:
    default = replay(
        ReplayConfig(out=str(tmp_path / "a"), model="tiny", limit=3, rounds=1), model=tiny_model
    )
    explicit = _replay(tiny_model, tmp_path / "b", "none")
    assert "base_index" not in default.rounds().columns
    assert "permute" not in default.manifest and "permute" not in default.manifest["config"]
    assert default.manifest["schema_version"] == 1
    limited = replay(
        ReplayConfig(out=str(tmp_path / "c"), model="tiny", limit=4, rounds=1, plan="baseline"),
        model=tiny_model,
    )
    assert limited.manifest["fingerprint"] == explicit.manifest["fingerprint"]
    for name in ("rounds.parquet", "tokens.parquet", "spans.parquet", "metrics.json"):
        assert (limited.path / name).read_bytes() == (explicit.path / name).read_bytes()
    assert pd.read_parquet(explicit.path / "rounds.parquet").columns.equals(
        default.rounds().columns
    )


def test_bad_permute_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "x"
    result = CliRunner().invoke(
        app, ["replay", "--out", str(out), "--model", "tiny", "--permute", "shuffle"]
    )
    assert result.exit_code == 2, result.output
    assert result.stderr.strip().count("\n") == 0 and "permute" in result.stderr
    assert not out.exists()
    with pytest.raises(InterpError, match="unknown permute"):
        orders(3, "random")
