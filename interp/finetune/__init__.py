"""Supervised fine-tuning of a loadable model on task conversations (issue 26, item 1).

``finetune(model_source, FinetuneConfig)`` (:func:`interp.finetune.train.finetune`) trains
LoRA adapters (merged at the end) or every weight on conversations built by the replay's
``build_conversation``, the loss on each round's target answer, and writes a folder that
``load_model(PATH)`` and ``--model PATH`` load.

``interp.finetune`` is also callable as that verb: once this package is imported Python binds
``interp.finetune`` to it, so the verb and the package must be one object (as
``interp.replay``). Importing the package loads no torch (the command line's preflight reads
:mod:`interp.finetune.config` first); the training module is imported when called.
"""

from __future__ import annotations

import importlib
import inspect
import sys
import types
from typing import Any

from interp.finetune.config import FinetuneConfig, FinetuneResult

__all__ = ["FinetuneConfig", "FinetuneResult"]


class _CallableModule(types.ModuleType):
    """The package, callable as :func:`interp.finetune.train.finetune`."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return importlib.import_module("interp.finetune.train").finetune(*args, **kwargs)

    @property
    def __signature__(self) -> inspect.Signature:
        """The verb's signature, not ``(*args, **kwargs)``; imported when asked for."""
        return inspect.signature(importlib.import_module("interp.finetune.train").finetune)


sys.modules[__name__].__class__ = _CallableModule
