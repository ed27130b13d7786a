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
    ],
)
def test_bad_settings_are_refused(tmp_path, extra):
    assert_refused_without_trace(tmp_path, *_args(tmp_path)[:-2], *extra)


def test_self_correction_recipe_on_items_without_unknown_is_refused(tmp_path):
    data = tmp_path / "mc.jsonl"
    data.write_text('{"id": "1", "question": "Q?", "options": ["x", "y"], "label": 0}\n')
    args = _args(tmp_path, "--task", "mc", "--data", str(data), "--recipe", "self-correction")
    assert_refused_without_trace(tmp_path, *args, contains="needs BBQ items")
