"""Does concept-guided sample selection beat random selection at equal N? (issue 26 item 2)

The *uncertainty and latent concept* paper claims its principle helps "selecting effective
fine-tuning samples". This experiment fine-tunes the model on N candidates of the TRAINING
data files (``data``) chosen by each rule (``select``: ``random`` always, and ``concept``,
``uncertainty``, ``concept+uncertainty``; :mod:`interp.finetune.select`), with ``seeds``
fine-tuning seeds per rule (the seed draws the random arm's N and orders the training), and
measures the tuned models on HELD-OUT category files (``eval_data``), against the un-tuned
model ("before").

Directory (beside the common experiment layout, :mod:`interp.experiments.common`)::

    runs/before/                 the un-tuned model replayed on eval_data (permute cyclic),
                                 probed for the concept: runs/before/probes/<concept>/ is the
                                 concept folder every selection reads (same model, its
                                 validation-chosen layer)
    models/<rule>-s<k>/          the fine-tuned model of rule and seed k (interp finetune;
                                 finetune.json records the kept ids, their scores, tokens)
    runs/<rule>-s<k>/            that model replayed on eval_data (permute cyclic)

Every replay shows each held-out example under its 3 cyclic option orders (rounds 0..1 of
``plan``); the measures are those of the debiased answers (:mod:`interp.metrics.debias`):
``accuracy``, the official BBQ scores ``bias_amb`` and ``bias_dis``, ``entropy`` (nats, of
the order-averaged distribution) and ``agreement`` (share of examples whose orders all give
the same content answer). The fine-tunes train on round 0 only (the question and its correct
answer). The random arm is token-matched to the concept rule's top N (``finetune.json``
``selection.token_match``) and has exactly N.

Intervals: 95% percentile bootstrap over template clusters of the held-out examples (the same
resample for every run: paired) and over fine-tuning seeds (the seeds drawn with replacement,
the same draw for every rule: rule and random at seed k are paired). ``arm - random`` is the
mean over seeds of the rule's measure minus random's. With 3 seeds the seed resampling has few
distinct draws; the intervals are as wide as the seeds make them, no narrower.

Tables (``tables/``): ``runs`` (every run's point values), ``arms`` (per rule: before, after
with interval, after - before with interval), ``vs_random`` (rule - random, interval,
bootstrap p, whether it survives Benjamini-Hochberg over the family of rules x measures at
round 0), ``selection`` (kept ids and scores) and ``training`` (tokens, losses). The reading
says whether a rule beats random at equal N or cannot be told apart from it.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from interp.errors import InterpError
from interp.experiments.common import (
    MULTIPLICITY,
    REPLAY_FIELDS,
    ExperimentConfig,
    ExperimentDir,
    ExperimentResult,
    ModelHolder,
    probe_name,
    surviving,
    with_model,
)
from interp.experiments.convergence import json_rows
from interp.runs.distributed import Workers, single_process
from interp.runs.experiment_dir import ExperimentStore
from interp.runs.store import Run

if TYPE_CHECKING:
    from transformer_lens import HookedTransformer

NAME = "finetune-selection"
RULES = ("random", "concept", "uncertainty", "concept+uncertainty")
MEASURES = ("accuracy", "bias_amb", "bias_dis", "entropy", "agreement")
# better = this sign of (rule - random); bias scores: closer to 0 (judged on |value|)
BETTER = {"accuracy": 1, "agreement": 1}
BH_SHORT = "Benjamini-Hochberg, FDR 0.05"  # as the readings of superficial name it
FT_ROUNDS = 0  # the fine-tunes train on round 0: the question and its correct answer
EVAL_ROUNDS = 1  # replay needs a follow-up round; round 0 is the headline
SELECTION_FIELDS = (
    "eval_data",
    "select",
    "n",
    "seeds",
    "pool",
    "steps",
    "train_batch",
    "lr",
    "method",
)


@dataclass
class SelectionConfig(ExperimentConfig):
    """The common experiment settings (``data``: the TRAINING files, the candidates; ``sample``
    and ``limit``: which HELD-OUT examples are replayed) and the fine-tunes'."""

    eval_data: list[str] = field(default_factory=list)  # held-out category files (replayed)
    select: str = "random,concept"  # the rules compared (random is the control, always)
    n: int = 32  # candidates each fine-tune keeps
    seeds: int = 3  # fine-tuning seeds per rule: seed, seed + 1, ...
    pool: int | None = None  # a seeded sample of the training candidates scored (None: all)
    steps: int = 32  # optimizer steps per fine-tune
    train_batch: int = 1  # conversations per step
    lr: float = 1e-3  # AdamW learning rate
    method: str = "lora"  # lora or full


