"""Defect 4 of issue 10: a damaged run file is one error line that names the file and says to
replay again; no command computes, writes or changes anything first."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest
import torch
from faultkit import assert_refused_without_trace, copy_run, small_config
from safetensors.torch import save_file

from interp.replay.loop import replay

pytestmark = [pytest.mark.faults, pytest.mark.usefixtures("one_torch_thread")]

ACTS = "activations/blocks.1.hook_resid_post.safetensors"


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def garbage(path: Path) -> None:
    path.write_bytes(os.urandom(64) + b"PAR1" * 4)


def rewrite_rounds(change: Callable[[pd.DataFrame], pd.DataFrame]) -> Callable[[Path], None]:
    def damage(path: Path) -> None:
        change(pd.read_parquet(path)).to_parquet(path, index=False)

    return damage


def save_acts(change: Callable[[torch.Tensor], dict[str, torch.Tensor]]) -> Callable[[Path], None]:
    def damage(path: Path) -> None:
        from safetensors.torch import load_file

        save_file(change(load_file(str(path))["activations"]), str(path))

    return damage


def wider(t: torch.Tensor) -> dict[str, torch.Tensor]:
    return {"activations": torch.cat([t, t[:1]])}  # one example too many


# (file, how it is damaged): each a thing seen in the fault audit or one step beside it.
DAMAGE = {
    "rounds-truncated": ("rounds.parquet", truncate),
    "rounds-garbage": ("rounds.parquet", garbage),
    "rounds-missing": ("rounds.parquet", Path.unlink),
    "rounds-no-choice": ("rounds.parquet", rewrite_rounds(lambda f: f.drop(columns="choice"))),
    "rounds-row-lost": ("rounds.parquet", rewrite_rounds(lambda f: f.iloc[:-1])),
    "tokens-truncated": ("tokens.parquet", truncate),
    "tokens-row-lost": ("tokens.parquet", rewrite_rounds(lambda f: f.iloc[:-1])),
    "acts-truncated": (ACTS, truncate),
    "acts-garbage": (ACTS, garbage),
    "acts-missing": (ACTS, Path.unlink),
    "acts-key": (ACTS, save_acts(lambda t: {"x": t})),
    "acts-dtype": (ACTS, save_acts(lambda t: {"activations": t.float()})),
    "acts-shape": (ACTS, save_acts(wider)),
    "acts-2d": (ACTS, save_acts(lambda t: {"activations": t[:, 0].contiguous()})),
}

COMMANDS = {
    "metrics": lambda run: ("metrics", "--run", str(run)),
    "probe": lambda run: ("probe", "--run", str(run), "--concept", "stereotype"),
    "patch": lambda run: ("patch", "--run", str(run), "--layers", "1", "--round", "1"),
    "export": lambda run: ("export", "--run", str(run)),
}


@pytest.mark.parametrize("command", sorted(COMMANDS))
@pytest.mark.parametrize("case", sorted(DAMAGE))
def test_damaged_file_is_named_and_nothing_changes(tmp_path, base_run, case, command):
    run = copy_run(base_run, tmp_path / "run")
    name, damage = DAMAGE[case]
    damage(run / name)
    line = assert_refused_without_trace(run, *COMMANDS[command](run))
    assert str(run / name) in line and "replay" in line, line


def test_manifest_without_a_field_is_named(tmp_path, base_run):
    import json

    run = copy_run(base_run, tmp_path / "run")
    manifest = json.loads((run / "manifest.json").read_text())
    del manifest["hooks"]
    (run / "manifest.json").write_text(json.dumps(manifest))
    line = assert_refused_without_trace(run, "metrics", "--run", str(run))
    assert "manifest.json" in line


def test_probe_refuses_activations_of_another_run(tmp_path, tiny_model, base_run):
    # The audit copied activations from a run of other examples: probe accepted them.
    other = replay(small_config(tmp_path / "other", limit=2, batch_size=2), model=tiny_model)
    run = copy_run(base_run, tmp_path / "run")
    (run / ACTS).write_bytes((other.path / ACTS).read_bytes())
    line = assert_refused_without_trace(run, *COMMANDS["probe"](run))
    assert "[2, 2, " in line and "3 examples" in line, line


def test_probe_and_patch_check_before_any_work(tmp_path, base_run, monkeypatch):
    import interp.patching.pipeline
    import probes.api

    def too_late(*args, **kwargs):
        raise AssertionError("work started on a damaged run")

    monkeypatch.setattr(probes.api, "_concept_encodings", too_late)
    monkeypatch.setattr(interp.patching.pipeline, "load_run_model", too_late)
    run = copy_run(base_run, tmp_path / "run")
    truncate(run / ACTS)
    for command in ("probe", "patch"):
        assert_refused_without_trace(run, *COMMANDS[command](run))


# --- .partial batches of an unfinished replay --------------------------------------------------


@pytest.fixture(scope="module")
def unfinished(tmp_path_factory, tiny_model) -> Path:
    """A replay killed after its first batch was stored."""
    import interp.replay.loop as replay_module

    out = tmp_path_factory.mktemp("unfinished") / "run"
    real = replay_module._replay_batch
    calls = []

    def die_on_second(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    replay_module._replay_batch = die_on_second
    try:
        with pytest.raises(KeyboardInterrupt):
            replay(small_config(out), model=tiny_model)
    finally:
        replay_module._replay_batch = real
    assert (out / ".partial" / "batch-00000.safetensors").is_file()
    return out


REPLAY_ARGS = ("--model", "tiny", "--rounds", "1", "--limit", "3", "--batch-size", "1")


def foreign(path: Path) -> None:
    save_file({"activations": torch.zeros(2, 2)}, str(path))


def pickle_in_disguise(path: Path) -> None:
    torch.save({"rows": []}, path)  # an old-style .pt pickle under the new name


@pytest.mark.parametrize("damage", [truncate, garbage, foreign, pickle_in_disguise])
def test_damaged_partial_batch_is_named_before_any_compute(tmp_path, unfinished, damage):
    run = copy_run(unfinished, tmp_path / "run")
    batch = run / ".partial" / "batch-00000.safetensors"
    damage(batch)
    line = assert_refused_without_trace(run, "replay", "--out", str(run), *REPLAY_ARGS)
    assert str(batch) in line and "delete it" in line, line
    batch.unlink()  # as the message says: then the replay resumes and finishes
    from faultkit import invoke

    result = invoke("replay", "--out", str(run), *REPLAY_ARGS, "--json")
    assert result.exit_code == 0, result.output
    assert not (run / ".partial").exists()


def test_damaged_partial_config_is_named(tmp_path, unfinished):
    run = copy_run(unfinished, tmp_path / "run")
    stamp = run / ".partial" / "config.json"
    truncate(stamp)
    line = assert_refused_without_trace(run, "replay", "--out", str(run), *REPLAY_ARGS)
    assert str(stamp) in line, line


def test_damaged_metrics_json_is_rewritten_not_fatal(tmp_path, base_run):
    import json

    from faultkit import invoke

    run = copy_run(base_run, tmp_path / "run")
    truncate(run / "metrics.json")
    shown = invoke("replay", "--out", str(run), *REPLAY_ARGS)  # the complete run, shown
    assert shown.exit_code == 0, shown.output
    result = invoke("metrics", "--run", str(run))
    assert result.exit_code == 0, result.output
    assert (run / "metrics.json").read_bytes() == (base_run / "metrics.json").read_bytes()
    assert json.loads((run / "metrics.json").read_text())["bootstrap"]["n_boot"] == 1000
