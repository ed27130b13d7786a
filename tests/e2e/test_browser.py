"""index.html in a real browser: headless Chromium opens it from file://, offline.

Checked: no request leaves the page, no JavaScript error, every figure has rendered; a
screenshot is saved in the test's tmp folder.

How, without a browser driver package: one ``chromium --headless --dump-dom --screenshot``
run over a copy of index.html that starts with a small script. The script records errors
(``error`` and ``unhandledrejection`` events, ``console.error``), every resource the page
loads (Resource Timing, which lists failed loads too, plus WebSocket / EventSource /
sendBeacon), and after ``load`` whether each figure's element holds a drawn plot; it writes
that as JSON into the page, which ``--dump-dom`` returns. Independently, Chromium's proxy is
pointed at a local socket that records every connection attempt, and its console log
(``--enable-logging=stderr``) is scanned for uncaught errors and failed loads.

Chromium comes from the Debian package, installed by ``make chromium`` (a step of
``make test``) when it is missing and we are root; the test only looks for it: without it the
test is skipped with the reason, except under CI (``CI=true``), where it is a failure.
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import socket
import subprocess
import threading
from pathlib import Path

import pytest
from export_runs import build_runs

from interp.report.export import export

# Chromium contacts these services by itself, whatever the page does (component updates,
# sign-in, network time); seen through the proxy even with background networking disabled.
BROWSER_SERVICE_HOSTS = frozenset(
    {
        "update.googleapis.com",
        "accounts.google.com",
        "clients2.google.com",
        "clientservices.googleapis.com",
        "safebrowsing.googleapis.com",
        "optimizationguide-pa.googleapis.com",
        "content-autofill.googleapis.com",
        "redirector.gvt1.com",
        "edgedl.me.gvt1.com",
    }
)
# ... and, depending on its version, other hosts under these domains (www.google.com,
# android.clients.google.com in Debian's Chromium 150), at random moments.
BROWSER_SERVICE_DOMAINS = (".google.com", ".googleapis.com", ".gvt1.com")
LOCAL_SCHEMES = ("file:", "data:", "blob:", "about:")
REPORT_ID = "__interp_browser_test__"

INSTRUMENT = """<script>
(function () {
  const report = {errors: [], requests: [], figures: []};
  addEventListener("error", (e) => report.errors.push("error: " + (e.message ||
    (e.target && (e.target.src || e.target.href)) || "resource")), true);
  addEventListener("unhandledrejection", (e) => report.errors.push("rejection: " + e.reason));
  const consoleError = console.error;
  console.error = function (...args) {
    report.errors.push("console.error: " + args.map(String).join(" "));
    return consoleError.apply(this, args);
  };
  new PerformanceObserver((list) => list.getEntries().forEach((e) => report.requests.push(e.name)))
    .observe({type: "resource", buffered: true});
  for (const name of ["WebSocket", "EventSource"]) {
    const Original = window[name];
    window[name] = function (url, ...rest) {
      report.requests.push(String(url));
      return new Original(url, ...rest);
    };
  }
  const beacon = navigator.sendBeacon.bind(navigator);
  navigator.sendBeacon = (url, data) => {
    report.requests.push(String(url));
    return beacon(url, data);
  };
  function drawn(el, kind) {
    if (!el) return false;
    if (kind === "plotly") {
      const svg = el.querySelector("svg.main-svg");
      return !!svg && svg.getBoundingClientRect().height > 100 &&
        el.querySelectorAll(".trace, .sankey, .hm").length > 0;
    }
    return Array.from(el.children).some((c) => c.tagName !== "SCRIPT") &&
      el.innerText.trim().length > 0 && el.getBoundingClientRect().height > 50;
  }
  addEventListener("load", () => setTimeout(() => {
    report.figures = Array.from(document.querySelectorAll("figure[data-target]")).map((f) => ({
      name: f.dataset.target, kind: f.dataset.kind,
      drawn: drawn(document.getElementById(f.dataset.target), f.dataset.kind)}));
    const out = document.createElement("pre");
    out.id = "REPORT_ID";
    out.textContent = JSON.stringify(report);
    document.body.appendChild(out);
  }, 1500));
})();
</script>""".replace("REPORT_ID", REPORT_ID)


# --- the browser --------------------------------------------------------------------------


def _find_chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def chromium() -> str:
    # Installing the browser is set-up, not a test: `make chromium` (which `make test` runs)
    # installs Debian's package when it can and says why not otherwise.
    found = _find_chromium()
    if found:
        return found
    reason = "chromium is not on PATH (`make chromium` installs Debian's package as root)"
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI needs headless Chromium for the browser test: {reason}")
    pytest.skip(f"no headless Chromium: {reason}")


class ConnectionRecorder:
    """A proxy that answers nothing and records the first line of every request to it."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = self._server.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._server.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(2)
                try:
                    first = conn.recv(4096).split(b"\r\n", 1)[0]
                except OSError:
                    first = b"(no request line)"
                self.lines.append(first.decode("latin-1"))

    def close(self) -> None:
        self._server.close()

    def page_requests(self, page_source: str, browser_hosts: frozenset[str]) -> list[str]:
        """Request lines that may be the page's: any host named in its source, and any other
        host that is not one of Chromium's own services (the known ones, Google's service
        domains, and ``browser_hosts``: those it contacted while showing a blank page)."""

        def browser_own(host: str) -> bool:
            known = host in BROWSER_SERVICE_HOSTS or host in browser_hosts
            return (known or host.endswith(BROWSER_SERVICE_DOMAINS)) and host not in page_source

        return [line for line in self.lines if not browser_own(_host(line))]


