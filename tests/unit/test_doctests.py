"""The examples in the docstrings run and hold (issue 24 part 4).

pytest collects only ``tests/`` (no ``--doctest-modules``), so the modules whose docstrings
carry examples are listed here. Each must have at least one example, so that a module whose
examples were dropped (or a docstring the parser no longer sees) fails instead of passing
vacuously.
"""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = (
    "interp.stats",
    "interp.options",
    "interp.model.hooknames",
    "interp.runs.store",
    "interp.inputs.plans",
    "probes.concepts",
    "probes.directions",
)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_pass(name: str) -> None:
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS, verbose=False)
    assert result.attempted > 0, f"{name} has no docstring examples"
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples fail in {name}"
