"""interp: what self-correction instructions change inside a language model.

Replay multi-round self-correction conversations on a TransformerLens ``HookedTransformer``,
cache the activations that matter, and measure per round and per layer what moved.

The Python API has one shape: ``verb(run_or_source, config=None, *, model=None, progress=True,
workers=None) -> Result``, a result with DataFrames: ``replay(out, ReplayConfig)``, ``metrics(run,
MetricsConfig)``, ``patch(run, PatchConfig)``, ``probe(run, ProbeConfig)``, ``export(runs,
ExportConfig)``, ``circuit(run, CircuitConfig)`` (components or features), ``train_sae(model,
TrainConfig)``, ``evaluate_sae(model, EvalConfig)``, ``sae_features(run, FeaturesConfig)``,
``train_transcoders(model, TranscoderTrainConfig)``, ``experiment(name, ExperimentConfig)``,
``finetune(model, FinetuneConfig)``. A keyword that means nothing to a verb (``model`` for metrics,
``workers`` for probe, metrics and export) is accepted and refused with :class:`InterpError` unless
left at its default; ``progress`` is a display setting that a verb without a progress bar ignores.
Every config that selects examples spells the choice as one :class:`Selection`
(``config.selection``). The names below load lazily (on first use), so that ``import interp`` loads
neither torch nor TransformerLens: the command line and the metrics start without them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from interp.errors import InterpError

if TYPE_CHECKING:
    from interp import finetune, metrics, replay
    from interp.circuits import CircuitConfig, CircuitResult, circuit
    from interp.circuits.feature_level import FeatureCircuitResult
    from interp.experiments import ExperimentConfig, ExperimentResult, experiment
    from interp.finetune import FinetuneConfig, FinetuneResult
    from interp.inputs.conversation import Conversation, RoundInput, RoundSpans, build_conversation
    from interp.inputs.selection import Selection
    from interp.model.loading import ModelSource, load_model
    from interp.patching import PatchConfig, PatchResult, patch
    from interp.replay import ReplayConfig
    from interp.report.explore_widget import explore
    from interp.report.export import ExportConfig, export
    from interp.report.html import ExportResult
    from interp.runs.metrics import MetricsConfig, MetricsResult
    from interp.runs.store import Run
    from interp.sae.evals import EvalConfig, EvalResult, evaluate_sae
    from interp.sae.latent_changes import FeaturesConfig, FeaturesResult, sae_features
    from interp.sae.train import TrainConfig, TrainingOptions, TrainResult, train_sae
    from interp.sae.transcoders import (
        TranscoderTrainConfig,
        TranscoderTrainResult,
        train_transcoders,
    )
    from probes.api import ProbeResult, probe
    from probes.config import ProbeConfig

# name -> the module that defines it (imported on first access).
_LAZY: dict[str, str] = {
    "Conversation": "interp.inputs.conversation",
    "RoundInput": "interp.inputs.conversation",
    "RoundSpans": "interp.inputs.conversation",
    "build_conversation": "interp.inputs.conversation",
    "ModelSource": "interp.model.loading",
    "load_model": "interp.model.loading",
    "Selection": "interp.inputs.selection",
    "Run": "interp.runs.store",
    # The verbs, their configs and results.
    "ReplayConfig": "interp.replay",
    "replay": "interp.replay",
    "MetricsConfig": "interp.runs.metrics",
    "MetricsResult": "interp.runs.metrics",
    "metrics": "interp.metrics",  # the package, callable as interp.runs.metrics.metrics
    "PatchConfig": "interp.patching",
    "PatchResult": "interp.patching",
    "patch": "interp.patching",
    "ProbeConfig": "probes.config",
    "ProbeResult": "probes.api",
    "probe": "probes.api",
    "ExportConfig": "interp.report.export",
    "export": "interp.report.export",
    "ExportResult": "interp.report.html",
    # circuits, SAEs and experiments (issue 24 part 2)
    "CircuitConfig": "interp.circuits.pipeline",
    "CircuitResult": "interp.circuits.pipeline",
    "FeatureCircuitResult": "interp.circuits.feature_level",
    "circuit": "interp.circuits.pipeline",
    "TrainingOptions": "interp.sae.train",
    "TrainConfig": "interp.sae.train",
    "TrainResult": "interp.sae.train",
    "train_sae": "interp.sae.train",
    "TranscoderTrainConfig": "interp.sae.transcoders",
    "TranscoderTrainResult": "interp.sae.transcoders",
    "train_transcoders": "interp.sae.transcoders",
    "EvalConfig": "interp.sae.evals",
    "EvalResult": "interp.sae.evals",
    "evaluate_sae": "interp.sae.evals",
    "FeaturesConfig": "interp.sae.latent_changes",
    "FeaturesResult": "interp.sae.latent_changes",
    "sae_features": "interp.sae.latent_changes",
    "ExperimentConfig": "interp.experiments.common",
    "ExperimentResult": "interp.experiments.common",
    "experiment": "interp.experiments.registry",
    "FinetuneConfig": "interp.finetune.config",
    "FinetuneResult": "interp.finetune.config",
    "finetune": "interp.finetune",  # the package, callable as interp.finetune.train.finetune
    # the explorer widget (anywidget: pip install interp[notebook])
    "explore": "interp.report.explore_widget",
}

__all__ = [
    "CircuitConfig",
    "CircuitResult",
    "Conversation",
    "EvalConfig",
    "EvalResult",
    "ExperimentConfig",
    "ExperimentResult",
    "ExportConfig",
    "ExportResult",
    "FeatureCircuitResult",
    "FeaturesConfig",
    "FeaturesResult",
    "FinetuneConfig",
    "FinetuneResult",
    "InterpError",
    "MetricsConfig",
    "MetricsResult",
    "ModelSource",
    "PatchConfig",
    "PatchResult",
    "ProbeConfig",
    "ProbeResult",
    "ReplayConfig",
    "RoundInput",
    "RoundSpans",
    "Run",
    "Selection",
    "TrainConfig",
    "TrainResult",
    "TrainingOptions",
    "TranscoderTrainConfig",
    "TranscoderTrainResult",
    "build_conversation",
    "circuit",
    "evaluate_sae",
    "experiment",
    "explore",
    "export",
    "finetune",
    "load_model",
    "metrics",
    "patch",
    "probe",
    "replay",
    "sae_features",
    "train_sae",
    "train_transcoders",
]

# The verbs: one shape (the unit test tests/unit/test_verbs.py checks every one listed here).
VERBS = (
    "replay",
    "metrics",
    "patch",
    "probe",
    "export",
    "circuit",
    "train_sae",
    "evaluate_sae",
    "sae_features",
    "train_transcoders",
    "experiment",
    "finetune",
)


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'interp' has no attribute {name!r}")
    if module == f"interp.{name}":
        # `replay`: the verb's name is its module's, and importing a submodule binds the
        # package attribute to the module; the module is callable and calls the verb.
        return importlib.import_module(module)
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # the next access skips this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
