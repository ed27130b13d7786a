"""SAEs that do not fit a run, through ``interp sae features`` and ``interp patch --sae``: exit
2, one ``error:`` line, nothing written and the run unchanged; refused before any model loads
(the checks read the run's manifest)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from faultkit import assert_refused_without_trace, copy_run
from sae_lens import TopKSAE, TopKSAEConfig
from sae_lens.saes.sae import SAEMetadata

pytestmark = pytest.mark.faults


def _sae(folder: Path, d_in: int = 64, hook: str = "blocks.1.hook_resid_post") -> str:
    torch.manual_seed(0)
    cfg = TopKSAEConfig(d_in=d_in, d_sae=16, k=4, metadata=SAEMetadata(hook_name=hook))
    TopKSAE(cfg).save_model(folder)
    return str(folder)


@pytest.fixture
def space(tmp_path, base_run) -> Path:
    """A private copy of the session's tiny run (its hooks: blocks.0..2.hook_resid_post)."""
    copy_run(base_run, tmp_path / "runs" / "run")
    return tmp_path


CASES = {
    "wrong d_in": (dict(d_in=65), "d_in 65"),
    "hook not stored": (dict(hook="blocks.1.hook_mlp_out"), "did not store; stored: blocks.0"),
    "layer beyond the model": (dict(hook="blocks.7.hook_resid_post"), "has 3 layers"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_features_refuse_an_sae_that_does_not_fit(space, case):
    kwargs, message = CASES[case]
    sae = _sae(space / "sae", **kwargs)
    run = str(space / "runs" / "run")
    assert_refused_without_trace(
        space, "sae", "features", "--run", run, "--sae", sae, contains=message
    )


def test_features_refuse_a_folder_that_is_no_sae(space):
    (space / "empty").mkdir()
    run = str(space / "runs" / "run")
    args = ("sae", "features", "--run", run, "--sae", str(space / "empty"))
    assert_refused_without_trace(space, *args, contains="not an sae-lens SAE folder")


@pytest.mark.parametrize(
    ("kwargs", "features", "message"),
    [
        (dict(d_in=65), "1,2", "d_in 65"),
        (dict(hook="blocks.7.hook_resid_post"), "1", "has 3 layers"),
        (dict(hook="hook_embed"), "1", "block's"),
        ({}, "99", "latent 99 is out of range"),
        ({}, "1,x", "--features"),
        (dict(hook="blocks.1.hook_mlp_out"), "top:2", "did not store"),
        # issue 22 item 10: patched 0 latents, or all 16 under the name top99999
        ({}, "", "names no latent"),
        ({}, " ", "names no latent"),
        ({}, "top:17", "the SAE has 16 latents"),
        ({}, "top:99999", "the SAE has 16 latents"),
    ],
)
def test_patch_refuses_a_bad_feature_request(space, kwargs, features, message):
    sae = _sae(space / "sae", **kwargs)
    run = str(space / "runs" / "run")
    args = ("patch", "--run", run, "--round", "1", "--sae", sae, "--features", features)
    assert_refused_without_trace(space, *args, contains=message)


def test_patch_with_sae_needs_features(space):
    sae = _sae(space / "sae")
    run = str(space / "runs" / "run")
    args = ("patch", "--run", run, "--round", "1", "--sae", sae)
    assert_refused_without_trace(space, *args, contains="--features")
