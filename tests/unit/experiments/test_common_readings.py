"""The experiments' readings as functions of their tables (issue 23): one position rule per
arm and round, sign-aware control and correlation sentences, self-distinguish's letter check,
and multiplicity control over layers and effects. Every table here is synthetic."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from unit.metrics.test_rounds import make_rounds

from interp.experiments import convergence, interactions, self_distinguish, superficial
from interp.experiments.common import with_position
from interp.metrics.rounds import compute_metrics, model_floor, position_rounds
from interp.runs.store import Run, write_parquet
from interp.stats import benjamini_hochberg, bootstrap_p

# --- 1. one position rule, per arm and per round ---------------------------------------------


def _arm(root: Path, name: str, rounds: pd.DataFrame) -> Run:
    """A run folder holding only what the position check reads: rounds.parquet."""
    write_parquet(root / name / "rounds.parquet", rounds)
    return Run(root / name, {"seed": 0})


def _pair(root: Path) -> tuple[Run, Run]:
    # 30 examples, labels cycle a, b, c. Main arm: (c) in every answer of every round (accuracy
    # 1/3 = chance). Control arm: each example's own label. Pooled over both arms and all
    # rounds one letter takes (90 + 30) / 180 = 0.67 of the answers, under any pooled 0.9.
    labels = [i % 3 for i in range(30)]
    main = _arm(root, "main", make_rounds([[2] * 30] * 3, labels, context="ambig"))
    control = _arm(root, "control", make_rounds([labels] * 3, labels, context="ambig"))
    return main, control


def test_the_caveat_fires_per_arm_where_the_metrics_flag_the_arm(tmp_path):
    main, control = _pair(tmp_path)
    summary = with_position({"reading": []}, [main, control])
    # interp metrics flags the main arm (its model floor), so the experiment says it too
    assert compute_metrics(main.rounds(), n_boot=200)["model_floor"]["flag"]
    assert not compute_metrics(control.rounds(), n_boot=200)["model_floor"]["flag"]
    (caveat,) = [x for x in summary["reading"] if x.startswith("caveat:")]
    assert "main (rounds 0, 1, 2; (c) takes up to 100%" in caveat and "control (" not in caveat
    assert summary["position"]["main"]["flag"] and not summary["position"]["control"]["flag"]
    assert summary["position_share"] == pytest.approx(1.0)  # largest per arm and round


def test_the_caveat_is_silent_where_no_arm_is_flagged(tmp_path):
    _, control = _pair(tmp_path)
    summary = with_position({"reading": ["x"]}, [control, control])
    assert summary["reading"] == ["x"] and summary["position_share"] == pytest.approx(1 / 3)


def test_position_rounds_is_the_floor_rule_per_round():
    def entry(r, share, ci):
        return {"round": r, "accuracy": {"value": 0.5, "ci": ci}, "position_share": share}

    per_round = [
        entry(0, [0.85, 0.15], [0.4, 0.6]),  # one letter > 80%, chance inside: flagged
        entry(1, [0.80, 0.20], [0.4, 0.6]),  # exactly 80%: not more than 80%
        entry(2, [0.95, 0.05], [0.6, 0.7]),  # accuracy above chance: not position-driven
    ]
    assert [f["round"] for f in position_rounds(per_round, 0.5, 100)] == [0]
    floor = model_floor({"per_round": per_round, "n_examples": 100}, chance=0.5)
    assert floor["flag"] and [f["round"] for f in floor["rounds"]] == [0]


# --- 4. self-distinguish uses the same rule ---------------------------------------------------


def _distinguish_table(picks_a: float, accuracy_ci: tuple[float, float]) -> pd.DataFrame:
    row = {
        "round": 3,
        "n_examples": 40,
        "both": 0.1,
        "both_lo": 0.0,
        "both_hi": 0.2,
        "order_unbiased_first": picks_a,
        "order_stereotyped_first": 1 - picks_a,
        "accuracy": 0.5,
        "accuracy_lo": accuracy_ci[0],
        "accuracy_hi": accuracy_ci[1],
        "picks_a": picks_a,
        "n_own_right": 10,
        "both_own_right_hi": 0.3,
    }
    return pd.DataFrame([row])


def test_self_distinguish_does_not_credit_the_claim_to_a_position_picker():
    # (b) in 85% of the questions, accuracy at chance: the letter decides, no claim
    lines = self_distinguish.reading(_distinguish_table(0.15, (0.4, 0.6)))
    assert not any("(the papers' claim)" in x for x in lines)
    assert "picks (b) in 85%" in lines[-1] and "neither supported nor contradicted" in lines[-1]
    # both letters used: the claim's reading stands
    lines = self_distinguish.reading(_distinguish_table(0.5, (0.4, 0.6)))
    assert lines[-1].endswith("(the papers' claim).")


# --- 2. control_reading compares sizes of movement -----------------------------------------


def _difference(change_main: float, change_control: float, lo: float, hi: float) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {"quantity": "concept", "round": 3, "change_main": change_main}
            | {"change_control": change_control, "change_diff": change_main - change_control}
            | {"change_lo": lo, "change_hi": hi}
        ]
    )


def test_control_reading_does_not_credit_a_small_move_against_a_large_opposite_one():
    # main +0.01, control -0.5: main - control = +0.51, its interval excludes 0
    (line,) = convergence.control_reading(_difference(0.01, -0.5, 0.3, 0.7), "sc", "baseline")
    assert "exceeds" not in line and "moves less than the control" in line
    assert "nothing here is credited to the sc plan" in line
    # main +0.6, control +0.1, interval excludes 0: credited
    (line,) = convergence.control_reading(_difference(0.6, 0.1, 0.3, 0.7), "sc", "baseline")
    assert "exceeds the control's" in line
    # main +0.6, control +0.1, interval covers 0: not credited
    (line,) = convergence.control_reading(_difference(0.6, 0.1, -0.1, 0.9), "sc", "baseline")
    assert "does not exceed" in line and "cannot be told apart" in line


# --- 3. the correlation sentence follows the sign --------------------------------------------

_NO_FITS = pd.DataFrame(columns=["quantity", "note", "lam"])


def test_a_negative_correlation_is_read_as_negative():
    corr = {"pearson": -0.40, "lo": -0.60, "hi": -0.20}
    (line,) = convergence.reading(_NO_FITS, corr)
    assert "r = -0.40" in line and "rise more" not in line and "move more" not in line
    assert "concept scores that fall more (or rise less)" in line
    (line,) = convergence.reading(_NO_FITS, {"pearson": 0.4, "lo": 0.2, "hi": 0.6})
    assert "concept scores that rise more (or fall less)" in line
    (line,) = convergence.reading(_NO_FITS, {"pearson": -0.1, "lo": -0.3, "hi": 0.1})
    assert "no reliable per-example link" in line and "fall more" not in line


# --- 5. many layers, many effects: a correction, and no claim from silence ------------------


def test_bootstrap_p_and_benjamini_hochberg_by_hand():
    samples = np.array([[1.0, -1.0], [2.0, 1.0], [3.0, 2.0], [4.0, 3.0]])
    # column 0: none of 4 resamples <= 0 -> 2 * 1/5; column 1: one <= 0 -> 2 * 2/5
    assert bootstrap_p(samples) == pytest.approx([0.4, 0.8])
    assert np.isnan(bootstrap_p(np.zeros((0, 1))))[0]
    # m = 4, q = 0.05: thresholds 0.0125, 0.025, 0.0375, 0.05; the 3 smallest pass
    # (0.03 <= 0.0375 although 0.02 > 0.0125: step-up), NaN is no test
    found = benjamini_hochberg([0.03, 0.02, 0.2, 0.001, np.nan])
    assert found.tolist() == [True, True, False, True, False]
    assert benjamini_hochberg([0.04] * 30).all()  # all at 0.04: 0.04 <= 30 x 0.05 / 30
    assert not benjamini_hochberg([0.04] + [0.9] * 29).any()  # one of 30 at 0.04: not kept


def _change(p: float, lo: float, hi: float, n_layers: int = 30) -> pd.DataFrame:
    rows = [
        {"layer": la, "group": "improved - stayed_wrong", "n_examples": 20, "change": 0.1}
        | {"lo": lo, "hi": hi, "p": p}
        for la in range(n_layers)
    ]
    return pd.DataFrame(rows)


def _ranks() -> pd.DataFrame:
    return pd.DataFrame(
        [{"rank": k, "improved": 0.2, "improved_lo": 0.1, "improved_hi": 0.3} for k in (1, 2, 3)]
    )


def test_superficial_b_corrects_over_layers_and_claims_nothing_from_silence():
    # one layer of 30 whose interval just excludes 0 (p = 0.04): chance at this many layers
    change = _change(0.9, -0.1, 0.3)
    change.loc[7, ["lo", "hi", "p"]] = [0.01, 0.3, 0.04]
    lines = superficial.reading(_ranks(), change, n_improved=5)
    assert "at no layer can" in lines[-1] and "told apart" in lines[-1]
    assert "layer(s) 7" not in lines[-1]
    assert "Benjamini-Hochberg" in lines[-1] and "30 layers" in lines[-1]
    # no interval excludes 0: no "superficial reading", only that nothing can be told apart
    lines = superficial.reading(_ranks(), _change(0.9, -0.1, 0.3), n_improved=5)
    assert "superficial reading" not in lines[-1] and "told apart" in lines[-1]
    # every layer at p = 0.002: all survive
    lines = superficial.reading(_ranks(), _change(0.002, 0.05, 0.3), n_improved=5)
    assert lines[-1].startswith("(b) at layer(s) 0, 1, 2")


def _effects(n_layers: int = 30) -> tuple[pd.DataFrame, pd.DataFrame]:
    behaviour = pd.DataFrame(
        [
            {"metric": m, "effect": interactions.effect_name(e), "round": 2}
            | {"value": 0.0, "lo": -0.1, "hi": 0.1, "p": 0.9}
            for m in interactions.METRICS
            for e in interactions.EFFECTS
        ]
    )
    concept = pd.DataFrame(
        [
            {"layer": la, "effect": interactions.effect_name(e), "round": 2}
            | {"value": 0.0, "lo": -0.1, "hi": 0.1, "p": 0.9}
            for la in range(n_layers)
            for e in interactions.EFFECTS
        ]
    )
    return behaviour, concept


def test_interactions_correct_over_layers():
    behaviour, concept = _effects()
    one = concept.index[(concept["layer"] == 4) & (concept["effect"] == "instruction x cot")]
    concept.loc[one, ["lo", "hi", "p"]] = [0.01, 0.2, 0.04]
    lines = interactions.reading(behaviour, concept, 2)
    assert "layer 4" not in lines[-1] and "told apart" in lines[-1]
    assert any("Benjamini-Hochberg" in x for x in lines)
    # a clear interaction at every layer survives
    concept.loc[concept["effect"] == "instruction x cot", ["lo", "hi", "p"]] = [0.05, 0.2, 0.002]
    lines = interactions.reading(behaviour, concept, 2)
    assert "instruction x cot (layer 0), instruction x cot (layer 1)," in lines[-1]


# --- 6 and 11: a permuted run's raw and debiased scores -------------------------------------

CYCLIC = ((0, 1, 2), (1, 2, 0), (2, 0, 1))


def _permuted(dists: list[list[list[float]]], labels: list[int], choose=None) -> pd.DataFrame:
    """A cyclic-order rounds table, one round: ``dists[base][order]`` the probabilities of the
    *original* options in that order; the shown answer is the shown argmax, or ``choose`` (a
    fixed shown letter). Target: option 0, unknown: option 1; ambiguous and disambiguated
    examples alternate."""
    rows = []
    for b, (by_order, label) in enumerate(zip(dists, labels, strict=True)):
        for o, perm in enumerate(CYCLIC):
            shown_p = [by_order[o][perm[j]] for j in range(3)]
            choice = int(np.argmax(shown_p)) if choose is None else choose
            rows.append(
                {
                    "example_index": 3 * b + o,
                    "example_id": f"ex{b}",
                    "round": 0,
                    "choice": choice,
                    "correct": perm[choice] == label,
                    "label": perm.index(label),
                    "target": perm.index(0),
                    "unknown": perm.index(1),
                    "option_logprobs": list(np.log(shown_p)),
                    "entropy": 0.5,
                    "context_condition": "ambig" if b % 2 else "disambig",
                    "question_polarity": "neg",
                    "category": "Age",
                    "question_index": str(b),
                    "base_index": b,
                    "permutation": list(perm),
                    "label_orig": label,
                    "target_orig": 0,
                    "unknown_orig": 1,
                    "choice_orig": perm[choice],
                }
            )
    return pd.DataFrame(rows)


def test_pooled_raw_bias_of_a_position_picker_is_marked_structural():
    from interp.report.tables import format_metrics

    # always the shown letter (c): pooled over the 3 cyclic orders it picks every option once
    flat = [[1 / 3] * 3] * 3
    rounds = _permuted([flat] * 12, [2, 0] * 6, choose=2)
    metrics = compute_metrics(rounds, n_boot=50, by_category=False)
    assert metrics["per_round"][0]["bias_dis"]["value"] == pytest.approx(0.0)
    text = format_metrics(metrics)
    # both pooled bias cells marked, with no interval (a structural zero is no estimate)
    assert text.split("\n")[1].count("0.000* ") == 2 and "structural" in text
    # each order alone: (c) shows option 2 (neither target nor unknown: s_DIS -1), option 0
    # (the target: +1), option 1 (unknown: no s_DIS)
    by_order = metrics["raw_by_order"]
    assert [o["permutation"] for o in by_order] == [list(p) for p in CYCLIC]
    s_dis = [o["per_round"][0]["bias_dis"]["value"] for o in by_order]
    assert s_dis[:2] == pytest.approx([-1.0, 1.0]) and s_dis[2] is None
    assert "raw scores per option order" in text


def test_the_debiasing_rule_is_printed_where_it_decides_the_number():
    from interp.report.tables import format_metrics

    # one order is sure of option 0; two split 1 and 2: the mixture (prob) picks 0, the
    # geometric mean (log) does not
    dists = [[[0.99, 0.005, 0.005], [0.01, 0.6, 0.39], [0.01, 0.39, 0.6]]] * 12
    metrics = compute_metrics(_permuted(dists, [0] * 12), n_boot=50, by_category=False)
    deb = metrics["debiased"]
    assert deb["per_round"][0]["accuracy"]["value"] == pytest.approx(1.0)
    assert deb["other_space"]["space"] == "log"
    assert deb["other_space"]["per_round"][0]["accuracy"]["value"] == pytest.approx(0.0)
    text = format_metrics(metrics)
    assert "debiased[prob] accuracy" in text
    assert "debiasing rule matters" in text and "round 0 accuracy: prob 1.000" in text
    assert "vs log 0.000" in text


def test_rule_differences_by_hand():
    from interp.metrics.rounds import rule_differences

    def entry(acc, ci):
        none = {"value": None, "ci": None}
        return {"round": 0, "accuracy": {"value": acc, "ci": ci}, "bias_amb": none} | {
            "bias_dis": none
        }

    # overlapping intervals: the rule does not decide the number
    assert rule_differences([entry(0.33, [0.2, 0.45])], [entry(0.40, [0.3, 0.5])]) == []
    (d,) = rule_differences([entry(0.33, [0.3, 0.35])], [entry(0.40, [0.37, 0.43])])
    assert (d["metric"], d["value"], d["other"]) == ("accuracy", 0.33, 0.40)
    # one cluster: zero-width intervals are no intervals, the values decide
    same = [entry(0.33, [0.33, 0.33])], [entry(0.40, [0.40, 0.40])]
    assert len(rule_differences(*same, intervals=False)) == 1


def test_superficial_control_reading_compares_sizes_of_movement():
    rank_diff = pd.DataFrame(
        [{"rank": 1, "measure": "improved", "value": 0.0, "lo": 0.0, "hi": 0.0, "p": 1.0}]
    )
    # main +0.01, control -0.5 at layer 3: main - control +0.51 excludes 0, but the main arm
    # barely moves; layer 4: main -2.0, control -0.1: beyond the control
    change_diff = pd.DataFrame(
        [
            {"layer": 3, "group": "stayed_wrong", "main": 0.01, "control": -0.5, "value": 0.51}
            | {"lo": 0.4, "hi": 0.6, "p": 0.002, "n_examples": 10},
            {"layer": 4, "group": "stayed_wrong", "main": -2.0, "control": -0.1, "value": -1.9}
            | {"lo": -2.1, "hi": -1.7, "p": 0.002, "n_examples": 10},
        ]
    )
    control_change = change_diff.assign(lo=-0.01, hi=0.01, p=0.9)
    line = superficial.control_reading(rank_diff, change_diff, control_change, "sc", "bl")[-1]
    assert "in 2 of 2 layer x group cells" in line and "own direction in 1" in line
    assert "layer 3 stayed_wrong +0.51 [+0.4, +0.6] (less than the control)" in line