def rules(config: ExperimentConfig) -> list[str]:
    """The rules ``config.select`` names, random first, each once.

    Args:
        config: The settings (``select``: comma-separated rules).

    Returns:
        The rules, ``random`` first.

    Raises:
        InterpError: An unknown rule.
    """
    names = [s.strip() for s in str(getattr(config, "select", "random,concept")).split(",")]
    unknown = [s for s in names if s not in RULES]
    if unknown or not any(names):
        raise InterpError(
            f"select: unknown rule {', '.join(unknown) or '(none)'}; choose from "
            f"{', '.join(RULES)} (comma-separated; random, the control, is always run)"
        )
    return ["random", *dict.fromkeys(s for s in names if s != "random")]


def arm_name(rule: str, k: int) -> str:
    """The run and model folder name of ``rule`` at seed index ``k``."""
    return f"{rule}-s{k}"


def arms(config: ExperimentConfig) -> dict[str, str]:
    """The runs replayed: ``before`` (the un-tuned model) and ``<rule>-s<k>`` per rule and
    seed (the tuned models), each with ``config.plan``."""
    out = {"before": config.plan}
    for rule in rules(config):
        for k in range(int(getattr(config, "seeds", 3))):
            out[arm_name(rule, k)] = config.plan
    return out


def finetune_config(config: SelectionConfig, rule: str, k: int, concept_dir: Path | None):
    """The :class:`~interp.finetune.config.FinetuneConfig` of ``rule`` at seed index ``k``.

    Args:
        config: The experiment's settings.
        rule: The selection rule.
        k: The seed index (the fine-tune's seed is ``config.seed + k``).
        concept_dir: The concept folder (None while validating: no folder yet).

    Returns:
        The fine-tune's settings, its output ``models/<rule>-s<k>``.
    """
    from interp.finetune.config import FinetuneConfig
    from interp.inputs.selection import Selection

    return FinetuneConfig(
        out=str(Path(config.out) / "models" / arm_name(rule, k)),
        task=config.task,
        data=tuple(config.data),
        plan=config.plan,
        rounds=FT_ROUNDS,
        selection=Selection(sample=config.pool, seed=config.seed),
        method=config.method,
        steps=config.steps,
        batch_size=config.train_batch,
        lr=config.lr,
        seed=config.seed + k,
        device=config.device,
        select=rule,
        n=config.n,
        concept=None if concept_dir is None else str(concept_dir),
    )


def validate_selection(config: SelectionConfig) -> None:
    """Refusals before anything is replayed or trained.

    Args:
        config: The settings.

    Raises:
        InterpError: No training or held-out files, a file in both, a bad rule, seed count,
            N (above the candidates), fine-tuning setting, bootstrap or cluster setting.
    """
    from interp.finetune.config import METHODS
    from interp.finetune.select import check_select
    from interp.stats import check_cluster_key

    if config.task not in ("bbq", "mc"):
        raise InterpError(
            f"task must be bbq or mc (training and held-out files); got {config.task}"
        )
    if not config.data or not config.eval_data:
        raise InterpError(
            "give the training files (--data) and the held-out files (--eval-data): the "
            "fine-tunes train on the first, the measures are taken on the second"
        )
    both = {str(Path(p).resolve()) for p in config.data} & {
        str(Path(p).resolve()) for p in config.eval_data
    }
    if both:
        raise InterpError(f"{sorted(both)[0]} is both a training and a held-out file")
    for path in config.eval_data:
        if not Path(path).is_file():
            raise InterpError(f"no such data file: {path}")
    rules(config)
    if config.seeds < 1:
        raise InterpError(f"seeds must be at least 1 (got {config.seeds})")
    if config.steps < 1 or config.train_batch < 1:
        raise InterpError("steps and train_batch must be at least 1")
    if not (config.lr > 0 and math.isfinite(config.lr)):
        raise InterpError("lr must be a positive number")
    if config.method not in METHODS:
        raise InterpError(f"unknown method {config.method!r}; choose one of {', '.join(METHODS)}")
    if config.n_boot < 0:
        raise InterpError(f"n_boot must be at least 0 (got {config.n_boot})")
    check_cluster_key(config.cluster)
    from probes.concepts import load_concept

    load_concept(config.concept)
    # the candidates counted, N checked (the concept folder does not exist yet)
    check_select(finetune_config(config, "random", 0, None), config.model)