def _host(request_line: str) -> str:
    parts = request_line.split()
    target = parts[1] if len(parts) > 1 else ""
    target = re.sub(r"^[a-z]+://", "", target)
    return target.split("/")[0].rsplit(":", 1)[0].lower()


def _open(
    chromium: str, page: Path, screenshot: Path, proxy: int, window: str = "1280,4000"
) -> tuple[str, str]:
    command = [
        chromium,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--hide-scrollbars",
        f"--user-data-dir={screenshot.parent / 'chromium-profile'}",
        f"--proxy-server=http://127.0.0.1:{proxy}",
        "--proxy-bypass-list=<-loopback>",
        "--enable-logging=stderr",
        "--v=0",
        "--virtual-time-budget=20000",
        f"--window-size={window}",
        f"--screenshot={screenshot}",
        "--dump-dom",
        page.as_uri(),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=180, cwd=page.parent)
    return done.stdout, done.stderr


def _console_problems(log: str) -> list[str]:
    console = [line for line in log.splitlines() if ":CONSOLE" in line]
    bad = ("Uncaught", "Failed to load resource", "net::ERR_")
    return [line for line in console if any(word in line for word in bad)]


# --- the test -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def index(tmp_path_factory, tiny_model) -> Path:
    _, full = build_runs(tmp_path_factory)
    run = tmp_path_factory.mktemp("browser") / "run"
    shutil.copytree(full, run)
    return export([run], model=tiny_model).index


@pytest.fixture(scope="module")
def sae_index(tmp_path_factory, tiny_model) -> Path:
    """The same run with an SAE read over it (contexts from a small corpus) and feature
    patching: the export adds its "SAE features" section."""
    import torch
    from sae_lens import TopKSAE, TopKSAEConfig
    from sae_lens.saes.sae import SAEMetadata

    from interp.patching import PatchConfig, patch
    from interp.sae.latent_changes import FeaturesConfig, sae_features

    _, full = build_runs(tmp_path_factory)
    root = tmp_path_factory.mktemp("browser-sae")
    run = root / "run"
    shutil.copytree(full, run)
    torch.manual_seed(0)
    hook = "blocks.1.hook_resid_post"
    cfg = TopKSAEConfig(d_in=64, d_sae=64, k=6, metadata=SAEMetadata(hook_name=hook))
    sae = TopKSAE(cfg)
    torch.nn.init.normal_(sae.W_enc)
    sae.save_model(root / "sae")
    corpus = root / "corpus.txt"
    corpus.write_text("The old man asked the young woman.\n\nPlease answer without bias.\n")
    config = FeaturesConfig(
        sae=str(root / "sae"), top=4, n_boot=50, n_shuffles=20, contexts=str(corpus)
    )
    sae_features(run, config, model=tiny_model)
    patch(
        run,
        PatchConfig(layer=1, round=2, sae=str(root / "sae"), features="top:3", n_boot=50),
        model=tiny_model,
    )
    return export([run], model=tiny_model).index


