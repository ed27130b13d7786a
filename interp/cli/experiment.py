"""``interp experiment NAME``: the papers' experiments (:mod:`interp.experiments`).

Each experiment either replays what it needs into an experiment directory (``--out DIR``,
resumable: replays already there are reused) or, with ``--run DIR``, analyses an existing run
and writes into ``DIR/experiments/NAME/``.
"""

from __future__ import annotations

import json
import shlex
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from interp.cli import params
from interp.errors import InterpError

Out = Annotated[
    Path | None, typer.Option(help="Experiment directory to write (resumable); or use --run.")
]
RunDir = Annotated[
    Path | None,
    typer.Option(help="Analyse this existing run instead (writes RUN/experiments/NAME/)."),
]
Model = Annotated[str, typer.Option(help="smollm2 (embedded), tiny, a .gguf file, a folder.")]
Task = Annotated[
    str, typer.Option(help="bbq, builtin (48 items shipped), mc, or winogender (convergence).")
]
Data = Annotated[list[str] | None, typer.Option(help="Data file(s) for bbq/mc.")]
Templates = Annotated[Path | None, typer.Option(help="bbq: the BBQ templates/ folder.")]
Sample = params.Sample
Limit = params.Limit
Examples = params.Examples
Rounds = Annotated[int, typer.Option(help="Follow-up rounds R (at least 2); runs hold 0..R.")]
Seed = params.Seed
PlanOpt = Annotated[str, typer.Option(help="The plan replayed (a name or a plan file).")]
Concept = Annotated[str, typer.Option(help="Probe concept: stereotype, morality or a file.")]
ProbeOpt = Annotated[
    bool, typer.Option(help="Probe the replays for the concept (reused when already done).")
]
NBoot = Annotated[int, typer.Option(help="Bootstrap resamples of every interval.")]
Cluster = Annotated[str, typer.Option(help="Bootstrap unit: template or example.")]
BatchSize = Annotated[int, typer.Option(help="Examples per forward pass.")]
Device = params.Device
Dtype = params.Dtype
AsJson = params.Json
ControlOpt = Annotated[
    str,
    typer.Option(
        help="The control arm: a same-seed replay of this plan on the same examples, "
        "analysed beside the main plan (paired differences); none skips it."
    ),
]
ControlRun = Annotated[
    Path | None,
    typer.Option(help="With --run: a replay of another plan on the same examples, the control."),
]
Stats = Annotated[
    str | None, typer.Option(help="winogender: the occupations' statistics TSV (as replay).")
]


def _config(**fields: Any):
    from interp.experiments.common import ExperimentConfig

    out = fields.pop("out")
    if out is None:
        raise InterpError("give --out DIR (an experiment directory) or --run DIR (a run)")
    data = fields.pop("data")
    if "control" in fields and fields["control"] in ("none", ""):
        fields["control"] = None  # --control none: no control arm
    templates = fields.pop("bbq_templates")
    return ExperimentConfig(
        out=str(out),
        data=list(data or []),
        bbq_templates=None if templates is None else str(templates),
        **fields,
    )


def _preflight(
    run: Path | None = None,
    control_run: Path | None = None,
    layer: int | None = None,
    model: str | None = None,
    dtype: str | None = None,
    device: str | None = None,
) -> None:
    """What the file system and a run's manifest can refuse, before torch is imported: the
    run (and control run) a directory, the layer in the run's model, the model installed."""
    from interp import preflight

    if run is not None:
        manifest = preflight.run_manifest(run)
        if layer is not None:
            preflight.check_layers(manifest, [layer])
        if control_run is not None:
            preflight.run_manifest(control_run)
    elif model is not None:
        preflight.check_model(model, dtype=dtype, device=device)


def _check_plans(task: str, *plans: str) -> None:
    """BBQ and built-in plan names (or plan files) before the experiment's module, with pandas,
    is imported; Winogender's plans are left to the experiment (their module needs pandas)."""
    if task == "winogender":
        return
    from interp.inputs.plans import load_plan

    for plan in plans:
        if plan != "none":
            load_plan(plan)


# With --run, the run already holds these: they decide replays, which --run does not make.
_REPLAY_ONLY = (
    "out",
    "model",
    "task",
    "data",
    "bbq_templates",
    "sample",
    "limit",
    "rounds",
    "plan",
    "control",
    "stats",
    "probe",
    "batch_size",
    "device",
    "dtype",
)


def _refuse_replay_options(command: Callable[..., Any], given: dict[str, Any]) -> None:
    """``--run RUN`` analyses a stored run: a replay option given with it (one that differs
    from its default) would be ignored, so it is refused in one line instead."""
    import inspect

    for name, param in inspect.signature(command).parameters.items():
        if name in _REPLAY_ONLY and name in given and given[name] != param.default:
            flag = "--" + name.replace("_", "-")
            if name == "out":
                raise InterpError(
                    "--out and --run: give one (--run writes RUN/experiments/NAME; --out "
                    "replays into a new experiment directory)"
                )
            raise InterpError(
                f"{flag} does not apply with --run: the run was replayed with its own; leave "
                f"{flag} out, or replay anew with --out DIR"
            )


