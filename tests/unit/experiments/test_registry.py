"""The experiments' registry (interp.experiments.registry): every entry has a config, arms, an
analysis and a verb of the common shape, the command line lists exactly its names with its
options, and reading it imports no pandas."""

from __future__ import annotations

import dataclasses
import inspect
import json
import subprocess
import sys

import pytest
import typer

from interp.cli import app
from interp.errors import InterpError
from interp.experiments import REGISTRY, experiment, get_spec
from interp.experiments.common import ExperimentConfig, ExperimentResult

COMMAND = typer.main.get_command(app)
# Options of `interp experiment NAME` that are no config field: --run and --control-run pick a
# stored run to analyse, --json the output.
CLI_ONLY = {"run", "control_run", "examples", "as_json"}


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_every_entry_has_a_config_arms_an_analysis_and_a_verb(name: str) -> None:
    spec = REGISTRY[name]
    assert spec.name == name
    # ExperimentConfig, or the experiment's own extension of it (finetune-selection)
    assert issubclass(spec.config, ExperimentConfig)
    assert (spec.config is ExperimentConfig) == (spec.config_class == "")
    arms = spec.arms(spec.config())
    assert arms and all(isinstance(k, str) and isinstance(v, str) for k, v in arms.items())
    assert callable(spec.analysis_function())
    assert spec.help and "\n" not in spec.help and spec.doc
    fields = {f.name for f in dataclasses.fields(spec.config)}
    assert set(spec.options) <= fields and set(spec.fixed) <= fields
    if spec.of_run is not None:
        of_run = inspect.signature(spec.load(spec.of_run))
        assert list(of_run.parameters)[:2] == ["run_dir", "config"]
    verb = inspect.signature(spec.function())
    params = verb.parameters
    assert list(params)[0] == "config"
    for key, default in (("model", None), ("progress", True), ("workers", None)):
        assert params[key].kind is inspect.Parameter.KEYWORD_ONLY, key
        assert params[key].default is default, key
    assert verb.return_annotation in (ExperimentResult, "ExperimentResult")


def test_the_arms_follow_the_config() -> None:
    conv = get_spec("convergence")
    assert conv.arms(ExperimentConfig(plan="p", control="c")) == {"main": "p", "control": "c"}
    assert conv.arms(ExperimentConfig(plan="p", control=None)) == {"main": "p"}
    assert len(get_spec("interactions").arms(ExperimentConfig())) == 8
    assert set(get_spec("weak-evidence").arms(ExperimentConfig())) == {"baseline", "self-correct"}


def test_the_cli_lists_exactly_the_registry_with_its_options() -> None:
    commands = COMMAND.commands["experiment"].commands
    assert set(commands) == set(REGISTRY)
    for name, spec in REGISTRY.items():
        params = {p.name for p in commands[name].params if p.name != "help"}
        expected = set(spec.options) | {"as_json"}
        if spec.of_run is not None:
            expected |= {"run", "control_run", "examples"}  # --examples: accepted, refused
        assert params == expected, name
        assert commands[name].help.split() == spec.doc.split(), name
        assert params - CLI_ONLY == set(spec.options), name


def test_experiment_refuses_what_it_cannot_do() -> None:
    with pytest.raises(InterpError, match="unknown experiment 'nope'"):
        experiment("nope")
    with pytest.raises(InterpError, match="cannot analyse a run"):
        experiment("interactions", run="somewhere")
    with pytest.raises(InterpError, match="control_run goes with run"):
        experiment("convergence", control_run="somewhere")


def test_reading_the_registry_imports_no_pandas() -> None:
    code = (
        "import json, sys\n"
        "from interp.experiments import REGISTRY\n"
        "print(json.dumps([sorted(REGISTRY), 'pandas' in sys.modules]))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    names, pandas = json.loads(out.stdout)
    assert names == sorted(REGISTRY) and pandas is False
