"""``interp export``: the command behind :func:`interp.report.export.export`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from interp.cli.params import (
    Examples,
    Json,
    Limit,
    Sample,
    Seed,
    parse_one_example,
    refuse_selection,
    wrote,
)


def export(
    run: Annotated[
        list[Path],
        typer.Option(
            help="A run directory; repeat to compare runs (--run A --run B): the report goes "
            "into the first, the others join its convergence, position-bias and metrics. An "
            "experiment directory (interp experiment --out) gets its own report, alone."
        ),
    ],
    png: Annotated[
        bool,
        typer.Option(
            help="Also write figures/*.png (kaleido, else headless Chromium; skipped with a "
            "note when neither works)."
        ),
    ] = False,
    heads: Annotated[
        list[str] | None,
        typer.Option(
            help="Heads for the attention views as LAYER.HEAD (--heads 12.3 14.0); default: "
            "those head patching ranks highest."
        ),
    ] = None,
    examples: Examples = None,
    limit: Limit = None,
    sample: Sample = None,
    seed: Seed = 0,
    as_json: Json = False,
) -> None:
    """Write figures/*.html and an offline index.html (every figure the run has data for).

    The page needs no network; the same run gives the same bytes. The last line printed is
    `wrote` and the path of index.html.

    --examples: the example (index or id; default 0) whose transcript the attention views
    show. The report shows every example of the runs: --limit and --sample are refused and
    --seed changes nothing. No --control-run: compare runs with --run A --run B.
    """
    from interp import preflight

    chosen = parse_one_example(examples, 0, command="export's attention view")
    refuse_selection("export", "reports every example of the runs", limit=limit, sample=sample)
    del seed  # nothing random: accepted as every command that reads a run accepts it

    for path in run:  # a mistyped directory is refused before torch is imported
        preflight.run_manifest(path)

    example_index = chosen if isinstance(chosen, int) else _example_index(run[0], chosen)
    from interp.report.export import ExportConfig
    from interp.report.export import export as run_export

    config = ExportConfig(
        heads=None if heads is None else tuple(heads), example_index=example_index, png=png
    )
    result = run_export(run, config)
    if as_json:
        out = {
            "index": str(result.index),
            "figures": [str(p) for p in result.figures],
            "notes": result.notes,
            "png": result.png,
        }
        typer.echo(json.dumps(out, indent=2))
        return
    typer.echo(f"{len(result.figures)} figures in {result.index.parent / 'figures'}")
    for note in result.notes:
        typer.echo(f"not shown: {note}")
    if result.png is not None:
        typer.echo(result.png)
    typer.echo(wrote(result.index))


def _example_index(run: Path, example_id: str) -> int:
    """The first row's ``example_index`` of ``example_id`` in the run (an unknown id refused)."""
    from interp.errors import InterpError
    from interp.runs.store import Run

    rounds = Run.open(run).rounds()
    found = rounds.loc[rounds["example_id"] == example_id, "example_index"]
    if found.empty:
        raise InterpError(f"--examples {example_id}: no such example in {run}")
    return int(found.min())
