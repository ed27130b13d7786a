"""Issue 22, items 4 and 14: a damaged SAE or transcoder folder (junk, truncated or empty
weights, a config out of range, a config.yaml that is no YAML or carries a Python tag) given to
``sae features``, ``patch --sae``, ``sae eval`` or ``circuit --level features`` is one
``error:`` line naming the damaged file, exit 2, nothing written; these used to be
tracebacks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from faultkit import assert_refused_without_trace, copy_run
from sae_lens import TopKSAE, TopKSAEConfig
from sae_lens.saes.sae import SAEMetadata

from interp.sae.transcoders import save_transcoders

pytestmark = pytest.mark.faults

WEIGHTS = "sae_weights.safetensors"


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:1000])


def _config(key: str, value):
    def damage(path: Path) -> None:
        cfg = json.loads(path.read_text())
        cfg[key] = value
        path.write_text(json.dumps(cfg))

    return damage


def _retensor(change):
    def damage(path: Path) -> None:
        from safetensors.torch import load_file, save_file

        state = load_file(str(path))
        change(state)
        save_file(state, str(path))

    return damage


SAE_DAMAGE = {
    "integer W_enc": (
        WEIGHTS,
        _retensor(lambda s: s.update(W_enc=s["W_enc"].to(torch.int32))),
        "W_enc is I32, not a float tensor",
    ),
    "junk weights": (WEIGHTS, lambda p: p.write_bytes(b"junk\n"), "no header"),
    "empty weights": (WEIGHTS, lambda p: p.write_bytes(b""), "(empty)"),
    "truncated weights": (WEIGHTS, _truncate, "truncated"),
    "header only": (WEIGHTS, lambda p: p.write_bytes(p.read_bytes()[:-4]), "truncated"),
    "k = -1": ("cfg.json", _config("k", -1), "k is -1"),
    "k > d_sae": ("cfg.json", _config("k", 17), "k is 17"),
    # the weights are named: cfg.json is self-consistent, the tensors are not what it says
    "d_sae not the weights'": ("cfg.json", _config("d_sae", 32), f"{WEIGHTS}: W_enc has shape"),
    "d_sae = 0": ("cfg.json", _config("d_sae", 0), "d_sae is 0"),
}


@pytest.fixture
def space(tmp_path, base_run) -> Path:
    copy_run(base_run, tmp_path / "runs" / "run")
    torch.manual_seed(0)
    cfg = TopKSAEConfig(
        d_in=64, d_sae=16, k=4, metadata=SAEMetadata(hook_name="blocks.1.hook_resid_post")
    )
    TopKSAE(cfg).save_model(tmp_path / "sae")
    return tmp_path


def _commands(space: Path) -> dict[str, tuple[str, ...]]:
    run, sae = str(space / "runs" / "run"), str(space / "sae")
    return {
        "sae features": ("sae", "features", "--run", run, "--sae", sae),
        "patch --sae": ("patch", "--run", run, "--round", "1", "--sae", sae, "--features", "1"),
        "sae eval": ("sae", "eval", "--model", "tiny", "--corpus", "builtin", "--sae", sae),
    }


@pytest.mark.parametrize("command", ["sae features", "patch --sae", "sae eval"])
@pytest.mark.parametrize("damage", sorted(SAE_DAMAGE))
def test_a_damaged_sae_folder_is_one_line_naming_the_file(space, command, damage):
    name, spoil, message = SAE_DAMAGE[damage]
    spoil(space / "sae" / name)
    line = assert_refused_without_trace(space, *_commands(space)[command], contains=message)
    assert f"error: --sae {space / 'sae'}/" in line  # the file, not just the folder


def test_a_sound_sae_folder_still_opens(space):
    from interp.sae.load import read_sae_config

    assert read_sae_config(space / "sae")["d_sae"] == 16
    # an extra tensor of another dtype (a step counter, say) is no damage
    _retensor(lambda s: s.update(steps=torch.tensor([3], dtype=torch.int64)))(
        space / "sae" / WEIGHTS
    )
    assert read_sae_config(space / "sae")["d_sae"] == 16


# --- transcoders --------------------------------------------------------------------------------


@pytest.fixture
def tcs(tmp_path) -> Path:
    """A tiny-shaped transcoder folder (3 layers, d_model 64, width 8), random weights."""
    torch.manual_seed(0)
    weights = {
        layer: {
            "W_enc": torch.randn(8, 64),
            "W_dec": torch.randn(8, 64),
            "b_enc": torch.zeros(8),
            "b_dec": torch.zeros(64),
        }
        for layer in range(3)
    }
    folder = tmp_path / "tcs"
    folder.mkdir()
    save_transcoders(folder, weights, scan="t")
    return folder


def _wrong_shape(path: Path) -> None:
    from safetensors.torch import load_file, save_file

    state = load_file(str(path))
    state["b_dec"] = torch.zeros(63)
    save_file(state, str(path))


TC_DAMAGE = {
    "junk layer": ("layer_1.safetensors", lambda p: p.write_bytes(b"junk\n"), "no header"),
    "empty layer": ("layer_1.safetensors", lambda p: p.write_bytes(b""), "(empty)"),
    "truncated layer": ("layer_1.safetensors", _truncate, "truncated"),
    "shape": ("layer_2.safetensors", _wrong_shape, "b_dec has shape [63]"),
    "invalid yaml": ("config.yaml", lambda p: p.write_text("a: [b\n  c: : d\n"), "config.yaml:2"),
    "python tag": (
        "config.yaml",
        lambda p: p.write_text('!!python/object/apply:os.system ["echo hi"]\n'),
        "python/object/apply",
    ),
    "not a transcoder_set": ("config.yaml", lambda p: p.write_text("a: 1\n"), "transcoder_set"),
}


@pytest.mark.parametrize("damage", sorted(TC_DAMAGE))
def test_a_damaged_transcoder_folder_is_one_line_naming_the_file(base_run, tcs, damage):
    name, spoil, message = TC_DAMAGE[damage]
    spoil(tcs / name)
    args = ("circuit", "--level", "features", "--run", str(base_run), "--round", "1")
    args += ("--transcoders", str(tcs))
    line = assert_refused_without_trace(base_run, *args, contains=message)
    assert str(tcs / name) in line


def test_transcoders_of_another_model_are_refused_before_it_loads(base_run, tcs):
    from safetensors.torch import load_file, save_file

    args = ("circuit", "--level", "features", "--run", str(base_run), "--round", "1")
    args += ("--transcoders", str(tcs))
    (tcs / "layer_1.safetensors").rename(tcs / "layer_5.safetensors")
    assert_refused_without_trace(base_run, *args, contains="layer 5, the run's model has layers")
    for f in tcs.glob("layer_*.safetensors"):
        state = load_file(str(f))
        state = {k: v[..., :32] if k != "b_enc" else v for k, v in state.items()}
        save_file({k: v.contiguous() for k, v in state.items()}, str(f))
    assert_refused_without_trace(base_run, *args, contains="reads width 32; the run's model has 64")


def test_a_sound_transcoder_folder_still_opens(tcs, tiny_model):
    from interp.sae.transcoders import load_transcoders

    assert load_transcoders(tcs, tiny_model).layers == [0, 1, 2]


# --- refused before the heavy imports -------------------------------------------------------------

_PROBE = """
import sys
from interp.cli import main
sys.argv = ["interp", *sys.argv[1:]]
try:
    main()
except SystemExit:
    pass
print("heavy:", sorted(m for m in ("torch", "transformer_lens", "sae_lens") if m in sys.modules))
"""


@pytest.mark.parametrize(
    "args",
    [
        ("sae", "features", "--run", "{run}", "--sae", "{sae}"),
        ("sae", "eval", "--model", "tiny", "--sae", "{sae}"),
        ("sae", "train", "--model", "tiny", "--out", "{tmp}/x", "--width", "1000000000"),
        ("sae", "train-transcoders", "--model", "tiny", "--out", "{tmp}/x", "--tokens", "10" * 8),
    ],
)
def test_refused_before_torch_is_imported(space, args):
    # these refusals took 6-8 s (sae-lens or TransformerLens imported first); now well under 1 s
    import subprocess
    import sys

    (space / "sae" / WEIGHTS).write_bytes(b"junk\n")
    fields = {"run": space / "runs" / "run", "sae": space / "sae", "tmp": space}
    argv = [a.format(**fields) for a in args]
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, *argv], capture_output=True, text=True, timeout=300
    )
    assert done.stderr.startswith("error: ") and len(done.stderr.splitlines()) == 1, done.stderr
    assert done.stdout.strip().endswith("heavy: []"), done.stdout
