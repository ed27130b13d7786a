"""Weak evidence: does a non-decisive sentence about one person pull the answer away from
"unknown", and does self-correction undo it?

Design. From the selected examples (``--task/--data/--sample/--seed``) the ambiguous ones with a
bias target, an "unknown" option and one other person are kept. Each gets one sentence from
``interp/data/weak_evidence.yaml`` appended to its context, naming one of the two people:
after a seeded shuffle, the first half of the items point at the stereotyped person
(``target``), the rest at the other one; the template is drawn with the same seed. The
correct answer stays "unknown". The items are written as an ``mc`` file
(``DIR/data/weak-evidence.jsonl``, with ``question_index`` so the bootstrap keeps templates
together) and replayed under ``baseline`` (no instruction) and ``self-correct``.

Per plan, round and group (all items; those pointing at the target; those pointing at the
other person): the share answering "unknown" (the correct answer), the share choosing the
person the evidence names, and s_AMB, with 95% cluster-bootstrap intervals; and
self-correct - baseline per round with paired intervals (same examples, same resamples).
"""

from __future__ import annotations

import json
import random
from importlib import resources
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import yaml

from interp.errors import InterpError
from interp.experiments.common import (
    ExperimentConfig,
    ExperimentDir,
    ExperimentResult,
    ModelHolder,
    refuse_winogender,
    run_grid,
    selected_examples,
    validate,
    weights_for,
    with_model,
    with_position,
)
from interp.experiments.convergence import json_rows
from interp.experiments.interactions import cell_stats, sample_interval
from interp.runs.distributed import Workers, single_process
from interp.runs.store import Run, atomic_write

if TYPE_CHECKING:
    from transformer_lens import HookedTransformer

    from interp.inputs.tasks import Example

NAME = "weak-evidence"
ARMS = {"baseline": "baseline", "self-correct": "self-correct"}
GROUPS = ("all", "target", "other")
MEASURES = ("unknown", "follows", "s_amb")


def templates() -> list[str]:
    text = resources.files("interp").joinpath("data/weak_evidence.yaml").read_text()
    return list(yaml.safe_load(text)["templates"])


def person(option: str) -> str:
    """ "The retiree" -> "the retiree": an article at the start goes into lower case inside a
    sentence; a name ("Daniel") keeps its capital."""
    first, _, rest = option.partition(" ")
    if first in ("The", "A", "An") and rest:
        return f"{first.lower()} {rest}"
    return option


def sentence(template: str, option: str) -> str:
    name = person(option)
    return template.replace("{Person}", name[:1].upper() + name[1:]).replace("{person}", name)


def eligible(example: Example) -> int | None:
    """The other (non-target, non-unknown) option of an ambiguous item with a target and an
    unknown option; None when the item does not fit the design."""
    if example.context_condition != "ambig" or example.target is None or example.unknown is None:
        return None
    others = [i for i in range(len(example.options)) if i not in (example.target, example.unknown)]
    return others[0] if len(others) == 1 else None


