"""Public functions document their arguments, Google style (issue 24 part 4).

For every module in ``MODULES``: each public function, class and method (no leading
underscore, defined in that module) has a docstring, and each function or method with
parameters other than ``self``/``cls`` has an ``Args:`` section naming every one of them.
A class with its own ``__init__`` (not a dataclass) documents that method's parameters in
an ``Args:`` section of the class or of ``__init__``. mkdocstrings renders these sections
(``docstring_style: google`` in mkdocs.yml). The lead extends ``MODULES`` as other packages
are documented.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import re
from collections.abc import Callable, Iterator

import pytest

MODULES = (
    "interp.errors",
    "interp.options",
    "interp.stats",
    "interp.model.fastpath",
    "interp.model.hooknames",
    "interp.model.kvcache",
    "interp.model.layout",
    "interp.model.loading",
    "interp.model.tiny",
    "interp.inputs.bbq_rules",
    "interp.inputs.conversation",
    "interp.inputs.files",
    "interp.inputs.lengths",
    "interp.inputs.permute",
    "interp.inputs.plans",
    "interp.inputs.tasks",
    "interp.inputs.winogender",
    "interp.metrics.calibration",
    "interp.metrics.debias",
    "interp.metrics.rounds",
    "interp.metrics.winogender",
    "interp.finetune.config",
    "interp.finetune.train",
    "interp.finetune.select",
    "interp.runs.controls",
    "interp.runs.distributed",
    "interp.runs.experiment_dir",
    "interp.runs.lock",
    "interp.runs.store",
    "probes.behaviour",
    "probes.concepts",
    "probes.directions",
    "probes.encode",
    "probes.logistic",
    "probes.scores",
    "probes.stats",
    "probes.surface",
    "probes.transfer",
)

_SECTION = re.compile(r"^(\w[\w ]*):\s*$")
_ENTRY = re.compile(r"^\*{0,2}(\w+)\s*(?:\([^)]*\))?\s*:")


def args_documented(doc: str | None) -> set[str] | None:
    """The parameter names an ``Args:`` section of ``doc`` lists; None without one."""
    if not doc:
        return None
    lines = inspect.cleandoc(doc).splitlines()
    for i, line in enumerate(lines):
        if line.strip() in ("Args:", "Arguments:", "Parameters:"):
            base = len(line) - len(line.lstrip())
            names: set[str] = set()
            entry_indent = None
            for body in lines[i + 1 :]:
                if not body.strip():
                    continue
                indent = len(body) - len(body.lstrip())
                if indent <= base:
                    break
                if entry_indent is None:
                    entry_indent = indent
                match = _ENTRY.match(body.strip())
                if indent == entry_indent and match:
                    names.add(match.group(1))
            return names
    return None


def parameters(fn: Callable) -> list[str]:
    """The parameters a caller passes (``self`` and ``cls`` left out)."""
    return [p for p in inspect.signature(fn).parameters if p not in ("self", "cls")]


def _public(module) -> Iterator[tuple[str, object]]:
    for name, obj in vars(module).items():
        if name.startswith("_") or getattr(obj, "__module__", None) != module.__name__:
            continue
        if inspect.isfunction(obj) or inspect.isclass(obj):
            yield name, obj


def _methods(cls: type) -> Iterator[tuple[str, Callable | None, object]]:
    for name, member in vars(cls).items():
        if name.startswith("_"):
            continue
        if isinstance(member, classmethod | staticmethod):
            yield name, member.__func__, member
        elif inspect.isfunction(member):
            yield name, member, member
        elif isinstance(member, property):
            yield name, None, member


def problems(module_name: str) -> list[str]:
    """What is undocumented in one module, one line per definition."""
    module = importlib.import_module(module_name)
    found = []

    def check(where: str, fn: Callable | None, doc: str | None) -> None:
        if not doc:
            found.append(f"{where}: no docstring")
            return
        if fn is None:
            return
        wanted = parameters(fn)
        if not wanted:
            return
        listed = args_documented(doc)
        if listed is None:
            found.append(f"{where}: no Args: section for {', '.join(wanted)}")
        elif missing := [p for p in wanted if p not in listed]:
            found.append(f"{where}: Args: omits {', '.join(missing)}")

    for name, obj in _public(module):
        where = f"{module_name}.{name}"
        if inspect.isfunction(obj):
            check(where, obj, obj.__doc__)
            continue
        check(where, None, obj.__doc__)
        init = vars(obj).get("__init__")
        if inspect.isfunction(init) and not dataclasses.is_dataclass(obj):
            class_args = args_documented(obj.__doc__)
            doc = obj.__doc__ if class_args is not None else init.__doc__
            check(f"{where}.__init__", init, doc)
        for method_name, fn, member in _methods(obj):
            doc = member.__doc__ if fn is None else fn.__doc__
            check(f"{where}.{method_name}", fn, doc)
    return found


@pytest.mark.parametrize("module_name", MODULES)
def test_public_functions_document_their_arguments(module_name: str) -> None:
    assert problems(module_name) == []


def test_the_check_sees_a_missing_argument() -> None:
    """The parser finds the names of an Args: section and nothing from other sections."""

    def documented(a: int, *rest: int, flag: bool = False, **extra: int) -> None:
        """Summary.

        Args:
            a: First.
                A continuation line: not a name.
            *rest: More.
            flag (bool): A flag.
            **extra: Keywords.

        Returns:
            b: not an argument.
        """

    assert args_documented(documented.__doc__) == {"a", "rest", "flag", "extra"}
    assert set(parameters(documented)) == {"a", "rest", "flag", "extra"}
    assert args_documented("Summary only.") is None
