"""The command line's one option vocabulary (issue 24, part 3): every option several commands
share is declared here once, with one help text, and read by one parser; the commands use
these types instead of declaring their own.

=================  ==========================================================================
``--run``          a run directory written by ``interp replay`` (export: repeatable)
``--out``          the directory a command writes (a run, an experiment directory, an SAE)
``--examples``     example ids (``builtin/3``) or indices (``example_index``), several at once
``--layers``       one grammar: ``12``, ``10-14``, ``3,5-7``, ``all``
``--limit``        the first N (base) examples
``--sample``       a seeded random N (base) examples, before ``--limit``
``--seed``         the seed of ``--sample`` and of everything random a command does
``--control-run``  a replay of the same examples under another plan: paired run - control
``--device``       cpu, cuda or mps; ``--dtype`` float32, bfloat16 or float16
``--json``         the result as JSON on stdout instead of the text
=================  ==========================================================================

Every command that writes something ends its text with one line ``wrote PATH[, PATH...]``
(:func:`wrote`). Old spellings (``--layer``, ``--example``, ``--example-index``, the four
``--top``; the command ``feature-circuit``) keep working for one release: :data:`DEPRECATED`
and :data:`DEPRECATED_COMMANDS` map them, and the CLI's command class rewrites them before
parsing with one line on stderr (:func:`rewrite_deprecated`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Annotated

import typer

from interp.errors import InterpError
from interp.runs.distributed import Workers

# Options that take several values after one flag (``--data A.jsonl B.jsonl``).
MULTI_VALUE_OPTIONS = ("--data", "--hooks", "--heads", "--examples", "--corpus")

# No model has this many layers; a bound before expanding ranges keeps "0-99999999999" from
# building a list of 10^11 layers (the check against the run's layers comes later).
MAX_LAYER_INDEX = 9999

# --- the options, declared once -----------------------------------------------------------

RUN_HELP = "A run directory written by `interp replay`."
Run = Annotated[Path, typer.Option("--run", help=RUN_HELP)]
Out = Annotated[
    Path,
    typer.Option(
        "--out",
        help="The directory to write: a run (replay), an SAE or transcoder folder (sae train), "
        "an experiment directory (experiment; resumable), a fine-tuned model folder "
        "(finetune; resumable).",
    ),
]
Examples = Annotated[
    list[str] | None,
    typer.Option(
        "--examples",
        help="Only these examples: ids (builtin/3) or indices (example_index in "
        "rounds.parquet), --examples A B or repeated. On a permuted run an id selects every "
        "order of that example, an index one order.",
    ),
]
Layers = Annotated[
    str | None,
    typer.Option("--layers", help="Layers: one (12), a range (10-14), a list (3,5-7) or all."),
]
Limit = Annotated[
    int | None,
    typer.Option(
        "--limit",
        help="Only the first N examples (permuted run: N base examples, every order).",
    ),
]
Sample = Annotated[
    int | None,
    typer.Option(
        "--sample",
        help="A random sample of N examples, seeded by --seed, taken before --limit "
        "(permuted run: N base examples, every order).",
    ),
]
Seed = Annotated[
    int,
    typer.Option(
        "--seed", help="Seed of --sample and of everything random (bootstrap, shuffles, splits)."
    ),
]
ControlRun = Annotated[
    Path | None,
    typer.Option(
        "--control-run",
        help="A replay of the same examples under another plan (e.g. baseline): also report "
        "run - control with paired intervals.",
    ),
]
Device = Annotated[str, typer.Option("--device", help="cpu, cuda or mps.")]
Dtype = Annotated[str, typer.Option("--dtype", help="float32, bfloat16 or float16.")]
Json = Annotated[bool, typer.Option("--json", help="Print the result as JSON instead of the text.")]

# --- old spellings, kept for one release ------------------------------------------------------

# Command path (as typed after `interp`) -> old flag -> the flag it is now.
DEPRECATED: dict[str, dict[str, str]] = {
    "patch": {"--layer": "--layers", "--example": "--examples", "--top": "--rows"},
    "probe": {"--layer": "--layers"},
    "circuit": {"--top": "--top-edges"},
    "feature-circuit": {"--example": "--examples", "--top": "--top-features"},
    "export": {"--example-index": "--examples", "--example": "--examples"},
    "sae features": {"--top": "--top-latents"},
    "experiment convergence": {"--layer": "--layers"},
}


# Old command (as typed after `interp`) -> the command it is now; the old one still runs.
DEPRECATED_COMMANDS: dict[str, str] = {"feature-circuit": "circuit --level features"}


def deprecation_line(old: str, new: str) -> str:
    return f"deprecated: {old} is now {new}; the old spelling goes in the next release"


def rewrite_deprecated(command: str, args: Sequence[str]) -> list[str]:
    """``args`` with the old spellings of ``command``'s flags replaced by the new ones, one
    line on stderr per old flag used (``--layer 3`` and ``--layer=3`` alike), after one line
    for an old command (:data:`DEPRECATED_COMMANDS`)."""
    if command in DEPRECATED_COMMANDS:
        typer.echo(deprecation_line(command, DEPRECATED_COMMANDS[command]), err=True)
    table = DEPRECATED.get(command, {})
    out, said = [], set()
    for arg in args:
        if arg == "--":
            out.extend(args[len(out) :])
            break
        flag, eq, value = arg.partition("=")
        if flag in table:
            if flag not in said:
                typer.echo(deprecation_line(flag, table[flag]), err=True)
                said.add(flag)
            arg = table[flag] + eq + value
        out.append(arg)
    return out


# --- the parsers ----------------------------------------------------------------------------------


def parse_layers(text: str | None, flag: str = "--layers") -> list[int] | None:
    """``"all"`` or None -> None (every layer); ``"12"`` -> [12]; ``"3,5-7"`` -> [3, 5, 6, 7]."""
    if text is None or text.strip().lower() == "all":
        return None
    layers: list[int] = []
    try:
        for part in text.split(","):
            lo, dash, hi = part.strip().partition("-")
            first, last = int(lo), int(hi if dash else lo)  # "3-" is no range: int("") fails
            if not 0 <= first <= last <= MAX_LAYER_INDEX:
                raise InterpError(
                    f"{flag} {text!r}: {part.strip()!r} is not a layer or an ascending range "
                    f"of layers (0..{MAX_LAYER_INDEX})"
                )
            layers.extend(range(first, last + 1))
    except ValueError:
        raise InterpError(
            f"{flag} {text!r}: expected 'all' or numbers and ranges like 3,5-7"
        ) from None
    return layers


def parse_layer_or_all(text: str, flag: str = "--layers", *, command: str) -> int | str:
    """The layers of a command that analyses one layer or every layer (``patch``): the same
    grammar, then one layer or ``"all"``; several layers are refused (run it once per layer)."""
    layers = parse_layers(text, flag)
    if layers is None:
        return "all"
    if len(set(layers)) != 1:
        raise InterpError(
            f"{flag} {text!r}: {command} analyses one layer or all of them; run it once per "
            "layer, or use all"
        )
    return layers[0]


def parse_one_layer(text: str | None, flag: str = "--layers", *, command: str) -> int | None:
    """One layer (``experiment convergence``'s concept-score layer); None when not given."""
    if text is None:
        return None
    layers = parse_layers(text, flag)
    if layers is None or len(set(layers)) != 1:
        raise InterpError(f"{flag} {text!r}: {command} reads one layer (e.g. {flag} 12)")
    return layers[0]


def parse_examples(
    values: Iterable[str] | None, flag: str = "--examples"
) -> list[int | str] | None:
    """Example ids and indices: digits are an index (``example_index``), anything else an id
    (``builtin/3``); None when none is given. An empty value is refused."""
    if values is None:
        return None
    chosen: list[int | str] = []
    for value in values:
        value = value.strip()
        if not value:
            raise InterpError(f"{flag}: an empty example; give ids (builtin/3) or indices (0)")
        chosen.append(int(value) if value.isdigit() else value)
    return chosen or None


def parse_one_example(
    values: Iterable[str] | None, default: int | str, *, command: str, flag: str = "--examples"
) -> int | str:
    """The one example of a command that reads one (``circuit --level features``, ``export``'s
    attention views): ``default`` when none is given; several are refused."""
    chosen = parse_examples(values, flag)
    if chosen is None:
        return default
    if len(chosen) != 1:
        shown = " ".join(map(str, chosen))
        raise InterpError(f"{flag} {shown}: {command} reads one example; give one id or index")
    return chosen[0]


def check_selection(limit: int | None, sample: int | None) -> None:
    """``--limit`` and ``--sample`` at least 1 (the library checks them against the run)."""
    for flag, value in (("--limit", limit), ("--sample", sample)):
        if value is not None and value < 1:
            raise InterpError(f"{flag} must be at least 1 (got {value})")


def refuse_selection(
    command: str,
    why: str,
    *,
    examples: Sequence[str] | None = None,
    limit: int | None = None,
    sample: int | None = None,
) -> None:
    """A command that reads every example of a run (its library verb takes no selection yet):
    a selection option given to it is refused in one line, before anything is read."""
    check_selection(limit, sample)
    for flag, value in (("--examples", examples), ("--limit", limit), ("--sample", sample)):
        if value:
            raise InterpError(f"{flag}: {command} {why}")


def wrote(paths: Path | str | Iterable[Path | str]) -> str:
    """The closing line of every command that writes something."""
    if isinstance(paths, (str, Path)):
        paths = [paths]
    return "wrote " + ", ".join(str(p) for p in paths)


# --- scale-out over Ray (interp.runs.distributed), the same four flags in replay and patch ---

_RAY_PANEL = "Scale-out (Ray)"
WorkersOption = Annotated[
    int | None,
    typer.Option(
        help="Spread the work over N Ray actors, each loading the model once; the merged "
        "result is identical to one without workers. Needs the extra: pip install "
        "'interp[ray]'. Without this flag Ray is not imported.",
        rich_help_panel=_RAY_PANEL,
    ),
]
RayAddressOption = Annotated[
    str | None,
    typer.Option(
        help="With --workers: join a running cluster (auto, or HOST:PORT of `ray start "
        "--head`) instead of starting a local one limited to this machine.",
        rich_help_panel=_RAY_PANEL,
    ),
]
GpusOption = Annotated[
    float, typer.Option(help="GPUs per actor (with --device cuda).", rich_help_panel=_RAY_PANEL)
]
ThreadsOption = Annotated[
    int, typer.Option(help="torch CPU threads per actor.", rich_help_panel=_RAY_PANEL)
]


def workers_from_flags(
    workers: int | None, ray_address: str | None, gpus: float, threads: int
) -> Workers | None:
    """The flags as a :class:`~interp.runs.distributed.Workers`, or None: no Ray at all."""
    if workers is None and ray_address is None:
        return None
    return Workers(
        n=1 if workers is None else workers, address=ray_address, gpus=gpus, threads=threads
    )
