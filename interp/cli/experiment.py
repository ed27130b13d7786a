"""``interp experiment NAME``: the papers' experiments (:mod:`interp.experiments`).

Each experiment either replays what it needs into an experiment directory (``--out DIR``,
resumable: replays already there are reused) or, with ``--run DIR``, analyses an existing run
and writes into ``DIR/experiments/NAME/``.

The commands are generated from the experiments' registry
(:data:`interp.experiments.registry.REGISTRY`): one command per entry, its options the
entry's ``options`` (declared once below, in :data:`OPTIONS`), its help the entry's ``doc``.
"""

from __future__ import annotations

import inspect
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
Model = Annotated[str, typer.Option(help="smollm2, gemma3-270m, tiny, a .gguf file, a folder.")]
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


def _config(config_class: Any = None, **fields: Any):
    from interp.experiments.common import ExperimentConfig

    config_class = config_class or ExperimentConfig
    out = fields.pop("out")
    if out is None:
        raise InterpError("give --out DIR (an experiment directory) or --run DIR (a run)")
    data = fields.pop("data")
    if "control" in fields and fields["control"] in ("none", ""):
        fields["control"] = None  # --control none: no control arm
    templates = fields.pop("bbq_templates")
    if "eval_data" in fields:
        fields["eval_data"] = [str(p) for p in fields["eval_data"] or []]
    return config_class(
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


Layer = Annotated[
    str | None,
    typer.Option("--layers", help="The concept score's one layer (default: the probe's headline)."),
]
Eps = Annotated[
    float,
    typer.Option(help="Settled = within eps of the limit (concept: eps x round-0 s.d.)."),
]

# finetune-selection: the fine-tunes and the held-out files
EvalData = Annotated[
    list[str] | None,
    typer.Option(help="Held-out data file(s), replayed before and after fine-tuning."),
]
SelectRules = Annotated[
    str,
    typer.Option(
        help="Selection rules compared, comma-separated: concept, uncertainty, "
        "concept+uncertainty (random, the control, always runs)."
    ),
]
SelectN = Annotated[int, typer.Option("--n", help="Candidates each fine-tune keeps (equal N).")]
Seeds = Annotated[int, typer.Option(help="Fine-tuning seeds per rule (seed, seed+1, ...).")]
Pool = Annotated[
    int | None,
    typer.Option(help="Score a seeded sample of this many training candidates (default: all)."),
]
Steps = Annotated[int, typer.Option(help="Optimizer steps per fine-tune.")]
TrainBatch = Annotated[int, typer.Option(help="Conversations per fine-tuning step.")]
Lr = Annotated[float, typer.Option(help="AdamW learning rate of the fine-tunes.")]
Method = Annotated[str, typer.Option(help="lora (adapters, merged) or full fine-tuning.")]

# Every option an experiment command may offer: name -> (annotation, default). The config
# fields come from the entry's ``options``; ``run`` and ``control_run`` follow ``out`` and
# ``control`` in experiments that can analyse a stored run; ``as_json`` closes every command.
OPTIONS: dict[str, tuple[Any, Any]] = {
    "out": (Out, None),
    "run": (RunDir, None),
    "model": (Model, "smollm2"),
    "task": (Task, "builtin"),
    "data": (Data, None),
    "bbq_templates": (Templates, None),
    "sample": (Sample, None),
    "limit": (Limit, None),
    "rounds": (Rounds, 3),
    "seed": (Seed, 0),
    "plan": (PlanOpt, "self-correct"),
    "control": (ControlOpt, "baseline"),
    "control_run": (ControlRun, None),
    "examples": (Examples, None),
    "stats": (Stats, None),
    "concept": (Concept, "stereotype"),
    "probe": (ProbeOpt, True),
    "layer": (Layer, None),
    "eps": (Eps, 0.01),
    "n_boot": (NBoot, 1000),
    "cluster": (Cluster, "template"),
    "batch_size": (BatchSize, 8),
    "device": (Device, "cpu"),
    "dtype": (Dtype, "float32"),
    "eval_data": (EvalData, None),
    "select": (SelectRules, "random,concept"),
    "n": (SelectN, 32),
    "seeds": (Seeds, 3),
    "pool": (Pool, None),
    "steps": (Steps, 32),
    "train_batch": (TrainBatch, 1),
    "lr": (Lr, 1e-3),
    "method": (Method, "lora"),
    "as_json": (AsJson, False),
}


def parameters(spec: Any) -> list[str]:
    """The command's parameters in order: the entry's options, with ``run`` after ``out``
    and ``control_run`` after ``control`` where the entry can analyse a stored run, then
    ``as_json``."""
    names: list[str] = []
    for name in spec.options:
        names.append(name)
        if spec.of_run is not None and name == "out":
            names.append("run")
        if spec.of_run is not None and name == "control":
            names.extend(["control_run", "examples"])
    return [*names, "as_json"]


def run_command(spec: Any, command: Callable[..., Any], given: dict[str, Any]) -> None:
    """What every experiment command does with its options (``given``: all of them)."""
    run = given.pop("run", None)
    control_run = given.pop("control_run", None)
    # Accepted, as by every command that reads a run, and refused: an experiment reads all.
    _refuse_examples(spec.name, given.pop("examples", None))
    as_json = given.pop("as_json")
    fields = given  # the config fields
    if "layer" in fields:  # --layers: one layer here (the one grammar, interp.cli.params)
        fields["layer"] = params.parse_one_layer(fields["layer"], command=f"experiment {spec.name}")
    if spec.of_run is not None:
        if control_run is not None and run is None:
            raise InterpError("--control-run goes with --run (an experiment replays its control)")
        _preflight(
            run,
            control_run,
            fields.get("layer"),
            fields["model"],
            fields["dtype"],
            fields["device"],
        )
        if run is None and "control" in fields:
            _check_plans(fields["task"], fields["plan"], fields["control"])
    else:
        _preflight(model=fields["model"], dtype=fields["dtype"], device=fields["device"])
    from interp.experiments.registry import experiment

    if run is not None:
        _refuse_replay_options(command, fields)
        from interp.experiments.common import ExperimentConfig

        analysis = ExperimentConfig(**{k: v for k, v in fields.items() if k not in _REPLAY_ONLY})
        result = experiment(spec.name, analysis, run=run, control_run=control_run)
    else:
        config = _config(spec.config, **fields, **spec.fixed)
        result = experiment(spec.name, config, progress=not as_json, command=_command())
    _show(result, as_json)


def make_command(spec: Any) -> Callable[..., None]:
    """The typer command of one registry entry: its signature from :data:`OPTIONS`, its help
    the entry's ``doc``."""

    def command(**given: Any) -> None:
        run_command(spec, command, given)

    params = [
        inspect.Parameter(
            name,
            inspect.Parameter.KEYWORD_ONLY,
            annotation=OPTIONS[name][0],
            default=OPTIONS[name][1],
        )
        for name in parameters(spec)
    ]
    command.__signature__ = inspect.Signature(params, return_annotation=None)  # type: ignore[attr-defined]
    command.__annotations__ = {p.name: p.annotation for p in params} | {"return": None}
    command.__name__ = command.__qualname__ = spec.name.replace("-", "_")
    command.__doc__ = spec.doc
    return command


def build(wrap: Callable[[Callable[..., Any]], Callable[..., Any]]) -> typer.Typer:
    """The ``experiment`` sub-app, one command per registered experiment, each wrapped by the
    CLI's error handler."""
    from interp.experiments.registry import REGISTRY

    app = typer.Typer(
        help="The self-correction papers' experiments, each into one directory of tables.",
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
        rich_markup_mode=None,  # plain help, as the app's (interp.cli)
    )
    for name, spec in REGISTRY.items():
        app.command(name)(wrap(make_command(spec)))
    return app
