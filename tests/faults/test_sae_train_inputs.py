"""Bad input to ``interp sae train|eval``: exit 2, one ``error:`` line, nothing written (no SAE
folder, no partial folder beside it), an existing SAE folder unchanged. Tiny model."""

from __future__ import annotations

from pathlib import Path

import pytest
from faultkit import assert_refused_without_trace, invoke

pytestmark = pytest.mark.faults

HOOK = "blocks.1.hook_resid_post"


def _train(space: Path, *args: str) -> tuple[str, ...]:
    out = space / "saes" / "new"
    base = ("sae", "train", "--model", "tiny", "--hook", HOOK, "--out", str(out))
    return (*base, "--width", "32", "--k", "4", "--context", "32", *args)


@pytest.fixture(scope="module")
def space(tmp_path_factory) -> Path:
    """A folder holding one trained tiny SAE (saes/done) and the refused commands' inputs."""
    root = tmp_path_factory.mktemp("sae-inputs")
    (root / "saes").mkdir()
    args = _train(root, "--tokens", "512", "--batch-tokens", "128", "--eval-tokens", "64")
    args = tuple(
        a if a != str(root / "saes" / "new") else str(root / "saes" / "done") for a in args
    )
    result = invoke(*args, "--json")
    assert result.exit_code == 0, result.output
    (root / "bad.jsonl").write_text('{"text": "fine"}\n{not json\n')
    (root / "notext.jsonl").write_text('{"txt": "no text field"}\n')
    (root / "empty.txt").write_text("\n\n")
    return root


@pytest.mark.parametrize(
    ("args", "contains"),
    [
        (("--hook", "blocks.9.hook_resid_post"), "has no such hook"),
        (("--hook", "blocks.1.attn.hook_pattern"), "residual-stream or MLP hook"),
        (("--tokens", "0"), "--tokens must be at least 1"),
        (("--width", "0"), "--width"),
        (("--k", "99"), "--k must be between"),
        (("--architecture", "gated"), "--architecture"),
        (("--lr", "-1"), "--lr"),
        (("--corpus", "wiki"), "unknown"),
        (("--corpus", "text"), "needs --data"),
        (("--corpus", "text", "--data", "missing.txt"), "no such file"),
        (("--corpus", "run", "--run", "nowhere"), "no such run directory"),
        (("--data", "bad.jsonl"), "--data is read by"),
        (("--corpus", "text", "--data", "bad.jsonl"), "bad.jsonl:2"),
        (("--corpus", "text", "--data", "notext.jsonl"), "notext.jsonl:1"),
        (("--corpus", "text", "--data", "empty.txt"), "no tokens"),
        (("--context", "2"), "--context"),
        (("--heldout", "1.5"), "--heldout"),
        (("--tokens", "10"), "fewer than one batch"),
        # issue 22 item 5: an allocation traceback, and a budget of about 10^9 hours
        (("--width", "1000000000", "--k", "8"), "--width 1000000000: use 1..16777216 latents"),
        (("--tokens", "1000000000000000"), "at most 100000000000 (10^11) training tokens"),
        (("--tokens", "90000000"), "passes over the training split"),
    ],
)
def test_train_refuses_bad_input(space, args, contains):
    args = tuple(
        str(space / a) if a.endswith((".jsonl", ".txt")) or a == "nowhere" else a for a in args
    )
    assert_refused_without_trace(space, *_train(space, *args), contains=contains)


def test_train_refuses_a_used_out_folder(space):
    done = space / "saes" / "done"
    args = ("sae", "train", "--model", "tiny", "--hook", HOOK, "--out", str(done))
    assert_refused_without_trace(space, *args, contains="exists and is not an empty folder")


def test_eval_refuses_what_is_no_sae(space):
    args = ("sae", "eval", "--model", "tiny", "--sae", str(space / "saes"))
    assert_refused_without_trace(space, *args, contains="cfg.json")


def test_eval_refuses_an_sae_of_another_model(space, tmp_path):
    import json
    import shutil

    other = tmp_path / "wide"
    shutil.copytree(space / "saes" / "done", other)
    cfg = json.loads((other / "cfg.json").read_text())
    cfg["d_in"] = 65
    (other / "cfg.json").write_text(json.dumps(cfg))
    assert_refused_without_trace(
        space, "sae", "eval", "--model", "tiny", "--sae", str(other), contains="d_in 65"
    )


def test_eval_of_the_training_corpus_repeats_evals_json(space):
    import json

    done = space / "saes" / "done"
    args = ("sae", "eval", "--model", "tiny", "--sae", str(done), "--context", "32")
    result = invoke(*args, "--eval-tokens", "64", "--json")
    assert result.exit_code == 0, result.output
    evals = json.loads(result.stdout)
    stored = json.loads((done / "evals.json").read_text())
    assert evals["trained_on_this_corpus"] is True
    for key in ("explained_variance", "mean_l0", "ce_loss_recovered", "kl_with_sae"):
        assert evals[key] == pytest.approx(stored[key], rel=1e-6), key


def test_train_refuses_a_width_whose_training_does_not_fit_in_memory(space, monkeypatch):
    import interp.sae.train

    monkeypatch.setattr(interp.sae.train, "available_memory", lambda device: 1 << 30)
    args = _train(space, "--width", "1000000", "--k", "8")
    line = assert_refused_without_trace(space, *args, contains="GiB available")
    assert "--width 1000000: training needs about 13.4 GiB" in line
