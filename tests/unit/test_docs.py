"""The manual (issue 24, item 4): README.md stays short, every page mkdocs.yml names exists and
every page exists in its nav, and every ``interp ...`` command the README or a docs page shows
names a real command, with options that command has. The strict site build itself runs in
``make docs``."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import typer
import yaml

from interp.cli import app

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
README = ROOT / "README.md"


def _nav_pages(nav: list) -> list[str]:
    pages = []
    for item in nav:
        value = next(iter(item.values())) if isinstance(item, dict) else item
        pages += _nav_pages(value) if isinstance(value, list) else [value]
    return pages


def _mkdocs() -> dict:
    # mkdocs.yml may hold !!python/name tags; the nav never does: read it as plain YAML.
    return yaml.load((ROOT / "mkdocs.yml").read_text(), Loader=yaml.BaseLoader)


def _documents() -> list[Path]:
    return [README, *sorted(DOCS.rglob("*.md"))]


def _commands(text: str) -> list[str]:
    """The ``interp ...`` command lines a page shows: shell blocks (continuation lines joined)
    and inline code spans (a paragraph's lines joined, so a span may wrap)."""
    found = []
    blocks = re.findall(r"^```(?:bash|sh|console)?\n(.*?)^```", text, flags=re.S | re.M)
    for block in blocks:
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split("#", 1)[0].strip()
            if line.startswith("interp "):
                found.append(line)
    prose = re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)
    for paragraph in prose.split("\n\n"):
        for span in re.findall(r"`([^`]+)`", paragraph.replace("\n", " ")):
            if span.startswith("interp "):
                found.append(span)
    return found


def _cli() -> Any:
    return typer.main.get_command(app)


def _options(command: Any) -> set[str]:
    """A command's option names; a group's (`interp experiment NAME --run`): any of its
    commands'."""
    names = {name for param in command.params for name in param.opts + param.secondary_opts}
    for sub in getattr(command, "commands", {}).values():
        names |= _options(sub)
    return names


def _resolve(line: str) -> tuple[Any, str, list[str]]:
    """The command a line names (None: none), its name, and the words after it."""
    words = line.split()[1:]
    command = _cli()
    name = "interp"
    # a group has .commands (typer may carry its own copy of click: no isinstance)
    while hasattr(command, "commands") and words and re.fullmatch(r"[a-z][a-z-]*", words[0]):
        # `interp experiment convergence|superficial`: alternatives, the first one resolved
        word = words.pop(0).split("|")[0]
        sub = command.commands.get(word)
        if sub is None:
            return None, f"{name} {word}", words
        command, name = sub, f"{name} {word}"
    return command, name, words


def test_readme_is_at_most_250_lines():
    lines = README.read_text().splitlines()
    assert len(lines) <= 250, f"README.md has {len(lines)} lines: move the detail into docs/"


def test_every_nav_page_exists_and_every_page_is_in_the_nav():
    nav = _nav_pages(_mkdocs()["nav"])
    missing = [page for page in nav if not (DOCS / page).is_file()]
    assert not missing, f"mkdocs.yml names pages that do not exist: {missing}"
    on_disk = {str(p.relative_to(DOCS)) for p in DOCS.rglob("*.md")}
    assert on_disk - set(nav) == set(), "pages not in mkdocs.yml's nav"
    assert len(nav) == len(set(nav)), "a page is in the nav twice"


def test_readme_links_into_docs_exist():
    for target in re.findall(r"\]\((docs/[^)#]+)", README.read_text()):
        assert (ROOT / target).is_file(), target


@pytest.mark.parametrize("path", _documents(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_command_shown_is_a_real_command_with_real_options(path):
    lines = _commands(path.read_text())
    for line in lines:
        command, name, words = _resolve(line)
        assert command is not None, f"{path.name}: `{line}` names no command ({name})"
        options = _options(command)
        for word in words:
            flag = re.match(r"\[?(--?[a-z][a-z0-9-]*)", word)
            if flag and flag.group(1) not in {"-h", "--help"}:
                assert flag.group(1) in options, f"{path.name}: `{line}`: {name} has no {word}"


def test_the_command_parser_sees_commands():
    # The checks above would pass vacuously if nothing were found.
    text = "```bash\ninterp replay --model tiny \\\n    --out x\n```\nsee `interp sae\ntrain`\n"
    assert _commands(text) == ["interp replay --model tiny      --out x", "interp sae train"]
    assert _resolve("interp sae train --hook h")[1] == "interp sae train"
    assert _resolve("interp nonsense --x")[0] is None
    assert sum(len(_commands(p.read_text())) for p in _documents()) > 50
