"""The README's Python example (issue 24, item 4) runs as written, on the tiny model, in an
empty folder: the example derives its layer and head from ``model.cfg`` (an example that wrote
in SmolLM2's layers would fail here), and it leaves a complete, exported run."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from interp.runs.store import Run

README = Path(__file__).resolve().parents[2] / "README.md"

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _python_blocks() -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", README.read_text(), flags=re.S | re.M)


def test_the_readme_python_example_runs_as_written_on_tiny(tmp_path, monkeypatch, capsys):
    blocks = _python_blocks()
    assert len(blocks) == 1
    code = blocks[0]
    assert 'load_model("tiny")' in code
    assert len(code.strip().splitlines()) <= 12
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "README.md", "exec"), {"__name__": "readme"})
    run = Run.open(tmp_path / "artifacts/runs/mine")
    assert run.rounds()["round"].max() == 2
    assert run.analyses("probes") == ["stereotype"]
    assert len(run.analyses("patching")) == 1
    assert (run.path / "index.html").is_file()
    assert "round" in capsys.readouterr().out
