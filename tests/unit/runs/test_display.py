"""How results show themselves in a notebook: one short repr line, and a small HTML card that
parses, escapes every text and shows only the first rows of each table."""

from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from interp.runs.display import ROWS_SHOWN, html_card

EVIL = "<script>alert('x')</script> & co"


def _big() -> pd.DataFrame:
    """1000 rows x 30 columns, one cell and one column name that must be escaped."""
    frame = pd.DataFrame(np.arange(30_000).reshape(1000, 30), columns=[f"c{i}" for i in range(30)])
    frame.insert(0, EVIL, EVIL)
    return frame


class _Parsed(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs) -> None:
        self.tags.append(tag)

    def handle_data(self, data) -> None:
        self.text.append(data)


def _check_card(page: str) -> _Parsed:
    parsed = _Parsed()
    parsed.feed(page)
    parsed.close()
    assert "script" not in parsed.tags, "a text was not escaped"
    assert len(page) < 8000, len(page)  # no DataFrame dump
    return parsed


def test_card_escapes_and_shows_the_first_rows_only() -> None:
    page = html_card(f"title {EVIL}", [(EVIL, EVIL), ("n", 3)], {"big": _big()})
    parsed = _check_card(page)
    assert f"title {EVIL}" in parsed.text and EVIL in parsed.text
    assert "big: 1000 rows x 31 columns (first 5 shown, first 10 columns)" in parsed.text
    assert parsed.tags.count("tr") == 2 + 1 + ROWS_SHOWN  # facts, table header, rows
    assert "999" not in parsed.text and "29999" not in page


def _results() -> list:
    from interp.circuits.feature_level import FeatureCircuitResult
    from interp.circuits.pipeline import CircuitResult
    from interp.experiments.common import ExperimentResult
    from interp.patching.analysis import PatchResult
    from interp.report.html import ExportResult
    from interp.runs.metrics import MetricsResult
    from interp.sae.evals import EvalResult
    from interp.sae.latent_changes import FeaturesResult
    from interp.sae.train import TrainResult
    from interp.sae.transcoders import TranscoderTrainResult
    from probes.api import ProbeResult

    big, path = _big(), Path("/tmp/runs/run-tiny")
    curve = {"loss_curve": [{"step": i, "loss": 1.0 / (i + 1)} for i in range(500)]}
    return [
        MetricsResult(run=path, metrics={}, table=big, written=True, n_examples=3),
        PatchResult(
            per_example=big,
            summary_table=big.assign(gap_lo=-0.1, gap_hi=0.2, delta=1.0),
            summary={"examples": {"used": 7}, "config": {"round": 0, "target_round": 1}},
            name=EVIL,
            paths=[path],
        ),
        CircuitResult(big, big, big, {"n_examples": 7}, np.zeros((2, 2)), EVIL, [path]),
        FeatureCircuitResult(big, big, big, {}, EVIL, [path]),
        TrainResult(
            path,
            {**curve, "architecture": "topk", "width": 64, "hook": EVIL, "tokens": {"trained": 9}},
            {"explained_variance": 0.5},
            None,
        ),
        EvalResult(EVIL, {"explained_variance": 0.5, "trained_on_this_corpus": True}),
        FeaturesResult(EVIL, "blocks.0.hook_resid_post", {"t": big}, {"n_examples": 3}),
        TranscoderTrainResult(
            path, {**curve, "layers": [0, 1], "width": 64, "tokens": {"trained": 9}}, {}
        ),
        ExportResult(path / "index.html", [path] * 4, [EVIL] * 9, None),
        ExperimentResult(EVIL, path, {"t": big, "u": big}, {"x": 1}),
        ProbeResult(EVIL, big, big, big, big, big, big, torch.zeros(2, 4), big, {}, path),
    ]


@pytest.mark.parametrize("index", range(11))
def test_every_result_has_a_short_repr_and_a_small_card(index) -> None:
    result = _results()[index]
    name = type(result).__name__
    text = repr(result)
    assert text.startswith(f"{name}(") and "\n" not in text and len(text) <= 300, text
    parsed = _check_card(result._repr_html_())
    assert any(t.startswith(name) for t in parsed.text), name


def test_patch_result_repr_counts_the_examples_used() -> None:
    """The summary holds its counts under ``examples`` (the repr read a key it lacks: None)."""
    assert "7 examples" in repr(_results()[1])
