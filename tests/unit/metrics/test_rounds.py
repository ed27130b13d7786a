"""Metrics on hand-built rounds tables, checked against values worked out by hand."""

import json
import math

import numpy as np
import pandas as pd
import pytest

from interp.errors import InterpError
from interp.metrics.rounds import (
    DEFINITIONS,
    REQUIRED_COLUMNS,
    build_grid,
    compute_metrics,
    metrics_table,
    resampled_stats,
)


def make_rounds(
    choices: list[list[int]],
    labels: list[int],
    *,
    probs: list[list[float]] | None = None,
    n_options: int | list[int] = 3,
    target: int | list[int] = 0,
    unknown: int | list[int] | None = None,
    context: str | None | list[str | None] = "disambig",
    entropy: float = 0.5,
) -> pd.DataFrame:
    """A rounds table: ``choices[round][example]``; per-example fields broadcast from scalars.

    Without ``probs`` every option gets the same probability (log-probs of one example are the
    same in every round, which is all these tests need). ``unknown`` defaults to option 2 where
    there is one.
    """
    n = len(labels)

    def per_example(value):
        return list(value) if isinstance(value, list) else [value] * n

    n_opts = per_example(n_options)
    if probs is None:
        probs = [[1.0 / k] * k for k in n_opts]
    if unknown is None:
        unknown = [2 if k > 2 else -1 for k in n_opts]
    targets, unknowns, contexts = per_example(target), per_example(unknown), per_example(context)
    rows = []
    for r, round_choices in enumerate(choices):
        for i, choice in enumerate(round_choices):
            rows.append(
                {
                    "example_index": i,
                    "example_id": f"ex{i}",
                    "round": r,
                    "choice": choice,
                    "correct": choice == labels[i],
                    "label": labels[i],
                    "target": targets[i],
                    "unknown": unknowns[i],
                    "option_logprobs": list(np.log(probs[i])),
                    "entropy": entropy,
                    "context_condition": contexts[i],
                    "question_polarity": "neg",
                    "category": "Age",
                }
            )
    return pd.DataFrame(rows)


