"""``interp export``: the command behind :func:`interp.report.export.export`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer


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
    example_index: Annotated[
        int,
        typer.Option(
            "--example-index",
            "--example",
            help="Example index whose transcript the attention views show (--example: the "
            "old spelling).",
        ),
    ] = 0,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print what was written as JSON.")
    ] = False,
) -> None:
    """Write figures/*.html and an offline index.html (every figure the run has data for).

    The page needs no network; the same run gives the same bytes. The path of index.html is
    the last line printed.
    """
    from interp import preflight

    for path in run:  # a mistyped directory is refused before torch is imported
        preflight.run_manifest(path)

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
    typer.echo(str(result.index))
