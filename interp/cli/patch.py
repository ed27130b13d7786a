"""``interp patch``: the command behind :func:`interp.patching.patch`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from interp.cli.params import (
    ControlRun,
    Device,
    Dtype,
    Examples,
    GpusOption,
    Json,
    Layers,
    Limit,
    RayAddressOption,
    Run,
    Sample,
    Seed,
    ThreadsOption,
    WorkersOption,
    parse_examples,
    parse_layer_or_all,
    workers_from_flags,
    wrote,
)
from interp.errors import InterpError


def patch(
    run: Run,
    round: Annotated[
        int,
        typer.Option(
            help="Source round (e.g. 3, after the instructions): TransformerLens' clean run."
        ),
    ],
    # One layer or all (several layers: run it once per layer); required except with --sae.
    layer: Layers = None,
    target_round: Annotated[
        int,
        typer.Option(help="Target round (e.g. 0, the question): TransformerLens' corrupted run."),
    ] = 0,
    component: Annotated[
        str,
        typer.Option(
            help="resid_pre, resid_post, attn_out, mlp_out, heads (every head's z), 'all', or a "
            "comma-separated list (with --sae: leave it out, the site is the SAE's latents)."
        ),
    ] = "resid_post",
    direction: Annotated[
        str,
        typer.Option(
            help="denoise: source activation into the target run (TL's usual clean -> "
            "corrupted patching); noise: target activation into the source run (corrupted -> "
            "clean)."
        ),
    ] = "denoise",
    positions: Annotated[
        str,
        typer.Option(
            help="readout, or last:K (the last K positions, aligned from the end; refused when "
            "the two rounds' aligned tokens differ, with the largest K that works)."
        ),
    ] = "readout",
    method: Annotated[
        str, typer.Option(help="exact, or attribution (gradient estimate, one pass per example).")
    ] = "exact",
    verify_top: Annotated[
        int, typer.Option(help="attribution: re-run the K strongest exactly (Spearman's rho).")
    ] = 0,
    examples: Examples = None,
    category: Annotated[
        list[str] | None, typer.Option(help="Only these categories (e.g. Age); repeatable.")
    ] = None,
    context_condition: Annotated[
        str | None, typer.Option(help="Only 'ambig' or 'disambig' examples.")
    ] = None,
    limit: Limit = None,
    sample: Sample = None,
    batch_size: Annotated[int, typer.Option(help="Patch variants per forward pass.")] = 32,
    example_batch: Annotated[
        int | None,
        typer.Option(
            help="Exact patching: examples whose variants share forward passes [default: 16]; "
            "1: one example at a time (the least memory)."
        ),
    ] = None,
    n_boot: Annotated[int, typer.Option(help="Bootstrap resamples for the intervals.")] = 1000,
    seed: Seed = 0,
    cluster: Annotated[
        str,
        typer.Option(
            help="What the bootstrap resamples: template (category + question_index) or example."
        ),
    ] = "template",
    control_run: ControlRun = None,
    sae: Annotated[
        Path | None,
        typer.Option(
            help="Feature patching: an sae-lens SAE folder. At its hook, the chosen latents of "
            "the target round are replaced by the source round's (the reconstruction error "
            "kept), instead of a whole activation."
        ),
    ] = None,
    features: Annotated[
        str | None,
        typer.Option(
            help="With --sae: latents 123,456, or top:K (the K that change most from round 0, "
            "from `interp sae features` or computed from the stored activations). Patched all "
            "together, and each alone."
        ),
    ] = None,
    device: Device = "cpu",
    dtype: Dtype = "float32",
    top: Annotated[
        int,
        typer.Option(
            "--rows",
            help="Table rows to print (strongest |effect| first; strongest |delta| first, with "
            "a warning, when the source - target gap's interval covers 0).",
        ),
    ] = 15,
    workers: WorkersOption = None,
    ray_address: RayAddressOption = None,
    gpus_per_worker: GpusOption = 0.0,
    threads_per_worker: ThreadsOption = 1,
    as_json: Json = False,
) -> None:
    """Patch an activation from one round into another at the read-out position.

    Reports the logit difference (correct option minus stereotyped option) of the unpatched
    target, the unpatched source and the patched run, the normalised effect (1: the patch
    carries the whole change between the rounds) and delta (patched minus unpatched, in
    logits: read it when the rounds barely differ), per layer/component/head with 95%
    bootstrap intervals. Writes patching/NAME.parquet (per example) and NAME.json into the run.

    In TransformerLens' terms the source round (--round) is the clean run and the target
    round (--target-round) the corrupted run: denoise patches clean activations into the
    corrupted run, as TL's patching functions do. The files' column 'clean' holds the target
    round's unpatched value, which is TL's corrupted baseline.

    --layers: one layer or all (required, except with --sae: the SAE's layer); a list of
    several layers is refused, run patch once per layer.
    """
    import json

    from interp import preflight
    from interp.cli.format import format_patching
    from interp.options import check_at_least

    check_at_least(top, 0, "--rows")
    parsed = None if layer is None else _one_layer(layer)
    chosen_examples = parse_examples(examples)
    # What the run's manifest and the file system can refuse, before torch is imported.
    manifest = preflight.run_manifest(run)
    preflight.check_rounds(manifest, round=round, target_round=target_round)
    if sae is None and parsed is not None:
        preflight.check_patch_layer(manifest, parsed)
    if control_run is not None:
        preflight.run_manifest(control_run)
    preflight.check_run_model(manifest, dtype=dtype, device=device)

    from interp.patching import PatchConfig
    from interp.patching import patch as run_patch

    if sae is not None:
        chosen_layer = _sae_layer(sae) if layer is None else _one_layer(layer)
        # the default names no choice: with an SAE the site is its latents
        component = "sae" if component == "resid_post" else component
        if features is None:
            raise InterpError("--sae needs --features (latents like 123,456, or top:K)")
    elif layer is None:
        raise InterpError("--layers is required (a layer index, or 'all')")
    else:
        chosen_layer = _one_layer(layer)

    config = PatchConfig(
        layer=chosen_layer,
        round=round,
        target_round=target_round,
        component=component,
        direction=direction,
        positions=positions,
        method=method,
        verify_top=verify_top,
        examples=chosen_examples,
        categories=tuple(category) if category else None,
        context_condition=context_condition,
        limit=limit,
        sample=sample,
        batch_size=batch_size,
        example_batch=example_batch,
        n_boot=n_boot,
        seed=seed,
        cluster=cluster,
        control_run=None if control_run is None else str(control_run),
        sae=None if sae is None else str(sae),
        features=features,
    )
    result = run_patch(
        run,
        config,
        device=device,
        dtype=dtype,
        progress=not as_json,
        workers=workers_from_flags(workers, ray_address, gpus_per_worker, threads_per_worker),
    )
    if as_json:
        typer.echo(json.dumps(result.summary, indent=2, allow_nan=False))
        return
    typer.echo(format_patching(result.summary, top))
    typer.echo(wrote(result.paths))


def _sae_layer(path: Path) -> int:
    """The layer of the hook an SAE folder reads (checked in full by the library)."""
    from interp.patching.sae_latents import site_hook
    from interp.sae.load import read_sae_config, sae_hook_name

    hook = sae_hook_name(read_sae_config(path))
    if hook is None:
        raise InterpError(f"--sae {path}: its config names no hook_name")
    return site_hook(hook)[0]


def _one_layer(text: str) -> int | str:
    """``all`` stays the word the library takes; else one layer index (patch refuses a list of
    several layers: the library patches one layer or every layer)."""
    return parse_layer_or_all(text, command="patch")
