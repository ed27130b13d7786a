"""``interp explore``: the explorer's views served on 127.0.0.1, for people outside Jupyter.

One page (``/``) loads the widget's own ES module (``/explore.js``) with a small stand-in for
anywidget's model: setting the state posts it to ``/api/state``, which answers with
:func:`interp.report.explore.view_state`, the data the widget shows. Standard library only
(``http.server``); it binds 127.0.0.1 and nothing else.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any

from interp.errors import InterpError
from interp.report.explore import Explorer, view_state

HOST = "127.0.0.1"
MAX_BODY = 1 << 16

PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>interp explore</title></head>
<body><div id="app"></div><div id="error" style="color:#b00"></div>
<script type="module">
import widget from "./explore.js";
const state = {example: -1, round: -1, layer: -1, query: "", filters: [], order: "", concept: ""};
const listeners = {};
let data = {};
const model = {
  get: (k) => (k === "data" ? data : state[k]),
  set: (k, v) => { state[k] = v; },
  on: (ev, f) => { (listeners[ev] = listeners[ev] || []).push(f); },
  save_changes: async () => {
    const body = {...state, example: state.example < 0 ? null : state.example,
                  round: state.round < 0 ? null : state.round};
    const answer = await fetch("api/state", {method: "POST",
      headers: {"Content-Type": "application/json"}, body: JSON.stringify(body)});
    const got = await answer.json();
    document.getElementById("error").textContent = got.error ? "error: " + got.error : "";
    if (got.error) return;
    data = got;
    state.example = data.state.example;
    state.round = data.state.round;
    (listeners["change:data"] || []).forEach((f) => f());
  },
};
widget.render({model, el: document.getElementById("app")});
model.save_changes();
</script></body></html>
"""


def make_server(explorer: Explorer, port: int = 0) -> ThreadingHTTPServer:
    """A server of ``explorer``'s views on 127.0.0.1:``port`` (0: a free port), not started:
    call ``serve_forever`` (its address: ``server.server_address``)."""
    lock = threading.Lock()  # the explorer's caches are filled by one request at a time
    esm = resources.files("interp.report").joinpath("static/explore.js").read_text()

    class Handler(BaseHTTPRequestHandler):
        def _send(self, code: int, body: str, kind: str) -> None:
            data = body.encode("utf-8")
            self.send_response(code)
            self.send_header("Content-Type", f"{kind}; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            path = self.path.split("?", 1)[0]
            if path in ("/", "/index.html"):
                self._send(200, PAGE, "text/html")
            elif path == "/explore.js":
                self._send(200, esm, "text/javascript")
            elif path == "/api/state":
                self._answer({})
            else:
                self._send(404, json.dumps({"error": f"no page {path}"}), "application/json")

        def do_POST(self) -> None:  # noqa: N802
            if self.path.split("?", 1)[0] != "/api/state":
                self._send(404, json.dumps({"error": "no such endpoint"}), "application/json")
                return
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_BODY:
                self._send(413, json.dumps({"error": "state too large"}), "application/json")
                return
            try:
                state = json.loads(self.rfile.read(length) or b"{}")
                if not isinstance(state, dict):
                    raise ValueError("not an object")
            except ValueError as err:
                self._send(400, json.dumps({"error": f"bad state: {err}"}), "application/json")
                return
            self._answer(state)

        def _answer(self, state: dict[str, Any]) -> None:
            try:
                with lock:
                    body = json.dumps(view_state(explorer, state))
            except (InterpError, TypeError, ValueError) as err:
                self._send(400, json.dumps({"error": str(err)}), "application/json")
                return
            self._send(200, body, "application/json")

        def log_message(self, format: str, *args: Any) -> None:  # quiet: no line per request
            pass

    return ThreadingHTTPServer((HOST, port), Handler)
