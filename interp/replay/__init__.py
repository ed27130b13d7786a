"""Replay: multi-round conversations on a model, the KV cache kept across rounds, the read-out
activations and option scores of every round written to a run directory
(:mod:`~interp.replay.loop`).

``interp.replay`` is this package and, as ``interp``'s exported verb, :func:`replay`: once a
package is imported Python binds the parent's attribute to it, so the verb and the package
must be one object for ``from interp import replay`` to mean one thing.
"""

from __future__ import annotations

import inspect
import sys
import types
from typing import Any

from interp.replay.loop import ReplayConfig, replay
from interp.runs.store import Run

__all__ = ["ReplayConfig", "replay"]


class _CallableModule(types.ModuleType):
    """The package, callable as :func:`~interp.replay.loop.replay`."""

    def __call__(self, *args: Any, **kwargs: Any) -> Run:
        return replay(*args, **kwargs)

    @property
    def __signature__(self) -> inspect.Signature:
        """The verb's signature (what ``inspect.signature`` and a notebook's Shift-Tab show),
        not ``(*args, **kwargs)``."""
        return inspect.signature(replay)


sys.modules[__name__].__class__ = _CallableModule
