"""Intervals from few clusters (issue 23, item 7), on synthetic tables: the cluster count
beside every interval, no interval below ``CLUSTER_FLOOR``, a warning below ``FEW_CLUSTERS``,
and ``--limit``/``--sample`` keeping whole base examples (every option order) on permuted runs.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from interp.cli.format import format_patching
from interp.patching.analysis import (
    PatchConfig,
    control_difference,
    json_records,
    select_items,
    summarize,
)
from interp.stats import (
    CLUSTER_FLOOR,
    FEW_CLUSTERS,
    bootstrap_means,
    cluster_caveat,
    paired_difference,
)


def _per_example(n: int, shift: float = 0.0) -> pd.DataFrame:
    rng = np.random.default_rng(1)
    rows = []
    for i in range(n):
        clean = rng.normal()
        rows.append(
            {
                "example_index": i,
                "example_id": f"e{i}",
                "method": "exact",
                "layer": 0,
                "component": "resid_post",
                "head": -1,
                "clean": clean,
                "source": clean + 1.0 + shift,
                "patched": clean + 0.5 + rng.normal(scale=0.3),
                "effect": np.nan,
            }
        )
    return pd.DataFrame(rows)


def _summary(table: pd.DataFrame, n_clusters: int) -> dict:
    return {
        "name": "r1-t0-resid_post-denoise-L0",
        "examples": {"used": 16, "excluded_no_target": 0, "excluded_target_is_label": 0},
        "config": {"round": 1, "target_round": 0, "direction": "denoise", "method": "exact"},
        "table": json_records(table),
        "cluster": {"key": "template", "n_clusters": n_clusters, "n_examples": 16},
    }


def test_patching_three_clusters_give_no_interval_and_say_so():
    per_example = _per_example(16)
    clusters = np.repeat([0, 1, 2], [6, 5, 5])  # 16 examples from 3 templates
    table = summarize(per_example, n_boot=200, clusters=clusters)
    assert table["n_clusters"].iloc[0] == 3
    # today: an interval from the 10 distinct resamples of 3 clusters
    assert np.isnan(table["effect_lo"].iloc[0]) and np.isnan(table["delta_hi"].iloc[0])
    text = format_patching(_summary(table, 3))
    assert "n/a (3 clusters)" in text
    assert f"below the floor of {CLUSTER_FLOOR} clusters" in text


def test_patching_few_but_enough_clusters_warn_beside_the_interval():
    per_example = _per_example(16)
    clusters = np.repeat(np.arange(8), 2)  # 8 clusters: intervals, with a warning
    table = summarize(per_example, n_boot=200, clusters=clusters)
    assert table["n_clusters"].iloc[0] == 8 and np.isfinite(table["effect_lo"].iloc[0])
    text = format_patching(_summary(table, 8))
    assert "n/a" not in text and "WARNING: only 8 clusters" in text
    many = summarize(per_example, n_boot=200)  # 16 clusters of one example: no warning
    assert "WARNING" not in format_patching(_summary(many, 16))


def test_patching_control_difference_applies_the_floor():
    run, control = _per_example(12), _per_example(12, shift=0.5)
    clusters = np.repeat([0, 1], 6)
    diff = control_difference(run, control, n_boot=100, clusters=clusters)
    assert diff["n_clusters"].iloc[0] == 2 and np.isnan(diff["delta_diff_lo"].iloc[0])


def test_bootstrap_functions_take_a_floor():
    values = np.arange(12.0)[:, None]
    ids = np.repeat([0, 1, 2], 4)
    assert np.isfinite(bootstrap_means(values, n_boot=50, clusters=ids)[1]).all()
    assert np.isnan(bootstrap_means(values, n_boot=50, clusters=ids, floor=CLUSTER_FLOOR)[1]).all()
    out = paired_difference(values, values * 0, ids, n_boot=50, floor=CLUSTER_FLOOR)
    assert np.isnan(out["lo"]).all()


def test_cluster_caveat_levels():
    assert cluster_caveat(CLUSTER_FLOOR - 1).startswith(f"n/a ({CLUSTER_FLOOR - 1} clusters)")
    assert cluster_caveat(FEW_CLUSTERS - 1).startswith(f"only {FEW_CLUSTERS - 1} clusters")
    assert cluster_caveat(FEW_CLUSTERS) is None


def _permuted_rounds(n_base: int, n_orders: int = 3) -> pd.DataFrame:
    rows = []
    index = 0
    for b in range(n_base):
        for o in range(n_orders):
            for r in (0, 1):
                rows.append(
                    {
                        "example_index": index,
                        "example_id": f"bbq/{b}#o{o}",
                        "base_index": b,
                        "round": r,
                        "category": "Age",
                        "question_index": str(b % 3),
                        "context_condition": "ambig",
                        "label": (2 + o) % 3,
                        "target": (0 + o) % 3,
                        "option_token_ids": [10, 11, 12],
                        "readout_pos": 20 + 5 * r,
                    }
                )
            index += 1
    return pd.DataFrame(rows)


def test_limit_counts_base_examples_on_a_permuted_run():
    rounds = _permuted_rounds(6)
    items, counts = select_items(rounds, PatchConfig(layer=0, round=1, limit=2))
    # today: the first 2 rows, i.e. 2 of base example 0's 3 orders
    assert [i.index for i in items] == [0, 1, 2, 3, 4, 5]
    assert counts["used"] == 6 and counts["base_examples"] == 2
    items, counts = select_items(rounds, PatchConfig(layer=0, round=1, limit=16))
    assert counts["used"] == 18 and counts["base_examples"] == 6  # never part of an example


def test_sample_draws_whole_base_examples_on_a_permuted_run():
    rounds = _permuted_rounds(8)
    items, counts = select_items(rounds, PatchConfig(layer=0, round=1, sample=3, seed=4))
    bases = [i.index // 3 for i in items]
    assert len(items) == 9 and counts["base_examples"] == 3
    assert all(bases.count(b) == 3 for b in set(bases))
    with pytest.raises(Exception, match="9 exceeds the 8 base examples"):
        select_items(rounds, PatchConfig(layer=0, round=1, sample=9))


def test_limit_on_an_unpermuted_run_is_unchanged():
    rounds = _permuted_rounds(6).drop(columns="base_index")
    items, counts = select_items(rounds, PatchConfig(layer=0, round=1, limit=4))
    assert [i.index for i in items] == [0, 1, 2, 3] and "base_examples" not in counts


def _metrics_rounds(n_templates: int) -> pd.DataFrame:
    from unit.metrics.test_rounds import make_rounds

    labels = [i % 3 for i in range(10)]
    rounds = make_rounds([[0] * 10, [1] * 10], labels)
    rounds["question_index"] = (rounds["example_index"] % n_templates).astype(str)
    return rounds


def test_metrics_give_no_interval_below_the_floor_and_say_why():
    from interp.metrics.rounds import compute_metrics
    from interp.report.tables import format_metrics

    few = compute_metrics(_metrics_rounds(2), n_boot=200)
    # A 2-cluster bootstrap used to print intervals (one cluster: zero-width ones).
    assert few["bootstrap"]["cluster"]["n_clusters"] == 2
    assert few["bootstrap"]["intervals"] is False
    assert all(e["accuracy"]["ci"] is None for e in few["per_round"])
    assert "n/a (2 clusters)" in format_metrics(few)
    many = compute_metrics(_metrics_rounds(10), n_boot=200)
    assert many["bootstrap"]["intervals"] is True
    assert all(e["accuracy"]["ci"] is not None for e in many["per_round"])
    assert "n/a (" not in format_metrics(many)
