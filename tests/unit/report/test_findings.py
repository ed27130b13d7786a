"""The findings box's patching rows (interp.report.findings.patching_rows): one strongest site
per analysis family, labelled by it and its round pair, the control's value beside the run's
or why there is none."""

from __future__ import annotations

import pandas as pd

from interp.report.findings import patching_rows


def _table(delta_gap: tuple[float, float] = (0.2, 0.6)) -> pd.DataFrame:
    rows = []
    for component, head, layer, effect in [
        ("resid_post", -1, 0, 0.2),
        ("resid_post", -1, 1, -0.9),
        ("attn_out", -1, 0, 0.5),
        ("attn_out", -1, 1, 0.1),
        ("mlp_out", -1, 1, 0.3),
        ("heads", 2, 1, 0.7),
        ("heads", 0, 0, -0.1),
    ]:
        rows.append(
            {
                "method": "exact",
                "layer": layer,
                "component": component,
                "head": head,
                "effect": effect,
                "effect_lo": effect - 0.1,
                "effect_hi": effect + 0.1,
                "delta": effect / 10,
                "delta_lo": None,
                "delta_hi": None,
                "gap_lo": delta_gap[0],
                "gap_hi": delta_gap[1],
            }
        )
    return pd.DataFrame(rows)


def _summary(control: bool) -> dict:
    summary = {
        "config": {
            "method": "exact",
            "round": 2,
            "target_round": 0,
            "direction": "denoise",
            "n_boot": 100,
        },
        "cluster": {"n_clusters": 8},
    }
    if control:
        summary["control"] = {
            "run": "/runs/base",
            "plan": "baseline",
            "table": [
                {
                    "method": "exact",
                    "layer": 1,
                    "component": "resid_post",
                    "head": -1,
                    "effect_run": -0.9,
                    "effect_control": -0.4,
                    "effect_diff": -0.5,
                    "effect_diff_lo": -0.8,
                    "effect_diff_hi": -0.2,
                },
                {
                    "method": "exact",
                    "layer": 0,
                    "component": "attn_out",
                    "head": -1,
                    "effect_run": 0.5,
                    "effect_control": 0.45,
                    "effect_diff": 0.05,
                    "effect_diff_lo": -0.1,
                    "effect_diff_hi": 0.2,
                },
            ],
        }
    return summary


def test_one_row_per_site_family_labelled_with_the_control_beside_it():
    rows = patching_rows({"r2-t0-all-denoise": (_summary(control=True), _table())})
    titles = [r.title for r in rows]
    assert [t.split(">", 1)[1].split(" site")[0] for t in titles] == [
        "patching: strongest resid",
        "patching: strongest attn",
        "patching: strongest mlp",
        "patching: strongest heads",
    ]
    assert all("(exact, round 2 → 0)" in t and "analysis r2-t0-all-denoise" in t for t in titles)
    resid, attn, mlp, heads = (r.span_html for r in rows)
    assert resid.startswith("run L1: effect -0.900 <small>[-1.00, -0.800]</small>")
    assert "control -0.400; run − control -0.500 <small>[-0.800, -0.200]</small>" in resid
    assert "control 0.450; run − control +0.0500" in attn
    assert rows[1].caveats == ["run − control at this site: the paired interval covers 0"]
    assert heads.startswith("run L1.h2: effect 0.700")
    assert "control n/a (the control's patching has no row for this site)" in mlp


def test_without_a_control_run_the_cell_says_why():
    rows = patching_rows({"r2-t0-all-denoise": (_summary(control=False), _table())})
    assert len(rows) == 4
    for row in rows:
        assert "control n/a (patched without --control-run" in row.span_html


def test_rounds_that_do_not_differ_show_the_logit_change():
    rows = patching_rows({"x": (_summary(control=False), _table(delta_gap=(-0.2, 0.3)))})
    resid = rows[0]
    assert resid.span_html.startswith("run L1: logit change (delta) -0.0900")
    assert any("the logit change is shown" in c for c in resid.caveats)