class _SelectionDir(ExperimentDir):
    """The experiment directory, its replay settings those of the fine-tunes too."""

    def __init__(self, config: SelectionConfig, command: str | None) -> None:
        ExperimentStore.__init__(self, NAME, config, (*REPLAY_FIELDS, *SELECTION_FIELDS), command)


def finetune_selection(
    config: ExperimentConfig,
    *,
    model: HookedTransformer | None = None,
    progress: bool = True,
    workers: Workers | None = None,
    command: str | None = None,
) -> ExperimentResult:
    """Replay the un-tuned model on the held-out files and probe it; fine-tune per rule and
    seed (each reused when done) and replay each tuned model; analyse.

    Args:
        config: A :class:`SelectionConfig` (an ``ExperimentConfig`` gets its defaults).
        model: The un-tuned model, loaded (None: loaded when needed). The fine-tunes load
            their own copy of ``config.model``.
        progress: Show progress bars.
        workers: Not supported (one process); must be None.
        command: The command line recorded in the manifest.

    Returns:
        The tables and summary, and the experiment directory.

    Raises:
        InterpError: Settings that cannot run, or a directory holding another experiment.
    """
    from interp.finetune.train import finetune

    single_process(workers, NAME)
    if not isinstance(config, SelectionConfig):
        config = SelectionConfig(**{**config.__dict__})
    config = replace(config, rounds=EVAL_ROUNDS, control=None, probe=True)
    validate_selection(config)
    config = with_model(config, model)
    # finetune loads the tiny model with seed 0: the un-tuned arm is that model too
    holder = ModelHolder(replace(config, seed=0), model)
    eval_replay = {"data": list(config.eval_data), "permute": "cyclic"}
    with _SelectionDir(config, command) as exp:
        before = exp.arm("before", config.plan, holder, progress=progress, **eval_replay)
        concept_dir = before.path / "probes" / probe_name(config.concept)
        for rule in rules(config):
            for k in range(config.seeds):
                name = arm_name(rule, k)
                ft = finetune_config(config, rule, k, concept_dir)
                if not (Path(ft.out) / "finetune.json").is_file():
                    Path(ft.out).parent.mkdir(exist_ok=True)
                    finetune(config.model, ft, progress=progress)
                tuned = ModelHolder(replace(config, model=ft.out), None)
                exp.arm(
                    name,
                    config.plan,
                    tuned,
                    progress=progress,
                    probe=False,
                    model=ft.out,
                    **eval_replay,
                )
                exp.arms[name]["finetune"] = {
                    "model": f"models/{name}",
                    "select": rule,
                    "seed": ft.seed,
                }
        exp.write_manifest(False)
        tables, summary = analyse(
            exp.path, n_boot=config.n_boot, seed=config.seed, cluster=config.cluster
        )
        sizes = {
            "n_eval_examples": summary["n_eval_examples"],
            "n": config.n,
            "seeds": config.seeds,
            "rules": rules(config),
        }
        return exp.write_result(tables, summary, sizes)


# --- the analysis, from the stored runs -------------------------------------------------------


