"""Metrics computed from a rounds table alone: per-round accuracy, bias, calibration, flips
(:mod:`~interp.metrics.rounds`), debiasing over option orders and calibration helpers.

``interp.metrics`` is also callable as ``interp``'s verb :func:`interp.runs.metrics.metrics`
(a run in, its recomputed metrics out): once this package is imported Python binds
``interp.metrics`` to it, so the verb and the package must be one object for
``from interp import metrics`` to mean one thing (as ``interp.replay``). The verb opens a run,
so it lives in the runs layer above; this package only forwards the call to it, imported by
name when called (no import of this package's modules depends on it).
"""

from __future__ import annotations

import importlib
import inspect
import sys
import types
from typing import Any


class _CallableModule(types.ModuleType):
    """The package, callable as :func:`interp.runs.metrics.metrics`."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return importlib.import_module("interp.runs.metrics").metrics(*args, **kwargs)

    @property
    def __signature__(self) -> inspect.Signature:
        """The verb's signature (what ``inspect.signature`` and a notebook's Shift-Tab show),
        not ``(*args, **kwargs)``; imported when asked for."""
        return inspect.signature(importlib.import_module("interp.runs.metrics").metrics)


sys.modules[__name__].__class__ = _CallableModule
