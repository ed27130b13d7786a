"""The proof of no change (issue 24): the golden script's outputs on the tiny model match the
digests committed in tests/golden/tiny.json, recorded before the package moves."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "golden.py"


def test_golden_tiny_outputs_unchanged():
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, str(GOLDEN), "check", "--model", "tiny"],
        capture_output=True,
        text=True,
        env=env,
        cwd=GOLDEN.parents[2],
    )
    assert proc.returncode == 0, f"golden outputs changed:\n{proc.stdout}\n{proc.stderr[-3000:]}"
    assert "no change:" in proc.stdout
