"""scripts/screenshots.py, the docs' screenshots: on the tiny run it builds, three PNGs
(explorer, findings box, circuit graph), each a real picture under the docs' size limit."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "screenshots.py"
PNG = b"\x89PNG\r\n\x1a\n"


def test_screenshots_of_the_tiny_run(tmp_path, one_torch_thread):
    if not (shutil.which("chromium") or shutil.which("chromium-browser")):
        pytest.skip("no chromium on PATH (`make chromium` installs Debian's package)")
    spec = importlib.util.spec_from_file_location("screenshots", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.main(["--out", str(tmp_path)])
    for name in ("explorer.png", "findings.png", "circuit-graph.png"):
        data = (tmp_path / name).read_bytes()
        assert data.startswith(PNG)
        width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
        assert width >= 1000 and height >= 500, (name, width, height)
        assert 20_000 < len(data) <= module.MAX_BYTES, (name, len(data))
