"""``interp feature-circuit``: the old spelling of ``interp circuit --level features``
(:func:`interp.cli.circuit.run_features`), kept for one release: the command class prints one
deprecation line (:data:`interp.cli.params.DEPRECATED_COMMANDS`), then the same code runs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from interp.cli.params import (
    Device,
    Examples,
    Json,
    Limit,
    Run,
    Sample,
    Seed,
)


def feature_circuit(
    run: Run,
    transcoders: Annotated[
        Path,
        typer.Option(help="A transcoder folder (interp sae train-transcoders), every layer."),
    ],
    round: Annotated[int, typer.Option(help="Source round (e.g. 3, after the instructions).")],
    target_round: Annotated[int, typer.Option(help="Target round (e.g. 0, the question).")] = 0,
    examples: Examples = None,
    max_feature_nodes: Annotated[
        int, typer.Option(help="Features circuit-tracer attributes backwards, per graph.")
    ] = 256,
    batch_size: Annotated[int, typer.Option(help="Backward passes per batch.")] = 64,
    top: Annotated[
        int,
        typer.Option(
            "--top-features", help="Read-out features set to their target-round values (max k)."
        ),
    ] = 10,
    node_threshold: Annotated[
        float, typer.Option(help="Pruning of the saved graph files: node influence kept.")
    ] = 0.8,
    edge_threshold: Annotated[
        float, typer.Option(help="Pruning of the saved graph files: edge influence kept.")
    ] = 0.98,
    limit: Limit = None,
    sample: Sample = None,
    seed: Seed = 0,
    device: Device = "cpu",
    as_json: Json = False,
) -> None:
    """Deprecated: now interp circuit --level features (this spelling goes in the next release).

    Attribution graphs of one example's read-out value (logit correct - stereotyped) with
    circuit-tracer on the transcoders, for the target and the source round; the features whose
    total effect changes most between them; and the check by intervention: the source round
    with its top-k read-out features set to their target-round values. Writes
    feature_circuits/NAME/ (comparison, nodes, interventions, summary.json, and
    circuit-tracer's graph files for its viewer).

    --examples: the one example (id or index; default 0). A graph is of one example, so
    --limit and --sample are refused, and --seed changes nothing. No --control-run: the two
    graphs compared are two rounds of the one run."""
    from interp.cli.circuit import run_features

    del seed  # nothing random: accepted as every command that reads a run accepts it
    run_features(
        "feature-circuit",
        run=run,
        transcoders=transcoders,
        round=round,
        target_round=target_round,
        examples=examples,
        max_feature_nodes=max_feature_nodes,
        batch_size=batch_size,
        top=top,
        node_threshold=node_threshold,
        edge_threshold=edge_threshold,
        limit=limit,
        sample=sample,
        device=device,
        as_json=as_json,
    )
