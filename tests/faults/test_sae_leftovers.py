"""Issue 22 item 11: what ``sae train`` and ``sae train-transcoders`` leave behind, and the
bytes of cached encodings. A writer killed with -9 leaves ``.NAME.partial-*`` (and its
``.NAME.lock``) beside ``--out``: the next writer of that folder removes them; a second
writer is refused at once; the folder written has the modes the umask gives (mkdtemp's is
0700); encodings files are byte-identical on a rerun (safetensors wrote the metadata in hash
map order)."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
import torch
from faultkit import assert_refused_without_trace, invoke

pytestmark = [pytest.mark.faults, pytest.mark.usefixtures("one_torch_thread")]

SMALL = ("--context", "32", "--tokens", "512", "--batch-tokens", "128", "--eval-tokens", "64")
COMMANDS = {
    "sae": ("sae", "train", "--model", "tiny", "--hook", "blocks.1.hook_resid_post", "--k", "4"),
    "transcoders": ("sae", "train-transcoders", "--model", "tiny", "--layers", "0-2"),
}


@pytest.fixture
def umask022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def _killed_writer_remains(parent: Path, name: str) -> list[Path]:
    """What ``kill -9`` of a writer of PARENT/NAME leaves: its mkdtemp folder with a file in it
    (mode 0700, as mkdtemp makes it) and the unlocked lock file."""
    partial = parent / f".{name}.partial-k9x_AB12"
    partial.mkdir(mode=0o700, parents=True)
    (partial / "cfg.json").write_text("{}")
    (parent / f".{name}.lock").write_text("")
    return [partial, parent / f".{name}.lock"]


@pytest.mark.parametrize("kind", sorted(COMMANDS))
def test_next_writer_removes_a_killed_writers_partial_and_writes_public_modes(
    tmp_path, kind, umask022
):
    parent = tmp_path / "out"
    remains = _killed_writer_remains(parent, "new")
    other = _killed_writer_remains(parent, "other")  # another folder's: not this writer's to judge
    out = parent / "new"
    result = invoke(*COMMANDS[kind], "--out", str(out), "--width", "16", *SMALL, "--json")
    assert result.exit_code == 0, result.output
    assert not any(p.exists() for p in remains)
    assert all(p.exists() for p in other)
    assert sorted(p.name for p in parent.iterdir()) == sorted(
        [".other.lock", ".other.partial-k9x_AB12", "new"]
    )
    assert stat.S_IMODE(out.stat().st_mode) == 0o755
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in out.iterdir()}
    assert set(modes.values()) == {0o644}, modes


@pytest.mark.parametrize("kind", sorted(COMMANDS))
def test_second_writer_of_one_out_is_refused_at_once(tmp_path, kind, monkeypatch):
    import interp.sae.train
    import interp.sae.transcoders
    from interp.runs.lock import output_lock

    def computed(*args, **kwargs):
        raise AssertionError("the second writer built its corpus")

    for module in (interp.sae.train, interp.sae.transcoders):
        monkeypatch.setattr(module, "build_corpus", computed)
    out = tmp_path / "new"
    with output_lock(out):
        args = (*COMMANDS[kind], "--out", str(out), "--width", "16", *SMALL)
        assert_refused_without_trace(tmp_path, *args, contains="in use")
    assert list(tmp_path.iterdir()) == []


def test_encodings_files_are_byte_identical_on_rerun(tmp_path, tiny_model):
    from probes.encode import cached_encodings

    texts = ["The nurse said hello.", "A plumber fixed the sink."]
    paths = []
    for i in range(4):  # safetensors' metadata order differed between writes, even in-process
        cache = tmp_path / f"cache{i}"
        cached_encodings(
            texts,
            name="t",
            position="last",
            weights_hash="w",
            cache_dir=cache,
            get_model=lambda: tiny_model,
        )
        (path,) = cache.iterdir()
        paths.append(path)
    assert len({p.read_bytes() for p in paths}) == 1
    raw = paths[0].read_bytes()
    header = json.loads(raw[8 : 8 + int.from_bytes(raw[:8], "little")])
    assert list(header["__metadata__"]) == sorted(header["__metadata__"])
    from safetensors.torch import load_file

    again = cached_encodings(
        texts,
        name="t",
        position="last",
        weights_hash="w",
        cache_dir=paths[0].parent,
        get_model=lambda: None,  # a hit: read back from the rewritten file
    )
    assert torch.equal(again, load_file(str(paths[1]))["encodings"])
    assert again.shape[0] == len(texts)
