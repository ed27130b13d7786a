"""``interp circuit``: bad input is one ``error:`` line, exit 2, and nothing on disk changes
(issue 17); refused before the model loads."""

from __future__ import annotations

import pytest
from faultkit import assert_refused_without_trace

pytestmark = pytest.mark.faults


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (("--round", "7"), "run has rounds 0..1"),
        (("--round", "1", "--target-round", "-1"), "rounds start at 0"),
        (("--round", "1", "--method", "acdc"), "unknown method 'acdc'"),
        (("--round", "1", "--steps", "0"), "--steps must be at least 1"),
        (("--round", "1", "--top-edges", "0"), "--top-edges must be at least 1"),
        (("--round", "1", "--cluster", "page"), "cluster"),
        (("--round", "1", "--workers", "0"), "--workers must be at least 1"),
        (("--round", "1", "--workers", "1", "--device", "cuda"), "--gpus-per-worker must be"),
    ],
)
def test_bad_circuit_requests_are_refused(base_run, args, words):
    assert_refused_without_trace(base_run, "circuit", "--run", str(base_run), *args, contains=words)