def run_measures(run: Run, weights: np.ndarray) -> tuple[dict[str, np.ndarray], list[str]]:
    """A permuted run's debiased measures under each row of example weights.

    Args:
        run: A replay with ``permute`` (its orders averaged per base example).
        weights: ``[resample, example]`` weights (row 0: ones, the point estimate).

    Returns:
        ``(measures, example_ids)``: per measure of :data:`MEASURES` an array ``[resample,
        round]``; the base examples' ids in order.
    """
    from interp.metrics.debias import debiased_rounds
    from interp.metrics.rounds import build_grid, resampled_stats

    table = debiased_rounds(run.rounds()).sort_values(["round", "example_index"], kind="stable")
    grid = build_grid(table)
    stats = resampled_stats(grid, weights)
    n_rounds = len(grid.rounds)
    agree = table["agree"].to_numpy(dtype=float).reshape(n_rounds, -1)
    out = {m: stats[m] for m in MEASURES if m != "agreement"}
    out["agreement"] = (weights @ agree.T) / weights.sum(axis=1, keepdims=True)
    ids = table[table["round"] == grid.rounds[0]]["example_id"].tolist()
    return out, ids


def _interval(samples: np.ndarray) -> tuple[float, float, float]:
    from interp.stats import bootstrap_p, percentile_interval

    if samples.size == 0:
        return math.nan, math.nan, math.nan
    lo, hi = percentile_interval(samples)
    return float(lo), float(hi), float(bootstrap_p(samples))


def analyse(
    exp_dir: str | Path, *, n_boot: int = 1000, seed: int = 0, cluster: str = "template"
) -> tuple[dict[str, pd.DataFrame], dict[str, Any]]:
    """The tables and summary of a finetune-selection directory, from its stored runs and
    fine-tunes (cheap: no model).

    Args:
        exp_dir: The experiment directory (``runs/before``, ``runs/<rule>-s<k>``,
            ``models/<rule>-s<k>``).
        n_boot: Bootstrap resamples.
        seed: Seeds the cluster and the seed resamples.
        cluster: ``template`` or ``example``.

    Returns:
        ``(tables, summary)``.

    Raises:
        InterpError: A run missing, or runs of other held-out examples.
    """
    from interp.metrics.debias import debiased_rounds
    from interp.stats import bootstrap_weights, example_clusters

    path = Path(exp_dir)
    manifest = json.loads((path / "manifest.json").read_text())
    cfg = manifest["config"]
    found = [r for r in RULES if r in rules(SelectionConfig(select=cfg["select"]))]
    n_seeds = int(cfg["seeds"])
    before = Run.open(path / "runs" / "before")
    clusters = example_clusters(debiased_rounds(before.rounds()), cluster)
    weights = np.vstack(
        [np.ones((1, len(clusters.ids))), bootstrap_weights(clusters.ids, n_boot, seed)]
    )
    base, ids = run_measures(before, weights)
    per: dict[str, list[dict[str, np.ndarray]]] = {}
    infos: dict[str, list[dict[str, Any]]] = {}
    for rule in found:
        per[rule], infos[rule] = [], []
        for k in range(n_seeds):
            name = arm_name(rule, k)
            measures, run_ids = run_measures(Run.open(path / "runs" / name), weights)
            if run_ids != ids:
                raise InterpError(f"runs/{name} holds other held-out examples than runs/before")
            per[rule].append(measures)
            infos[rule].append(json.loads((path / "models" / name / "finetune.json").read_text()))
    rng = np.random.default_rng([seed, 1])
    counts = rng.multinomial(n_seeds, [1 / n_seeds] * n_seeds, size=n_boot).astype(float)
    seed_w = np.vstack([np.ones((1, n_seeds)), counts]) / n_seeds  # [1 + n_boot, seed]

    def after(rule: str, m: str) -> np.ndarray:  # [1 + n_boot, round]
        stack = np.stack([per[rule][k][m] for k in range(n_seeds)])  # [seed, 1 + B, round]
        return np.einsum("bs,sbr->br", seed_w, stack)

    rounds = list(range(base["accuracy"].shape[1]))
    run_rows, arm_rows, diff_rows = [], [], []
    for m in MEASURES:
        for r in rounds:
            run_rows.append(
                {"arm": "before", "seed": -1, "round": r, "measure": m}
                | {"value": float(base[m][0, r])}
            )
    for rule in found:
        for k in range(n_seeds):
            for m in MEASURES:
                for r in rounds:
                    run_rows.append(
                        {"arm": rule, "seed": int(infos[rule][k]["hyper_parameters"]["seed"])}
                        | {"round": r, "measure": m, "value": float(per[rule][k][m][0, r])}
                    )
        for m in MEASURES:
            a = after(rule, m)
            change = a - base[m]
            for r in rounds:
                lo, hi, _ = _interval(a[1:, r])
                clo, chi, cp = _interval(change[1:, r])
                arm_rows.append(
                    {"arm": rule, "round": r, "measure": m, "before": float(base[m][0, r])}
                    | {"after": float(a[0, r]), "after_lo": lo, "after_hi": hi}
                    | {"change": float(change[0, r]), "change_lo": clo, "change_hi": chi}
                    | {"change_p": cp, "n_seeds": n_seeds}
                )
            if rule == "random":
                continue
            d = a - after("random", m)
            for r in rounds:
                lo, hi, p = _interval(d[1:, r])
                diff_rows.append(
                    {"arm": rule, "round": r, "measure": m, "value": float(d[0, r])}
                    | {"lo": lo, "hi": hi, "p": p}
                    | {"rule_after": float(a[0, r])}
                    | {"random_after": float(after("random", m)[0, r])}
                )
    vs_random = pd.DataFrame(
        diff_rows,
        columns=["arm", "round", "measure", "value", "lo", "hi", "p", "rule_after", "random_after"],
    )
    vs_random["survives"] = False
    head = vs_random["round"] == 0
    if head.any():
        vs_random.loc[head, "survives"] = surviving(vs_random[head])
    tables = {
        "runs": pd.DataFrame(run_rows),
        "arms": pd.DataFrame(arm_rows),
        "vs_random": vs_random,
        "selection": _selection_table(infos),
        "training": _training_table(infos),
    }
    summary = {
        "plan": cfg["plan"],
        "n": int(cfg["n"]),
        "seeds": n_seeds,
        "rules": found,
        "train_data": cfg["data"],
        "eval_data": cfg["eval_data"],
        "n_eval_examples": len(ids),
        "n_boot": n_boot,
        "cluster": clusters.to_dict(),
        "measures": list(MEASURES),
        "headline_round": 0,
        "intervals": (
            "95% percentile bootstrap over template clusters of the held-out examples (paired "
            "across runs) and over fine-tuning seeds (drawn with replacement, paired across "
            "rules)"
        ),
        "multiplicity": MULTIPLICITY,
        "concept": _concept_record(infos),
        "tokens": _token_summary(tables["training"]),
        "arms": json_rows(tables["arms"][tables["arms"]["round"] == 0]),
        "vs_random": json_rows(vs_random[head]),
    }
    summary["reading"] = reading(tables["arms"], vs_random, summary)
    return tables, summary


