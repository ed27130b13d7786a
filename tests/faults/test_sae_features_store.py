"""Issue 22 items 9 and 13 for ``interp sae features``: an option that weakens the stored
result (fewer shuffles or resamples, no --contexts tables) prints it without replacing it, as
``metrics --n-boot`` does; and the run's lock is taken at the start, so a second writer is
refused before it computes anything."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from faultkit import assert_refused_without_trace, copy_run, invoke, tree_digest
from sae_lens import TopKSAE, TopKSAEConfig
from sae_lens.saes.sae import SAEMetadata

from interp.runs.lock import run_lock

pytestmark = pytest.mark.faults


@pytest.fixture
def space(tmp_path, base_run) -> Path:
    copy_run(base_run, tmp_path / "run")
    torch.manual_seed(0)
    cfg = TopKSAEConfig(
        d_in=64, d_sae=16, k=4, metadata=SAEMetadata(hook_name="blocks.1.hook_resid_post")
    )
    TopKSAE(cfg).save_model(tmp_path / "sae")
    return tmp_path


def _features(space: Path, *args: str):
    run, sae = str(space / "run"), str(space / "sae")
    return invoke("sae", "features", "--run", run, "--sae", sae, *args)


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        (("--n-shuffles", "0", "--n-boot", "20"), "--n-shuffles 0 is fewer"),
        (("--n-shuffles", "5", "--n-boot", "20"), "--n-shuffles 5 is fewer"),
        (("--n-shuffles", "10", "--n-boot", "0"), "--n-boot 0 is fewer"),
    ],
)
def test_a_weaker_rerun_is_printed_not_stored(space, args, reason):
    first = _features(space, "--n-shuffles", "10", "--n-boot", "20")
    assert first.exit_code == 0, first.output
    stored = tree_digest(space / "run")
    result = _features(space, *args)
    assert result.exit_code == 0, result.output
    assert f"note: not stored: {reason}" in result.stdout
    assert "wrote" not in result.stdout
    assert tree_digest(space / "run") == stored  # the p-values and intervals are kept


def test_an_equal_or_stronger_rerun_replaces_it(space):
    assert _features(space, "--n-shuffles", "10", "--n-boot", "20").exit_code == 0
    stored = tree_digest(space / "run")
    result = _features(space, "--n-shuffles", "12", "--n-boot", "20")
    assert result.exit_code == 0, result.output
    assert "wrote" in result.stdout and "not stored" not in result.stdout
    assert tree_digest(space / "run") != stored


def test_a_second_writer_is_refused_before_it_computes(space, monkeypatch):
    import interp.sae.latent_changes as features

    def computed(*args, **kwargs):
        raise AssertionError("sae features computed while another writer held the run")

    monkeypatch.setattr(features, "open_sae", computed)
    run = space / "run"
    with run_lock(run):
        args = ("sae", "features", "--run", str(run), "--sae", str(space / "sae"))
        assert_refused_without_trace(run, *args, contains="in use")


def test_a_rerun_without_contexts_keeps_the_stored_contexts(space):
    from interp.runs.store import Run
    from interp.sae.latent_changes import FeaturesConfig, weaker_than_stored

    assert _features(space, "--n-shuffles", "10", "--n-boot", "20").exit_code == 0
    run = Run.open(space / "run")
    stored = run.read_analysis("sae", "sae")
    # as if that run had been given --contexts (which needs a model forward)
    summary = stored.summary | {"config": stored.summary["config"] | {"contexts": "held.txt"}}
    run.write_analysis("sae", "sae", stored.tables, summary)
    config = FeaturesConfig(sae=str(space / "sae"), n_shuffles=10, n_boot=20)
    assert "has --contexts tables" in weaker_than_stored(run, "sae", config)
    before = tree_digest(space / "run")
    result = _features(space, "--n-shuffles", "10", "--n-boot", "20")
    assert "note: not stored: the stored result has --contexts tables" in result.stdout
    assert tree_digest(space / "run") == before
