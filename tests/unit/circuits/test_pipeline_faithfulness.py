"""The faithfulness reading of a circuit (issue 23, item 8) on synthetic curves: overshoot is as
unfaithful as undershoot, the headline N is the one from which the curve stays in the band,
the curve's non-monotonicity is stated, and no headline is given when the gap covers 0."""

from __future__ import annotations

from interp.circuits.pipeline import FAITHFUL_BAND, faithfulness_grid, faithfulness_reading
from interp.cli.circuit import format_circuit

# The curve: one edge overshoots to 4.36 on a 0.16-logit gap.
GRID = [0, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000]
CURVE = [0.0, 4.36, 1.09, 1.46, 5.63, 2.1, 0.68, 1.29, 1.15, 0.95, 1.0]


def test_overshoot_does_not_count_as_faithful():
    reading = faithfulness_reading(GRID, CURVE, 0.16, [0.05, 0.27])
    assert FAITHFUL_BAND == 0.2 and reading["faithful_band"] == [0.8, 1.2]
    # today: N = 1 "reaches 0.8" (f = 4.36); in the band for good only from N = 200
    assert reading["faithful_n"] == 200
    assert reading["faithful_n_first"] == 2  # 1.09, then out again
    assert reading["faithful_monotone"] is False
    assert reading["faithful_max"] == {"n_edges": 10, "value": 5.63}
    assert reading["faithful_refused"] is None


def test_a_gap_whose_interval_covers_zero_gets_no_headline():
    reading = faithfulness_reading(GRID, CURVE, 0.16, [-0.02, 0.31])
    assert reading["faithful_n"] is None and "covering 0" in reading["faithful_refused"]
    assert faithfulness_reading(GRID, CURVE, 0.16, None)["faithful_n"] is None


def test_a_monotone_curve_within_the_band():
    grid = faithfulness_grid(30)
    curve = [0.0, 0.5, 0.7, 0.85, 0.9, 0.95, 1.0][: len(grid)]
    reading = faithfulness_reading(grid, curve, 1.2, [0.9, 1.5])
    assert grid == [0, 1, 2, 5, 10, 20, 30]
    assert reading["faithful_n"] == 5 and reading["faithful_monotone"] is True


def _summary(reading: dict, n_clusters: int) -> dict:
    return {
        "name": "r3-t0-eap",
        "config": {"round": 3, "target_round": 0},
        "n_examples": 4,
        "n_edges": 1000,
        "target_value": 0.1,
        "source_value": 0.26,
        "n_significant": None,
        "cluster": {"n_clusters": n_clusters},
        "verify": {"k": 50, "spearman": 0.4, "ci": None},
        "top_edges": [
            {
                "rank": 1,
                "sender": "a0.h1",
                "receiver": "logits",
                "score": 0.1,
                "ci_lo": None,
                "ci_hi": None,
            }
        ],
        **reading,
    }


def test_circuit_text_with_two_clusters():
    reading = faithfulness_reading(GRID, CURVE, 0.16, None)
    text = format_circuit(_summary(reading, 2), top=50)
    # today: "35,541 of 70,651 edges significant" and "N=1 edges reach 0.8"
    assert "edges with an interval excluding 0: n/a (2 clusters)" in text
    assert "no headline N" in text and "reach" not in text
    assert "not monotone" in text and "largest f = 5.63 at N=10" in text
    assert "0.400 n/a (2 clusters)" in text
    assert "WARNING: n/a (2 clusters)" in text


def test_circuit_text_with_a_headline():
    reading = faithfulness_reading(GRID, CURVE, 0.16, [0.05, 0.27])
    summary = {**_summary(reading, 12), "n_significant": 7}
    summary["verify"]["ci"] = [0.1, 0.6]
    text = format_circuit(summary, top=50)
    assert "from N=200 edges on, every larger N stays within [0.8, 1.2]" in text
    assert "[0.100, 0.600] (12 clusters)" in text and "WARNING" not in text