def random_rounds(n: int, n_rounds: int, seed: int, p_correct: float = 0.6) -> pd.DataFrame:
    """A larger random table with mixed contexts, for bootstrap and speed checks."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, size=n).tolist()
    choices = []
    for _ in range(n_rounds):
        right = rng.random(n) < p_correct
        other = (np.array(labels) + rng.integers(1, 3, size=n)) % 3
        choices.append(np.where(right, labels, other).tolist())
    probs = rng.dirichlet(np.ones(3), size=n).tolist()
    contexts = ["ambig" if i % 2 else "disambig" for i in range(n)]
    return make_rounds(choices, labels, probs=probs, context=contexts)


def round0(metrics: dict) -> dict:
    return metrics["per_round"][0]


def test_accuracy_per_subset_and_unparsed_counts_as_wrong():
    # ambig: ex0 right, ex1 right; disambig: ex2 right, ex3 wrong, ex4 unparsed.
    frame = make_rounds(
        [[2, 2, 0, 1, -1]],
        labels=[2, 2, 0, 0, 0],
        context=["ambig", "ambig", "disambig", "disambig", "disambig"],
    )
    frame.loc[4, "correct"] = True  # a wrong "correct" flag on an unparsed answer is overruled
    r0 = round0(compute_metrics(frame, n_boot=0))
    assert r0["accuracy"]["value"] == pytest.approx(3 / 5)
    assert r0["accuracy_ambig"]["value"] == pytest.approx(1.0)
    assert r0["accuracy_disambig"]["value"] == pytest.approx(1 / 3)
    assert r0["unparsed"] == 1
    assert r0["accuracy"]["ci"] is None  # n_boot=0 skips intervals


def test_empty_subset_is_none():
    frame = make_rounds([[0, 1]], labels=[0, 0], context="disambig")
    r0 = round0(compute_metrics(frame, n_boot=50))
    assert r0["accuracy_ambig"] == {"value": None, "ci": None}
    assert r0["bias_amb"] == {"value": None, "ci": None}


def test_bias_dis_by_hand_excludes_unknown_unparsed_and_undetermined_target():
    # Options: 0 = bias target, 1 = other group, 2 = unknown.
    # ex0-3: 3 of 4 scorable answers hit the target -> s = 2 * 3/4 - 1 = 0.5.
    # ex4 answers unknown, ex5 is unparsed, ex6 has no determinable target: all left out.
    frame = make_rounds(
        [[0, 0, 0, 1, 2, -1, 0]],
        labels=[0] * 7,
        target=[0, 0, 0, 0, 0, 0, -1],
        context="disambig",
    )
    r0 = round0(compute_metrics(frame, n_boot=0))
    assert r0["bias_dis"]["value"] == pytest.approx(0.5)
    assert r0["bias_amb"]["value"] is None


def test_bias_amb_scaled_by_ambiguous_error_rate():
    # Ambiguous: 4 answer "unknown" (correct), 4 do not: 3 hit target -> s = 0.5, acc = 0.5,
    # s_AMB = (1 - 0.5) * 0.5 = 0.25.
    frame = make_rounds([[2, 2, 2, 2, 0, 0, 0, 1]], labels=[2] * 8, context="ambig")
    r0 = round0(compute_metrics(frame, n_boot=0))
    assert r0["accuracy_ambig"]["value"] == pytest.approx(0.5)
    assert r0["bias_amb"]["value"] == pytest.approx(0.25)
    assert r0["bias_dis"]["value"] is None


def test_bias_target_other_than_zero():
    # Target index 1 for every example; 1 of 2 scorable answers hits it -> s_DIS = 0.
    frame = make_rounds([[1, 0, 2]], labels=[0, 0, 0], target=1, context="disambig")
    assert round0(compute_metrics(frame, n_boot=0))["bias_dis"]["value"] == pytest.approx(0.0)


def test_unknown_rate_only_over_examples_with_an_unknown_option():
    # ex0 unknown, ex1 not, ex2 unparsed (counts in the denominator), ex3 has no unknown option.
    frame = make_rounds(
        [[2, 0, -1, 0]], labels=[2, 2, 2, 0], unknown=[2, 2, 2, -1], target=[0, 0, 0, -1]
    )
    assert round0(compute_metrics(frame, n_boot=0))["unknown_rate"] == pytest.approx(1 / 3)


def test_ece_two_bins_by_hand():
    # Bin (0.6, 0.7]: confidences 0.65, 0.65, one right -> |0.5 - 0.65| = 0.15, share 1/2.
    # Bin (0.9, 1.0]: confidences 0.95, 0.95, both right -> |1 - 0.95| = 0.05, share 1/2.
    # ECE = 0.1 (one global bin would give |0.75 - 0.8| = 0.05).
    probs = [[0.65, 0.35], [0.65, 0.35], [0.95, 0.05], [0.95, 0.05]]
    frame = make_rounds([[0, 0, 0, 0]], labels=[0, 1, 0, 0], probs=probs, n_options=2)
    r0 = round0(compute_metrics(frame, n_boot=0))
    assert r0["ece"]["value"] == pytest.approx(0.1)


def test_brier_by_hand_with_ragged_options():
    # [0.5, 0.3, 0.2], label 0: 0.25 + 0.09 + 0.04 = 0.38; [0.6, 0.4], label 1: 0.36 + 0.36.
    frame = make_rounds(
        [[0, 0]], labels=[0, 1], probs=[[0.5, 0.3, 0.2], [0.6, 0.4]], n_options=[3, 2]
    )
    r0 = round0(compute_metrics(frame, n_boot=0))
    assert r0["brier"] == pytest.approx((0.38 + 0.72) / 2)


def test_unnormalised_logprobs_are_renormalised():
    # Scores 0.2, 0.2 renormalise to 0.5, 0.5: Brier 0.25 + 0.25 = 0.5, confidence 0.5.
    # Raw values would give Brier 0.64 + 0.04 = 0.68 and confidence 0.2.
    frame = make_rounds([[0]], labels=[0], probs=[[0.2, 0.2]], n_options=2)
    r0 = round0(compute_metrics(frame, n_boot=0))
    assert r0["brier"] == pytest.approx(0.5)
    assert r0["ece"]["value"] == pytest.approx(0.5)  # |1 - 0.5| in one bin

    shifted = make_rounds(
        [[0, 0, 0, 0]],
        labels=[0, 1, 0, 0],
        probs=[[0.65, 0.35], [0.65, 0.35], [0.95, 0.05], [0.95, 0.05]],
        n_options=2,
    )
    shifted["option_logprobs"] = [list(np.array(v) - 7.0) for v in shifted["option_logprobs"]]
    assert round0(compute_metrics(shifted, n_boot=0))["ece"]["value"] == pytest.approx(0.1)


def test_ragged_options_position_share():
    # Examples with 3, 2, 4 and 2 options; shares over parsed answers up to index 3.
    frame = make_rounds(
        [[0, 1, 3, -1]],
        labels=[0, 0, 0, 0],
        n_options=[3, 2, 4, 2],
        unknown=[2, -1, 3, -1],
        target=[1, 1, 1, 1],
    )
    r0 = round0(compute_metrics(frame, n_boot=20))
    assert r0["position_share"] == pytest.approx([1 / 3, 1 / 3, 0.0, 1 / 3])
    assert r0["unknown_rate"] == pytest.approx(1 / 2)


def test_flips_between_consecutive_rounds():
    frame = make_rounds(
        [[0, 0, 1, 1], [0, 1, 0, 2], [0, 1, 0, 2]],
        labels=[0, 0, 0, 0],
    )
    metrics = compute_metrics(frame, n_boot=0)
    assert metrics["rounds"] == [0, 1, 2]
    assert metrics["per_round"][0]["flips"] is None
    assert metrics["per_round"][1]["flips"] == {
        "right_to_wrong": 1,
        "wrong_to_right": 1,
        "changed": 3,
    }
    assert metrics["per_round"][2]["flips"] == {
        "right_to_wrong": 0,
        "wrong_to_right": 0,
        "changed": 0,
    }


def _sequence(changes: list[int], n: int = 50) -> pd.DataFrame:
    """Round r moves ``changes[r-1]`` examples from the right answer 0 to the wrong answer 1."""
    rounds = [[0] * n]
    for k in changes:
        previous = rounds[-1]
        flipped = [i for i, c in enumerate(previous) if c == 0][:k]
        rounds.append([1 if i in flipped else c for i, c in enumerate(previous)])
    return make_rounds(rounds, labels=[0] * n)


def test_convergence_round_after_changes_stop():
    # Rounds 0..4; changes into rounds 1 and 2, none after -> converged at round 2.
    conv = compute_metrics(_sequence([10, 5, 0, 0]), n_boot=0)["convergence"]
    assert conv["round"] == 2
    assert conv["tol_acc"] == 0.01 and conv["tol_change"] == 0.02
    assert conv["definition"] == DEFINITIONS["convergence"]


def test_convergence_none_when_last_round_still_changes():
    metrics = compute_metrics(_sequence([10, 0, 0, 5]), n_boot=0)
    assert metrics["convergence"]["round"] is None


def test_convergence_edges():
    # 1 of 50 changed = 0.02 = tol_change and accuracy moves 0.02: stable only if tol_acc allows.
    frame = _sequence([10, 1, 1])
    assert compute_metrics(frame, n_boot=0)["convergence"]["round"] is None
    assert compute_metrics(frame, n_boot=0, tol_acc=0.02)["convergence"]["round"] == 1
    # Stable from the start -> round 0; only round 0 -> None.
    assert compute_metrics(_sequence([0, 0]), n_boot=0)["convergence"]["round"] == 0
    assert compute_metrics(_sequence([]), n_boot=0)["convergence"]["round"] is None


def test_convergence_counts_changes_that_keep_accuracy():
    # Round 2 moves 10 wrong answers from option 1 to option 2: accuracy flat, answers not.
    frame = make_rounds(
        [[0] * 40 + [1] * 10, [0] * 40 + [1] * 10, [0] * 40 + [2] * 10], labels=[0] * 50
    )
    assert compute_metrics(frame, n_boot=0)["convergence"]["round"] is None


def test_bootstrap_ci_contains_point_and_is_seeded():
    frame = random_rounds(200, 3, seed=1)
    first = compute_metrics(frame, n_boot=300, seed=7)
    again = compute_metrics(frame, n_boot=300, seed=7)
    other = compute_metrics(frame, n_boot=300, seed=8)
    assert first == again
    assert first["per_round"][0]["accuracy"]["ci"] != other["per_round"][0]["accuracy"]["ci"]
    for entry in first["per_round"]:
        for name in ("accuracy", "accuracy_ambig", "accuracy_disambig", "entropy", "ece"):
            lo, hi = entry[name]["ci"]
            assert lo <= entry[name]["value"] <= hi, name
        for name in ("bias_amb", "bias_dis"):
            lo, hi = entry[name]["ci"]
            assert lo < hi, name


def test_bootstrap_ci_narrows_with_more_examples():
    def width(n: int) -> float:
        lo, hi = round0(compute_metrics(random_rounds(n, 1, seed=3), n_boot=400))["accuracy"]["ci"]
        return hi - lo

    small, large = width(40), width(4000)
    assert large < small / 5  # ~ 1/sqrt(n): a factor 10 expected


def test_resample_weights_match_an_explicit_resample():
    # One bootstrap resample as counts must equal the metrics of the duplicated examples.
    frame = random_rounds(30, 3, seed=5)
    picks = np.random.default_rng(0).integers(0, 30, size=30)
    resampled = pd.concat(
        [frame[frame.example_index == i].assign(example_index=j) for j, i in enumerate(picks)]
    )
    direct = compute_metrics(resampled, n_boot=0)
    counts = np.bincount(picks, minlength=30)[None, :].astype(float)
    stats = resampled_stats(build_grid(frame), counts)
    for name, values in stats.items():
        expected = [entry[name]["value"] for entry in direct["per_round"]]
        assert values[0] == pytest.approx(expected), name


def test_json_serialisable_with_plain_types():
    frame = make_rounds([[0, 1, -1], [1, 1, 0]], labels=[0, 1, 0], context="disambig")
    frame.loc[0, "entropy"] = float("nan")
    metrics = compute_metrics(frame, n_boot=30)
    text = json.dumps(metrics, allow_nan=False)
    assert json.loads(text) == metrics

    def check(value):
        if isinstance(value, dict):
            for v in value.values():
                check(v)
        elif isinstance(value, list):
            for v in value:
                check(v)
        else:
            assert value is None or type(value) in (int, float, str, bool), type(value)
            assert not (isinstance(value, float) and math.isnan(value))

    check(metrics)
    assert set(DEFINITIONS) <= set(metrics["definitions"])


def test_metrics_table_one_row_per_round():
    frame = make_rounds([[0, 1, 2], [0, 0, 2]], labels=[0, 0, 2], context="ambig")
    metrics = compute_metrics(frame, n_boot=20)
    table = metrics_table(metrics)
    assert list(table["round"]) == [0, 1]
    assert table.loc[1, "accuracy"] == pytest.approx(metrics["per_round"][1]["accuracy"]["value"])
    assert {"accuracy_lo", "accuracy_hi", "position_share_2", "flips_changed"} <= set(table)
    assert pd.isna(table.loc[0, "flips_changed"]) and table.loc[1, "flips_changed"] == 1
    assert pd.isna(table.loc[0, "bias_dis"])  # no disambiguated examples


def test_missing_columns_are_named():
    frame = make_rounds([[0]], labels=[0]).drop(columns=["target", "entropy"])
    with pytest.raises(InterpError, match="target.*entropy"):
        compute_metrics(frame)


def test_empty_frame():
    with pytest.raises(InterpError, match="empty"):
        compute_metrics(pd.DataFrame(columns=list(REQUIRED_COLUMNS)))


def test_incomplete_or_duplicate_grid():
    frame = make_rounds([[0, 1], [0, 1]], labels=[0, 0])
    with pytest.raises(InterpError, match="incomplete"):
        compute_metrics(frame.iloc[:-1])
    with pytest.raises(InterpError, match="duplicate"):
        compute_metrics(pd.concat([frame, frame.iloc[:1]]))


def test_out_of_range_choice_and_bad_metrics_dict():
    frame = make_rounds([[0, 3]], labels=[0, 0])
    with pytest.raises(InterpError, match="choice"):
        compute_metrics(frame)
    with pytest.raises(InterpError, match="per_round"):
        metrics_table({})
