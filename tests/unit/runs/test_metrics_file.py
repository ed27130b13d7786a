"""When metrics.json is stored over is the library's decision (interp.runs.metrics_file), not
the CLI's (issue 24, part 3): recomputed metrics are stored only with the bootstrap settings
the file was made with; replay's reading never stores."""

from __future__ import annotations

import json

from interp.replay.loop import ReplayConfig, replay
from interp.runs.metrics_file import recompute, stored_bootstrap, stored_or_computed
from interp.runs.store import Run


def test_recompute_stores_only_with_the_stored_settings(tmp_path, tiny_model):
    out = tmp_path / "run"
    replay(ReplayConfig(model="tiny", rounds=1, limit=4, out=str(out)), model=tiny_model)
    run = Run.open(out)
    path = out / "metrics.json"
    first = path.read_bytes()
    assert stored_bootstrap(run) == (1000, 0, "template")

    other, stored = recompute(run, n_boot=7, seed=0)
    assert other["bootstrap"]["n_boot"] == 7 and not stored
    assert path.read_bytes() == first  # another reading is returned, not stored
    assert recompute(run, n_boot=1000, seed=0, debias_space="log")[1] is False
    assert path.read_bytes() == first
    assert recompute(run, n_boot=1000, seed=0, keep={0, 1})[1] is False  # a selection

    path.write_text("{")  # damaged: shown from rounds.parquet, left for `interp metrics`
    shown = stored_or_computed(run)
    assert shown["bootstrap"]["n_boot"] == 1000 and path.read_text() == "{"
    # the stored settings (replay's, the file unreadable)
    assert recompute(run, n_boot=1000, seed=0)[1] is True
    assert json.loads(path.read_bytes()) == json.loads(first)
    assert stored_or_computed(run) == json.loads(first)
