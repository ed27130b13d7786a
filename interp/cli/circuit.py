"""``interp circuit``: the command behind :func:`interp.circuits.circuit`, at either level
(``--level components``, the default: edges between heads and MLPs; ``--level features``:
attribution graphs on transcoders, which needs circuit-tracer: ``pip install --no-deps
circuit-tracer==0.5.0``). ``interp feature-circuit`` (:mod:`interp.cli.feature_circuit`) is
the old spelling of ``--level features``, kept for one release."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Annotated, Any

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
    parse_one_example,
    refuse_selection,
    workers_from_flags,
    wrote,
)

LEVELS = ("components", "features")
# The options only one level reads (parameter names): given with a non-default value at the
# other level, they are refused in one line rather than ignored.
LEVEL_OPTIONS = {
    "components": (
        "method",
        "steps",
        "top",
        "verify_top",
        "category",
        "context_condition",
        "n_boot",
        "cluster",
        "dtype",
        "workers",
        "ray_address",
        "gpus_per_worker",
        "threads_per_worker",
    ),
    "features": (
        "transcoders",
        "max_feature_nodes",
        "top_features",
        "node_threshold",
        "edge_threshold",
    ),
}


def circuit(
    run: Run,
    round: Annotated[
        int, typer.Option(help="Source round (e.g. 3, after the instructions): TL's clean run.")
    ],
    level: Annotated[
        str,
        typer.Option(
            help="components (edges between heads and MLPs) or features (attribution graphs "
            "of transcoder features, circuit-tracer; the options marked --level features)."
        ),
    ] = "components",
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
    batch_size: Annotated[
        int | None,
        typer.Option(
            help="Patched forwards per batch (default 32); --level features: backward passes "
            "per batch (default 64)."
        ),
    ] = None,
    n_boot: Annotated[int, typer.Option(help="Bootstrap resamples for the intervals.")] = 1000,
    seed: Seed = 0,
    cluster: Annotated[
        str, typer.Option(help="What the bootstrap resamples: template or example.")
    ] = "template",
    transcoders: Annotated[
        Path | None,
        typer.Option(
            help="--level features: a transcoder folder (interp sae train-transcoders), every "
            "layer."
        ),
    ] = None,
    max_feature_nodes: Annotated[
        int,
        typer.Option(
            help="--level features: features circuit-tracer attributes backwards, per graph."
        ),
    ] = 256,
    top_features: Annotated[
        int,
        typer.Option(
            "--top-features",
            help="--level features: read-out features set to their target-round values (max k).",
        ),
    ] = 10,
    node_threshold: Annotated[
        float,
        typer.Option(
            help="--level features: pruning of the saved graph files: node influence kept."
        ),
    ] = 0.8,
    edge_threshold: Annotated[
        float,
        typer.Option(
            help="--level features: pruning of the saved graph files: edge influence kept."
        ),
    ] = 0.98,
    device: Device = "cpu",
    dtype: Dtype = "float32",
    workers: WorkersOption = None,
    ray_address: RayAddressOption = None,
    gpus_per_worker: GpusOption = 0.0,
    threads_per_worker: ThreadsOption = 1,
    as_json: Json = False,
) -> None:
    """Find the circuit between two rounds.

    --level components (the default): edge attribution patching (EAP / EAP-IG) of every edge
    between components (embeddings, heads, MLPs, logits) at the read-out, for interp patch's
    value (logit difference correct - stereotyped), aggregated over examples with
    cluster-bootstrap intervals, verified by exact edge patching (top-K rank agreement and a
    faithfulness curve). Writes circuits/NAME/ (edges, nodes, faithfulness, summary.json) and
    its graph there: graph.html (interactive, offline), graph.dot and graph.svg (Graphviz, the
    top N edges), graph.json; `interp export` adds it to the report.

    --level features (needs circuit-tracer): attribution graphs of one example's read-out
    value with circuit-tracer on the transcoders (--transcoders), for the target and the
    source round; the features whose total effect changes most between them; and the check by
    intervention: the source round with its top-k read-out features set to their target-round
    values. Writes feature_circuits/NAME/ (comparison, nodes, interventions, summary.json,
    and circuit-tracer's graph files for its viewer). --examples: the one example (id or
    index; default 0); --limit and --sample are refused, and --seed changes nothing.

    An option of the other level, given with another value than its default, is refused.
    No --control-run: a circuit compares two rounds of one run; compare two plans by running
    circuit on each run."""
    given = dict(locals())
    if level not in LEVELS:
        from interp.errors import InterpError

        raise InterpError(f"--level {level!r}: components or features")
    refuse_other_level(level, given)
    if level == "features":
        run_features(
            "circuit --level features",
            run=run,
            transcoders=transcoders,
            round=round,
            target_round=target_round,
            examples=examples,
            max_feature_nodes=max_feature_nodes,
            batch_size=batch_size,
            top=top_features,
            node_threshold=node_threshold,
            edge_threshold=edge_threshold,
            limit=limit,
            sample=sample,
            device=device,
            as_json=as_json,
        )
        return
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
        **_given(batch_size=batch_size),
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


def refuse_other_level(level: str, given: dict[str, Any]) -> None:
    """An option that only the other level reads, given with a value other than its default,
    is refused in one line (it would be ignored), before anything is read."""
    from interp.errors import InterpError

    defaults = inspect.signature(circuit).parameters
    for other, names in LEVEL_OPTIONS.items():
        if other == level:
            continue
        for name in names:
            if given[name] != defaults[name].default:
                opts = _flag(name)
                raise InterpError(
                    f"{opts} is an option of --level {other}; this is --level {level}: leave "
                    f"{opts} out, or use --level {other}"
                )


def _flag(name: str) -> str:
    return {"top": "--top-edges", "top_features": "--top-features"}.get(
        name, "--" + name.replace("_", "-")
    )


def _given(**values: Any) -> dict[str, Any]:
    """The values given (not None): a None leaves the config's level default."""
    return {key: value for key, value in values.items() if value is not None}


