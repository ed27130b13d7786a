"""interp.finetune.train: LoRA and full fine-tuning of the tiny model, determinism, resume,
and the output folder loading as a model (issue 26 item 1)."""

from __future__ import annotations

import json

import pytest
import torch

from interp.finetune.config import FinetuneConfig, partial_dir
from interp.finetune.train import finetune
from interp.inputs.selection import Selection
from interp.model.loading import load_model
from tests.faults.faultkit import invoke


def _config(out, **overrides) -> FinetuneConfig:
    fields = {"steps": 4, "checkpoint_every": 2, "rounds": 1, "selection": Selection(limit=3)}
    return FinetuneConfig(out=str(out), **{**fields, **overrides})


@pytest.fixture(scope="module")
def lora_out(tmp_path_factory):
    out = tmp_path_factory.mktemp("ft") / "lora"
    finetune("tiny", _config(out), progress=False)
    return out


def test_lora_writes_a_folder_that_loads_as_a_changed_model(lora_out):
    names = {p.name for p in lora_out.iterdir()}
    assert {"model.safetensors", "tl_config.json", "finetune.json", "tokenizer.json"} <= names
    assert not partial_dir(lora_out).exists()  # the checkpoints are gone once done
    info = json.loads((lora_out / "finetune.json").read_text())
    assert info["hyper_parameters"]["method"] == "lora" and len(info["losses"]) == 4
    assert info["examples"] == 3 and len(info["data_hash"]) == 64
    tuned, base = load_model(str(lora_out)), load_model("tiny")
    assert tuned.interp_source.kind == "tl-folder"
    assert tuned.tokenizer.chat_template == base.tokenizer.chat_template
    tokens = torch.tensor([[1, 2, 3, 4, 5]])
    # LoRA merged into W_Q etc. moves the logits; embeddings (not adapted) stay.
    assert not torch.allclose(tuned(tokens), base(tokens))
    assert torch.equal(tuned.embed.W_E, base.embed.W_E)


def test_same_seed_same_bytes_other_seed_other_bytes(lora_out, tmp_path):
    finetune("tiny", _config(tmp_path / "again"), progress=False)
    finetune("tiny", _config(tmp_path / "seed1", seed=1), progress=False)
    weights = (lora_out / "model.safetensors").read_bytes()
    assert (tmp_path / "again" / "model.safetensors").read_bytes() == weights
    assert (tmp_path / "seed1" / "model.safetensors").read_bytes() != weights


def test_resume_after_a_stop_ends_with_the_same_bytes(lora_out, tmp_path):
    out = tmp_path / "resumed"
    first = finetune("tiny", _config(out, max_steps_this_call=3), progress=False)
    assert not first.finished and first.steps_done == 3 and not out.exists()
    assert (partial_dir(out) / "checkpoint.pt").is_file()
    second = finetune("tiny", _config(out), progress=False)
    assert second.finished and second.steps_done == 4
    assert (out / "model.safetensors").read_bytes() == (lora_out / "model.safetensors").read_bytes()
    info = json.loads((lora_out / "finetune.json").read_text())
    assert second.losses == info["losses"]


def test_resume_with_other_settings_is_refused(tmp_path):
    from interp.errors import InterpError

    out = tmp_path / "other"
    finetune("tiny", _config(out, max_steps_this_call=2), progress=False)
    with pytest.raises(InterpError, match="other settings"):
        finetune("tiny", _config(out, lr=5e-3), progress=False)
    assert not out.exists()


def test_full_fine_tuning_changes_every_kind_of_weight(tmp_path):
    out = tmp_path / "full"
    result = finetune("tiny", _config(out, method="full", steps=2), progress=False)
    assert result.finished
    tuned, base = load_model(str(out)), load_model("tiny")
    assert not torch.equal(tuned.embed.W_E, base.embed.W_E)
    assert not torch.equal(tuned.blocks[0].attn.W_Q, base.blocks[0].attn.W_Q)


def test_the_output_runs_with_model_path(lora_out, tmp_path):
    run = tmp_path / "run"
    result = invoke(
        "replay", "--model", str(lora_out), "--out", str(run), "--limit", "1", "--rounds", "1"
    )
    assert result.exit_code == 0, result.output
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["model"]["kind"] == "tl-folder"


def test_a_crash_mid_run_leaves_no_output_and_the_rerun_resumes(lora_out, tmp_path, monkeypatch):
    import interp.finetune.train as train

    out = tmp_path / "crashed"
    real, calls = train._loss, []

    def crash_in_step_four(*args, **kwargs):
        calls.append(1)
        if len(calls) == 4:  # batch_size 1: the 4th forward is step 4; step 2 was checkpointed
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(train, "_loss", crash_in_step_four)
    with pytest.raises(KeyboardInterrupt):
        finetune("tiny", _config(out), progress=False)
    assert not out.exists()
    assert torch.load(partial_dir(out) / "checkpoint.pt", weights_only=False)["step"] == 2
    calls.clear()
    monkeypatch.setattr(train, "_loss", lambda *a, **kw: calls.append(1) or real(*a, **kw))
    assert finetune("tiny", _config(out), progress=False).finished
    assert len(calls) == 2  # resumed at step 2: only steps 3 and 4 ran again
    assert (out / "model.safetensors").read_bytes() == (lora_out / "model.safetensors").read_bytes()
    assert not partial_dir(out).exists()


def test_answer_loss_equals_the_full_forwards_cross_entropy():
    """The loss unembeds only the answer-predicting positions; it must equal the cross-entropy
    read from the model's own full logits at those positions."""
    from interp.finetune.train import _loss

    model = load_model("tiny", seed=0)
    tokens = list(range(5, 45))
    spans = [(10, 14), (30, 33)]
    loss, n = _loss(model, tokens, spans)
    logp = torch.log_softmax(model(torch.tensor([tokens]))[0].float(), -1)
    manual = -sum(logp[t - 1, tokens[t]] for a, b in spans for t in range(a, b))
    assert n == 7
    assert torch.allclose(loss, manual, atol=1e-5)
