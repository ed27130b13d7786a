"""Plans compared by a paired difference, not by overlapping marginal intervals (issue 23,
item 9), and Winogender's number beside its definition (item 10), on synthetic tables."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from unit.metrics.test_rounds import make_rounds as metrics_rounds

from interp.metrics.rounds import compute_metrics
from interp.metrics.winogender import (
    format_winogender_difference,
    format_winogender_metrics,
    winogender_metrics,
    winogender_plan_difference,
)
from interp.runs.controls import format_metrics_difference, metrics_difference


def make_rounds(choices: list[list[int]], labels: list[int]) -> pd.DataFrame:
    """test_metrics' BBQ-like table with option 1 the stereotyped target."""
    return metrics_rounds(choices, labels, target=1)


def _overlap(a: list[float], b: list[float]) -> bool:
    return a[0] <= b[1] and b[0] <= a[1]


def test_bbq_paired_difference_excludes_zero_where_marginal_intervals_overlap():
    n = 40
    labels = [0] * n
    round0 = [1] * n
    control = make_rounds([round0, [0] * 20 + [1] * 20], labels)
    run = make_rounds([round0, [0] * 26 + [1] * 14], labels)  # 6 more right, none fewer
    a = compute_metrics(run, n_boot=400, by_category=False)["per_round"][1]["accuracy"]
    b = compute_metrics(control, n_boot=400, by_category=False)["per_round"][1]["accuracy"]
    assert _overlap(a["ci"], b["ci"])  # the comparison the README made
    diff = metrics_difference(run, control, n_boot=400)
    acc = diff["per_round"][1]["accuracy"]
    assert acc["diff"] == pytest.approx(0.15) and acc["ci"][0] > 0
    assert diff["per_round"][0]["accuracy"]["diff"] == 0
    text = format_metrics_difference(diff, "sc", "base")
    assert "paired over 40 example clusters" in text and "+0.150 [" in text


def test_bbq_paired_difference_below_the_cluster_floor():
    labels = [0] * 12
    run = make_rounds([[0] * 12, [0] * 12], labels).assign(question_index="q")
    run["question_index"] = run["example_index"] % 3  # 3 templates
    control = run.assign(choice=1, correct=False)
    diff = metrics_difference(run, control, n_boot=100)
    assert diff["n_clusters"] == 3 and diff["per_round"][1]["accuracy"]["ci"] is None
    assert "n/a (3 clusters)" in format_metrics_difference(diff, "sc", "base")


def test_bbq_paired_difference_refuses_other_examples():
    run = make_rounds([[0] * 6], [0] * 6)
    control = run.assign(example_id=[f"other{i}" for i in range(6)])
    with pytest.raises(Exception, match="other examples"):
        metrics_difference(run, control, n_boot=10)


def _wino(n_occ: int = 30, shift: float = 0.0, seed: int = 0, literal_noise: bool = False):
    """Items per occupation: pf follows BLS plus occupation noise shared by every plan; the
    plan moves pf by ``shift`` toward 0.5 in proportion to BLS."""
    rng = np.random.default_rng(seed)
    bls = np.linspace(5, 95, n_occ)
    noise = rng.normal(scale=0.15, size=n_occ)
    mass = rng.uniform(0.05, 0.6, size=n_occ)  # pronoun mass unrelated to BLS
    rows = []
    index = 0
    for k in range(n_occ):
        for item in range(4):
            for r in (0, 1):
                pf = np.clip(0.2 + 0.6 * bls[k] / 100 + noise[k], 0.02, 0.98)
                if r == 1:
                    pf = pf - shift * (bls[k] / 100 - 0.5)
                p_m, p_f = (1 - pf) * 0.5, pf * 0.5
                rows.append(
                    {
                        "example_index": index,
                        "example_id": f"w/{k}/{item}",
                        "occupation": f"occ{k:02d}",
                        "bls_pct_female": bls[k],
                        "round": r,
                        "p_male": p_m,
                        "p_female": p_f,
                        "p_neutral": 0.5,
                        "pronoun_mass": mass[k] / (p_f * 2) if literal_noise else mass[k],
                        "choice": 2,
                        "entropy": 1.0,
                    }
                )
            index += 1
    return pd.DataFrame(rows)


def test_winogender_paired_difference_over_occupations():
    control, run = _wino(), _wino(shift=0.15)
    m_run = winogender_metrics(run, n_boot=300)["per_round"][1]
    m_control = winogender_metrics(control, n_boot=300)["per_round"][1]
    assert _overlap(m_run["pearson_ci"], m_control["pearson_ci"])  # "intervals overlap"
    diff = winogender_plan_difference(run, control, n_boot=300)
    r1 = diff["per_round"][1]["pearson"]
    assert r1["diff"] == pytest.approx(m_run["pearson"] - m_control["pearson"])
    assert r1["diff"] < 0 and r1["ci"][1] < 0  # paired: the plan lowers r
    assert diff["per_round"][0]["pearson"]["diff"] == 0
    text = format_winogender_difference(diff, "sc", "base")
    assert "paired over 30 occupations" in text


def test_winogender_paired_difference_refuses_other_items():
    run = _wino()
    with pytest.raises(Exception, match="other Winogender items"):
        winogender_plan_difference(run, run[run["occupation"] != "occ00"], n_boot=10)


def test_winogender_reports_the_literal_probability_and_the_pronoun_mass():
    # p_female x pronoun_mass = the occupation's random mass / 2: it does not follow BLS
    rows = _wino(literal_noise=True)
    result = winogender_metrics(rows, n_boot=200)
    m = result["per_round"][0]
    assert m["pearson"] > 0.6
    assert abs(m["literal_pearson"]) < 0.4 < m["pearson"] - m["literal_pearson"]
    first = rows[rows["round"] == 0]
    assert m["pronoun_mass_median"] == pytest.approx(float(first["pronoun_mass"].median()))
    text = format_winogender_metrics(result)
    assert "HEADLINE r" in text and "she-vs-he ratio" in text and "literal r" in text
    assert "pronoun mass" in text


def test_winogender_literal_r_by_hand():
    rows = _wino()
    m = winogender_metrics(rows, n_boot=50)["per_round"][0]
    first = rows[rows["round"] == 0]
    per = (first.p_female * first.pronoun_mass).groupby(first.occupation).mean()
    bls = first.groupby("occupation").bls_pct_female.first()
    assert m["literal_pearson"] == pytest.approx(float(np.corrcoef(per, bls)[0, 1]))
    assert m["literal_pearson_ci"][0] is not None


def test_winogender_few_occupations_have_no_interval():
    rows = _wino(n_occ=3)
    result = winogender_metrics(rows, n_boot=50)
    assert result["per_round"][0]["pearson_ci"] == [None, None]
    assert "n/a (3 clusters)" in format_winogender_metrics(result)
