"""``interp circuit``: the command behind :func:`interp.circuits.circuit`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from interp.cli.options import (
    GpusOption,
    RayAddressOption,
    ThreadsOption,
    WorkersOption,
    workers_from_flags,
)


def circuit(
    run: Annotated[Path, typer.Option(help="A run directory written by `interp replay`.")],
    round: Annotated[
        int, typer.Option(help="Source round (e.g. 3, after the instructions): TL's clean run.")
    ],
    target_round: Annotated[
        int, typer.Option(help="Target round (e.g. 0, the question): TL's corrupted run.")
    ] = 0,
    method: Annotated[
        str,
        typer.Option(help="eap-ig (integrated gradients, the default) or eap (one gradient)."),
    ] = "eap-ig",
    steps: Annotated[int, typer.Option(help="EAP-IG: gradient evaluations per example.")] = 5,
    top: Annotated[int, typer.Option(help="The circuit: the top N edges by |mean score|.")] = 50,
    verify_top: Annotated[
        int, typer.Option(help="Exact edge patching of the top K edges (0: skip).")
    ] = 50,
    examples: Annotated[
        list[str] | None,
        typer.Option(help="Only these examples (id like builtin/3, or index): --examples A B."),
    ] = None,
    category: Annotated[
        list[str] | None, typer.Option(help="Only these categories (e.g. Age); repeatable.")
    ] = None,
    context_condition: Annotated[
        str | None, typer.Option(help="Only 'ambig' or 'disambig' examples.")
    ] = None,
    limit: Annotated[int | None, typer.Option(help="Use only the first N examples.")] = None,
    sample: Annotated[
        int | None, typer.Option(help="A random sample of N examples (seeded by --seed).")
    ] = None,
    batch_size: Annotated[int, typer.Option(help="Patched forwards per batch.")] = 32,
    n_boot: Annotated[int, typer.Option(help="Bootstrap resamples for the intervals.")] = 1000,
    seed: Annotated[int, typer.Option(help="Seed of the bootstrap and of --sample.")] = 0,
    cluster: Annotated[
        str, typer.Option(help="What the bootstrap resamples: template or example.")
    ] = "template",
    device: Annotated[str, typer.Option(help="cpu, cuda or mps.")] = "cpu",
    dtype: Annotated[str, typer.Option(help="float32, bfloat16 or float16.")] = "float32",
    workers: WorkersOption = None,
    ray_address: RayAddressOption = None,
    gpus_per_worker: GpusOption = 0.0,
    threads_per_worker: ThreadsOption = 1,
    as_json: Annotated[bool, typer.Option("--json", help="Print the JSON summary.")] = False,
) -> None:
    """Find the circuit between two rounds: edge attribution patching (EAP / EAP-IG) of every
    edge between components (embeddings, heads, MLPs, logits) at the read-out, for interp
    patch's value (logit difference correct - stereotyped), aggregated over examples with
    cluster-bootstrap intervals, verified by exact edge patching (top-K rank agreement and a
    faithfulness curve). Writes circuits/NAME/ (edges, nodes, faithfulness, summary.json) and
    its graph there: graph.html (interactive, offline), graph.dot and graph.svg (Graphviz,
    the top N edges), graph.json; `interp export` adds it to the report."""
    import json

    from interp import preflight

    # What the run's manifest and the file system can refuse, before torch is imported.
    manifest = preflight.run_manifest(run)
    preflight.check_rounds(manifest, round=round, target_round=target_round)
    preflight.check_run_model(manifest, dtype=dtype, device=device)

    from interp.circuits import CircuitConfig
    from interp.circuits import circuit as run_circuit

    config = CircuitConfig(
        round=round,
        target_round=target_round,
        method=method,
        steps=steps,
        top=top,
        verify_top=verify_top,
        examples=tuple(int(e) if e.isdigit() else e for e in examples) if examples else None,
        categories=tuple(category) if category else None,
        context_condition=context_condition,
        limit=limit,
        sample=sample,
        batch_size=batch_size,
        n_boot=n_boot,
        seed=seed,
        cluster=cluster,
    )
    spread = workers_from_flags(workers, ray_address, gpus_per_worker, threads_per_worker)
    result = run_circuit(
        run, config, device=device, dtype=dtype, progress=not as_json, workers=spread
    )
    s = result.summary
    if as_json:
        typer.echo(json.dumps(s, indent=2, allow_nan=False))
        return
    verify = s.get("verify") or {}
    ci = verify.get("ci")
    rho = verify.get("spearman")
    typer.echo(
        f"{s['name']}: {s['n_examples']} examples, {s['n_edges']} edges; value "
        f"{s['target_value']:.3f} (round {config.target_round}) -> {s['source_value']:.3f} "
        f"(round {config.round}); {s['n_significant']} edges with an interval excluding 0"
    )
    typer.echo(
        f"faithfulness: N={s['faithful_n']} edges reach {s['faithful_threshold']} "
        f"(and stay from N={s['faithful_n_stable']}); "
        f"top-{verify.get('k')} Spearman vs exact "
        f"{'n/a' if rho is None else f'{rho:.3f}'}"
        f"{'' if not ci else f' [{ci[0]:.3f}, {ci[1]:.3f}]'}"
    )
    for e in s["top_edges"][: min(config.top, 15)]:
        typer.echo(
            f"  #{e['rank']:<3} {e['sender']:>8} -> {e['receiver']:<10} {e['score']:+.4f} "
            f"[{_num(e['ci_lo'])}, {_num(e['ci_hi'])}]"
        )
    if result.graph_note and not result.graph_note.startswith("SVG written"):
        typer.echo(f"graph: {result.graph_note}")
    typer.echo(f"written: {', '.join(str(p) for p in result.paths)}")


def _num(value: float | None) -> str:
    return "n/a" if value is None else f"{value:+.4f}"