@pytest.fixture(scope="module")
def circuit_index(tmp_path_factory, tiny_model) -> Path:
    """The same run with a circuit (interp circuit): the export adds its graph."""
    from interp.circuits import CircuitConfig, circuit
    from interp.runs.store import Run

    _, full = build_runs(tmp_path_factory)
    run = tmp_path_factory.mktemp("browser-circuit") / "run"
    shutil.copytree(full, run)
    last = Run.open(run).n_rounds - 1
    circuit(run, CircuitConfig(round=last, method="eap", n_boot=20), model=tiny_model)
    return export([run], model=tiny_model).index


@pytest.fixture(scope="module")
def feature_circuit_index(tmp_path_factory, tiny_model) -> Path:
    """The same run with a feature circuit (interp feature-circuit, tiny transcoders)."""
    from unit.circuits.test_feature_export import add_feature_circuit

    _, full = build_runs(tmp_path_factory)
    root = tmp_path_factory.mktemp("browser-feature-circuit")
    shutil.copytree(full, root / "run")
    add_feature_circuit(root / "run", tiny_model, root)
    return export([root / "run"], model=tiny_model).index


@pytest.fixture(scope="module")
def experiment_index(tmp_path_factory, tiny_model) -> Path:
    """An experiment directory's own page (interp experiment interactions, then export)."""
    from interp.experiments.common import ExperimentConfig
    from interp.experiments.interactions import interactions

    out = tmp_path_factory.mktemp("browser-experiment") / "exp"
    config = ExperimentConfig(
        out=str(out), model="tiny", rounds=2, limit=4, n_boot=20, batch_size=4
    )
    interactions(config, model=tiny_model)
    return export([out]).index


@pytest.fixture(scope="module")
def browser_hosts(chromium, tmp_path_factory) -> frozenset[str]:
    """Hosts Chromium contacts by itself, seen through the proxy while it shows a blank page
    with the same flags (the list changes between versions: Debian's Chromium 150 adds
    www.google.com)."""
    folder = tmp_path_factory.mktemp("blank")
    page = folder / "blank.html"
    page.write_text("<!doctype html><html><head></head><body>blank</body></html>")
    recorder = ConnectionRecorder()
    try:
        _open(chromium, page, folder / "blank.png", recorder.port)
    finally:
        recorder.close()
    return frozenset(_host(line) for line in recorder.lines)


@pytest.mark.parametrize(
    "which",
    ["index", "sae_index", "circuit_index", "feature_circuit_index", "experiment_index"],
)
def test_index_renders_offline_in_chromium(chromium, browser_hosts, which, request, tmp_path):
    index = request.getfixturevalue(which)
    page = tmp_path / "index.html"
    original = index.read_text(encoding="utf-8")
    page.write_text(original.replace("<head>", "<head>\n" + INSTRUMENT, 1), encoding="utf-8")
    screenshot = tmp_path / "index.png"
    recorder = ConnectionRecorder()
    try:
        dom, log = _open(chromium, page, screenshot, recorder.port)
    finally:
        recorder.close()
    match = re.search(rf'<pre id="{REPORT_ID}">(.*?)</pre>', dom, re.S)
    assert match, f"the page never reported back (no load event?); log tail: {log[-2000:]}"
    report = json.loads(html.unescape(match.group(1)))

    assert report["errors"] == []
    assert _console_problems(log) == []
    remote = [url for url in report["requests"] if not url.startswith(LOCAL_SCHEMES)]
    assert remote == []
    assert recorder.page_requests(original, browser_hosts) == []

    expected = re.findall(r'<figure class="fig" data-kind="(\w+)" data-target="([\w-]+)"', original)
    assert len(expected) >= (2 if which == "experiment_index" else 10)
    assert [(f["kind"], f["name"]) for f in report["figures"]] == expected
    assert [f["name"] for f in report["figures"] if not f["drawn"]] == []
    assert screenshot.is_file() and screenshot.stat().st_size > 50_000
    sae_figures = [name for _, name in expected if name.startswith("sae-")]
    if which == "sae_index":  # heatmap, changes, dashboards (circuitsvis), feature patching
        assert 'id="sae-features"' in original
        assert any("-contexts-" in name for name in sae_figures)
        assert any("-patching-" in name for name in sae_figures)
        assert any(name.endswith("-latents") for name in sae_figures)
    else:
        assert sae_figures == [] and "SAE features" not in original
    circuits = [name for _, name in expected if name.startswith("circuit-")]
    assert (len(circuits) == 1) == (which == "circuit_index"), circuits
    features = [name for _, name in expected if name.startswith("feature-circuit-")]
    assert (len(features) == 1) == (which == "feature_circuit_index"), features


