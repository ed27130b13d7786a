"""The docs' screenshots, taken by headless Chromium: the explorer (served by `interp explore`),
the findings box at the top of the report (index.html) and a circuit graph (graph.svg).

    python scripts/screenshots.py                         # the tiny run, built in a tmp folder
    python scripts/screenshots.py --run R [--control-run C] [--out docs/img]

Without --run it builds the tiny run the tests use (the tiny random model: seconds, no
meaning; 6 built-in examples, rounds 0..2): a self-correct replay and its baseline control,
a probe of each, patching with the control beside it, an EAP circuit, and the export of both runs.
With --run it takes that run as it is (its report and first circuit graph must exist: run
`interp export` and `interp circuit` first).

Writes explorer.png, findings.png and circuit-graph.png under --out (default docs/img/).
Chromium is Debian's (`make chromium`); its proxy points at a closed local port, so a page
that asked for anything beyond 127.0.0.1 would show the gap. A PNG above 200 KB is refused
(the docs stay small): shrink the window with --width / --height.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MAX_BYTES = 200_000
ROUNDS = 2
N_EXAMPLES = 6


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if not found:
        raise SystemExit("error: no chromium on PATH (`make chromium` installs Debian's package)")
    return found


def shoot(url: str, png: Path, width: int, height: int, profile: Path) -> None:
    """One headless Chromium screenshot of ``url`` at width x height."""
    command = [
        chromium(),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--hide-scrollbars",
        f"--user-data-dir={profile}",
        "--proxy-server=http://127.0.0.1:9",  # nothing beyond loopback (bypassed) answers
        "--virtual-time-budget=15000",
        f"--window-size={width},{height}",
        f"--screenshot={png}",
        url,
    ]
    subprocess.run(command, check=True, capture_output=True, timeout=180)
    size = png.stat().st_size
    if size > MAX_BYTES:
        raise SystemExit(f"error: {png} is {size} bytes (> {MAX_BYTES}): use a smaller window")
    print(f"{png} ({width}x{height}, {size // 1000} KB)")


def build_tiny(root: Path) -> tuple[Path, Path]:
    """The tiny run and its baseline control, with a probe, patching and a circuit, exported."""
    from importlib import resources

    import interp
    from interp.circuits import CircuitConfig, circuit
    from interp.patching import PatchConfig, patch
    from interp.replay import ReplayConfig, replay
    from interp.report.export import export
    from probes.api import probe
    from probes.config import ProbeConfig

    model = interp.load_model("tiny")
    run, control = root / "self-correct", root / "baseline"
    for plan, out in (("self-correct", run), ("baseline", control)):
        config = ReplayConfig(
            model="tiny", task="builtin", rounds=ROUNDS, limit=N_EXAMPLES, plan=plan, out=str(out)
        )
        replay(config, model=model, progress=False)
    concept = root / "concepts" / "stereotype.jsonl"  # the built-in concept's first 30 pairs
    concept.parent.mkdir(parents=True)
    text = resources.files("probes").joinpath("data/stereotype.jsonl").read_text()
    concept.write_text("".join(text.splitlines(keepends=True)[:60]))
    for out in (run, control):  # the control probed alike: the report pairs them
        probe(out, ProbeConfig(concept=concept, n_boot=50, cluster="example"), model=model)
    patch(
        run,
        PatchConfig(
            layer="all",
            round=ROUNDS,
            target_round=0,
            component="resid_post,attn_out,mlp_out,heads",
            n_boot=50,
            control_run=str(control),
        ),
        model=model,
    )
    circuit(run, CircuitConfig(round=ROUNDS, method="eap", n_boot=20), model=model)
    export([run, control], model=model)
    return run, control


def serve_explorer(run: Path, control: Path | None) -> tuple[subprocess.Popen, str]:
    """`interp explore` on a free port of 127.0.0.1; its first line is the page's address."""
    command = [sys.executable, "-m", "interp.cli", "explore", "--run", str(run), "--port", "0"]
    if control is not None:
        command += ["--control-run", str(control)]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if "http://127.0.0.1:" in line:
            return proc, line[line.index("http://") :].split()[0]
        if proc.poll() is not None:
            break
    proc.kill()
    raise SystemExit("error: `interp explore` printed no address")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, help="a run directory (default: build the tiny run)")
    parser.add_argument("--control-run", type=Path, help="its control run, for the explorer")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "img")
    parser.add_argument("--width", type=int, default=1400)
    parser.add_argument("--height", type=int, default=900)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="interp-screenshots-") as tmp:
        tmp = Path(tmp)
        if args.run is None:
            run, control = build_tiny(tmp / "runs")
        else:
            run, control = args.run, args.control_run
        index = run / "index.html"
        graphs = sorted(run.glob("circuits/*/graph.svg"))
        if not index.is_file():
            raise SystemExit(f"error: {index} is missing: run `interp export --run {run}` first")
        if not graphs:
            raise SystemExit(f"error: {run} has no circuits/*/graph.svg: run `interp circuit`")
        server, url = serve_explorer(run, control)
        try:
            shoot(url, args.out / "explorer.png", args.width, args.height, tmp / "p1")
        finally:
            server.terminate()
            server.wait(timeout=30)
        # the top of the page: the findings box (the warnings below it left out)
        shoot(index.as_uri(), args.out / "findings.png", args.width, 690, tmp / "p2")
        # graph.svg scaled to 1100 px wide (its own size is in points, for a paper)
        page = tmp / "graph.html"
        page.write_text(
            '<!doctype html><body style="margin:0;background:#fff">'
            f'<img src="{graphs[0].as_uri()}" style="width:100%;display:block"></body>'
        )
        shoot(page.as_uri(), args.out / "circuit-graph.png", 1100, 600, tmp / "p3")


if __name__ == "__main__":
    main()
