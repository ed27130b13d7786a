"""No import cycle between the modules of interp and probes (issue 24), counting every import
that runs: at module level and inside functions (not those under ``if TYPE_CHECKING:``, which
never run). A package's own ``__init__`` that runs before a submodule is not an edge.
import-linter's layers see only what crosses layers; this test sees every edge, so a cycle
hidden inside one layer (two modules of one package importing each other, even inside
functions) fails here."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("interp", "probes")


def modules() -> dict[str, Path]:
    """Dotted name -> file, for every module of the packages (a package is its __init__)."""
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def imported(path: Path, name: str, known: set[str]) -> set[str]:
    """The known modules ``name`` (the module in ``path``) imports anywhere in its body."""
    is_package = path.name == "__init__.py"
    out: set[str] = set()
    tree = ast.parse(path.read_text(), str(path))
    type_only = {
        id(inner)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
        for inner in ast.walk(node)
    }
    for node in ast.walk(tree):
        if id(node) in type_only:
            continue
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_package else name.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                origin = ".".join(base + ([node.module] if node.module else []))
            else:
                origin = node.module or ""
            # `from pkg import mod` imports the module mod; `from mod import name` the module.
            targets = [
                f"{origin}.{alias.name}" if f"{origin}.{alias.name}" in known else origin
                for alias in node.names
            ]
        for target in targets:
            # The module itself, or the nearest known package above it.
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                out.add(target)
    return out


def graph() -> dict[str, set[str]]:
    found = modules()
    known = set(found)
    edges = {name: imported(path, name, known) for name, path in found.items()}
    return edges


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One cycle as a list of modules (first == last), or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_graph_sees_function_level_imports():
    edges = graph()
    # interp/__init__.py imports only errors at module level; cli commands import their
    # libraries inside functions: those edges must be seen.
    assert any(t.startswith("interp.") and t != "interp.errors" for t in edges["interp.cli.replay"])


def test_no_import_cycle():
    cycle = find_cycle(graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_unit_tests_mirror_the_packages():
    """tests/unit/<package>/test_<module>[_<aspect>].py (issue 24 part 5): each folder is a
    package of interp (or probes), and each file names one of its modules (``package``: its
    ``__init__``), so a module's tests are found by its path."""
    unit = ROOT / "tests" / "unit"
    folders = [p for p in unit.iterdir() if p.is_dir() and not p.name.startswith("__")]
    assert folders, "tests/unit has no package folders"
    for folder in folders:
        package = ROOT / "probes" if folder.name == "probes" else ROOT / "interp" / folder.name
        assert (package / "__init__.py").is_file(), f"tests/unit/{folder.name}: no such package"
        modules = {p.stem for p in package.glob("*.py") if p.stem != "__init__"} | {"package"}
        for test in folder.glob("test_*.py"):
            name = test.stem.removeprefix("test_")
            assert any(name == m or name.startswith(m + "_") for m in modules), (
                f"{test.relative_to(ROOT)} names no module of {package.relative_to(ROOT)}"
            )


def private_imports() -> list[str]:
    """``module: from other import _name`` for every private name one module of interp or
    probes takes from another (module level or inside functions)."""
    found = modules()
    known = set(found)
    bad = []
    for name, path in found.items():
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if not isinstance(node, ast.ImportFrom) or node.level:
                continue
            origin = node.module or ""
            if origin.split(".")[0] not in PACKAGES:
                continue
            for alias in node.names:
                inner = f"{origin}.{alias.name}"
                if alias.name.startswith("_") and inner not in known and origin != name:
                    bad.append(f"{name}: from {origin} import {alias.name}")
    return bad


def test_no_private_name_crosses_a_module_boundary():
    """What a module keeps private (a leading underscore) is used only where it is defined:
    another module that needs it gets a public name with a docstring (issue 24)."""
    assert private_imports() == []
