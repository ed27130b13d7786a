"""The ``interp`` command line. Library functions do the work; this package parses and prints.

One module per command (``models``, ``replay``, ``metrics``, ``probe``, ``patch``, ``circuit``,
``export``, ``explore``, ``sae`` with its subcommands),
the text they print in :mod:`interp.cli.format`, the option vocabulary every command shares
(declared once, with the old spellings it still takes) in :mod:`interp.cli.params`. Commands
are registered here, explicitly; a command module imports
its library (and with it torch and TransformerLens) only inside the command function, so
``interp --help`` and ``interp metrics`` start without them.

Errors a user can cause (``InterpError``, the file system's refusals: a read-only folder, a
full disk, a path below a file; and the parser's: an unknown flag, a missing option) print one
line on stderr and exit with code 2. A library
error that names a config field ("rounds must be at least 1") is printed with the flag the
user typed ("--rounds must be at least 1"): :func:`flag_message` is the one place that maps.
"""

from __future__ import annotations

import functools
import re
import sys
from collections.abc import Callable
from typing import Annotated, Any

import typer
from typer.core import TyperCommand, TyperGroup

from interp.cli import (
    circuit,
    experiment,
    explore,
    export,
    feature_circuit,
    finetune,
    metrics,
    models,
    patch,
    probe,
    replay,
    sae,
)
from interp.cli.format import format_metrics
from interp.cli.params import MULTI_VALUE_OPTIONS, rewrite_deprecated
from interp.errors import InterpError

__all__ = ["app", "flag_message", "format_metrics", "main"]

try:  # newer typer carries its own copy of click
    from typer._click.exceptions import ClickException
except ImportError:  # pragma: no cover (older typer: click itself)
    from click.exceptions import ClickException

# -h and --help, in the app and every command (click passes them down to sub-contexts).
CONTEXT = {"help_option_names": ["-h", "--help"]}


def _plain_flags(params: list[Any]) -> list[Any]:
    """Flags take no value: show none (typer would show ``--json <bool>``)."""
    for param in params:
        if getattr(param, "is_flag", False) and param.metavar is None:
            param.metavar = ""
    return params


class Command(TyperCommand):
    """Every command: flags shown without a value, and the old spellings of its flags
    (:data:`interp.cli.params.DEPRECATED`) taken with one line on stderr."""

    def get_params(self, ctx: Any) -> list[Any]:
        return _plain_flags(super().get_params(ctx))

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        # The command's path after the program's name (`sae features`), whatever that name is
        # (`interp`, `python -m interp.cli`, a test runner's).
        names, at = [], ctx
        while at.parent is not None:
            names.append(at.info_name)
            at = at.parent
        return super().parse_args(ctx, rewrite_deprecated(" ".join(reversed(names)), args))


class Group(TyperGroup):
    """The app and its sub-apps (sae, experiment): flags shown without a value, and a usage
    error (an unknown flag, a missing option, a bad value) as one line ``error: ...``."""

    def get_params(self, ctx: Any) -> list[Any]:
        return _plain_flags(super().get_params(ctx))

    def main(self, *args: Any, standalone_mode: bool = True, **kwargs: Any) -> Any:
        if not standalone_mode:
            return super().main(*args, standalone_mode=False, **kwargs)
        try:
            code = super().main(*args, standalone_mode=False, **kwargs)
        except ClickException as err:
            if type(err).__name__ == "NoArgsIsHelpError":  # `interp` alone: the help
                typer.echo(err.format_message())
                sys.exit(err.exit_code)
            typer.echo(f"error: {usage_message(err)}", err=True)
            sys.exit(2)
        except typer.Abort:
            typer.echo("Aborted!", err=True)
            sys.exit(1)
        sys.exit(code if isinstance(code, int) else 0)


def usage_message(err: Any) -> str:
    """Click's message (with its suggestion) on one line, and where the options are listed."""
    text = " ".join(line.strip() for line in err.format_message().splitlines() if line.strip())
    ctx = getattr(err, "ctx", None)
    if ctx is not None:
        text = f"{text.rstrip('.')}; see {ctx.command_path} --help"
    return text


def _version(value: bool | None) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            typer.echo(f"interp {version('interp')}")
        except PackageNotFoundError:  # pragma: no cover (a checkout on PYTHONPATH, not installed)
            typer.echo("interp (not installed)")
        raise typer.Exit()