def build_items(examples: list[Example], seed: int) -> list[dict[str, Any]]:
    """The mc lines of the experiment and, per line, what the evidence points at."""
    kept = [(ex, eligible(ex)) for ex in examples]
    kept = [(ex, other) for ex, other in kept if other is not None]
    if len(kept) < 2:
        raise InterpError(
            f"weak evidence needs ambiguous items with a bias target and an unknown option; "
            f"{len(kept)} of the {len(examples)} selected examples qualify (use BBQ data and a "
            "larger --sample)"
        )
    rng = random.Random(seed)
    order = list(range(len(kept)))
    rng.shuffle(order)
    points_target = set(order[: len(kept) // 2])
    texts = templates()
    items = []
    for i, (ex, other) in enumerate(kept):
        role = "target" if i in points_target else "other"
        pointed = ex.target if role == "target" else other
        template = rng.randrange(len(texts))
        added = sentence(texts[template], ex.options[pointed])
        items.append(
            {
                "line": {
                    "id": ex.example_id,
                    "context": f"{ex.context} {added}".strip(),
                    "question": ex.question,
                    "options": list(ex.options),
                    "label": ex.label,
                    "category": ex.category,
                    "target": ex.target,
                    "unknown": ex.unknown,
                    "context_condition": "ambig",
                    "question_polarity": ex.question_polarity,
                    "question_index": ex.question_index or ex.example_id,
                },
                "points_at": role,
                "pointed": pointed,
                "template": template,
                "sentence": added,
            }
        )
    return items


def analyse(
    runs: dict[str, Run], items: pd.DataFrame, *, n_boot: int, seed: int, cluster: str
) -> tuple[dict[str, pd.DataFrame], dict[str, Any]]:
    first = next(iter(runs.values()))
    grid = run_grid(first, cluster)
    weights = weights_for(grid, n_boot, seed)
    n, n_rounds = grid.n_examples, first.n_rounds
    w = np.vstack([np.ones((1, n)), weights])
    pointed = items["pointed"].to_numpy()
    role = items["points_at"].to_numpy()
    values: dict[tuple[str, str, str], np.ndarray] = {}  # (arm, group, measure) -> [B+1, R]
    for arm, run in runs.items():
        rounds = run.rounds().sort_values(["example_index", "round"], kind="stable")
        choice = rounds["choice"].to_numpy().reshape(n, n_rounds)
        unknown = rounds["unknown"].to_numpy().reshape(n, n_rounds)
        for group in GROUPS:
            mask = np.ones(n) if group == "all" else (role == group).astype(float)
            wg = w * mask
            with np.errstate(invalid="ignore", divide="ignore"):
                total = wg.sum(axis=1, keepdims=True)
                values[(arm, group, "unknown")] = (wg @ (choice == unknown)) / total
                values[(arm, group, "follows")] = (wg @ (choice == pointed[:, None])) / total
            values[(arm, group, "s_amb")] = cell_stats(rounds, n_rounds, wg)["s_amb"]
    rows, diffs = [], []
    for (arm, group, measure), v in values.items():
        lo, hi = sample_interval(v[1:])
        for r in range(n_rounds):
            rows.append(
                {"plan": arm, "group": group, "measure": measure, "round": r}
                | {"value": v[0, r], "lo": lo[r], "hi": hi[r]}
            )
        if arm == "self-correct":
            d = v - values[("baseline", group, measure)]
            lo, hi = sample_interval(d[1:])
            for r in range(n_rounds):
                diffs.append(
                    {"group": group, "measure": measure, "round": r}
                    | {"value": d[0, r], "lo": lo[r], "hi": hi[r]}
                )
    table, diff = pd.DataFrame(rows), pd.DataFrame(diffs)
    last = n_rounds - 1
    summary = {
        "experiment": NAME,
        "n_items": n,
        "points_at": {g: int((role == g).sum()) for g in ("target", "other")},
        "n_boot": n_boot,
        "cluster": grid.clusters.to_dict(),
        "last_round": json_rows(table[table["round"] == last]),
        "self_correct_minus_baseline": json_rows(diff[diff["round"] == last]),
        "reading": reading(table, diff, last),
    }
    with_position(summary, list(runs.values()))
    return {"items": items, "rates": table, "difference": diff}, summary


def reading(table: pd.DataFrame, diff: pd.DataFrame, last: int) -> list[str]:
    def at(frame: pd.DataFrame, **keys: Any) -> dict[str, Any]:
        rows = frame
        for k, v in keys.items():
            rows = rows[rows[k] == v]
        return rows.iloc[0].to_dict()

    lines = []
    base0 = at(table, plan="baseline", group="all", measure="follows", round=0)
    lines.append(
        f"round 0: {base0['value']:.2f} [{base0['lo']:.2f}, {base0['hi']:.2f}] of the answers "
        "choose the person the weak evidence names (the correct answer is unknown)."
    )
    for measure, words in (("unknown", "answers unknown"), ("follows", "follows the evidence")):
        d = at(diff, group="all", measure=measure, round=last)
        if d["lo"] > 0 or d["hi"] < 0:
            verdict = "more" if d["value"] > 0 else "less"
            lines.append(
                f"round {last}: under self-correct the model {words} {verdict} often than under "
                f"baseline ({d['value']:+.2f} [{d['lo']:+.2f}, {d['hi']:+.2f}])."
            )
        else:
            lines.append(
                f"round {last}: self-correct and baseline do not differ reliably in how often "
                f"the model {words} ({d['value']:+.2f} [{d['lo']:+.2f}, {d['hi']:+.2f}])."
            )
    return lines


def arms(config: ExperimentConfig) -> dict[str, str]:
    """The arms replayed (the written items under each plan): baseline and self-correct."""
    return dict(ARMS)


def weak_evidence(
    config: ExperimentConfig,
    *,
    model: HookedTransformer | None = None,
    progress: bool = True,
    workers: Workers | None = None,
    command: str | None = None,
) -> ExperimentResult:
    """Build the items, replay them under baseline and self-correct, and measure.

    Args:
        config: The replays (model, task, examples, rounds) and the analysis.
        model: The model, loaded (None: loaded when an arm must be replayed).
        progress: Show progress bars while replaying.
        workers: Not supported (one process); must be None.
        command: The command line recorded in the manifest.

    Returns:
        The tables and summary, and the experiment directory.

    Raises:
        InterpError: Settings that cannot run (Winogender), or a directory holding
            another experiment.
    """
    from dataclasses import replace

    single_process(workers, NAME)
    validate(replace(config, probe=False))
    refuse_winogender(
        config,
        NAME,
        "its items need an ambiguous context with an 'unknown' answer and a stereotyped person",
    )
    selected = selected_examples(config)
    items = build_items(selected, config.seed)
    config = with_model(config, model)  # the model passed, not the default, is recorded
    holder = ModelHolder(config, model)
    with ExperimentDir(NAME, config, command) as exp:
        data = exp.path / "data" / "weak-evidence.jsonl"
        text = "".join(json.dumps(item["line"]) + "\n" for item in items)
        data.parent.mkdir(exist_ok=True)
        if not data.is_file() or data.read_text() != text:
            atomic_write(data, lambda tmp: tmp.write_text(text))
        exp.inputs = {"data": "data/weak-evidence.jsonl", "templates": templates()}
        # The arms replay the written items, all of them; --bbq-templates chose the targets
        # above, and an mc task refuses it.
        written = {"task": "mc", "data": [str(data)], "bbq_templates": None, "sample": None}
        written["limit"] = None
        runs = {
            arm: exp.arm(arm, plan, holder, progress=progress, probe=False, **written)
            for arm, plan in ARMS.items()
        }
        table = pd.DataFrame(
            {
                "example_id": [f"weak-evidence/{i['line']['id']}" for i in items],
                "points_at": [i["points_at"] for i in items],
                "pointed": [i["pointed"] for i in items],
                "template": [i["template"] for i in items],
                "sentence": [i["sentence"] for i in items],
            }
        )
        tables, summary = analyse(
            runs, table, n_boot=config.n_boot, seed=config.seed, cluster=config.cluster
        )
        summary["templates"] = templates()
        sizes = {"n_selected": len(selected), "n_items": len(items), "rounds": config.rounds}
        return exp.write_result(tables, summary, sizes)
