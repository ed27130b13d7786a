"""``interp explore``: the server answers its JSON endpoint on 127.0.0.1; bad runs are refused
with one line before anything heavy is imported."""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request

import pytest
from export_runs import build_runs
from faultkit import assert_refused_without_trace

from interp.report.explore import Explorer
from interp.report.explore_server import make_server


@pytest.fixture(scope="module")
def full(tmp_path_factory):
    return build_runs(tmp_path_factory)[1]


@pytest.fixture(scope="module")
def server(full):
    server = make_server(Explorer(full), port=0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def _url(server, path):
    host, port = server.server_address[:2]
    return f"http://{host}:{port}{path}"


def test_binds_localhost_only(server):
    assert server.server_address[0] == "127.0.0.1"


def test_page_and_module_are_served(server):
    page = urllib.request.urlopen(_url(server, "/")).read().decode()
    assert 'import widget from "./explore.js"' in page
    module = urllib.request.urlopen(_url(server, "/explore.js")).read().decode()
    assert "export default" in module
    assert "https://" not in page + module  # no CDN, no network


def test_state_endpoint_answers_the_views(server):
    body = json.dumps({"example": 2, "round": 1, "layer": 0}).encode()
    request = urllib.request.Request(_url(server, "/api/state"), data=body, method="POST")
    data = json.loads(urllib.request.urlopen(request).read())
    assert data["state"]["example"] == 2 and data["state"]["round"] == 1
    assert data["example"]["example_index"] == 2
    assert {r["layer"] for r in data["patching"]["analyses"][0]["rows"]} == {0}
    assert data["heatmap"]["concept"] == "user-stereotype"


def test_a_bad_state_is_a_400_with_the_reason(server):
    body = json.dumps({"example": 99}).encode()
    request = urllib.request.Request(_url(server, "/api/state"), data=body, method="POST")
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(request)
    assert err.value.code == 400
    assert "example 99" in json.loads(err.value.read())["error"]


def test_a_missing_run_is_refused(tmp_path):
    assert_refused_without_trace(
        tmp_path, "explore", "--run", str(tmp_path / "nothing"), contains="no run directory"
    )


def test_a_bad_port_is_refused(full):
    assert_refused_without_trace(
        full, "explore", "--run", str(full), "--port", "70000", contains="--port 70000"
    )
