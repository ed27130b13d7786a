"""``interp.explore`` in a real JupyterLab, driven in a real browser (issue 25's "Done when").

Inside the test: JupyterLab on 127.0.0.1 (no browser of its own, a token passed in the URL,
every Jupyter folder in tmp, no news or update checks, the venv's Python as the kernel with
PYTHONPATH at this checkout), headless Chromium (Debian's package) driven by Debian's
``chromedriver`` through the W3C WebDriver protocol (plain HTTP; no driver package needed).
The browser opens a notebook that calls ``interp.explore`` on the tiny run, runs it, picks an
example, moves the round slider with the keyboard, clicks a heatmap cell, and reads the
transcript, the option probabilities and the heatmap from the page after each step; each is
compared with the run's own tables (:class:`interp.report.explore.Explorer`).

Nothing beyond 127.0.0.1: every request the page made (Chromium's performance log: each
``Network.requestWillBeSent`` and ``Network.webSocketCreated``) is to 127.0.0.1 or a local
scheme (data:, blob:); and Chromium's proxy is a socket that records every connection
(loopback bypasses it), as in tests/e2e/test_browser.py: none but Chromium's own services.

Skipped, with the reason, where chromium, chromedriver or JupyterLab is missing (``make
chromium`` installs both Debian packages as root; JupyterLab is in the ``dev`` extra); under
CI (``CI=true``) that is a failure, as for the other browser tests.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from e2e.test_browser import ConnectionRecorder, browser_hosts, chromium  # noqa: F401
from export_runs import build_runs

from interp.report.explore import Explorer

REPO = Path(__file__).resolve().parents[2]
TOKEN = "interp-explore-test"
LOCAL = ("http://127.0.0.1:", "ws://127.0.0.1:", "data:", "blob:", "about:")
BROWSER_PAGES = ("chrome://", "chrome-untrusted://")
STEP_S = 120  # the longest wait for one step's answer (a kernel start on a busy machine)


def _missing(what: str, reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI needs {what} for the Jupyter browser test: {reason}")
    pytest.skip(f"no {what}: {reason}")


@pytest.fixture(scope="module")
def chromedriver(chromium) -> str:  # noqa: F811
    found = shutil.which("chromedriver")
    if not found:
        _missing("chromedriver", "not on PATH (`make chromium` installs Debian's chromium-driver)")
    return found


@pytest.fixture(scope="module")
def jupyterlab() -> None:
    try:
        import anywidget  # noqa: F401
        import jupyterlab  # noqa: F401
    except ImportError as err:
        _missing("JupyterLab", f"{err} (pip install -e '.[dev,notebook]')")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_http(url: str, deadline: float, proc: subprocess.Popen, log: Path) -> None:
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"{proc.args[0]} exited: {log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except (urllib.error.URLError, OSError):
            time.sleep(0.2)
    raise AssertionError(f"{url} did not answer; log tail: {log.read_text()[-3000:]}")


NOTEBOOK_CELLS = [
    "import interp\n",
    "explorer = interp.explore(RUN)\nexplorer\n",
]


@pytest.fixture(scope="module")
def lab(jupyterlab, tmp_path_factory):
    """JupyterLab on 127.0.0.1 with one notebook, explore.ipynb, over the tiny run."""
    _, full = build_runs(tmp_path_factory)
    root = tmp_path_factory.mktemp("jupyter")
    nb_dir = root / "notebooks"
    nb_dir.mkdir()
    cells = [f"RUN = {str(full)!r}\n", *NOTEBOOK_CELLS]
    notebook = {
        "cells": [
            {
                "cell_type": "code",
                "metadata": {},
                "source": s,
                "outputs": [],
                "execution_count": None,
            }
            for s in cells
        ],
        "metadata": {
            "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}
        },
        "nbformat": 4,
        "nbformat_minor": 5,
    }
    (nb_dir / "explore.ipynb").write_text(json.dumps(notebook))
    env = dict(os.environ)
    env.update(
        PYTHONPATH=os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep),
        JUPYTER_CONFIG_DIR=str(root / "config"),
        JUPYTER_DATA_DIR=str(root / "data"),
        JUPYTER_RUNTIME_DIR=str(root / "runtime"),
        JUPYTERLAB_SETTINGS_DIR=str(root / "settings"),
        JUPYTERLAB_WORKSPACES_DIR=str(root / "workspaces"),
        IPYTHONDIR=str(root / "ipython"),
        JUPYTER_PLATFORM_DIRS="1",
        OMP_NUM_THREADS="1",
        HOME=str(root / "home"),
    )
    port = _free_port()
    log = root / "lab.log"
    command = [
        sys.executable,
        "-m",
        "jupyterlab",
        "--no-browser",
        "--ServerApp.ip=127.0.0.1",
        f"--ServerApp.port={port}",
        "--ServerApp.port_retries=0",
        f"--ServerApp.root_dir={nb_dir}",
        f"--IdentityProvider.token={TOKEN}",
        "--LabApp.expose_app_in_browser=True",
        "--LabApp.news_url=None",
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
        "--LanguageServerManager.autodetect=False",
    ]
    if os.geteuid() == 0:  # a container's root: JupyterLab refuses root without this
        command.append("--allow-root")
    with log.open("w") as out:
        proc = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=root)
    try:
        _wait_http(
            f"http://127.0.0.1:{port}/api/status?token={TOKEN}", time.monotonic() + 90, proc, log
        )
        yield {"url": f"http://127.0.0.1:{port}", "run": full, "log": log}
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class WebDriver:
    """The few W3C WebDriver commands the test needs, over chromedriver's HTTP port."""

    def __init__(self, chromedriver: str, chromium: str, profile: Path, proxy: int) -> None:  # noqa: F811
        self.port = _free_port()
        self.log = profile.parent / "chromedriver.log"
        self._out = self.log.open("w")
        self.proc = subprocess.Popen(
            [chromedriver, f"--port={self.port}", "--allowed-ips=127.0.0.1"],
            stdout=self._out,
            stderr=subprocess.STDOUT,
        )
        self.base = f"http://127.0.0.1:{self.port}"
        _wait_http(self.base + "/status", time.monotonic() + 30, self.proc, self.log)
        args = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--window-size=1400,1000",
            f"--user-data-dir={profile}",
            f"--proxy-server=http://127.0.0.1:{proxy}",
        ]
        caps = {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": chromium, "args": args},
            "goog:loggingPrefs": {"performance": "ALL", "browser": "ALL"},
        }
        got = self._call("POST", "/session", {"capabilities": {"alwaysMatch": caps}})
        self.session = got["sessionId"]

    def _call(self, method: str, path: str, body: dict | None = None):
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.base + path, data=data, method=method)
        request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=120) as answer:
                return json.loads(answer.read())["value"]
        except urllib.error.HTTPError as err:
            raise AssertionError(f"WebDriver {method} {path}: {err.read()[:2000]!r}") from err

    def cmd(self, method: str, path: str, body: dict | None = None):
        return self._call(method, f"/session/{self.session}{path}", body)

    def get(self, url: str) -> None:
        self.cmd("POST", "/url", {"url": url})

    def js(self, script: str, *args):
        return self.cmd("POST", "/execute/sync", {"script": script, "args": list(args)})

    def find(self, css: str) -> dict:
        return self.cmd("POST", "/element", {"using": "css selector", "value": css})

    def click(self, element: dict) -> None:
        self.cmd("POST", f"/element/{_id(element)}/click", {})

    def drag(self, element: dict, x0: int, x1: int) -> None:
        """The mouse pressed at ``x0`` px from the element's centre, moved to ``x1``, released."""
        moves = [
            {"type": "pointerMove", "origin": element, "x": x0, "y": 0},
            {"type": "pointerDown", "button": 0},
            {"type": "pointerMove", "origin": element, "x": (x0 + x1) // 2, "y": 0},
            {"type": "pointerMove", "origin": element, "x": x1, "y": 0},
            {"type": "pointerUp", "button": 0},
        ]
        mouse = {"type": "pointer", "id": "mouse", "parameters": {"pointerType": "mouse"}}
        self.cmd("POST", "/actions", {"actions": [{**mouse, "actions": moves}]})

    def logs(self, kind: str) -> list[dict]:
        return self.cmd("POST", "/se/log", {"type": kind})

    def wait(self, script: str, what: str, *args, timeout: float = STEP_S):
        """Polls ``script`` (a function body returning a value) until it returns a truthy one."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = self.js(script, *args)
            if got:
                return got
            time.sleep(0.25)
        raise AssertionError(f"timed out waiting for {what}")

    def quit(self) -> None:
        with contextlib.suppress(AssertionError, OSError):
            self.cmd("DELETE", "")
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self._out.close()


def _id(element: dict) -> str:
    return element["element-6066-11e4-a52e-4f735466cecf"]


# The notebook's panel in JupyterLab's main area (window.jupyterapp: expose_app_in_browser);
# its kernel started and idle.
NOTEBOOK_IDLE = """
const app = window.jupyterapp;
if (!app) return false;
const w = Array.from(app.shell.widgets('main'))
  .find((x) => x.context && x.context.path === 'explore.ipynb');
const kernel = w && w.sessionContext && w.sessionContext.session && w.sessionContext.session.kernel;
return !!(kernel && kernel.status === 'idle' && w.content.widgets.length > 0);
"""
# Run every cell: JupyterLab's own command, on that notebook made current.
RUN_ALL = """
const app = window.jupyterapp;
const w = Array.from(app.shell.widgets('main'))
  .find((x) => x.context && x.context.path === 'explore.ipynb');
app.shell.activateById(w.id);
app.commands.execute('notebook:run-all-cells');
"""

# What the page shows, read in one call: the widget's DOM (explore.js) as plain values.
READ = """
const root = document.querySelector('.interp-explore');
if (!root) return null;
const h3 = Array.from(root.querySelectorAll('h3')).map((e) => e.textContent);
const title = h3.find((t) => t.startsWith('example ')) || null;
const transcript = root.querySelector('.ix-transcript');
const spans = transcript ? Array.from(transcript.querySelectorAll('span')) : [];
const rounds = Array.from(root.querySelectorAll('.ix-round-row')).map((r) => ({
  text: r.textContent, bold: r.style.fontWeight === 'bold',
  probs: Object.fromEntries(Array.from(r.querySelectorAll('.ix-probs')).map((p) => [p.dataset.kind,
    Array.from(p.querySelectorAll('.ix-prob')).map((x) => x.textContent)]))}));
const maps = Array.from(root.querySelectorAll('.ix-heatmap')).map((m) => ({
  name: m.dataset.name,
  cells: Array.from(m.querySelectorAll('rect[data-layer]')).map((c) => ({
    layer: Number(c.dataset.layer), round: Number(c.dataset.round),
    value: c.dataset.value === '' ? null : Number(c.dataset.value),
    fill: c.getAttribute('fill'), picked: c.getAttribute('stroke') === '#000'})),
}));
const lg = root.querySelector('.ix-legend');
const legend = lg ? {lo: Number(lg.dataset.lo), hi: Number(lg.dataset.hi), kind: lg.dataset.kind,
  loText: lg.querySelector('.ix-legend-lo').textContent,
  hiText: lg.querySelector('.ix-legend-hi').textContent} : null;
const slider = root.querySelector('input.ix-round');
return {title, headings: h3, transcript: transcript ? transcript.textContent : null,
  active: spans.filter((s) => s.style.opacity === '').map((s) => Number(s.dataset.round)),
  rounds, maps, legend, slider: slider ? Number(slider.value) : null,
  busy: (root.querySelector('.ix-busy') || {}).textContent || '',
  picker: (root.querySelector('select.ix-example') || {}).value};
"""


def test_explore_in_jupyterlab_in_chromium(chromium, chromedriver, browser_hosts, lab, tmp_path):  # noqa: F811
    explorer = Explorer(lab["run"])
    proxy = ConnectionRecorder()
    driver = WebDriver(chromedriver, chromium, tmp_path / "profile", proxy.port)
    try:
        driver.get(f"{lab['url']}/lab/tree/explore.ipynb?reset&token={TOKEN}")
        # the notebook open, its kernel idle: run every cell (JupyterLab's own command)
        driver.wait(NOTEBOOK_IDLE, "the notebook and its kernel")
        driver.js(RUN_ALL)
        first = driver.wait(
            SHOWN + "return r && r.title && r.maps.length ? r : null;",
            "the explorer widget",
        )
        # the first example, the last round, no layer picked
        view = explorer.example_view(0)
        assert first["title"] == f"example 0: {view['example_id']}"
        assert first["slider"] == explorer.n_rounds - 1
        segments = explorer.transcript(0)["segments"]
        assert first["transcript"] == "".join(s["text"] for s in segments)
        _check_rounds(first, view)
        _check_heatmap(first, explorer, 0)

        # 1. pick another example (its option in the picker, clicked)
        pick = 3
        driver.click(driver.find(f"select.ix-example option[value='{pick}']"))
        picked = driver.wait(
            SHOWN + "return r && r.title && r.title.startsWith(arguments[0]) ? r : null;",
            "the picked example",
            f"example {pick}:",
        )
        view = explorer.example_view(pick)
        assert picked["transcript"] == "".join(
            s["text"] for s in explorer.transcript(pick)["segments"]
        )
        assert picked["picker"] == str(pick) and picked["transcript"] != first["transcript"]
        _check_rounds(picked, view)
        _check_heatmap(picked, explorer, pick)
        assert picked["maps"][0]["cells"] != first["maps"][0]["cells"]

        # 2. the round slider dragged from its right end (the last round) to its middle
        slider = driver.find("input.ix-round")
        width = driver.js("return arguments[0].getBoundingClientRect().width;", slider)
        driver.drag(slider, int(width / 2) - 3, 0)
        middle = (explorer.n_rounds - 1) // 2
        assert 0 < middle < explorer.n_rounds - 1
        moved = driver.wait(
            SHOWN + "return r && r.rounds.some((x, i) => x.bold && i === arguments[0]) ? r : null;",
            "the round moved",
            middle,
        )
        assert moved["slider"] == middle
        assert [i for i, r in enumerate(moved["rounds"]) if r["bold"]] == [middle]
        assert set(moved["active"]) == {middle}  # the round's spans not dimmed
        assert set(picked["active"]) == {explorer.n_rounds - 1}

        # 3. click a heatmap cell: layer 1, round 0 of this example's map
        cell = driver.find(".ix-heatmap[data-name='example'] rect[data-layer='1'][data-round='0']")
        driver.click(cell)
        clicked = driver.wait(
            SHOWN
            + "return r && r.slider === 0 && r.maps[0].cells.some((c) => c.picked) ? r : null;",
            "the clicked cell",
        )
        picked_cells = [
            (c["layer"], c["round"]) for c in clicked["maps"][0]["cells"] if c["picked"]
        ]
        assert picked_cells == [(1, 0)]
        assert [i for i, r in enumerate(clicked["rounds"]) if r["bold"]] == [0]
        assert set(clicked["active"]) == {0}
        assert "patching (layer 1)" in clicked["headings"]  # the views below follow the layer
        # the page's requests, all of them: 127.0.0.1 or local schemes only
        requests = _requested_urls(driver.logs("performance"))
        assert requests, "the performance log is empty"
        assert [u for u in requests if not u.startswith(LOCAL)] == []
        page = driver.js("return document.documentElement.outerHTML;")
        errors = [
            e["message"]
            for e in driver.logs("browser")
            if e["level"] == "SEVERE" and "favicon" not in e["message"]
        ]
    finally:
        driver.quit()
        proxy.close()
    assert proxy.page_requests(page, browser_hosts) == []
    assert errors == []


SHOWN = "const r = (function () {" + READ + "})();\n"


def _check_rounds(shown: dict, view: dict) -> None:
    """Each round's line: its answer, and its raw option probabilities as the run stores them
    (shown to 3 significant digits)."""
    assert len(shown["rounds"]) == len(view["rounds"])
    for line, r in zip(shown["rounds"], view["rounds"], strict=True):
        assert line["text"].startswith(f"R{r['round']}: {r['answer_text']}")
        letters = [p.split()[0] for p in line["probs"]["raw"]]
        assert letters == [chr(97 + i) for i in range(len(r["raw"]))]
        numbers = [float(p.split()[1]) for p in line["probs"]["raw"]]
        assert numbers == pytest.approx(r["raw"], rel=5e-3)


def _check_heatmap(shown: dict, explorer: Explorer, example: int) -> None:
    """The example's heatmap: each cell's value is the probe's stored score; its legend
    names the range the colours span."""
    grid = explorer.concept_heatmap(example)
    (mine,) = [m for m in shown["maps"] if m["name"] == "example"]
    for c in mine["cells"]:
        want = grid["example"][grid["layers"].index(c["layer"])][grid["rounds"].index(c["round"])]
        assert c["value"] == pytest.approx(want, rel=1e-5, abs=1e-6)
    values = [c["value"] for c in mine["cells"] if c["value"] is not None]
    scale = grid["scale"]
    legend = shown["legend"]
    assert legend is not None and legend["kind"] == scale["kind"]
    assert (legend["lo"], legend["hi"]) == pytest.approx((scale["lo"], scale["hi"]))
    assert legend["lo"] <= min(values) and max(values) <= legend["hi"]
    # the numbers at its ends (3 significant digits)
    shown_ends = (float(legend["loText"]), float(legend["hiText"]))
    assert shown_ends == pytest.approx((scale["lo"], scale["hi"]), rel=5e-3)
    # colours follow the values: the smallest and the largest differ where the values do
    by_value = sorted(mine["cells"], key=lambda c: c["value"])
    if by_value[0]["value"] < by_value[-1]["value"]:
        assert by_value[0]["fill"] != by_value[-1]["fill"]


def _requested_urls(entries: list[dict]) -> list[str]:
    """Every URL the page requested (resources, fetches, WebSockets) in Chromium's log."""
    urls = []
    for entry in entries:
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            # the browser's own pages (its new-tab page, shown before the first navigation)
            if message["params"].get("documentURL", "").startswith(BROWSER_PAGES):
                continue
            urls.append(message["params"]["request"]["url"])
        elif message["method"] == "Network.webSocketCreated":
            urls.append(message["params"]["url"])
    return urls
