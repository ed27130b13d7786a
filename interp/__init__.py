"""interp: what self-correction instructions change inside a language model.

Replay multi-round self-correction conversations on a TransformerLens ``HookedTransformer``,
cache the activations that matter, and measure per round and per layer what moved.

The Python API has one shape, a verb taking a config and returning a result with DataFrames:
``replay(ReplayConfig)``, ``patch(run, PatchConfig)``, ``probe(run, ProbeConfig)``,
``export(runs, ExportConfig)``. The names below load lazily (on first use), so that
``import interp`` loads neither torch nor TransformerLens: the command line and the metrics
start without them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from interp.errors import InterpError

if TYPE_CHECKING:
    from interp.inputs.conversation import Conversation, RoundInput, RoundSpans, build_conversation
    from interp.model.loading import ModelSource, load_model
    from interp.patching import PatchConfig, PatchResult, patch
    from interp.replay import ReplayConfig, replay
    from interp.report.export import ExportConfig, export
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
    "ReplayConfig": "interp.replay",
    "replay": "interp.replay",
    "PatchConfig": "interp.patching",
    "PatchResult": "interp.patching",
    "patch": "interp.patching",
    "ProbeConfig": "probes.config",
    "ProbeResult": "probes.api",
    "probe": "probes.api",
    "ExportConfig": "interp.report.export",
    "export": "interp.report.export",
}

__all__ = [
    "Conversation",
    "ExportConfig",
    "InterpError",
    "ModelSource",
    "PatchConfig",
    "PatchResult",
    "ProbeConfig",
    "ProbeResult",
    "ReplayConfig",
    "RoundInput",
    "RoundSpans",
    "build_conversation",
    "export",
    "load_model",
    "patch",
    "probe",
    "replay",
]


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
