"""Selection: one spelling of which examples a verb uses, validated once, applied by one
function, so ``sample`` with a seed keeps the same examples in replay and in patch."""

from __future__ import annotations

from dataclasses import asdict

import pandas as pd
import pytest

from interp.errors import InterpError
from interp.inputs.selection import Selection, choose, example_mask, select_rows
from interp.inputs.tasks import load_builtin
from interp.patching import PatchConfig, select_items
from interp.replay.loop import ReplayConfig, select_examples


@pytest.mark.parametrize(
    "fields",
    [
        {"limit": 0},
        {"sample": 0},
        {"sample": -2},
        {"seed": -1},
        {"seed": 2**32},
        {"examples": ()},
        {"examples": ("a", "a")},
        {"rounds": (-1,)},
        {"rounds": (1, 1)},
        {"orders": (True,)},
        {"limit": True},
    ],
)
def test_bad_selections_are_refused(fields):
    with pytest.raises(InterpError):
        Selection(**fields)


def test_is_all():
    assert Selection().is_all() and Selection(seed=5).is_all()
    assert not Selection(limit=1).is_all() and not Selection(rounds=(0,)).is_all()


def test_sample_is_the_draw_runs_were_made_with():
    # Pinned: replay has always kept these 4 of 10 with seed 3 (torch.randperm, sorted); a
    # different draw would give old runs' fingerprints other examples than they hold.
    assert choose(list(range(10)), Selection(sample=4, seed=3)) == [0, 3, 6, 7]
    # then limit, over what the sample kept, in order
    assert choose(list("abcdefghij"), Selection(sample=4, seed=3, limit=2)) == ["a", "d"]
    assert choose(list(range(5)), Selection(limit=9)) == [0, 1, 2, 3, 4]
    with pytest.raises(InterpError, match="--sample 11 exceeds the 10 examples loaded"):
        choose(list(range(10)), Selection(sample=11), "examples loaded")


def _rounds(n: int, permuted: bool = False) -> pd.DataFrame:
    rows = []
    for i in range(n):
        for r in (0, 1, 2):
            rows.append(
                {
                    "example_index": i,
                    "example_id": f"q{i}",
                    "round": r,
                    "label": 0,
                    "target": 1,
                    "category": "Age",
                    "context_condition": "ambig",
                    "readout_pos": 10 + r,
                    "option_token_ids": [5, 6, 7],
                    **({"base_index": i // 3} if permuted else {}),
                }
            )
    return pd.DataFrame(rows)


def test_sample_keeps_the_same_examples_in_replay_and_in_patch():
    """``--sample 4 --seed 3`` on a run of 10 examples patches the examples a replay with the
    same flags kept from a file of 10: one implementation."""
    loaded = load_builtin()[:10]
    position = {e.example_id: i for i, e in enumerate(loaded)}
    chosen = select_examples(loaded, ReplayConfig(sample=4, seed=3))
    replayed = [position[e.example_id] for e in chosen]
    items, counts = select_items(_rounds(10), PatchConfig(layer=0, round=2, sample=4, seed=3))
    assert [item.index for item in items] == replayed == [0, 3, 6, 7]
    assert counts["used"] == 4


def test_configs_spell_their_choice_as_a_selection_and_store_it_flat():
    replay = ReplayConfig(limit=2, sample=3, seed=4)
    assert replay.selection == Selection(limit=2, sample=3, seed=4)
    # the fields stay the stored form: manifests and fingerprints are those of earlier runs
    assert "selection" not in asdict(replay)
    patch = PatchConfig(layer=0, round=1, examples=("q1", 2), limit=1)
    assert patch.selection == Selection(examples=("q1", 2), limit=1)
    assert "selection" not in patch.to_dict() and patch.to_dict()["examples"] == ["q1", 2]
    with pytest.raises(InterpError, match="limit must be at least 1"):
        ReplayConfig(limit=0).selection  # noqa: B018


def test_example_mask_names_ids_and_indices_and_refuses_unknown_ones():
    ids, indices = ["a", "b", "c"], [0, 1, 2]
    assert example_mask(ids, indices, Selection(examples=("c", 0))) == [True, False, True]
    assert example_mask(ids, indices, Selection()) == [True, True, True]
    with pytest.raises(InterpError, match="no such examples in the run: z, 7"):
        example_mask(ids, indices, Selection(examples=("z", 7, "a")))


def test_select_rows_keeps_rounds_orders_and_whole_base_examples():
    rounds = _rounds(9, permuted=True)  # 3 base examples x 3 orders
    kept = select_rows(rounds, Selection(sample=2, seed=3, rounds=(0, 2), orders=(0,)))
    bases = choose([0, 1, 2], Selection(sample=2, seed=3))
    assert sorted(kept["example_index"].unique()) == [3 * b for b in bases]  # order 0 only
    assert set(kept["round"]) == {0, 2}
    every_order = select_rows(rounds, Selection(limit=1))
    assert sorted(every_order["example_index"].unique()) == [0, 1, 2]  # all orders of base 0
    with pytest.raises(InterpError, match="the run has rounds 0..2"):
        select_rows(rounds, Selection(rounds=(3,)))
    with pytest.raises(InterpError, match="not permuted"):
        select_rows(_rounds(3), Selection(orders=(0,)))
    with pytest.raises(InterpError, match="exceeds the 3 base examples selected"):
        select_rows(rounds, Selection(sample=4))


def test_one_selection_handed_to_any_config():
    chosen = Selection(limit=2, sample=5, seed=9)
    replay = ReplayConfig(rounds=3).with_selection(chosen)
    patch = PatchConfig(layer=0, round=1, examples=("q1",)).with_selection(chosen)
    assert replay.selection == patch.selection == chosen
    assert replay.rounds == 3  # replay's rounds (how many) is not Selection.rounds (which)
    with pytest.raises(InterpError, match="ReplayConfig selects no examples"):
        ReplayConfig().with_selection(Selection(examples=("q1",)))
    with pytest.raises(InterpError, match="PatchConfig selects no rounds"):
        PatchConfig(layer=0, round=1).with_selection(Selection(rounds=(0, 1)))
