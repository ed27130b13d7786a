"""What several commands share: the flags that take several values and the one parser of
``--layers``, so that a flag is spelled and read the same way in every command."""

from __future__ import annotations

from typing import Annotated

import typer

from interp.errors import InterpError
from interp.runs.distributed import Workers

# Options that take several values after one flag (``--data A.jsonl B.jsonl``).
MULTI_VALUE_OPTIONS = ("--data", "--hooks", "--heads", "--examples", "--corpus")

# No model has this many layers; a bound before expanding ranges keeps "0-99999999999" from
# building a list of 10^11 layers (the check against the run's layers comes later).
MAX_LAYER_INDEX = 9999


def parse_layers(
    text: str | None, flag: str = "--layers", *, single: bool = False
) -> list[int] | None:
    """``"all"`` or None -> None (every layer); ``"3,5-7"`` -> [3, 5, 6, 7].

    ``single``: the command analyses one layer or all of them (``patch``): one whole number,
    which the library checks against the model's layers, or ``all``.
    """
    if single:  # exactly the old `patch --layer`: "all" or one int() (no "ALL", no ranges)
        if text is None or text == "all":
            return None
        try:
            return [int(text)]
        except ValueError:
            raise InterpError(f"{flag} {text!r}: use a layer index or 'all'") from None
    if text is None or text.strip().lower() == "all":
        return None
    layers: list[int] = []
    try:
        for part in text.split(","):
            lo, _, hi = part.strip().partition("-")
            first, last = int(lo), int(hi or lo)
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
