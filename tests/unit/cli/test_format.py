"""The CLI's patch table: ranked by |effect|, and by |delta| with one warning line where the
source - target gap's interval covers 0 (the report's rule, patching_value)."""

from __future__ import annotations

import pytest

from interp.cli.format import format_patching

# (layer, effect, delta): the |effect| order (1, 2, 3, 0) is not the |delta| order (0, 3, 2, 1)
ROWS = [(0, 0.1, 5.0), (1, 3.0, 0.2), (2, -2.0, -1.0), (3, 0.5, 3.0)]


def _summary(gap: tuple[float, float]) -> dict:
    table = [
        {
            "method": "exact",
            "layer": layer,
            "component": "resid_post",
            "head": -1,
            "clean": 0.058,
            "source": 0.059,
            "patched": 0.058 + delta,
            "effect": effect,
            "effect_lo": effect - 1,
            "effect_hi": effect + 1,
            "delta": delta,
            "delta_lo": delta - 1,
            "delta_hi": delta + 1,
            "effect_mean": effect,
            "gap": 0.001,
            "gap_lo": gap[0],
            "gap_hi": gap[1],
        }
        for layer, effect, delta in ROWS
    ]
    return {
        "name": "p",
        "config": {"round": 0, "target_round": 1, "direction": "denoise", "method": "exact"},
        "examples": {"used": 8, "excluded_no_target": 0, "excluded_target_is_label": 0},
        "table": table,
    }


def _layers(text: str) -> list[int]:
    return [int(line.split()[1]) for line in text.splitlines() if line.startswith("exact ")]


@pytest.mark.parametrize("top", [3, 15])
def test_gap_covering_zero_warns_and_sorts_by_delta(top):
    text = format_patching(_summary((-0.2, 0.3)), top)
    warnings = [line for line in text.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "unstable" in warnings[0] and "delta" in warnings[0]
    assert _layers(text) == [0, 3, 2, 1][:top]
    header = text.splitlines().index(warnings[0]) + 1
    assert text.splitlines()[header].split()[:2] == ["method", "layer"]


def test_reliable_gap_ranks_by_effect_without_warning():
    text = format_patching(_summary((0.01, 0.3)), 3)
    assert "warning" not in text
    assert _layers(text) == [1, 2, 3]
    # every row fits: the table's own order, no warning
    assert _layers(format_patching(_summary((0.01, 0.3)), 15)) == [0, 1, 2, 3]


def test_no_interval_ranks_by_effect():
    """Below the cluster floor the gap has no interval (None): no warning."""
    text = format_patching(_summary((None, None)), 3)
    assert "warning" not in text and _layers(text) == [1, 2, 3]
