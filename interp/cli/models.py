"""``interp models``: the models that load here without a network."""

from __future__ import annotations

import json

import typer

from interp.cli.params import Json


def models(
    as_json: Json = False,
) -> None:
    """List the models that load here without a network: embedded, cached, tiny."""
    from interp.preflight import list_models  # no torch: only files are looked at

    rows = list_models()
    if as_json:
        typer.echo(json.dumps(rows, indent=2, allow_nan=False))
        return
    typer.echo(f"{'NAME':<22} {'KIND':<18} {'SIZE':>8}  DETAIL")
    for row in rows:
        size = f"{row['size_mb']:.0f} MB" if row["size_mb"] is not None else "-"
        typer.echo(f"{row['name']:<22} {row['kind']:<18} {size:>8}  {row['detail']}")