def _selection_table(infos: dict[str, list[dict[str, Any]]]) -> pd.DataFrame:
    rows = []
    for rule, seeds in infos.items():
        for info in seeds:
            sel = info.get("selection", {})
            scores = sel.get("scores", {})
            for i, ex in enumerate(sel.get("example_ids", [])):
                rows.append(
                    {"arm": rule, "seed": int(info["hyper_parameters"]["seed"]), "rank": i + 1}
                    | {"example_id": ex}
                    | {k: scores.get(k, [math.nan] * (i + 1))[i] for k in ("concept", "entropy")}
                )
    return pd.DataFrame(rows, columns=["arm", "seed", "rank", "example_id", "concept", "entropy"])


def _training_table(infos: dict[str, list[dict[str, Any]]]) -> pd.DataFrame:
    rows = []
    for rule, seeds in infos.items():
        for info in seeds:
            sel = info.get("selection", {})
            match = sel.get("token_match")
            rows.append(
                {"arm": rule, "seed": int(info["hyper_parameters"]["seed"]), "n": info["examples"]}
                | {"candidates": sel.get("candidates"), "tokens": sel.get("tokens")}
                | {"answer_tokens": sel.get("answer_tokens")}
                | {"tokens_trained": sel.get("tokens_trained")}
                | {"token_matched": None if match is None else bool(match["within"])}
                | {"loss_first": info["losses"][0], "loss_last": info["losses"][-1]}
            )
    return pd.DataFrame(rows)