def _refuse_examples(name: str, examples: list[str] | None) -> None:
    """An experiment reads every example of its replays (--sample and --limit choose them when
    it replays): --examples is accepted, as by every command that reads a run, and refused."""
    if examples:
        raise InterpError(
            f"--examples: experiment {name} reads every example of its runs; choose them when "
            "it replays (--out with --sample or --limit)"
        )


def _show(result: Any, as_json: bool) -> None:
    if as_json:
        not_stored = getattr(result, "not_stored", None)
        summary = result.summary if not not_stored else {**result.summary, "not_stored": not_stored}
        typer.echo(json.dumps(summary, indent=2, allow_nan=False))
        return
    from interp.cli.format import format_experiment

    typer.echo(format_experiment(result))
    not_stored = getattr(result, "not_stored", None)
    typer.echo(f"not stored: {not_stored}" if not_stored else params.wrote(result.path))


def _command() -> str:
    return "interp " + shlex.join(sys.argv[1:])


def convergence(
    out: Out = None,
    run: RunDir = None,
    model: Model = "smollm2",
    task: Task = "builtin",
    data: Data = None,
    bbq_templates: Templates = None,
    sample: Sample = None,
    limit: Limit = None,
    rounds: Rounds = 3,
    seed: Seed = 0,
    plan: PlanOpt = "self-correct",
    control: ControlOpt = "baseline",
    control_run: ControlRun = None,
    examples: Examples = None,
    stats: Stats = None,
    concept: Concept = "stereotype",
    probe: ProbeOpt = True,
    layer: Annotated[
        str | None,
        typer.Option(
            "--layers", help="The concept score's one layer (default: the probe's headline)."
        ),
    ] = None,
    eps: Annotated[
        float,
        typer.Option(help="Settled = within eps of the limit (concept: eps x round-0 s.d.)."),
    ] = 0.01,
    n_boot: NBoot = 1000,
    cluster: Cluster = "template",
    batch_size: BatchSize = 8,
    device: Device = "cpu",
    dtype: Dtype = "float32",
    as_json: AsJson = False,
) -> None:
    """Fit y_r = y_inf + (y_0 - y_inf) exp(-lam r) to accuracy, entropy, ECE and the concept
    score per round: lam, y_inf and the settling round with bootstrap intervals, and the
    per-example correlation of entropy drop with concept-score change; beside the control
    plan (default baseline) with paired main - control differences. --task winogender fits
    the gender gap log p(female) - log p(male) and p_neutral instead of accuracy and ECE."""
    layer = params.parse_one_layer(layer, command="experiment convergence")
    fields = {
        k: v for k, v in locals().items() if k not in ("run", "as_json", "control_run", "examples")
    }
    _refuse_examples("convergence", examples)
    if control_run is not None and run is None:
        raise InterpError("--control-run goes with --run (an experiment replays its control)")
    _preflight(run, control_run, layer, model, dtype, device)
    if run is None:
        _check_plans(task, plan, control)
    if run is not None:
        _refuse_replay_options(convergence, fields)
        from interp.experiments.convergence import convergence_of_run

        result = convergence_of_run(
            run,
            concept=concept,
            layer=layer,
            eps=eps,
            n_boot=n_boot,
            seed=seed,
            cluster=cluster,
            control_run=control_run,
        )
    else:
        from interp.experiments.convergence import convergence as run_convergence

        config = _config(**fields)
        result = run_convergence(config, progress=not as_json, command=_command())
    _show(result, as_json)


def superficial(
    out: Out = None,
    run: RunDir = None,
    model: Model = "smollm2",
    task: Task = "builtin",
    data: Data = None,
    bbq_templates: Templates = None,
    sample: Sample = None,
    limit: Limit = None,
    rounds: Rounds = 3,
    seed: Seed = 0,
    plan: PlanOpt = "self-correct",
    control: ControlOpt = "baseline",
    control_run: ControlRun = None,
    examples: Examples = None,
    concept: Concept = "stereotype",
    probe: ProbeOpt = True,
    n_boot: NBoot = 1000,
    cluster: Cluster = "template",
    batch_size: BatchSize = 8,
    device: Device = "cpu",
    dtype: Dtype = "float32",
    as_json: AsJson = False,
) -> None:
    """(a) last-round outcome by the correct answer's rank at round 0; (b) the concept-score
    change per layer for examples that improved vs those that stayed wrong. Prints the
    reading the intervals support, beside the control plan (default baseline) on the same
    example groups, with paired main - control differences."""
    fields = {
        k: v for k, v in locals().items() if k not in ("run", "as_json", "control_run", "examples")
    }
    _refuse_examples("superficial", examples)
    if control_run is not None and run is None:
        raise InterpError("--control-run goes with --run (an experiment replays its control)")
    _preflight(run, control_run, None, model, dtype, device)
    if run is None:
        _check_plans(task, plan, control)
    if run is not None:
        _refuse_replay_options(superficial, fields)
        from interp.experiments.superficial import superficial_of_run

        result = superficial_of_run(
            run,
            concept=concept,
            n_boot=n_boot,
            seed=seed,
            cluster=cluster,
            control_run=control_run,
        )
    else:
        from interp.experiments.superficial import superficial as run_superficial

        config = _config(**fields)
        result = run_superficial(config, progress=not as_json, command=_command())
    _show(result, as_json)


