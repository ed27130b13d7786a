"""The ``interp`` command line. Library functions do the work; this package parses and prints.

One module per command (``models``, ``replay``, ``metrics``, ``probe``, ``patch``, ``circuit``,
``export``, ``sae`` with its subcommands),
the text they print in :mod:`interp.cli.format`, the options several commands share in
:mod:`interp.cli.options`. Commands are registered here, explicitly; a command module imports
its library (and with it torch and TransformerLens) only inside the command function, so
``interp --help`` and ``interp metrics`` start without them.

Errors a user can cause (``InterpError``, and the file system's refusals: a read-only folder,
a full disk, a path below a file) print one line on stderr and exit with code 2. A library
error that names a config field ("rounds must be at least 1") is printed with the flag the
user typed ("--rounds must be at least 1"): :func:`flag_message` is the one place that maps.
"""

from __future__ import annotations

import functools
import re
import sys
from collections.abc import Callable
from typing import Any

import typer

from interp.cli import (
    circuit,
    experiment,
    export,
    feature_circuit,
    metrics,
    models,
    patch,
    probe,
    replay,
    sae,
)
from interp.cli.format import format_metrics
from interp.cli.options import MULTI_VALUE_OPTIONS
from interp.errors import InterpError

__all__ = ["app", "flag_message", "format_metrics", "main"]

app = typer.Typer(
    help=(
        "Mechanistic interpretability of multi-round self-correction: replay rounds of "
        "'please make sure your answer is unbiased' on a TransformerLens model, cache the "
        "activations that matter, and measure what changes, per round and per layer."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",  # docstring paragraphs reflow to the terminal's width
)

# Config fields whose name starts a library error message -> the flag a user types. A field's
# flag is its name with '-' for '_'; only the exceptions need an entry.
FIELD_FLAGS: dict[str, str] = {}
_FIELD_AT_START = re.compile(r"^([a-z][a-z0-9]*(?:_[a-z0-9]+)*) ")
# The config fields whose library messages start with their name (only these are rewritten:
# a message may start with an ordinary word that is also a field's name, such as "out").
_OPTION_FIELDS = frozenset(
    {
        "rounds",
        "limit",
        "sample",
        "batch_size",
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
            # Writes are atomic (interp.store), so a refused write leaves no partial file.
            where = f"{err.filename}: " if err.filename else ""
            typer.echo(f"error: {where}{err.strerror or err}", err=True)
            raise typer.Exit(2) from None

    return wrapper


# The commands, in the order `interp --help` lists them.
app.command("models")(_user_errors(models.models))
app.command("replay")(_user_errors(replay.replay))
app.command("metrics")(_user_errors(metrics.metrics))
app.command("probe")(_user_errors(probe.probe))
app.command("patch")(_user_errors(patch.patch))
app.command("circuit")(_user_errors(circuit.circuit))
app.command("feature-circuit")(_user_errors(feature_circuit.feature_circuit))
app.command("export")(_user_errors(export.export))
# `interp sae ...`: a group of commands; each gets the same one-line user errors.
for _command in sae.sae_app.registered_commands:
    _command.callback = _user_errors(_command.callback)
app.add_typer(sae.sae_app, name="sae")
app.add_typer(experiment.build(_user_errors), name="experiment")


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