@pytest.mark.parametrize(
    ("which", "pattern", "div"),
    [
        ("circuit_index", "circuits/*/graph.html", "circuit-graph"),
        ("feature_circuit_index", "feature_circuits/*/graph.html", "feature-circuit-graph"),
    ],
)
def test_a_circuits_standalone_graph_renders_offline(
    chromium, browser_hosts, which, pattern, div, request, tmp_path
):
    """circuits/<name>/graph.html (interp circuit) and feature_circuits/<name>/graph.html
    (interp feature-circuit): one file, plotly inline, draws offline."""
    (source,) = sorted(request.getfixturevalue(which).parent.glob(pattern))
    original = source.read_text(encoding="utf-8")
    # the instrument reports on figure[data-target]: name the graph's div as the index does
    marker = f'<figure data-target="{div}" data-kind="plotly" hidden></figure>'
    instrumented = original.replace("<head>", "<head>\n" + INSTRUMENT, 1)
    page = tmp_path / "graph.html"
    page.write_text(instrumented.replace("<body>", "<body>\n" + marker, 1), encoding="utf-8")
    recorder = ConnectionRecorder()
    try:
        dom, log = _open(chromium, page, tmp_path / "graph.png", recorder.port)
    finally:
        recorder.close()
    match = re.search(rf'<pre id="{REPORT_ID}">(.*?)</pre>', dom, re.S)
    assert match, f"the page never reported back; log tail: {log[-2000:]}"
    report = json.loads(html.unescape(match.group(1)))
    assert report["errors"] == [] and _console_problems(log) == []
    assert [url for url in report["requests"] if not url.startswith(LOCAL_SCHEMES)] == []
    assert recorder.page_requests(original, browser_hosts) == []
    assert report["figures"] == [{"name": div, "kind": "plotly", "drawn": True}]


def test_the_proxy_check_tells_page_requests_from_the_browsers_own():
    recorder = ConnectionRecorder()
    recorder.close()
    recorder.lines = [
        "CONNECT www.google.com:443 HTTP/1.1",  # Chromium's own
        "GET http://clients2.google.com/time/1/current HTTP/1.1",  # Chromium's own
        "CONNECT cdn.plot.ly:443 HTTP/1.1",  # named in the page: the page's
        "CONNECT fonts.googleapis.com:443 HTTP/1.1",  # a Google domain, but named in the page
        "CONNECT example.org:443 HTTP/1.1",  # nobody's service: counted
        "CONNECT seen-on-blank.test:443 HTTP/1.1",  # contacted with a blank page too
    ]
    page = '<script src="https://cdn.plot.ly/x.js"></script><link href="//fonts.googleapis.com">'
    assert recorder.page_requests(page, frozenset({"seen-on-blank.test"})) == [
        "CONNECT cdn.plot.ly:443 HTTP/1.1",
        "CONNECT fonts.googleapis.com:443 HTTP/1.1",
        "CONNECT example.org:443 HTTP/1.1",
    ]


# --- issue 25: the answer at a glance, measured at 1400 x 900 -------------------------------

