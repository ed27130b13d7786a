"""`interp finetune` refuses bad input in one line, exit 2, and writes nothing (issue 26
item 1): no data, a model that does not load, a budget the conversations do not fit, an
existing output."""

from __future__ import annotations

import pytest

from tests.faults.faultkit import assert_refused_without_trace


def _args(root, *extra: str) -> list[str]:
    return ["finetune", "--model", "tiny", "--out", str(root / "out"), "--steps", "1", *extra]


def test_task_without_data_is_refused(tmp_path):
    assert_refused_without_trace(tmp_path, *_args(tmp_path, "--task", "mc"), contains="data file")


def test_missing_data_file_is_refused(tmp_path):
    args = _args(tmp_path, "--task", "mc", "--data", str(tmp_path / "none.jsonl"))
    assert_refused_without_trace(tmp_path, *args, contains="no such data file")


def test_empty_data_file_is_refused(tmp_path):
    (tmp_path / "empty.jsonl").write_text("")
    args = _args(tmp_path, "--task", "mc", "--data", str(tmp_path / "empty.jsonl"))
    assert_refused_without_trace(tmp_path, *args)


@pytest.mark.parametrize("model", ["missing.gguf", "not-a-model-name", "folder"])
def test_model_that_does_not_load_is_refused(tmp_path, model):
    if model == "folder":
        (tmp_path / "folder").mkdir()
        (tmp_path / "folder" / "notes.txt").write_text("no weights here")
    args = ["finetune", "--model", str(tmp_path / model) if model != "not-a-model-name" else model]
    assert_refused_without_trace(tmp_path, *args, "--out", str(tmp_path / "out"))


def test_budget_that_cannot_fit_the_context_is_refused(tmp_path):
    args = _args(tmp_path, "--max-tokens", "20", "--limit", "2")
    assert_refused_without_trace(tmp_path, *args, contains="budget")


def test_existing_output_is_refused(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    assert_refused_without_trace(tmp_path, *_args(tmp_path), contains="already exists")


@pytest.mark.parametrize(
    "extra",
    [
        ["--method", "qlora"],
        ["--steps", "0"],
        ["--dtype", "float16"],
        ["--rank", "0"],
        ["--recipe", "organism"],
        ["--error-share", "1.5"],
        ["--permute", "all"],
        ["--loss", "tokens"],
    ],
)
def test_bad_settings_are_refused(tmp_path, extra):
    assert_refused_without_trace(tmp_path, *_args(tmp_path)[:-2], *extra)


def test_self_correction_recipe_on_items_without_unknown_is_refused(tmp_path):
    data = tmp_path / "mc.jsonl"
    data.write_text('{"id": "1", "question": "Q?", "options": ["x", "y"], "label": 0}\n')
    args = _args(tmp_path, "--task", "mc", "--data", str(data), "--recipe", "self-correction")
    assert_refused_without_trace(tmp_path, *args, contains="needs BBQ items")


# --- sample selection (issue 26 item 2): refused before any model load, nothing written ---


def _probe_folder(root, model: dict, files=("summary.json", "directions.safetensors")):
    """A fake ``<run>/probes/stereotype/`` whose run manifest records ``model``."""
    import json

    import torch
    from safetensors.torch import save_file

    folder = root / "run" / "probes" / "stereotype"
    folder.mkdir(parents=True)
    (root / "run" / "manifest.json").write_text(json.dumps({"model": model}))
    if "summary.json" in files:
        summary = {"concept": "stereotype", "best_layer": 1, "layers": [0, 1, 2]}
        (folder / "summary.json").write_text(json.dumps(summary))
    if "directions.safetensors" in files:
        save_file({"directions": torch.ones(3, 64)}, str(folder / "directions.safetensors"))
    return folder


TINY = {"model_id": "tiny", "kind": "tiny", "weights_hash": "tiny-seed-0", "n_layers": 3}


@pytest.mark.parametrize(
    ("extra", "says"),
    [
        (["--select", "best"], "unknown --select"),
        (["--select", "random"], "needs --n"),
        (["--select", "random", "--n", "0"], "at least 1"),
        (["--select", "random", "--n", "49"], "exceeds the 48 candidates"),
        (["--select", "random", "--n", "3", "--limit", "2"], "exceeds the 2 candidates"),
        (["--select", "concept", "--n", "2"], "needs --concept"),
        (["--select", "concept+uncertainty", "--n", "2"], "needs --concept"),
        (["--n", "2"], "--n goes with --select"),
    ],
)
def test_bad_selection_is_refused(tmp_path, extra, says):
    assert_refused_without_trace(tmp_path, *_args(tmp_path, *extra), contains=says)


@pytest.mark.parametrize("files", [(), ("summary.json",), ("directions.safetensors",)])
def test_concept_folder_without_its_files_is_refused(tmp_path, files):
    folder = _probe_folder(tmp_path, TINY, files)
    args = _args(tmp_path, "--select", "concept", "--n", "2", "--concept", str(folder))
    assert_refused_without_trace(tmp_path, *args, contains="interp probe writes")


def test_missing_concept_folder_is_refused(tmp_path):
    args = _args(tmp_path, "--select", "concept", "--n", "2", "--concept", str(tmp_path / "no"))
    assert_refused_without_trace(tmp_path, *args, contains="no such folder")


def test_concept_folder_without_a_run_manifest_is_refused(tmp_path):
    folder = _probe_folder(tmp_path, TINY)
    (tmp_path / "run" / "manifest.json").unlink()
    args = _args(tmp_path, "--select", "uncertainty", "--n", "2", "--concept", str(folder))
    assert_refused_without_trace(tmp_path, *args, contains="model its directions")


@pytest.mark.parametrize(
    "model",
    [
        {**TINY, "weights_hash": "tiny-seed-1"},  # another tiny model than finetune's
        {"model_id": "smollm2", "kind": "embedded", "weights_hash": "abc", "n_layers": 30},
    ],
)
def test_concept_folder_of_another_model_is_refused(tmp_path, model):
    folder = _probe_folder(tmp_path, model)
    args = _args(tmp_path, "--select", "concept", "--n", "2", "--concept", str(folder))
    assert_refused_without_trace(tmp_path, *args, contains="not on tiny")
