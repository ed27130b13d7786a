"""``interp sae train-transcoders`` and ``interp circuit --level features``: bad input is one
``error:`` line, exit 2, and nothing on disk changes (no folder, no partial folder beside it)."""

from __future__ import annotations

from pathlib import Path

import pytest
from faultkit import assert_refused_without_trace

pytestmark = pytest.mark.faults


def _train(space: Path, *args: str) -> tuple[str, ...]:
    out = space / "tcs" / "new"
    base = ("sae", "train-transcoders", "--model", "tiny", "--out", str(out), "--width", "16")
    return (*base, "--context", "32", *args)


@pytest.mark.parametrize(
    ("args", "contains"),
    [
        (("--layers", "5"), "has layers 0..2"),
        (("--layers", "x"), "--layers 'x'"),
        (("--width", "0"), "--width"),
        (("--l1", "-1"), "--l1"),
        (("--lr", "0"), "--lr"),
        (("--tokens", "0"), "--tokens must be at least 1"),
        (("--tokens", "10"), "fewer than one batch"),
        (("--corpus", "wiki"), "unknown"),
        # issue 22 item 5: an allocation traceback, and a budget of about 10^9 hours
        (("--width", "1000000000"), "--width 1000000000: use 1..16777216 latents"),
        (("--tokens", "1000000000000000"), "at most 100000000000 (10^11) training tokens"),
        (("--tokens", "90000000"), "passes over the training split"),
    ],
)
def test_train_transcoders_refuses_bad_input(tmp_path, args, contains):
    (tmp_path / "tcs").mkdir()
    assert_refused_without_trace(tmp_path, *_train(tmp_path, *args), contains=contains)


def test_train_transcoders_refuses_a_width_that_does_not_fit_in_memory(tmp_path, monkeypatch):
    import interp.sae.train

    monkeypatch.setattr(interp.sae.train, "available_memory", lambda device: 1 << 30)
    (tmp_path / "tcs").mkdir()
    args = (*_train(tmp_path, "--layers", "0,1"), "--width", "1000000")
    line = assert_refused_without_trace(tmp_path, *args, contains="GiB available")
    assert "(2 x 2 x 1000000 x 64 parameters" in line


def test_train_transcoders_refuses_a_used_out_folder(tmp_path):
    used = tmp_path / "tcs" / "new"
    used.mkdir(parents=True)
    (used / "keep.txt").write_text("mine")
    assert_refused_without_trace(tmp_path, *_train(tmp_path), contains="not an empty folder")


@pytest.mark.parametrize(
    ("make", "contains"),
    [
        (lambda p: None, "no such folder"),
        (lambda p: p.mkdir(), "not a transcoder folder"),
    ],
)
def test_feature_circuit_refuses_what_is_no_transcoder_folder(base_run, tmp_path, make, contains):
    folder = tmp_path / "tc"
    make(folder)
    args = ("circuit", "--level", "features", "--run", str(base_run), "--round", "1")
    assert_refused_without_trace(base_run, *args, "--transcoders", str(folder), contains=contains)


def test_feature_circuit_refuses_bad_settings(base_run, tmp_path):
    args = ("circuit", "--level", "features", "--run", str(base_run), "--round", "1")
    args += ("--transcoders", ".")
    assert_refused_without_trace(base_run, *args, "--top-features", "0", contains="--top-features")


def test_feature_circuit_without_circuit_tracer_says_how_to_install_it(base_run, tmp_path):
    import importlib.util

    if importlib.util.find_spec("circuit_tracer") is not None:
        pytest.skip("circuit-tracer is installed here")
    folder = tmp_path / "tc"
    folder.mkdir()
    (folder / "config.yaml").write_text("model_kind: transcoder_set\n")
    (folder / "layer_0.safetensors").write_bytes(b"")
    args = ("circuit", "--level", "features", "--run", str(base_run), "--round", "1")
    args += ("--transcoders",)
    assert_refused_without_trace(
        base_run, *args, str(folder), contains="pip install --no-deps circuit-tracer==0.5.0"
    )