def _concept_record(infos: dict[str, list[dict[str, Any]]]) -> dict[str, Any] | None:
    for seeds in infos.values():
        for info in seeds:
            concept = info.get("selection", {}).get("concept")
            if concept:
                return concept
    return None


def _token_summary(training: pd.DataFrame) -> dict[str, Any]:
    means = training.groupby("arm", sort=False)["tokens"].mean()
    matched = training.loc[training["arm"] == "random", "token_matched"]
    return {
        "mean_tokens": {str(k): float(v) for k, v in means.items()},
        "random_within_tolerance": f"{int(matched.fillna(False).sum())} of {len(matched)} seeds",
    }


def _fmt(row: dict[str, Any] | pd.Series) -> str:
    return f"{row['value']:+.3f} [{row['lo']:+.3f}, {row['hi']:+.3f}]"


def _better(row: pd.Series) -> bool | None:
    """Whether a surviving rule - random difference is better for the rule (None: entropy,
    which is neither)."""
    m = row["measure"]
    if m in BETTER:
        return row["value"] * BETTER[m] > 0
    if m.startswith("bias"):
        return abs(row["rule_after"]) < abs(row["random_after"])
    return None


def reading(
    arms_table: pd.DataFrame, vs_random: pd.DataFrame, summary: dict[str, Any]
) -> list[str]:
    """The plain-words reading at round 0: per rule, beats random / worse / cannot be told
    apart; what fine-tuning did to each rule; the token match.

    Args:
        arms_table: The ``arms`` table.
        vs_random: The ``vs_random`` table.
        summary: The summary so far (N, seeds, tokens).

    Returns:
        The reading's sentences.
    """
    n, s = summary["n"], summary["seeds"]
    lines = []
    head = vs_random[vs_random["round"] == 0]
    for rule in [r for r in summary["rules"] if r != "random"]:
        rows = head[head["arm"] == rule]
        acc = rows[rows["measure"] == "accuracy"].iloc[0]
        agree = rows[rows["measure"] == "agreement"].iloc[0]
        shown = rows[rows["survives"]]
        better = [r["measure"] for _, r in shown.iterrows() if _better(r)]
        worse = [r["measure"] for _, r in shown.iterrows() if _better(r) is False]
        tail = (
            f"(debiased accuracy {rule} - random {_fmt(acc)}, agreement across orders "
            f"{_fmt(agree)}; N={n}, {s} seeds, {BH_SHORT} over rules x measures)"
        )
        if not better and not worse:
            lines.append(
                f"{rule} selection cannot be told apart from random selection at equal N on the "
                f"held-out categories: no measure's interval excludes 0 and survives the "
                f"correction {tail}."
            )
        else:
            parts = []
            if better:
                parts.append(f"better than random on {', '.join(better)}")
            if worse:
                parts.append(f"worse than random on {', '.join(worse)}")
            verdict = "beats" if better and not worse else "differs from"
            lines.append(
                f"{rule} selection {verdict} random at equal N: {'; '.join(parts)} {tail}."
            )
    base = arms_table[(arms_table["round"] == 0) & (arms_table["measure"] == "accuracy")]
    moved = [
        f"{r['arm']} {r['change']:+.3f} [{r['change_lo']:+.3f}, {r['change_hi']:+.3f}]"
        for _, r in base.iterrows()
    ]
    lines.append(
        "fine-tuning vs the un-tuned model, debiased accuracy at round 0 (after - before): "
        + "; ".join(moved)
        + "."
    )
    tok = summary["tokens"]
    lines.append(
        "training tokens (mean over seeds): "
        + ", ".join(f"{k} {v:.0f}" for k, v in tok["mean_tokens"].items())
        + f"; the random draw is within 2% of the concept arm's tokens in "
        f"{tok['random_within_tolerance']}."
    )
    if s < 3:
        lines.append(
            f"only {s} seed(s): the intervals over seeds say little (the issue asks >= 3)."
        )
    return lines
