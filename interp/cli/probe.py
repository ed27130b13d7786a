"""``interp probe``: the command behind :func:`probes.api.probe`."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from interp.cli.params import (
    ControlRun,
    Examples,
    Json,
    Layers,
    Limit,
    Run,
    Sample,
    Seed,
    check_selection,
    parse_examples,
    parse_layers,
    wrote,
)


def probe(
    run: Run,
    concept: Annotated[
        str, typer.Option(help="stereotype, morality, or a concept .jsonl file.")
    ] = "stereotype",
    layers: Layers = "all",
    method: Annotated[
        str, typer.Option(help="probe (logistic regression), mean-diff or pca.")
    ] = "probe",
    position: Annotated[
        str, typer.Option(help="Read statements at their last token or the mean over tokens.")
    ] = "last",
    score: Annotated[
        str, typer.Option(help="projection on the unit direction, or cosine.")
    ] = "projection",
    seed: Seed = 0,
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
    control_run: ControlRun = None,
    examples: Examples = None,
    limit: Limit = None,
    sample: Sample = None,
    as_json: Json = False,
) -> None:
    """Concept directions per layer, and the concept score of every round of a run.

    Writes RUN/probes/CONCEPT/: per-layer accuracy with controls, scores per layer and
    round, the instruction shift, score-entropy correlations, behaviour probes, summary.json.

    --examples, --limit and --sample score only those run examples (--sample drawn as replay
    draws it, seeded by --seed; on a permuted run over base examples, every order kept): the
    directions are fitted on the concept data as always, so each selected example gets the
    score the full probe gives it, while the score intervals, correlations and behaviour
    probes read the selected examples only. With --control-run the control is read at the same
    examples. A selection is printed, never stored over RUN/probes/CONCEPT/.
    """
    from interp import preflight
    from interp.cli.format import format_probe

    chosen = parse_layers(layers)
    picked = parse_examples(examples)
    check_selection(limit, sample)
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
        examples=None if picked is None else tuple(picked),
        limit=limit,
        sample=sample,
    )
    result = run_probe(run, config, progress=not as_json)
    if result.out_dir is None:  # a selection: computed, not stored
        typer.echo(
            f"note: the probe of {result.summary['n_examples']} selected examples; "
            f"{run / 'probes' / result.concept} (every example) is left as it is",
            err=True,
        )
    if as_json:
        typer.echo(json.dumps(result.summary, indent=2, allow_nan=False))
        return
    typer.echo(format_probe(result))
    if result.out_dir is not None:
        typer.echo(wrote(result.out_dir))
