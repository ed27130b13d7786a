"""``interp export --run DIR`` on an experiment directory that is not complete, or given with
other runs: one ``error:`` line, exit 2, and nothing on disk changes (issue 15)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from faultkit import assert_refused_without_trace

pytestmark = pytest.mark.faults


@pytest.fixture(scope="module")
def experiment(tmp_path_factory, tiny_model) -> Path:
    """A small complete convergence experiment (read-only: tests damage copies)."""
    from interp.experiments.common import ExperimentConfig
    from interp.experiments.convergence import convergence

    out = tmp_path_factory.mktemp("faults-experiment") / "exp"
    config = ExperimentConfig(
        out=str(out), model="tiny", rounds=2, limit=3, n_boot=5, probe=False, batch_size=3
    )
    return convergence(config, model=tiny_model).path


def _copy(experiment: Path, tmp_path: Path) -> Path:
    out = tmp_path / "exp"
    shutil.copytree(experiment, out)
    return out


def _unfinished(path: Path) -> None:
    manifest = json.loads((path / "manifest.json").read_text())
    (path / "manifest.json").write_text(json.dumps({**manifest, "complete": False}))


def _no_summary(path: Path) -> None:
    (path / "summary.json").unlink()


def _no_table(path: Path) -> None:
    (path / "tables" / "observed.parquet").unlink()


def _corrupt_table(path: Path) -> None:
    (path / "tables" / "fits.parquet").write_bytes(b"not parquet")


def _corrupt_summary(path: Path) -> None:
    (path / "summary.json").write_text("{")


@pytest.mark.parametrize(
    ("damage", "words"),
    [
        (_unfinished, "unfinished experiment (convergence); run the same `interp experiment"),
        (_no_summary, "unfinished experiment"),
        (_no_table, "tables/observed.parquet is missing"),
        (_corrupt_table, "fits.parquet is damaged"),
        (_corrupt_summary, "summary.json is not valid JSON"),
    ],
)
def test_incomplete_experiment_is_refused_and_nothing_is_written(
    experiment, tmp_path, damage, words
):
    path = _copy(experiment, tmp_path)
    damage(path)
    assert_refused_without_trace(tmp_path, "export", "--run", str(path), contains=words)
    assert not (path / "index.html").exists() and not (path / "figures").exists()


def test_an_earlier_export_survives_a_refused_one(experiment, tmp_path):
    path = _copy(experiment, tmp_path)
    from interp.report.export import export

    export([path])
    _no_table(path)
    assert_refused_without_trace(tmp_path, "export", "--run", str(path), contains="missing")
    assert (path / "index.html").is_file()


@pytest.mark.parametrize("extra", [("--heads", "0.1"), ("--run", "RUN")])
def test_an_experiment_exports_alone(experiment, tmp_path, extra):
    path = _copy(experiment, tmp_path)
    extra = tuple(str(path / "runs" / "main") if x == "RUN" else x for x in extra)
    assert_refused_without_trace(
        tmp_path, "export", "--run", str(path), *extra, contains="exports on its own"
    )
