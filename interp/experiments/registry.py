"""The experiments, one registry: name -> config, arms, analysis, options and help.

``interp experiment NAME`` is generated from :data:`REGISTRY` (one command per entry, its
options the entry's ``options``), and :func:`experiment` runs any entry by name. This module
imports nothing heavy (no pandas, torch or the experiment modules) so the command line can
read it at startup; the experiment's module is imported when its verb, analysis or arms are
asked for.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from interp.errors import InterpError

if TYPE_CHECKING:
    from transformer_lens import HookedTransformer

    from interp.experiments.common import ExperimentConfig, ExperimentResult
    from interp.runs.distributed import Workers

# The options every experiment reads first (the replays: what, how many, with which model).
_REPLAY = ("out", "model", "task", "data", "bbq_templates", "sample", "limit", "rounds", "seed")
_RUNTIME = ("n_boot", "cluster", "batch_size", "device", "dtype")


@dataclass(frozen=True)
class ExperimentSpec:
    """One registered experiment.

    Attributes:
        name: The command's name (``interp experiment NAME``), e.g. ``"weak-evidence"``.
        help: One line for the command list.
        doc: The command's help text (its ``--help``).
        module: The module holding the experiment.
        verb: The function that replays the arms and analyses them (``verb(config, *,
            model, progress, workers, command)``).
        analysis: The function that computes the tables and summary from replayed runs.
        options: The :class:`~interp.experiments.common.ExperimentConfig` fields the command
            offers as options, in their order.
        of_run: The function that analyses an existing run (``--run``), or None.
        fixed: Config fields the experiment sets itself (e.g. ``probe=False``).
        config_class: The name of a config class in ``module`` that extends
            :class:`~interp.experiments.common.ExperimentConfig` with the experiment's own
            fields; empty: ``ExperimentConfig`` itself.
    """

    name: str
    help: str
    doc: str
    module: str
    verb: str
    analysis: str
    options: tuple[str, ...]
    of_run: str | None = None
    fixed: dict[str, Any] = field(default_factory=dict)
    config_class: str = ""

    @property
    def config(self) -> type[ExperimentConfig]:
        """The config class (:class:`~interp.experiments.common.ExperimentConfig`, or the
        experiment's subclass of it)."""
        if self.config_class:
            return self.load(self.config_class)
        from interp.experiments.common import ExperimentConfig

        return ExperimentConfig

    def load(self, attr: str) -> Callable[..., Any]:
        """A function of the experiment's module, imported now."""
        return getattr(importlib.import_module(self.module), attr)

    def function(self) -> Callable[..., ExperimentResult]:
        """The experiment's verb."""
        return self.load(self.verb)

    def analysis_function(self) -> Callable[..., Any]:
        """The analysis (tables and summary from replayed runs)."""
        return self.load(self.analysis)

    def arms(self, config: ExperimentConfig) -> dict[str, str]:
        """The arms ``config`` replays: arm name (``runs/<arm>``) -> plan (a name or, for
        interactions, the plan file under ``plans/``)."""
        return self.load("arms")(config)


REGISTRY: dict[str, ExperimentSpec] = {
    spec.name: spec
    for spec in (
        ExperimentSpec(
            name="convergence",
            help="Fit saturating curves to accuracy, entropy, ECE and the concept score.",
            doc=(
                "Fit y_r = y_inf + (y_0 - y_inf) exp(-lam r) to accuracy, entropy, ECE and the "
                "concept score per round: lam, y_inf and the settling round with bootstrap "
                "intervals, and the per-example correlation of entropy drop with concept-score "
                "change; beside the control plan (default baseline) with paired main - control "
                "differences. --task winogender fits the gender gap log p(female) - log p(male) "
                "and p_neutral instead of accuracy and ECE."
            ),
            module="interp.experiments.convergence",
            verb="convergence",
            analysis="analyse_run",
            options=(
                *_REPLAY,
                "plan",
                "control",
                "stats",
                "concept",
                "probe",
                "layer",
                "eps",
                *_RUNTIME,
            ),
            of_run="convergence_of_run",
        ),
        ExperimentSpec(
            name="superficial",
            help="Last-round outcome by round-0 rank; concept change of improved vs wrong.",
            doc=(
                "(a) last-round outcome by the correct answer's rank at round 0; (b) the "
                "concept-score change per layer for examples that improved vs those that stayed "
                "wrong. Prints the reading the intervals support, beside the control plan "
                "(default baseline) on the same example groups, with paired main - control "
                "differences."
            ),
            module="interp.experiments.superficial",
            verb="superficial",
            analysis="analyse_run",
            options=(*_REPLAY, "plan", "control", "concept", "probe", *_RUNTIME),
            of_run="superficial_of_run",
        ),
        ExperimentSpec(
            name="interactions",
            help="The 2x2x2 design instruction x CoT x feedback: main effects, interactions.",
            doc=(
                "The 2x2x2 design instruction (none / self-correct) x CoT (off / on) x feedback "
                "(none / oracle) on the same examples: per cell and round accuracy, s_AMB, s_DIS, "
                "entropy and the concept score per layer; main effects and pairwise interactions "
                "with paired bootstrap intervals. The CoT cells generate up to 48 tokens per "
                "round: the slowest cells."
            ),
            module="interp.experiments.interactions",
            verb="interactions",
            analysis="analyse",
            options=(*_REPLAY, "concept", "probe", *_RUNTIME),
        ),
        ExperimentSpec(
            name="weak-evidence",
            help="Ambiguous items with one weak sentence: unknown, following it, s_AMB.",
            doc=(
                "Ambiguous items get one weak, non-decisive sentence naming one of the two people "
                "(the stereotyped one in half the items, seeded); replayed under baseline and "
                "self-correct: per round the share answering unknown (correct), following the "
                "evidence, and s_AMB."
            ),
            module="interp.experiments.weak_evidence",
            verb="weak_evidence",
            analysis="analyse",
            options=(*_REPLAY, *_RUNTIME),
            fixed={"probe": False},
        ),
        ExperimentSpec(
            name="self-distinguish",
            help="Which of two answers is less biased, asked after every round, both orders.",
            doc=(
                "After every round of a replay, ask which of two answers (the unbiased and the "
                "stereotyped one) is less biased, in both orders: per round the share right in "
                "both orders, per-order accuracy (position bias), and its relation to the model's "
                "own answer."
            ),
            module="interp.experiments.self_distinguish",
            verb="self_distinguish",
            analysis="analyse",
            options=(*_REPLAY, "plan", *_RUNTIME),
            fixed={"probe": False},
        ),
        ExperimentSpec(
            name="finetune-selection",
            help="Fine-tune on N samples chosen by the concept vs at random; held-out BBQ.",
            doc=(
                "Fine-tune the model on N candidates of the training files (--data) chosen by "
                "each rule (--select: random, the control, token-matched to the concept rule's "
                "top N, and concept, uncertainty, concept+uncertainty; the concept direction "
                "from a probe of the un-tuned model at its validation-chosen layer), --seeds "
                "seeds each; replay the un-tuned and every tuned model on the held-out files "
                "(--eval-data, 3 cyclic option orders) and report the debiased accuracy, BBQ "
                "scores, agreement across orders and entropy before and after, and rule - "
                "random with intervals over seeds and template clusters."
            ),
            module="interp.experiments.finetune_selection",
            verb="finetune_selection",
            analysis="analyse",
            options=(
                "out",
                "model",
                "task",
                "data",
                "eval_data",
                "bbq_templates",
                "sample",
                "limit",
                "seed",
                "plan",
                "concept",
                "select",
                "n",
                "seeds",
                "pool",
                "steps",
                "train_batch",
                "lr",
                "method",
                *_RUNTIME,
            ),
            fixed={"probe": True, "rounds": 1, "control": None},
            config_class="SelectionConfig",
        ),
    )
}


def get_spec(name: str) -> ExperimentSpec:
    """The registered experiment ``name``.

    Raises:
        InterpError: No experiment of that name.
    """
    spec = REGISTRY.get(name)
    if spec is None:
        raise InterpError(f"unknown experiment {name!r}; use one of {', '.join(REGISTRY)}")
    return spec


def experiment(
    name: str,
    config: ExperimentConfig | None = None,
    *,
    model: HookedTransformer | None = None,
    progress: bool = True,
    workers: Workers | None = None,
    run: str | Path | None = None,
    control_run: str | Path | None = None,
    command: str | None = None,
) -> ExperimentResult:
    """Run the registered experiment ``name`` as ``config`` says.

    Without ``run``: replay the experiment's arms into ``config.out`` (resumable: arms already
    replayed are reused), analyse them and write the experiment directory. With ``run``
    (experiments that have ``of_run``): analyse that stored run (beside ``control_run``) with
    ``config``'s analysis settings and write ``<run>/experiments/<name>/``.

    Args:
        name: A name of :data:`REGISTRY` (e.g. ``"convergence"``, ``"weak-evidence"``).
        config: The experiment's settings (None: the defaults).
        model: The model, loaded (None: loaded when an arm must be replayed).
        progress: Show progress bars while replaying.
        workers: Not supported (one process); must be None.
        run: An existing run to analyse instead of replaying.
        control_run: With ``run``: a replay of another plan on the same examples.
        command: The command line recorded in the manifest (the CLI passes it).

    Returns:
        The tables, the summary and where they were written.

    Raises:
        InterpError: An unknown experiment, settings that cannot run, ``run`` for an
            experiment that cannot analyse one, or ``control_run`` without ``run``.
    """
    from dataclasses import replace

    spec = get_spec(name)
    config = config if config is not None else spec.config()
    if spec.fixed:
        config = replace(config, **spec.fixed)
    if run is None:
        if control_run is not None:
            raise InterpError("control_run goes with run (an experiment replays its control)")
        return spec.function()(
            config, model=model, progress=progress, workers=workers, command=command
        )
    if spec.of_run is None:
        raise InterpError(f"experiment {name} replays its own arms; it cannot analyse a run")
    return spec.load(spec.of_run)(run, config, control_run=control_run, workers=workers)
