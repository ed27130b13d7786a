"""Bad values of the shared options (interp/cli/params.py: --layers, --examples, --limit,
--sample) are one ``error:`` line, exit 2, and nothing on disk changes; the same with an old
spelling adds exactly one ``deprecated:`` line before it."""

from __future__ import annotations

import pytest
from faultkit import assert_refused_without_trace, invoke, tree_digest

pytestmark = pytest.mark.faults


def _cases(run: str, out: str) -> list[tuple[list[str], str]]:
    return [
        (["patch", "--run", run, "--round", "1", "--layers", "x"], "--layers 'x': expected"),
        (["patch", "--run", run, "--round", "1", "--layers", "5-3"], "ascending range"),
        (
            ["patch", "--run", run, "--round", "1", "--layers", "0,2"],
            "--layers '0,2': patch analyses one layer or all of them",
        ),
        (["patch", "--run", run, "--round", "1", "--layers", "9"], "out of range"),
        (
            ["patch", "--run", run, "--round", "1", "--layers", "1", "--examples", " "],
            "--examples: an empty example",
        ),
        (["probe", "--run", run, "--layers", "1-"], "--layers '1-': expected"),
        (["probe", "--run", run, "--layers", "7"], "--layers 7 out of range"),
        (["probe", "--run", run, "--limit", "0"], "--limit must be at least 1"),
        (["probe", "--run", run, "--sample", "9"], "--sample 9 exceeds the 3 examples"),
        (["metrics", "--run", run, "--sample", "99"], "--sample 99 exceeds the 3 examples"),
        (["metrics", "--run", run, "--examples", "no/1"], "no such examples in the run: no/1"),
        (
            ["metrics", "--run", run, "--limit", "1", "--control-run", run],
            "--control-run pairs every example",
        ),
        (["sae", "features", "--run", run, "--sae", out, "--limit", "0"], "--limit must be at"),
        (
            ["experiment", "convergence", "--run", run, "--layers", "all"],
            "--layers 'all': experiment convergence reads one layer",
        ),
        (
            ["experiment", "superficial", "--run", run, "--examples", "0"],
            "--examples: experiment superficial reads every example",
        ),
        (
            ["circuit", "--level", "features", "--run", run, "--round", "1", "--transcoders", out]
            + ["--examples", "0", "--examples", "1"],
            "--examples 0 1: circuit --level features reads one example",
        ),
        (
            ["circuit", "--level", "features", "--run", run, "--round", "1", "--transcoders", out]
            + ["--limit", "1"],
            "--limit: circuit --level features graphs one example",
        ),
        (["export", "--run", run, "--examples", "0", "--examples", "1"], "reads one example"),
        (["export", "--run", run, "--examples", "builtin/999"], "--examples builtin/999: no such"),
        (["export", "--run", run, "--sample", "3"], "--sample: export reports every example"),
        (
            ["sae", "train-transcoders", "--model", "tiny", "--out", out, "--layers", "a"],
            "--layers 'a': expected",
        ),
    ]


@pytest.mark.parametrize("case", range(21))
def test_bad_shared_option_values_are_refused_without_trace(base_run, tmp_path, case):
    cases = _cases(str(base_run), str(tmp_path / "out"))
    assert len(cases) == 21
    argv, words = cases[case]
    before = tree_digest(tmp_path)
    assert_refused_without_trace(base_run, *argv, contains=words)
    assert tree_digest(tmp_path) == before


def test_an_old_spelling_adds_one_deprecation_line_and_nothing_else(base_run):
    before = tree_digest(base_run)
    result = invoke("patch", "--run", str(base_run), "--round", "1", "--layer", "0,2")
    assert result.exit_code == 2 and result.stdout == ""
    assert result.stderr.splitlines() == [
        "deprecated: --layer is now --layers; the old spelling goes in the next release",
        "error: --layers '0,2': patch analyses one layer or all of them; run it once per "
        "layer, or use all",
    ]
    assert tree_digest(base_run) == before


def test_metrics_of_a_selection_are_printed_not_stored(base_run):
    """--limit/--sample/--examples on metrics: the selected examples' metrics, metrics.json
    untouched (it describes every example)."""
    import json

    before = tree_digest(base_run)
    for args, n in ((["--limit", "2"], 2), (["--examples", "0", "--examples", "2"], 2)):
        result = invoke("metrics", "--run", str(base_run), *args, "--json")
        assert result.exit_code == 0, result.output
        assert json.loads(result.stdout)["n_examples"] == n
    assert tree_digest(base_run) == before


def _selected(run, sample: int, seed: int) -> list[int]:
    from interp.inputs.selection import Selection, select_rows
    from interp.runs.store import Run

    rows = select_rows(Run.open(run).rounds(), Selection(sample=sample, seed=seed))
    return sorted(int(i) for i in rows["example_index"].unique())


def test_probe_of_a_selection_is_printed_not_stored(analysed_run, tmp_path):
    """--sample on probe: the selected examples scored, one note line on stderr, the run's
    probes/stereotype/ (every example) untouched, no closing ``wrote`` line."""
    import json

    from faultkit import copy_run

    run = copy_run(analysed_run, tmp_path / "run")
    before = tree_digest(run / "probes" / "stereotype")
    args = ("probe", "--run", str(run), "--sample", "2", "--seed", "1")
    result = invoke(*args, "--json")
    assert result.exit_code == 0, result.output
    assert result.stderr.splitlines()[-1].startswith("note: the probe of 2 selected examples")
    assert json.loads(result.stdout)["selection"]["example_index"] == _selected(run, 2, 1)
    text = invoke(*args)
    assert text.exit_code == 0 and "wrote" not in text.stdout
    assert tree_digest(run / "probes" / "stereotype") == before


def test_sae_features_of_a_selection_is_printed_not_stored(base_run, tmp_path):
    import json

    import torch
    from faultkit import copy_run
    from sae_lens import TopKSAE, TopKSAEConfig
    from sae_lens.saes.sae import SAEMetadata

    from interp.runs.store import Run

    run = copy_run(base_run, tmp_path / "run")
    hook = next(h for h in Run.open(run).hooks if h.endswith("hook_resid_post"))
    torch.manual_seed(0)
    meta = SAEMetadata(hook_name=hook)
    sae = TopKSAE(TopKSAEConfig(d_in=64, d_sae=32, k=4, metadata=meta))
    sae.save_model(tmp_path / "sae")
    before = tree_digest(run)
    args = ("sae", "features", "--run", str(run), "--sae", str(tmp_path / "sae"))
    result = invoke(*args, "--examples", "2", "--examples", "0", "--json")
    assert result.exit_code == 0, result.output
    assert result.stderr.splitlines() == [
        f"note: the features of 2 selected examples; {run / 'sae' / 'sae'} (every example) is "
        "left as it is"
    ]
    assert json.loads(result.stdout)["selection"]["example_index"] == [0, 2]
    assert tree_digest(run) == before