app = typer.Typer(
    help=(
        "Mechanistic interpretability of multi-round self-correction: replay rounds of "
        "'please make sure your answer is unbiased' on a TransformerLens model, cache the "
        "activations that matter, and measure what changes, per round and per layer."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # Plain help (click's): nothing cut at any width, and docstring paragraphs reflow to it.
    rich_markup_mode=None,
    cls=Group,
    context_settings=CONTEXT,
)


@app.callback()
def _app(
    version: Annotated[
        bool | None,
        typer.Option(
            "--version", is_eager=True, callback=_version, help="Print the version and exit."
        ),
    ] = None,
) -> None:
    """The options before a command (--version, --help)."""


# Config fields whose name starts a library error message -> the flag a user types. A field's
# flag is its name with '-' for '_'; only the exceptions need an entry.
FIELD_FLAGS: dict[str, str] = {"layer": "--layers"}
_FIELD_AT_START = re.compile(r"^([a-z][a-z0-9]*(?:_[a-z0-9]+)*) ")
# The config fields whose library messages start with their name (only these are rewritten:
# a message may start with an ordinary word that is also a field's name, such as "out").
_OPTION_FIELDS = frozenset(
    {
        "rounds",
        "limit",
        "sample",
        "batch_size",
        "example_batch",
        "max_new_tokens",
        "hooks",
        "force_round0",
        "workers",
        "threads_per_worker",
        "gpus_per_worker",
        "stats",
        "n_boot",
        "eps",
        "layer",
        "max_orders",
    }
)


def flag_message(message: str) -> str:
    """``"rounds must be at least 1"`` -> ``"--rounds must be at least 1"``: a message that
    starts with a config field's name is shown with that field's flag. Messages that already
    name a flag, or name no field, are left as they are."""
    match = _FIELD_AT_START.match(message)
    if match is None or match.group(1) not in _OPTION_FIELDS:
        return message
    field = match.group(1)
    flag = FIELD_FLAGS.get(field, "--" + field.replace("_", "-"))
    return flag + message[len(field) :]


def _user_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except InterpError as err:
            typer.echo(f"error: {flag_message(str(err))}", err=True)
            raise typer.Exit(2) from None
        except OSError as err:
            # Writes are atomic (interp.runs.store), so a refused write leaves no partial file.
            where = f"{err.filename}: " if err.filename else ""
            typer.echo(f"error: {where}{err.strerror or err}", err=True)
            raise typer.Exit(2) from None

    return wrapper


# The commands, in the order `interp --help` lists them.
app.command("models", cls=Command)(_user_errors(models.models))
app.command("replay", cls=Command)(_user_errors(replay.replay))
app.command("metrics", cls=Command)(_user_errors(metrics.metrics))
app.command("probe", cls=Command)(_user_errors(probe.probe))
app.command("patch", cls=Command)(_user_errors(patch.patch))
app.command("circuit", cls=Command)(_user_errors(circuit.circuit))
app.command("feature-circuit", cls=Command)(_user_errors(feature_circuit.feature_circuit))
app.command("export", cls=Command)(_user_errors(export.export))
app.command("explore", cls=Command)(_user_errors(explore.explore))
app.command("finetune", cls=Command)(_user_errors(finetune.finetune))
# `interp sae ...` and `interp experiment ...`: groups of commands; each gets the same
# one-line user errors and help.
_experiment_app = experiment.build(_user_errors)
for _command in sae.sae_app.registered_commands:
    _command.callback = _user_errors(_command.callback)
for _command in [*sae.sae_app.registered_commands, *_experiment_app.registered_commands]:
    _command.cls = Command
app.add_typer(sae.sae_app, name="sae", cls=Group)
app.add_typer(_experiment_app, name="experiment", cls=Group)


def _expand_multi_value_options(argv: list[str]) -> list[str]:
    """``--data A B`` -> ``--data A --data B`` (typer/click options take one value each)."""
    out: list[str] = []
    current: str | None = None
    for arg in argv:
        if arg in MULTI_VALUE_OPTIONS:
            current = arg
            out.append(arg)
            continue
        if arg.startswith("-"):
            current = None
        elif current is not None and out[-1] != current:
            out.append(current)
        out.append(arg)
    return out


def main() -> None:
    sys.argv[1:] = _expand_multi_value_options(sys.argv[1:])
    app()
