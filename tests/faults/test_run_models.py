"""The model a run records is the model that ran (issue 22, items 2 and 12).

A model passed in Python (``model=``) is what the manifests name, not the config's default;
a config naming another model than the one passed is refused before anything is written.
A run of ``tiny --seed 1`` is analysed with the tiny model of seed 1 (tiny's weights are its
seed), so ``patch``, ``circuit`` and ``feature-circuit`` load the run's model without help.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from faultkit import invoke, small_config, tree_digest

from interp.errors import InterpError
from interp.replay.loop import ReplayConfig, replay

pytestmark = pytest.mark.faults


def _jsons(root: Path) -> str:
    return "\n".join(p.read_text() for p in sorted(root.rglob("*.json")))


def test_replay_records_the_model_passed_not_the_default(tmp_path, tiny_model):
    run = replay(ReplayConfig(out=str(tmp_path / "r"), rounds=1, limit=2), model=tiny_model)
    assert run.manifest["config"]["model"] == "tiny"
    assert run.manifest["model"]["model_id"] == "tiny"
    assert "smollm2" not in (tmp_path / "r" / "manifest.json").read_text()


def test_replay_refuses_a_config_naming_another_model(tmp_path, tiny_model):
    config = ReplayConfig(out=str(tmp_path / "r"), model="other.gguf", rounds=1, limit=2)
    with pytest.raises(InterpError, match="model passed is 'tiny'"):
        replay(config, model=tiny_model)
    assert tree_digest(tmp_path) == {}


@pytest.mark.parametrize(
    "name", ["convergence", "superficial", "interactions", "weak_evidence", "self_distinguish"]
)
def test_experiments_record_the_model_passed(tmp_path, tiny_model, one_torch_thread, name):
    import importlib

    from interp.experiments.common import ExperimentConfig

    run_experiment = getattr(importlib.import_module(f"interp.experiments.{name}"), name)
    limit = 6 if name == "weak_evidence" else 2  # (weak evidence needs two ambiguous items)
    config = ExperimentConfig(out=str(tmp_path / "e"), limit=limit, rounds=2, n_boot=5, probe=False)
    run_experiment(config, model=tiny_model)
    manifest = json.loads((tmp_path / "e" / "manifest.json").read_text())
    assert manifest["config"]["model"] == "tiny"
    assert manifest["replay"]["model"] == "tiny"
    for arm in (tmp_path / "e" / "runs").iterdir():
        arm_manifest = json.loads((arm / "manifest.json").read_text())
        assert arm_manifest["config"]["model"] == "tiny", arm
    assert "smollm2" not in _jsons(tmp_path / "e")


def test_an_experiment_naming_another_model_is_refused_before_writing(tmp_path, tiny_model):
    from interp.experiments.common import ExperimentConfig
    from interp.experiments.convergence import convergence

    config = ExperimentConfig(out=str(tmp_path / "e"), model="other.gguf", limit=2, rounds=2)
    with pytest.raises(InterpError, match="model passed is 'tiny'"):
        convergence(config, model=tiny_model)
    assert tree_digest(tmp_path) == {}


def test_analyses_with_the_model_passed_name_it(tmp_path, tiny_model, base_run):
    """probe, patch and circuit take ``model=``: what they write names tiny, never the
    default model."""
    from interp.circuits.pipeline import CircuitConfig, circuit
    from interp.patching import PatchConfig, patch
    from probes.api import probe
    from probes.config import ProbeConfig

    run = tmp_path / "run"
    shutil.copytree(base_run, run)
    probe(run, ProbeConfig(concept="stereotype", n_boot=5), model=tiny_model)
    patch(run, PatchConfig(layer=1, round=1, n_boot=5), model=tiny_model)
    circuit(run, CircuitConfig(round=1, steps=1, top=5, verify_top=0, n_boot=5), model=tiny_model)
    text = _jsons(run)
    assert "smollm2" not in text
    assert '"model_id": "tiny"' in text


def test_analyses_refuse_a_model_of_other_weights(tmp_path, base_run):
    from interp.model.loading import load_model
    from interp.patching import PatchConfig, patch

    other = load_model("tiny", seed=3)
    before = tree_digest(base_run)
    with pytest.raises(InterpError, match="weights hashes differ"):
        patch(base_run, PatchConfig(layer=1, round=1, n_boot=5), model=other)
    assert tree_digest(base_run) == before


@pytest.fixture(scope="module")
def seed1_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("seed1") / "run"
    run = replay(small_config(out, seed=1))  # the CLI's `replay --model tiny --seed 1`
    assert run.manifest["model"]["weights_hash"] == "tiny-seed-1"
    return out


def test_patch_loads_a_seeded_tiny_runs_own_model(seed1_run, tmp_path):
    run = shutil.copytree(seed1_run, tmp_path / "run")
    result = invoke("patch", "--run", str(run), "--layers", "1", "--round", "1", "--n-boot", "5")
    assert result.exit_code == 0, result.output


def test_circuit_loads_a_seeded_tiny_runs_own_model(seed1_run, tmp_path):
    from interp.circuits.pipeline import CircuitConfig, circuit

    run = shutil.copytree(seed1_run, tmp_path / "run")
    config = CircuitConfig(round=1, steps=1, top=5, verify_top=0, n_boot=5)
    result = circuit(run, config)
    assert result is not None


def test_feature_circuit_loads_a_seeded_tiny_runs_own_model(seed1_run, tmp_path, monkeypatch):
    """The model check passes (the transcoders are stubbed: reaching them is the point)."""
    from interp.circuits import feature_level as features

    class Reached(Exception):
        pass

    def reached(*_args, **_kwargs):
        raise Reached

    monkeypatch.setattr(features, "check_transcoder_folder", lambda *_args, **_kwargs: None)
    monkeypatch.setattr(features, "circuit_tracer", lambda: None)
    monkeypatch.setattr(features, "load_transcoders", reached)
    from interp.circuits import CircuitConfig, circuit

    config = CircuitConfig(round=1, level="features", transcoders=str(tmp_path))
    with pytest.raises(Reached):
        circuit(seed1_run, config, write=False)


def test_a_seeded_runs_model_spec_names_its_seed():
    from interp.model.loading import run_model_spec

    assert run_model_spec({"model_id": "tiny", "weights_hash": "tiny-seed-7"}) == {
        "name_or_path": "tiny",
        "seed": 7,
    }
    assert run_model_spec({"model_id": "smollm2", "weights_hash": "ab12"}) == {
        "name_or_path": "smollm2"
    }
