"""The self-correction papers' experiments, built from replay, probes and patching.

One module per experiment (``convergence``, ``superficial``, ``interactions``,
``weak_evidence``, ``self_distinguish``), what they share in ``common`` (config, experiment
directory, per-example matrices), and ``registry``: name -> config, arms, analysis, options
and help, from which ``interp experiment NAME`` is generated. Every experiment is a verb
``verb(config, *, model=None, progress=True, workers=None) -> ExperimentResult``, and
:func:`experiment` runs one by name: ``experiment("convergence", ExperimentConfig(...))``.

The names load lazily, so the registry is read without pandas (the command line's startup).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from interp.experiments.registry import REGISTRY, ExperimentSpec, experiment, get_spec

if TYPE_CHECKING:
    from interp.experiments.common import ExperimentConfig, ExperimentResult

__all__ = [
    "EXPERIMENTS",
    "REGISTRY",
    "ExperimentConfig",
    "ExperimentResult",
    "ExperimentSpec",
    "experiment",
    "get_spec",
]

EXPERIMENTS = tuple(REGISTRY)

_LAZY = {
    "ExperimentConfig": "interp.experiments.common",
    "ExperimentResult": "interp.experiments.common",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'interp.experiments' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
