"""`interp.sae.load`: any sae-lens folder opens, and one that does not fit the model is refused."""

from __future__ import annotations

import pytest
import torch
from sae_lens import TopKSAE, TopKSAEConfig
from sae_lens.saes.sae import SAEMetadata

from interp.errors import InterpError
from interp.sae.load import load_sae, sae_name


def _save(tmp_path, name: str, d_in: int, hook: str) -> str:
    cfg = TopKSAEConfig(d_in=d_in, d_sae=16, k=4, metadata=SAEMetadata(hook_name=hook))
    torch.manual_seed(0)
    sae = TopKSAE(cfg)
    torch.nn.init.normal_(sae.W_enc)
    folder = tmp_path / name
    sae.save_model(folder)
    return str(folder)


def test_saved_sae_loads_with_identical_outputs(tmp_path, tiny_model):
    path = _save(tmp_path, "ok", tiny_model.cfg.d_model, "blocks.1.hook_resid_post")
    sae = load_sae(path, tiny_model)
    x = torch.randn(5, tiny_model.cfg.d_model)
    ref = TopKSAE.load_from_disk(path)
    assert torch.equal(sae.encode(x), ref.encode(x))
    assert sae_name(path) == "ok"


@pytest.mark.parametrize(
    ("d_in", "hook", "message"),
    [
        (65, "blocks.1.hook_resid_post", "d_in 65"),
        (64, "blocks.9.hook_resid_post", "does not have"),
    ],
)
def test_mismatched_sae_is_refused(tmp_path, tiny_model, d_in, hook, message):
    path = _save(tmp_path, "bad", d_in, hook)
    with pytest.raises(InterpError, match=message):
        load_sae(path, tiny_model)


def test_folder_without_weights_is_refused(tmp_path, tiny_model):
    (tmp_path / "empty").mkdir()
    with pytest.raises(InterpError, match="not an sae-lens SAE folder"):
        load_sae(tmp_path / "empty", tiny_model)
