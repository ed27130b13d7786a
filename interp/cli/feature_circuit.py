"""``interp feature-circuit``: the command behind
:func:`interp.circuits.feature_level.feature_circuit` (needs circuit-tracer:
``pip install --no-deps circuit-tracer==0.5.0``)."""

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
    parse_one_example,
    refuse_selection,
    wrote,
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
    """Attribution graphs of one example's read-out value (logit correct - stereotyped) with
    circuit-tracer on the transcoders, for the target and the source round; the features whose
    total effect changes most between them; and the check by intervention: the source round
    with its top-k read-out features set to their target-round values. Writes
    feature_circuits/NAME/ (comparison, nodes, interventions, summary.json, and
    circuit-tracer's graph files for its viewer).

    --examples: the one example (id or index; default 0). A graph is of one example, so
    --limit and --sample are refused, and --seed changes nothing. No --control-run: the two
    graphs compared are two rounds of the one run."""
    import json

    from interp import preflight
    from interp.options import check_at_least

    example = parse_one_example(examples, 0, command="feature-circuit")
    refuse_selection(
        "feature-circuit", "graphs one example (--examples)", limit=limit, sample=sample
    )
    check_at_least(top, 1, "--top-features")  # the library's check, with the flag's name
    del seed  # nothing random: accepted as every command that reads a run accepts it
    # What the run's manifest and the file system can refuse, before torch is imported.
    manifest = preflight.run_manifest(run)
    if not transcoders.is_dir():  # the message of interp.sae.transcoders.check_transcoder_folder
        from interp.errors import InterpError

        raise InterpError(f"--transcoders {transcoders}: no such folder")
    preflight.check_rounds(manifest, round=round, target_round=target_round)
    preflight.check_run_model(manifest, device=device)

    from interp.circuits import CircuitConfig, circuit

    config = CircuitConfig(
        level="features",
        transcoders=str(transcoders),
        round=round,
        target_round=target_round,
        examples=(example,),
        max_feature_nodes=max_feature_nodes,
        batch_size=batch_size,
        top=top,
        node_threshold=node_threshold,
        edge_threshold=edge_threshold,
    )
    result = circuit(run, config, device=device, progress=not as_json)
    s = result.summary
    if as_json:
        typer.echo(json.dumps(s, indent=2, allow_nan=False))
        return
    for label in ("target", "source"):
        g = s["graphs"][label]
        typer.echo(
            f"{label} graph: {g['n_tokens']} tokens, {g['active_features']} active features "
            f"({g['attributed_features']} attributed); replacement score "
            f"{g['replacement_score']:.3f}, completeness {g['completeness_score']:.3f}"
        )
    typer.echo("top read-out features set to their target-round values:")
    for row in s["interventions"]:
        typer.echo(
            f"  k={row['k']:<3} value {row['source_value']:+.3f} -> {row['value']:+.3f} "
            f"(target {row['target_value']:+.3f}; share of the gap {row['share_of_gap']:+.3f})"
        )
    check = s["circuit_tracer_cross_check"]
    if check.get("checked"):
        typer.echo(f"circuit-tracer's feature_intervention agrees to {check['abs_diff']:.2g}")
    typer.echo(wrote(result.paths))
