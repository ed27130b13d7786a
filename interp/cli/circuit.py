"""``interp circuit``: the command behind :func:`interp.circuits.circuit`."""

from __future__ import annotations

from typing import Annotated

import typer

from interp.cli.params import (
    Device,
    Dtype,
    Examples,
    GpusOption,
    Json,
    Limit,
    RayAddressOption,
    Run,
    Sample,
    Seed,
    ThreadsOption,
    WorkersOption,
    parse_examples,
    workers_from_flags,
    wrote,
)


def circuit(
    run: Run,
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
    top: Annotated[
        int,
        typer.Option("--top-edges", help="The circuit: the top N edges by |mean score|."),
    ] = 50,
    verify_top: Annotated[
        int, typer.Option(help="Exact edge patching of the top K edges (0: skip).")
    ] = 50,
    examples: Examples = None,
    category: Annotated[
        list[str] | None, typer.Option(help="Only these categories (e.g. Age); repeatable.")
    ] = None,
    context_condition: Annotated[
        str | None, typer.Option(help="Only 'ambig' or 'disambig' examples.")
    ] = None,
    limit: Limit = None,
    sample: Sample = None,
    batch_size: Annotated[int, typer.Option(help="Patched forwards per batch.")] = 32,
    n_boot: Annotated[int, typer.Option(help="Bootstrap resamples for the intervals.")] = 1000,
    seed: Seed = 0,
    cluster: Annotated[
        str, typer.Option(help="What the bootstrap resamples: template or example.")
    ] = "template",
    device: Device = "cpu",
    dtype: Dtype = "float32",
    workers: WorkersOption = None,
    ray_address: RayAddressOption = None,
    gpus_per_worker: GpusOption = 0.0,
    threads_per_worker: ThreadsOption = 1,
    as_json: Json = False,
) -> None:
    """Find the circuit between two rounds: edge attribution patching (EAP / EAP-IG) of every
    edge between components (embeddings, heads, MLPs, logits) at the read-out, for interp
    patch's value (logit difference correct - stereotyped), aggregated over examples with
    cluster-bootstrap intervals, verified by exact edge patching (top-K rank agreement and a
    faithfulness curve). Writes circuits/NAME/ (edges, nodes, faithfulness, summary.json) and
    its graph there: graph.html (interactive, offline), graph.dot and graph.svg (Graphviz,
    the top N edges), graph.json; `interp export` adds it to the report.

    No --control-run: a circuit compares two rounds of one run; compare two plans by running
    circuit on each run."""
    import json

    from interp import preflight
    from interp.options import check_at_least

    check_at_least(top, 1, "--top-edges")  # the library's check, with the flag's name
    # What the run's manifest and the file system can refuse, before torch is imported.
    manifest = preflight.run_manifest(run)
    preflight.check_rounds(manifest, round=round, target_round=target_round)
    preflight.check_run_model(manifest, dtype=dtype, device=device)
    chosen = parse_examples(examples)

    from interp.circuits import CircuitConfig
    from interp.circuits import circuit as run_circuit

    config = CircuitConfig(
        round=round,
        target_round=target_round,
        method=method,
        steps=steps,
        top=top,
        verify_top=verify_top,
        examples=None if chosen is None else tuple(chosen),
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
    typer.echo(format_circuit(s, config.top))
    if result.graph_note and not result.graph_note.startswith("SVG written"):
        typer.echo(f"graph: {result.graph_note}")
    typer.echo(wrote(result.paths))


def _num(value: float | None) -> str:
    return "n/a" if value is None else f"{value:+.4f}"


def format_circuit(s: dict, top: int) -> str:
    """What `interp circuit` prints from its summary: counts, the faithfulness reading (band,
    monotonicity, refusal), the rank agreement, the top edges; every interval beside its
    cluster count, "n/a (k clusters)" below the floor."""
    from interp.stats import CLUSTER_FLOOR, cluster_caveat

    k = int((s.get("cluster") or {}).get("n_clusters", 0))
    na = f"n/a ({k} clusters)"
    cfg = s["config"]
    significant = (
        na if s.get("n_significant") is None and k < CLUSTER_FLOOR else s.get("n_significant")
    )
    lines = [
        f"{s['name']}: {s['n_examples']} examples in {k} clusters, {s['n_edges']} edges; value "
        f"{s['target_value']:.3f} (round {cfg['target_round']}) -> {s['source_value']:.3f} "
        f"(round {cfg['round']}); edges with an interval excluding 0: {significant}"
    ]
    caveat = cluster_caveat(k)
    if caveat:
        lines.append(f"WARNING: {caveat}")
    band = s.get("faithful_band") or [s.get("faithful_threshold"), None]
    gap = s.get("gap") or {}
    gap_ci = gap.get("ci")
    gap_text = (
        ""
        if gap.get("value") is None
        else f"gap (full - none) {gap['value']:+.3f} "
        + (f"[{gap_ci[0]:.3f}, {gap_ci[1]:.3f}]" if gap_ci else na if k < CLUSTER_FLOOR else "n/a")
    )
    if s.get("faithful_refused"):
        faith = f"faithfulness: no headline N: {s['faithful_refused']}"
    else:
        faith = (
            f"faithfulness: from N={s.get('faithful_n')} edges on, every larger N stays within "
            f"[{band[0]:g}, {band[1]:g}] of the full patch ({gap_text})"
        )
    lines.append(faith)
    peak = s.get("faithful_max") or {}
    shape = "monotone" if s.get("faithful_monotone") else "not monotone"
    if peak:
        shape += f"; largest f = {peak['value']:.2f} at N={peak['n_edges']}"
    lines.append(f"  curve {shape}; first N inside the band: {s.get('faithful_n_first')}")
    verify = s.get("verify") or {}
    rho, ci = verify.get("spearman"), verify.get("ci")
    interval = (
        f" [{ci[0]:.3f}, {ci[1]:.3f}] ({k} clusters)"
        if ci
        else f" {na}"
        if (k < CLUSTER_FLOOR and rho is not None)
        else ""
    )
    lines.append(
        f"top-{verify.get('k')} Spearman vs exact "
        f"{'n/a' if rho is None else f'{rho:.3f}'}{interval}"
    )
    for e in s["top_edges"][: min(top, 15)]:
        bounds = (
            na
            if e["ci_lo"] is None and k < CLUSTER_FLOOR
            else f"[{_num(e['ci_lo'])}, {_num(e['ci_hi'])}]"
        )
        lines.append(
            f"  #{e['rank']:<3} {e['sender']:>8} -> {e['receiver']:<10} {e['score']:+.4f} {bounds}"
        )
    return "\n".join(lines)
