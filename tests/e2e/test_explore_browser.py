"""The page of ``interp explore`` in a real browser: headless Chromium loads it from the local
server, runs the explorer's module, draws the chosen example and makes no request elsewhere.

The server runs in a thread (``make_server``, port 0); Chromium's proxy is a socket that
records every connection (loopback bypasses it), as in tests/e2e/test_browser.py, whose
Chromium fixture this reuses. ``--dump-dom`` returns the page after its virtual time budget.
"""

from __future__ import annotations

import re
import subprocess
import threading

import pytest
from e2e.test_browser import ConnectionRecorder, _console_problems, chromium  # noqa: F401
from export_runs import build_runs

from interp.report.explore import Explorer
from interp.report.explore_server import make_server


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    _, full = build_runs(tmp_path_factory)
    server = make_server(Explorer(full), port=0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


def test_served_page_renders_offline(served, chromium, tmp_path):  # noqa: F811
    host, port = served.server_address[:2]
    proxy = ConnectionRecorder()
    try:
        done = subprocess.run(
            [
                chromium,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
                f"--user-data-dir={tmp_path / 'chromium-profile'}",
                f"--proxy-server=http://127.0.0.1:{proxy.port}",
                "--enable-logging=stderr",
                "--v=0",
                "--virtual-time-budget=20000",
                "--dump-dom",
                f"http://{host}:{port}/",
            ],
            capture_output=True,
            text=True,
            timeout=180,
        )
    finally:
        proxy.close()
    dom = done.stdout
    assert "example 0: builtin/0" in dom, dom[-2000:]
    assert 'class="ix-transcript"' in dom and "read-out" in dom
    assert len(re.findall(r"<rect [^>]*data-layer=", dom)) == 2 * 3 * 3  # the example, the run mean
    assert 'class="ix-legend"' in dom  # the colour scale they share
    assert "run `interp sae features --run" in dom  # a view without data names its command
    assert _console_problems(done.stderr) == []
    page_requests = [line for line in proxy.lines if str(port) in line or "127.0.0.1" in line]
    assert page_requests == []
