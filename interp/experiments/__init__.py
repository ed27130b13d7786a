"""The self-correction papers' experiments, built from replay, probes and patching.

One module per experiment (``convergence``, ``superficial``, ``interactions``), what they
share in ``common`` (config, experiment directory, per-example matrices). Each experiment is
a function taking an `ExperimentConfig` and returning an `ExperimentResult` (DataFrames and a
summary); the command line is ``interp experiment NAME``.
"""

from __future__ import annotations

from interp.experiments.common import ExperimentConfig, ExperimentResult

__all__ = ["EXPERIMENTS", "ExperimentConfig", "ExperimentResult"]

EXPERIMENTS = (
    "convergence",
    "superficial",
    "interactions",
    "weak-evidence",
    "self-distinguish",
)