def interactions(
    out: Out = None,
    model: Model = "smollm2",
    task: Task = "builtin",
    data: Data = None,
    bbq_templates: Templates = None,
    sample: Sample = None,
    limit: Limit = None,
    rounds: Rounds = 3,
    seed: Seed = 0,
    concept: Concept = "stereotype",
    probe: ProbeOpt = True,
    n_boot: NBoot = 1000,
    cluster: Cluster = "template",
    batch_size: BatchSize = 8,
    device: Device = "cpu",
    dtype: Dtype = "float32",
    as_json: AsJson = False,
) -> None:
    """The 2x2x2 design instruction (none / self-correct) x CoT (off / on) x feedback (none /
    oracle) on the same examples: per cell and round accuracy, s_AMB, s_DIS, entropy and the
    concept score per layer; main effects and pairwise interactions with paired bootstrap
    intervals. The CoT cells generate up to 48 tokens per round: the slowest cells."""
    fields = {k: v for k, v in locals().items() if k != "as_json"}
    _preflight(model=model, dtype=dtype, device=device)
    from interp.experiments.interactions import interactions as run_interactions

    config = _config(**fields)
    result = run_interactions(config, progress=not as_json, command=_command())
    _show(result, as_json)


def weak_evidence(
    out: Out = None,
    model: Model = "smollm2",
    task: Task = "builtin",
    data: Data = None,
    bbq_templates: Templates = None,
    sample: Sample = None,
    limit: Limit = None,
    rounds: Rounds = 3,
    seed: Seed = 0,
    n_boot: NBoot = 1000,
    cluster: Cluster = "template",
    batch_size: BatchSize = 8,
    device: Device = "cpu",
    dtype: Dtype = "float32",
    as_json: AsJson = False,
) -> None:
    """Ambiguous items get one weak, non-decisive sentence naming one of the two people (the
    stereotyped one in half the items, seeded); replayed under baseline and self-correct: per
    round the share answering unknown (correct), following the evidence, and s_AMB."""
    fields = {k: v for k, v in locals().items() if k != "as_json"}
    _preflight(model=model, dtype=dtype, device=device)
    from interp.experiments.weak_evidence import weak_evidence as run_weak_evidence

    config = _config(**fields, probe=False)
    result = run_weak_evidence(config, progress=not as_json, command=_command())
    _show(result, as_json)


def self_distinguish(
    out: Out = None,
    model: Model = "smollm2",
    task: Task = "builtin",
    data: Data = None,
    bbq_templates: Templates = None,
    sample: Sample = None,
    limit: Limit = None,
    rounds: Rounds = 3,
    seed: Seed = 0,
    plan: PlanOpt = "self-correct",
    n_boot: NBoot = 1000,
    cluster: Cluster = "template",
    batch_size: BatchSize = 8,
    device: Device = "cpu",
    dtype: Dtype = "float32",
    as_json: AsJson = False,
) -> None:
    """After every round of a replay, ask which of two answers (the unbiased and the
    stereotyped one) is less biased, in both orders: per round the share right in both
    orders, per-order accuracy (position bias), and its relation to the model's own answer."""
    fields = {k: v for k, v in locals().items() if k != "as_json"}
    _preflight(model=model, dtype=dtype, device=device)
    from interp.experiments.self_distinguish import self_distinguish as run_self_distinguish

    config = _config(**fields, probe=False)
    result = run_self_distinguish(config, progress=not as_json, command=_command())
    _show(result, as_json)


def build(wrap: Callable[[Callable[..., Any]], Callable[..., Any]]) -> typer.Typer:
    """The ``experiment`` sub-app, each command wrapped by the CLI's error handler."""
    app = typer.Typer(
        help="The self-correction papers' experiments, each into one directory of tables.",
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
        rich_markup_mode=None,  # plain help, as the app's (interp.cli)
    )
    app.command("convergence")(wrap(convergence))
    app.command("superficial")(wrap(superficial))
    app.command("interactions")(wrap(interactions))
    app.command("weak-evidence")(wrap(weak_evidence))
    app.command("self-distinguish")(wrap(self_distinguish))
    return app
