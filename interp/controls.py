"""Control runs: the same examples replayed under another plan, to compare an effect against.

A trend across rounds is not by itself an effect of the instruction: the ``baseline`` plan
(answer again, no moral instruction) moves the read-out states too. Analyses that take a
control (``interp probe --control-run``, ``interp patch --control-run``) report run - control
per round with a paired bootstrap (``interp.stats.paired_difference``). Pairing is only
meaningful when both runs hold the same examples in the same order, on the same model, with
the same rounds; ``check_control`` refuses anything else.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from interp.errors import InterpError
from interp.store import Run

CONTROL_DEFINITION = (
    "run - control: the same examples replayed under another plan (e.g. baseline, no moral "
    "instruction) on the same model, same rounds and same task data; intervals are paired "
    "cluster bootstraps (both runs resampled with the same clusters), so they are intervals "
    "of the per-example difference"
)


def open_control(run: Run, control: str | Path | Run) -> tuple[Run, dict[str, Any]]:
    """Open the control run and check it pairs with ``run``; returns it and the JSON record
    of what was checked. Raises InterpError naming the first mismatch."""
    other = control if isinstance(control, Run) else Run.open(control)
    return other, check_control(run, other)


def check_control(run: Run, control: Run) -> dict[str, Any]:
    """Same model weights, rounds count, task data hash and example ids in the same order;
    a different run directory and another plan."""
    where = f"control run {control.path}"
    if run.path.resolve() == control.path.resolve():
        raise InterpError(f"{where} is the run itself; pass a replay of another plan")
    model, other_model = run.manifest.get("model", {}), control.manifest.get("model", {})
    want, got = model.get("weights_hash"), other_model.get("weights_hash")
    if want != got or model.get("model_id") != other_model.get("model_id"):
        raise InterpError(
            f"{where} was replayed on another model ({other_model.get('model_id')}, weights "
            f"{str(got)[:12]}) than the run ({model.get('model_id')}, weights {str(want)[:12]}); "
            "replay the control with the run's model"
        )
    if run.n_rounds != control.n_rounds:
        raise InterpError(
            f"{where} has rounds 0..{control.n_rounds - 1}, the run 0..{run.n_rounds - 1}; "
            f"replay the control with --rounds {run.n_rounds - 1}"
        )
    task, other_task = run.manifest.get("task", {}), control.manifest.get("task", {})
    if task.get("data_hash") != other_task.get("data_hash"):
        raise InterpError(
            f"{where} was replayed on other task data (hash {str(other_task.get('data_hash'))[:12]}"
            f", the run's {str(task.get('data_hash'))[:12]}); replay it on the run's files"
        )
    ids, other_ids = example_ids(run), example_ids(control)
    if ids != other_ids:
        raise InterpError(
            f"{where} holds other examples than the run: {_first_difference(ids, other_ids)}; "
            "replay it with the run's --task, --data, --limit/--sample and --seed"
        )
    if run.manifest.get("mode") != control.manifest.get("mode"):
        raise InterpError(
            f"{where} was replayed in {control.manifest.get('mode')} mode, the run in "
            f"{run.manifest.get('mode')} mode; the read-out positions would not correspond"
        )
    plan, other_plan = run.manifest.get("plan", {}), control.manifest.get("plan", {})
    if _plan_texts(plan) == _plan_texts(other_plan):
        raise InterpError(
            f"{where} used the same plan as the run ({plan.get('name')}); a control replays "
            "the same examples under another plan (e.g. --plan baseline)"
        )
    return {
        "run": str(control.path),
        "plan": other_plan.get("name"),
        "checked": [
            "model weights",
            "rounds",
            "task data hash",
            "example ids in order",
            "mode",
            "another plan",
        ],
        "n_examples": len(ids),
        "definition": CONTROL_DEFINITION,
    }


def example_ids(run: Run) -> list[str]:
    """The run's example ids in example_index order."""
    rounds = run.rounds()
    firsts = rounds.sort_values("example_index", kind="stable").drop_duplicates("example_index")
    return [str(x) for x in firsts["example_id"]]


def _first_difference(ids: list[str], other: list[str]) -> str:
    if len(ids) != len(other):
        return f"{len(other)} examples, the run {len(ids)}"
    i = int(np.flatnonzero(np.array(ids) != np.array(other))[0])
    return f"example {i} is {other[i]!r}, the run's is {ids[i]!r}"


def _plan_texts(plan: dict[str, Any]) -> dict[str, Any]:
    """What the model is told; a plan renamed but otherwise equal is the same plan."""
    return {k: v for k, v in plan.items() if k not in ("name", "description")}
