"""Probes, patching, export and metrics on permuted runs (issue 13, part 1): each order is
scored with its own letters, and every summary groups the orders of one base example."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from interp.cli import app
from interp.cli.format import format_patching
from interp.inputs.permute import check_order_count, n_orders
from interp.inputs.tasks import load_builtin
from interp.metrics.rounds import compute_metrics
from interp.patching import PatchConfig, patch
from interp.replay.loop import ReplayConfig, option_token_ids, planned_conversations, replay
from interp.stats import example_clusters
from probes.behaviour import split_examples

N_BASE = 6  # base examples: builtin items 0..5 (three templates of two), three orders each
ROUNDS = 2
BIAS = 40.0  # added to letter (c)'s logit (the tiny model prefers (a)): raw answers all (c)


@pytest.fixture(scope="module")
def permuted(tiny_model, tmp_path_factory):
    """A cyclic run of the tiny model and its baseline control, on the same base examples."""
    root = tmp_path_factory.mktemp("permuted")
    runs = []
    for plan in ("self-correct", "baseline"):
        config = ReplayConfig(
            out=str(root / plan),
            model="tiny",
            limit=N_BASE,
            rounds=ROUNDS,
            plan=plan,
            permute="cyclic",
        )
        runs.append(replay(config, model=tiny_model))
    return runs


def test_clusters_are_base_examples_and_a_wrong_grouping_is_told_apart(permuted) -> None:
    rounds = permuted[0].rounds()
    n_rows = rounds["example_index"].nunique()
    assert n_rows == 3 * N_BASE
    by_example = example_clusters(rounds, "example")
    assert by_example.n_clusters == N_BASE
    assert by_example.to_dict()["n_base_examples"] == N_BASE
    # the same rows without their base example: every order alone -- what the test rejects
    assert example_clusters(rounds.drop(columns="base_index"), "example").n_clusters == n_rows
    # --cluster template keeps an example's orders together too (they share the template)
    template = example_clusters(rounds, "template")
    base = rounds.drop_duplicates("example_index").sort_values("example_index")["base_index"]
    for b in range(N_BASE):
        assert len(set(template.ids[(base == b).to_numpy()])) == 1
    # a permuted run without question_index (e.g. --task mc) falls back to base examples
    bare = rounds.assign(question_index=None)
    for key in ("template", "example"):
        assert example_clusters(bare, key).n_clusters == N_BASE


def test_probe_on_a_permuted_run_groups_by_base_example(permuted, tiny_model) -> None:
    from interp import ProbeConfig, probe

    run, control = permuted
    config = ProbeConfig(n_boot=50, cluster="example", control_run=str(control.path))
    result = probe(run, config, model=tiny_model)
    cluster = result.summary["cluster"]
    assert cluster["n_clusters"] == N_BASE and cluster["n_base_examples"] == N_BASE
    assert cluster["n_examples"] == 3 * N_BASE
    # the behaviour probes' split keeps every order of a base example on one side
    ids = example_clusters(run.rounds(), "example").ids
    train, test = split_examples(len(ids), seed=config.seed, clusters=ids)
    base = run.rounds().drop_duplicates("example_index").sort_values("example_index")
    base = base["base_index"].to_numpy()
    assert not set(base[train]) & set(base[test])
    # ...which a split of single orders would not do (the check above can fail)
    train1, test1 = split_examples(len(ids), seed=config.seed)
    assert set(base[train1]) & set(base[test1])
    # behaviour labels are each order's own: the stereotyped answer is the shown target
    assert not result.behaviour.empty


@pytest.mark.parametrize("method", ["exact", "attribution"])
@pytest.mark.parametrize("layer", [1, "all"])
def test_patching_uses_each_orders_letters_and_groups_by_base_example(
    permuted, tiny_model, method: str, layer
) -> None:
    run = permuted[0]
    config = PatchConfig(layer=layer, round=ROUNDS, method=method, n_boot=50, cluster="example")
    result = patch(run, config, model=tiny_model, write=False)
    rounds = run.rounds()
    used = sorted(result.per_example["example_index"].unique())
    n_base = rounds[rounds["example_index"].isin(used)]["base_index"].nunique()
    cluster = result.summary["cluster"]
    assert cluster["n_clusters"] == n_base and cluster["n_base_examples"] == n_base
    assert n_base < len(used)  # several orders per base example, one cluster each
    assert f"option orders of {n_base} base examples" in format_patching(result.summary)
    # the target round's value is logit[shown label] - logit[shown target] of that order
    r0 = rounds[rounds["round"] == 0].set_index("example_index")
    got = result.per_example.drop_duplicates("example_index").set_index("example_index")["clean"]
    for index, value in got.items():
        row = r0.loc[index]
        logp = list(row["option_logprobs"])
        assert value == pytest.approx(logp[row["label"]] - logp[row["target"]], abs=1e-3)
    # the letters differ between orders, so the original indices would give other values
    moved = [
        i
        for i in got.index
        if (r0.loc[i, "label"], r0.loc[i, "target"])
        != (r0.loc[i, "label_orig"], r0.loc[i, "target_orig"])
    ]
    assert moved


def test_examples_by_id_picks_every_order_and_an_index_picks_one(permuted, tiny_model) -> None:
    run = permuted[0]
    rounds = run.rounds()
    example_id = rounds.loc[rounds["target"] >= 0, "example_id"].iloc[0]
    orders = rounds[(rounds["example_id"] == example_id) & (rounds["round"] == 0)]
    config = PatchConfig(layer=1, round=1, examples=(example_id,), n_boot=0)
    by_id = patch(run, config, model=tiny_model, write=False)
    assert sorted(by_id.per_example["example_index"]) == sorted(orders["example_index"])
    assert len(orders) == 3 and by_id.summary["cluster"]["n_clusters"] == 1
    one = int(orders["example_index"].iloc[1])
    by_index = patch(
        run, PatchConfig(layer=1, round=1, examples=(one,), n_boot=0), model=tiny_model, write=False
    )
    assert list(by_index.per_example["example_index"]) == [one]


def test_export_shows_raw_beside_debiased_and_flows_of_debiased_answers(permuted) -> None:
    run, control = permuted
    result = CliRunner().invoke(app, ["export", "--run", str(run.path), "--run", str(control.path)])
    assert result.exit_code == 0, result.output
    page = (run.path / "index.html").read_text()
    assert page.count("Raw vs debiased") == 2  # one table per run
    assert "debiased accuracy" in page and "agreement" in page
    # the flow figure counts base examples (debiased answers), not the 3 x N_BASE orders
    flow = (run.path / "figures" / "flow-role.html").read_text()
    at_round0 = [int(n) for n in re.findall(r"R0 [a-z]+ \((\d+)\)", flow)]
    assert sum(at_round0) == N_BASE


def test_metrics_cli_debias_space_per_category_and_orders(permuted) -> None:
    run = permuted[0]
    args = ["metrics", "--run", str(run.path), "--n-boot", "20", "--json"]
    prob = json.loads(CliRunner().invoke(app, args).stdout)
    log = json.loads(CliRunner().invoke(app, [*args, "--debias-space", "log"]).stdout)
    assert prob["debiased"]["space"] == "prob" and log["debiased"]["space"] == "log"
    deb = prob["debiased"]
    assert {c["category"] for c in deb["per_category"]} == set(run.rounds()["category"])
    assert sum(c["n_examples"] for c in deb["per_category"]) == N_BASE
    orders = deb["position_by_order"][0]["orders"]
    assert sorted(tuple(o["permutation"]) for o in orders) == [(0, 1, 2), (1, 2, 0), (2, 0, 1)]
    assert all(o["n"] == N_BASE for o in orders)
    text = CliRunner().invoke(app, ["metrics", "--run", str(run.path), "--n-boot", "20"]).stdout
    assert "debiased official BBQ scores per category" in text
    assert "position share (a, b, c, ...) per order" in text
    bad = CliRunner().invoke(app, ["metrics", "--run", str(run.path), "--debias-space", "x"])
    assert bad.exit_code == 2 and "debias space" in bad.stderr


def test_a_letter_bias_is_removed_exactly_through_the_cli(tiny_model, tmp_path: Path) -> None:
    """A hook adds BIAS to letter (c)'s logit: raw answers are all (c), every order shares the
    bias, and `interp metrics --debias-space log` gives the unbiased run's debiased numbers."""
    config = ReplayConfig(
        out="", model="tiny", limit=4, rounds=1, plan="baseline", permute="cyclic"
    )
    plain = replay(
        ReplayConfig(**{**config.__dict__, "out": str(tmp_path / "a")}), model=tiny_model
    )
    letter_c = option_token_ids(tiny_model.tokenizer, 3)[2]

    def bias(module, inputs, output):
        output = output.clone()
        output[..., letter_c] += BIAS
        return output

    handle = tiny_model.unembed.register_forward_hook(bias)
    try:
        biased = replay(
            ReplayConfig(**{**config.__dict__, "out": str(tmp_path / "b")}), model=tiny_model
        )
    finally:
        handle.remove()
    r0 = biased.rounds()
    assert (r0.loc[r0["round"] == 0, "choice"] == 2).all()
    want = compute_metrics(plain.rounds(), n_boot=0, debias_space="log")["debiased"]
    got = compute_metrics(biased.rounds(), n_boot=0, debias_space="log")["debiased"]
    first = lambda d: d["per_round"][0]  # noqa: E731 -- round 0: same transcripts so far
    for key in ("accuracy", "bias_amb", "bias_dis"):
        assert first(got)[key]["value"] == first(want)[key]["value"], key
    assert first(got)["entropy"]["value"] == pytest.approx(first(want)["entropy"]["value"], 1e-3)
    # the position shares per order show the bias the averaging removed
    assert all(o["shares"][2] == 1.0 for o in got["position_by_order"][0]["orders"])


