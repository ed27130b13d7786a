"""One verb shape: ``verb(run_or_source, config=None, *, model=None, progress=True,
workers=None) -> Result`` for every verb ``interp`` exports, every exported name resolving,
and ``import interp`` loading no torch."""

from __future__ import annotations

import importlib
import inspect
import json
import subprocess
import sys
from pathlib import Path

import pytest

import interp
from interp.errors import InterpError

ROOT = Path(__file__).resolve().parents[2]
P = inspect.Parameter


# Where each verb's function is defined (replay and metrics: the package is callable as it).
HOMES = {
    "replay": "interp.replay.loop",
    "metrics": "interp.runs.metrics",
    "finetune": "interp.finetune.train",
}


def _function(name: str):
    verb = getattr(interp, name)
    if inspect.ismodule(verb):
        return getattr(importlib.import_module(HOMES[name]), name)
    return verb


def test_every_exported_name_resolves():
    for name in interp.__all__:
        assert getattr(interp, name) is not None, name
    assert set(interp.VERBS) <= set(interp.__all__)


def test_import_interp_loads_no_torch():
    code = (
        "import sys, interp\n"
        "interp.Selection, interp.InterpError\n"
        "print(sorted(m for m in ('torch', 'transformer_lens', 'pandas') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    ).stdout
    assert json.loads(out.splitlines()[-1].replace("'", '"')) == []


@pytest.mark.parametrize("name", ["replay", "metrics", "patch", "probe", "export"])
def test_every_verb_has_the_one_shape(name):
    assert name in interp.VERBS

    params = list(inspect.signature(_function(name)).parameters.values())
    first, config = params[0], params[1]
    assert first.kind is P.POSITIONAL_OR_KEYWORD and first.default is P.empty, name
    assert config.name == "config" and config.kind is P.POSITIONAL_OR_KEYWORD, name
    assert config.default is None, name
    keywords = {p.name: p for p in params[2:]}
    assert all(p.kind is P.KEYWORD_ONLY for p in params[2:]), name
    assert keywords["model"].default is None, name
    assert keywords["progress"].default is True, name
    assert keywords["workers"].default is None, name


def test_no_keyword_twins_left():
    """The verbs' keyword twins are gone (spelled in parts, so a grep for them stays empty)."""
    import interp.patching
    import interp.report.run_page
    import probes.api

    for module, twin in (
        (interp.patching, "patch" + "_run"),
        (interp.patching, "run" + "_patching"),
        (probes.api, "probe" + "_run"),
        (interp.report.run_page, "export" + "_report"),
    ):
        assert not hasattr(module, twin), twin


def test_keywords_a_verb_has_no_use_for_are_refused(tmp_path):
    """Checked before anything is read: a run directory that does not exist is never opened."""
    nowhere = tmp_path / "nowhere"
    with pytest.raises(InterpError, match="model must be None"):
        interp.metrics(nowhere, model=object())
    from interp.runs.distributed import Workers

    for verb in (interp.metrics, interp.probe, interp.export):
        with pytest.raises(InterpError, match="workers must be None"):
            verb(nowhere, workers=Workers(n=2))
    with pytest.raises(InterpError, match="needs a PatchConfig"):
        interp.patch(nowhere)
    with pytest.raises(InterpError, match="not two configs"):
        interp.replay(interp.ReplayConfig(), interp.ReplayConfig())


def test_replay_takes_its_run_directory_first(monkeypatch, tmp_path):
    import interp.replay.loop as loop

    seen = []
    monkeypatch.setattr(loop, "_validate", lambda config: seen.append(config) or 1 / 0)
    for args in ((tmp_path / "a", interp.ReplayConfig(rounds=2)), (str(tmp_path / "a"),)):
        with pytest.raises(ZeroDivisionError):
            interp.replay(*args)
    assert seen[0].out == seen[1].out == str(tmp_path / "a") and seen[0].rounds == 2


def test_metrics_is_the_package_and_the_verb(monkeypatch):
    import interp.metrics
    import interp.runs.metrics

    assert interp.metrics is sys.modules["interp.metrics"] and callable(interp.metrics)
    calls = []
    monkeypatch.setattr(interp.runs.metrics, "metrics", lambda *a, **kw: calls.append((a, kw)))
    interp.metrics("run", progress=False)
    assert calls == [(("run",), {"progress": False})]


def test_metrics_verb_on_a_run(tiny_model, tmp_path):
    run = interp.replay(
        tmp_path / "run",
        interp.ReplayConfig(model="tiny", rounds=1, limit=3),
        model=tiny_model,
        progress=False,
    )
    stored = (run.path / "metrics.json").read_bytes()
    other = interp.metrics(run, interp.MetricsConfig(n_boot=20, seed=1))
    assert not other.written and (run.path / "metrics.json").read_bytes() == stored
    assert list(other.table["round"]) == [0, 1]
    same = interp.metrics(run.path, interp.MetricsConfig(n_boot=1000, seed=0))
    assert same.written and same.metrics["per_round"] == json.loads(stored)["per_round"]
    assert repr(same) == "MetricsResult(run: 2 rounds, written)"


def test_metrics_options_are_the_config_fields():
    """``interp metrics`` offers every MetricsConfig field, with its default, and nothing else
    it computes with (``--json`` and ``--by-category`` only choose what is printed)."""
    import dataclasses

    from interp.cli import metrics as command
    from interp.runs.metrics import MetricsConfig

    params = inspect.signature(command.metrics).parameters
    fields = {f.name: f.default for f in dataclasses.fields(MetricsConfig)}
    assert set(params) - {"run", "as_json", "by_category"} == set(fields)
    for name, default in fields.items():
        assert params[name].default == default, name


@pytest.mark.parametrize("name", interp.VERBS)
def test_every_verb_shows_its_real_signature(name):
    """Shift-Tab in a notebook shows ``inspect.signature``: the callable packages (replay,
    metrics) show the verb's, not ``(*args, **kwargs)``."""
    shown = inspect.signature(getattr(interp, name))
    assert shown == inspect.signature(_function(name)), name
    assert "args" not in shown.parameters and "kwargs" not in shown.parameters, name