def run_features(
    command: str,
    *,
    run: Path,
    transcoders: Path | None,
    round: int,
    target_round: int,
    examples: list[str] | None,
    max_feature_nodes: int,
    batch_size: int | None,
    top: int,
    node_threshold: float,
    edge_threshold: float,
    limit: int | None,
    sample: int | None,
    device: str,
    as_json: bool,
) -> None:
    """``interp circuit --level features`` (and its old spelling ``interp feature-circuit``,
    named in the messages as ``command``): the checks before torch, the verb, the text."""
    import json

    from interp import preflight
    from interp.errors import InterpError
    from interp.options import check_at_least

    if transcoders is None:
        raise InterpError(
            f"{command} needs --transcoders FOLDER (a transcoder folder: interp sae "
            "train-transcoders)"
        )
    example = parse_one_example(examples, 0, command=command)
    refuse_selection(command, "graphs one example (--examples)", limit=limit, sample=sample)
    check_at_least(top, 1, "--top-features")  # the library's check, with the flag's name
    # What the run's manifest and the file system can refuse, before torch is imported.
    manifest = preflight.run_manifest(run)
    if not transcoders.is_dir():  # the message of interp.sae.transcoders.check_transcoder_folder
        raise InterpError(f"--transcoders {transcoders}: no such folder")
    preflight.check_rounds(manifest, round=round, target_round=target_round)
    preflight.check_run_model(manifest, device=device)

    from interp.circuits import CircuitConfig
    from interp.circuits import circuit as run_circuit

    config = CircuitConfig(
        level="features",
        transcoders=str(transcoders),
        round=round,
        target_round=target_round,
        examples=(example,),
        max_feature_nodes=max_feature_nodes,
        **_given(batch_size=batch_size),
        top=top,
        node_threshold=node_threshold,
        edge_threshold=edge_threshold,
    )
    result = run_circuit(run, config, device=device, progress=not as_json)
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