def test_permute_all_with_many_options_is_refused_before_any_compute(tmp_path: Path) -> None:
    six = tmp_path / "six.jsonl"
    line = {"id": "q", "question": "Which?", "options": list("uvwxyz"), "label": 0}
    six.write_text(json.dumps(line) + "\n" + json.dumps({**line, "id": "r"}) + "\n")
    assert n_orders(6, "all") == 720 and n_orders(6, "cyclic") == 6
    out = tmp_path / "run"
    args = ["replay", "--model", "tiny", "--task", "mc", "--data", str(six), "--out", str(out)]
    refused = CliRunner().invoke(app, [*args, "--permute", "all"])
    assert refused.exit_code == 2, refused.output
    assert refused.stderr.strip().count("\n") == 0
    assert "720 orders" in refused.stderr and "--max-orders 720" in refused.stderr
    assert not out.exists()
    config = ReplayConfig(
        out=str(out), model="tiny", task="mc", data=[str(six)], permute="all", max_orders=720
    )
    assert planned_conversations(config) == (2, 1440)
    assert check_order_count(load_builtin()[:2], "all", 24) == 12


def test_permute_all_warns_with_the_count(tiny_model, tmp_path: Path) -> None:
    out = tmp_path / "run"
    args = ["replay", "--model", "tiny", "--limit", "1", "--rounds", "1", "--out", str(out)]
    result = CliRunner().invoke(app, [*args, "--permute", "all", "--max-orders", "6"])
    assert result.exit_code == 0, result.output
    assert "warning: --permute all replays 1 examples as 6 conversations" in result.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["permute"]["mode"] == "all" and "max_orders" not in manifest["config"]
