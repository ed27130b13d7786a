"""The cluster bootstrap shared by metrics, probes and patching, and paired control runs.

References are plain loops over resamples written here (draw clusters, stack their rows,
take the statistic), never stored numbers.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from interp.errors import InterpError
from interp.metrics.rounds import compute_metrics
from interp.patching import control_difference, summarize
from interp.runs.controls import check_control
from interp.runs.store import SCHEMA_VERSION, Run, write_activations, write_json, write_parquet
from interp.stats import (
    bootstrap_means,
    bootstrap_weights,
    example_clusters,
    paired_difference,
)

N_CLUSTERS, PER_CLUSTER = 6, 4  # BBQ: four variants of one context


def _manual_cluster_means(values: np.ndarray, ids: np.ndarray, n_boot: int, seed: int):
    """Resample clusters with the same draws, stack the rows of the drawn clusters, average."""
    k = ids.max() + 1
    draws = np.random.default_rng(seed).integers(0, k, size=(n_boot, k))
    means = []
    for drawn in draws:
        rows = np.concatenate([np.flatnonzero(ids == c) for c in drawn])
        means.append(values[rows].mean(axis=0))
    return np.percentile(np.array(means), [2.5, 97.5], axis=0)


def _identical_within_clusters() -> tuple[np.ndarray, np.ndarray]:
    """Rows within a cluster are identical copies: only N_CLUSTERS independent values."""
    ids = np.repeat(np.arange(N_CLUSTERS), PER_CLUSTER)
    per_cluster = np.array(
        [[0.1, 1.0], [2.0, 0.5], [-1.0, 3.0], [0.7, 0.2], [3.5, -1.0], [1.2, 2.2]]
    )
    return per_cluster[ids], ids


def test_identity_clusters_are_the_plain_example_bootstrap():
    n, n_boot = 9, 50
    weights = bootstrap_weights(np.arange(n), n_boot, seed=3)
    draws = np.random.default_rng(3).integers(0, n, size=(n_boot, n))
    expected = np.stack([np.bincount(row, minlength=n) for row in draws])
    np.testing.assert_array_equal(weights, expected)


def test_cluster_interval_on_identical_rows_is_wider_and_matches_a_manual_loop():
    values, ids = _identical_within_clusters()
    mean, lo, hi = bootstrap_means(values, n_boot=400, seed=1, clusters=ids)
    _, row_lo, row_hi = bootstrap_means(values, n_boot=400, seed=1)
    manual_lo, manual_hi = _manual_cluster_means(values, ids, 400, 1)
    np.testing.assert_allclose(mean, values.mean(axis=0))
    np.testing.assert_allclose(lo, manual_lo)
    np.testing.assert_allclose(hi, manual_hi)
    assert ((hi - lo) > 1.3 * (row_hi - row_lo)).all()  # rows counted as independent: too narrow


def _rounds_table(correct: np.ndarray, ids: np.ndarray, *, question_index: bool = True):
    """A rounds table (one round) whose examples answer alike within a template."""
    n = len(correct)
    frame = pd.DataFrame(
        {
            "example_index": np.arange(n),
            "example_id": [f"t/{i}" for i in range(n)],
            "round": 0,
            "choice": np.where(correct, 0, 1),
            "correct": correct,
            "label": 0,
            "target": 1,
            "unknown": 2,
            "option_logprobs": [[-0.5, -1.5, -2.0]] * n,
            "entropy": 0.9,
            "context_condition": np.where(np.arange(n) % 2 == 0, "ambig", "disambig"),
            "question_polarity": "neg",
            "category": "Age",
        }
    )
    if question_index:
        frame["question_index"] = [str(c) for c in ids]
    return frame


def test_metrics_resample_templates_and_record_the_cluster():
    ids = np.repeat(np.arange(N_CLUSTERS), PER_CLUSTER)
    correct = np.array([1, 0, 1, 1, 0, 1], dtype=bool)[ids]
    rounds = _rounds_table(correct, ids)
    by_template = compute_metrics(rounds, n_boot=400, seed=2)
    by_example = compute_metrics(rounds, n_boot=400, seed=2, cluster="example")
    lo, hi = by_template["per_round"][0]["accuracy"]["ci"]
    row_lo, row_hi = by_example["per_round"][0]["accuracy"]["ci"]
    manual_lo, manual_hi = _manual_cluster_means(correct.astype(float)[:, None], ids, 400, 2)
    assert (lo, hi) == pytest.approx((manual_lo[0], manual_hi[0]))
    assert hi - lo > row_hi - row_lo
    cluster = by_template["bootstrap"]["cluster"]
    assert cluster["key"] == "template" and cluster["n_clusters"] == N_CLUSTERS
    assert by_example["bootstrap"]["cluster"]["key"] == "example"
    fallback = compute_metrics(_rounds_table(correct, ids, question_index=False), n_boot=10)
    assert fallback["bootstrap"]["cluster"]["key"] == "example"
    assert "question_index" in fallback["bootstrap"]["cluster"]["note"]


def test_unknown_cluster_is_a_user_error(tmp_path):
    from faultkit import assert_refused_without_trace

    ids = np.arange(4)
    with pytest.raises(InterpError, match="unknown cluster"):
        compute_metrics(_rounds_table(np.ones(4, bool), ids), cluster="context")
    run = str(_fake_run(tmp_path / "run"))
    for args in (
        ("metrics", "--run", run),
        ("probe", "--run", run),
        ("patch", "--run", run, "--layers", "0", "--round", "1"),
    ):
        assert_refused_without_trace(tmp_path, *args, "--cluster", "context", contains="cluster")


def _per_example(values: np.ndarray, clean: np.ndarray) -> pd.DataFrame:
    """Patching rows of one variant: patched = clean + values."""
    n = len(values)
    return pd.DataFrame(
        {
            "example_index": np.arange(n),
            "example_id": [f"t/{i}" for i in range(n)],
            "method": "exact",
            "layer": 0,
            "component": "resid_post",
            "head": -1,
            "clean": clean,
            "source": clean + 2.0,
            "patched": clean + values,
            "effect": values / 2.0,
        }
    )


def test_patching_summary_resamples_clusters():
    values, ids = _identical_within_clusters()
    table = summarize(
        _per_example(values[:, 0], np.zeros(len(ids))), n_boot=300, seed=5, clusters=ids
    )
    manual_lo, manual_hi = _manual_cluster_means(values[:, :1], ids, 300, 5)
    assert table.loc[0, "delta_lo"] == pytest.approx(manual_lo[0])
    assert table.loc[0, "delta_hi"] == pytest.approx(manual_hi[0])
    plain = summarize(_per_example(values[:, 0], np.zeros(len(ids))), n_boot=300, seed=5)
    assert (
        table.loc[0, "delta_hi"] - table.loc[0, "delta_lo"]
        > plain.loc[0, "delta_hi"] - plain.loc[0, "delta_lo"]
    )


def test_paired_difference_is_the_per_example_difference():
    rng = np.random.default_rng(0)
    shared = rng.standard_normal((24, 1)) * 5  # what both runs share (example difficulty)
    run = shared + rng.standard_normal((24, 3)) * 0.1 + np.array([0.0, 1.0, 2.0])
    control = shared + rng.standard_normal((24, 3)) * 0.1
    ids = np.repeat(np.arange(8), 3)
    out = paired_difference(run, control, ids, n_boot=300, seed=2)
    np.testing.assert_allclose(out["diff"], run.mean(0) - control.mean(0))
    manual_lo, manual_hi = _manual_cluster_means(run - control, ids, 300, 2)
    np.testing.assert_allclose(out["lo"], manual_lo)
    np.testing.assert_allclose(out["hi"], manual_hi)
    # Paired, the shared part cancels: far narrower than the spread of either mean.
    assert (out["hi"] - out["lo"]).max() < 0.5
    assert out["lo"][2] > 1.5


def test_patching_control_difference_per_variant():
    rng = np.random.default_rng(1)
    ids = np.repeat(np.arange(6), 2)
    clean = rng.standard_normal(12)
    run = _per_example(rng.standard_normal(12) + 1.0, clean)
    control = _per_example(rng.standard_normal(12), clean)
    table = control_difference(run, control, n_boot=200, seed=3, clusters=ids)
    delta_run = (run["patched"] - run["clean"]).to_numpy()
    delta_control = (control["patched"] - control["clean"]).to_numpy()
    assert table.loc[0, "delta_diff"] == pytest.approx(delta_run.mean() - delta_control.mean())
    assert table.loc[0, "effect_run"] == pytest.approx(delta_run.mean() / 2.0)
    lo, hi = _manual_cluster_means((delta_run - delta_control)[:, None], ids, 200, 3)
    assert (table.loc[0, "delta_diff_lo"], table.loc[0, "delta_diff_hi"]) == pytest.approx(
        (lo[0], hi[0])
    )
    with pytest.raises(InterpError, match="other variants or examples"):
        control_difference(run, control.iloc[1:], n_boot=0)


# --- control runs -----------------------------------------------------------------------------


N_LAYERS, D_MODEL = 3, 64  # the tiny model


def _fake_run(
    path: Path,
    *,
    plan: str = "self-correct",
    n_examples: int = 8,
    rounds: int = 2,
    seed: int = 0,
    ids: list[str] | None = None,
    data_hash: str = "d0",
    weights: str = "tiny-seed-0",
) -> Path:
    rng = np.random.default_rng(seed)
    hooks = [f"blocks.{layer}.hook_resid_post" for layer in range(N_LAYERS)]
    for hook in hooks:
        acts = torch.from_numpy(rng.standard_normal((n_examples, rounds + 1, D_MODEL)))
        write_activations(path / "activations" / f"{hook}.safetensors", acts)
    ids = ids or [f"builtin/{i}" for i in range(n_examples)]
    n_rows = n_examples * (rounds + 1)
    frame = pd.DataFrame(
        {
            "example_index": np.repeat(np.arange(n_examples), rounds + 1),
            "example_id": np.repeat(ids, rounds + 1),
            "round": np.tile(np.arange(rounds + 1), n_examples),
            "choice": rng.integers(0, 3, n_rows),
            "correct": False,
            "label": 0,
            "target": 1,
            "unknown": 2,
            "entropy": rng.uniform(0.2, 1.1, n_rows),
            "option_token_ids": [[5, 6, 7]] * n_rows,
            "readout_pos": np.tile(np.arange(rounds + 1) * 10 + 9, n_examples),
            "category": "Age",
            "question_index": np.repeat([str(i // 2) for i in range(n_examples)], rounds + 1),
        }
    )
    write_parquet(path / "rounds.parquet", frame)
    manifest = {
        "schema_version": SCHEMA_VERSION,
        "complete": True,
        "rounds": rounds,
        "hooks": hooks,
        "mode": "choice",
        "model": {
            "model_id": "tiny",
            "n_layers": N_LAYERS,
            "d_model": D_MODEL,
            "weights_hash": weights,
        },
        "task": {"name": "builtin", "data_hash": data_hash},
        "plan": {"name": plan, "question": "q", "first": None, "followups": [plan]},
    }
    write_json(path / "manifest.json", manifest)
    return path


@pytest.fixture(scope="module")
def tiny_model():
    from interp.model.loading import load_model

    return load_model("tiny")


@pytest.fixture(scope="module")
def concept_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("concept") / "tinyconcept.jsonl"
    rows = []
    for i in range(8):
        pair = f"tiny/{i:03d}"
        for label, text in (
            (1, f"The old man was struggling {i}."),
            (0, f"The old man was fine {i}."),
        ):
            rows.append({"id": f"{pair}/{label}", "pair": pair, "label": label, "text": text})
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def test_probe_control_difference_equals_the_manual_difference(tmp_path, tiny_model, concept_file):
    from probes.api import probe
    from probes.config import ProbeConfig

    run = _fake_run(tmp_path / "run", seed=0)
    control = _fake_run(tmp_path / "control", plan="baseline", seed=1)
    result = probe(
        run, ProbeConfig(concept=concept_file, n_boot=200, control_run=control), model=tiny_model
    )
    table = result.control
    assert table is not None and len(table) == N_LAYERS * 3
    ids = example_clusters(Run.open(run).rounds()).ids
    for i, layer in enumerate(range(N_LAYERS)):
        hook = f"blocks.{layer}.hook_resid_post"
        d = result.directions[i].double()
        unit = d / d.norm()
        run_scores = (Run.open(run).activations(hook).double() @ unit).numpy()
        ctrl_scores = (Run.open(control).activations(hook).double() @ unit).numpy()
        rows = table[table["layer"] == layer].sort_values("round")
        np.testing.assert_allclose(
            rows["diff"], run_scores.mean(0) - ctrl_scores.mean(0), rtol=1e-5, atol=1e-6
        )
        lo, hi = _manual_cluster_means(run_scores - ctrl_scores, ids, 200, 0)
        np.testing.assert_allclose(rows["lo"], lo, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(rows["hi"], hi, rtol=1e-5, atol=1e-6)
        change = (run_scores - run_scores[:, :1]) - (ctrl_scores - ctrl_scores[:, :1])
        np.testing.assert_allclose(rows["change_diff"], change.mean(0), rtol=1e-5, atol=1e-6)
    summary = result.summary
    assert summary["control"]["plan"] == "baseline"
    assert [r["round"] for r in summary["control"]["by_round"]] == [0, 1, 2]
    assert summary["cluster"]["key"] == "template" and summary["cluster"]["n_clusters"] == 4
    assert (Path(run) / "probes" / result.concept / "control.parquet").is_file()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"ids": [f"builtin/{i}" for i in range(1, 9)]}, "other examples"),
        ({"n_examples": 6}, "other examples"),
        ({"rounds": 3}, "rounds 0..3"),
        ({"data_hash": "other"}, "other task data"),
        ({"weights": "tiny-seed-1"}, "another model"),
        ({"plan": "self-correct"}, "same plan"),
    ],
)
def test_mismatched_control_is_refused(tmp_path, change, message):
    run = Run.open(_fake_run(tmp_path / "run"))
    control = Run.open(_fake_run(tmp_path / "control", **{"plan": "baseline", **change}))
    with pytest.raises(InterpError, match=message):
        check_control(run, control)
    with pytest.raises(InterpError, match="the run itself"):
        check_control(run, run)


@pytest.mark.parametrize("command", ["probe", "patch"])
def test_mismatched_control_run_cli_exit_2_one_line(tmp_path, command):
    from faultkit import assert_refused_without_trace

    run = _fake_run(tmp_path / "run")
    control = _fake_run(tmp_path / "control", plan="baseline", rounds=3)
    extra = ["--layers", "0", "--round", "1"] if command == "patch" else []
    line = assert_refused_without_trace(
        tmp_path, command, "--run", str(run), "--control-run", str(control), *extra
    )
    assert "control run" in line and "rounds" in line


def test_patch_with_a_control_replay(tmp_path, tiny_model):
    """Two tiny replays of the same built-in items (self-correct, baseline): patching with
    --control-run reports run - control per variant; the control's own result is written into
    it; templates (category + question_index) are the clusters."""
    from interp.patching import PatchConfig, patch
    from interp.replay.loop import ReplayConfig, replay

    runs = {}
    for plan in ("self-correct", "baseline"):
        config = ReplayConfig(
            model="tiny", task="builtin", plan=plan, rounds=1, limit=10, out=str(tmp_path / plan)
        )
        runs[plan] = replay(config, model=tiny_model).path
    # 5 templates: the smallest count that still gets intervals (interp.stats.CLUSTER_FLOOR)
    assert example_clusters(Run.open(runs["baseline"]).rounds()).n_clusters == 5
    kwargs = {"layer": 2, "round": 1, "component": "resid_pre,mlp_out"}
    paired = PatchConfig(n_boot=100, control_run=runs["baseline"], **kwargs)
    result = patch(runs["self-correct"], paired, model=tiny_model)
    alone = patch(runs["baseline"], PatchConfig(n_boot=0, **kwargs), model=tiny_model, write=False)
    run_delta = result.summary_table.set_index("component")["delta"]
    control_delta = alone.summary_table.set_index("component")["delta"]
    table = result.control_table.set_index("component")
    np.testing.assert_allclose(table["delta_diff"], (run_delta - control_delta)[table.index])
    assert (table["delta_diff_lo"] <= table["delta_diff"]).all()
    summary = json.loads(result.paths[1].read_text())
    assert summary["control"]["plan"] == "baseline" and len(summary["control"]["table"]) == 2
    assert summary["cluster"]["key"] == "template"
    assert (Path(runs["baseline"]) / "patching" / f"{result.name}.json").is_file()


def test_export_puts_the_run_beside_its_control(tmp_path, tiny_model, concept_file):
    from interp.patching import PatchConfig, patch
    from interp.replay.loop import ReplayConfig, replay
    from interp.report.export import export
    from probes.api import probe
    from probes.config import ProbeConfig

    runs = {}
    for plan in ("self-correct", "baseline"):
        config = ReplayConfig(
            model="tiny", task="builtin", plan=plan, rounds=1, limit=4, out=str(tmp_path / plan)
        )
        runs[plan] = replay(config, model=tiny_model).path
    main, control = runs["self-correct"], runs["baseline"]
    paired = probe(
        main, ProbeConfig(concept=concept_file, n_boot=1000, control_run=control), model=tiny_model
    )
    patch(main, PatchConfig(layer="all", round=1, n_boot=50, control_run=control), model=tiny_model)
    result = export([main, control], model=tiny_model)
    names = {p.name for p in result.figures}
    assert "probe-user-tinyconcept-control.html" in names
    assert "patching-r1-t0-resid-post-denoise-control.html" in names
    page = result.index.read_text()
    assert "Run beside its control" in page and "run − control" in page
    # Probed separately with the same settings, the exported control gives the same table.
    alone = probe(main, ProbeConfig(concept=concept_file, n_boot=1000), model=tiny_model)
    assert alone.control is None
    assert not (Path(main) / "probes" / alone.concept / "control.parquet").exists()
    probe(control, ProbeConfig(concept=concept_file, n_boot=10), model=tiny_model)
    from interp.report.run_page import _exported_control

    found = _exported_control(Run.open(main), [Run.open(control)], alone.concept, alone.summary)
    pd.testing.assert_frame_equal(found["control"], paired.control)
    again = export([main, control], model=tiny_model)
    assert "probe-user-tinyconcept-control.html" in {p.name for p in again.figures}
    other_settings = probe(
        control, ProbeConfig(concept=concept_file, method="mean-diff"), model=tiny_model
    )
    assert other_settings.summary["method"] != alone.summary["method"]
    assert (
        _exported_control(Run.open(main), [Run.open(control)], alone.concept, alone.summary) == {}
    )