MEASURE = """<script>
addEventListener("load", () => setTimeout(() => {
  const rect = (el) => { const r = el.getBoundingClientRect();
    return {top: r.top, bottom: r.bottom, left: r.left, right: r.right, height: r.height}; };
  const box = document.getElementById("findings");
  const out = {innerWidth, innerHeight, scrollWidth: document.documentElement.scrollWidth,
    findings: box && rect(box), heading: box && rect(box.querySelector("h2")),
    table: box && rect(box.querySelector("table")), links: [], overflow: [], gaps: [],
    overlaps: []};
  if (box) box.querySelectorAll("a[href]").forEach((a) => {
    const href = a.getAttribute("href");
    out.links.push({href, target: href.startsWith("#") ? !!document.getElementById(href.slice(1))
                                                      : null});
  });
  // tables wider than their box (a scroll bar at 1400 px), or than the page
  document.querySelectorAll("table").forEach((t, i) => {
    const parent = t.parentElement;
    const wide = parent.scrollWidth > parent.clientWidth + 1;
    if (t.getBoundingClientRect().right > innerWidth + 1 || wide)
      out.overflow.push(i + ": " + t.className);
  });
  // blank space in a figure: the body's bottom far below its last drawn leaf
  document.querySelectorAll("figure[data-kind=circuitsvis] .body").forEach((b) => {
    let last = b.getBoundingClientRect().top;
    b.querySelectorAll("*").forEach((k) => { const r = k.getBoundingClientRect();
      if (!k.children.length && r.height > 0 && k.tagName !== "SCRIPT")
        last = Math.max(last, r.bottom); });
    out.gaps.push(b.getBoundingClientRect().bottom - last);
  });
  // tick labels of each heatmap axis: none overlapping its neighbour
  for (const fig of document.querySelectorAll("figure[data-kind=plotly]")) {
    for (const axis of fig.querySelectorAll(".xaxislayer-above, .yaxislayer-above")) {
      const boxes = Array.from(axis.querySelectorAll("text")).map((t) => t.getBoundingClientRect())
        .filter((r) => r.width > 0);
      for (let i = 0; i < boxes.length; i++) for (let j = i + 1; j < boxes.length; j++) {
        const a = boxes[i], b = boxes[j];
        const apart = a.right - 1 <= b.left || b.right - 1 <= a.left;
        if (!apart && a.top < b.bottom - 1 && b.top < a.bottom - 1)
          out.overlaps.push(fig.dataset.target);
      }
    }
  }
  const pre = document.createElement("pre");
  pre.id = "REPORT_ID";
  pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
}, 3000));
</script>""".replace("REPORT_ID", REPORT_ID)


@pytest.mark.parametrize("which", ["index", "circuit_index"])
def test_findings_box_is_the_first_thing_seen_and_the_page_fits_1400px(
    chromium, which, request, tmp_path
):
    """At 1400 x 900: the findings box starts in the first screen and its table is seen
    whole there; every link in it resolves (an anchor on the page, a file beside it); no
    table needs horizontal scrolling, no circuitsvis view leaves a blank gap below it, no
    two tick labels of an axis overlap."""
    index = request.getfixturevalue(which)
    page = index.parent / "measure.html"  # beside index.html: its relative links resolve
    original = index.read_text(encoding="utf-8")
    page.write_text(original.replace("<head>", "<head>\n" + MEASURE, 1), encoding="utf-8")
    recorder = ConnectionRecorder()
    try:
        dom, log = _open(chromium, page, tmp_path / "top.png", recorder.port, window="1400,900")
    finally:
        recorder.close()
        page.unlink()
    match = re.search(rf'<pre id="{REPORT_ID}">(.*?)</pre>', dom, re.S)
    assert match, f"the page never reported back; log tail: {log[-2000:]}"
    out = json.loads(html.unescape(match.group(1)))
    assert out["findings"] is not None, "no findings box"
    assert 0 <= out["findings"]["top"] < 200
    assert out["table"]["bottom"] <= out["innerHeight"], out["table"]  # the table in screen one
    links = out["links"]
    assert links
    assert [x["href"] for x in links if x["target"] is False] == []  # anchors on the page
    files = [x["href"] for x in links if x["target"] is None]
    assert [f for f in files if not (index.parent / html.unescape(f)).is_file()] == []
    if which == "circuit_index":
        assert any(f.endswith("/graph.svg") or f.endswith("/graph.html") for f in files)
    assert out["scrollWidth"] <= out["innerWidth"]
    assert out["overflow"] == []
    assert all(gap < 80 for gap in out["gaps"]), out["gaps"]
    assert out["overlaps"] == []
