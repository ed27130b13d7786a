"""``interp probe``: the command behind :func:`probes.api.probe`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer


def probe(
    run: Annotated[Path, typer.Option(help="A run directory written by `interp replay`.")],
    concept: Annotated[
        str, typer.Option(help="stereotype, morality, or a concept .jsonl file.")
    ] = "stereotype",
    layers: Annotated[
        str, typer.Option("--layers", "--layer", help="'all' (every stored layer) or e.g. 3,5-7.")
    ] = "all",
    method: Annotated[
        str, typer.Option(help="probe (logistic regression), mean-diff or pca.")
    ] = "probe",
    position: Annotated[
        str, typer.Option(help="Read statements at their last token or the mean over tokens.")
    ] = "last",
    score: Annotated[
        str, typer.Option(help="projection on the unit direction, or cosine.")
    ] = "projection",
    seed: Annotated[int, typer.Option(help="Seed of the split, controls and bootstrap.")] = 0,
    transfer: Annotated[
        bool,
        typer.Option(
            help="Also read the statements inside the chat template at the end of the run's "
            "answer prefix, and report the direction's accuracy there (one more encoding pass)."
        ),
    ] = True,
    cluster: Annotated[
        str,
        typer.Option(
            help="What the bootstrap resamples (and the behaviour split keeps whole): template "
            "(category + question_index) or example."
        ),
    ] = "template",
    control_run: Annotated[
        Path | None,
        typer.Option(
            help="A replay of the same examples under another plan (e.g. baseline): report "
            "run - control per round with paired intervals."
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Concept directions per layer, and the concept score of every round of a run.

    Writes RUN/probes/CONCEPT/: per-layer accuracy with controls, scores per layer and
    round, the instruction shift, score-entropy correlations, behaviour probes, summary.json.
    """
    from interp import preflight
    from interp.cli.format import format_probe
    from interp.cli.options import parse_layers

    chosen = parse_layers(layers)
    # What the run's manifest and the file system can refuse, before torch is imported.
    manifest = preflight.run_manifest(run)
    preflight.check_layers(manifest, chosen)
    if control_run is not None:
        preflight.run_manifest(control_run)

    from probes.api import probe as run_probe
    from probes.config import ProbeConfig

    config = ProbeConfig(
        concept=concept,
        layers=None if chosen is None else tuple(chosen),
        method=method,
        position=position,
        score=score,
        seed=seed,
        transfer=transfer,
        cluster=cluster,
        control_run=None if control_run is None else str(control_run),
    )
    result = run_probe(run, config, progress=not as_json)
    if as_json:
        typer.echo(json.dumps(result.summary, indent=2, allow_nan=False))
        return
    typer.echo(format_probe(result))
    typer.echo(f"wrote {result.out_dir}")
