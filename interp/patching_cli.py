"""``interp patch``: the command behind :func:`interp.patching.patch_run`.

Register in ``interp/cli.py`` with::

    from interp.patching_cli import patch_command

    app.command("patch")(_user_errors(patch_command))
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer


def patch_command(
    run: Annotated[Path, typer.Option(help="A run directory written by `interp replay`.")],
    layer: Annotated[str, typer.Option(help="A layer index, or 'all' to sweep every layer.")],
    round: Annotated[
        int,
        typer.Option(
            help="Source round (e.g. 3, after the instructions): TransformerLens' clean run."
        ),
    ],
    target_round: Annotated[
        int,
        typer.Option(help="Target round (e.g. 0, the question): TransformerLens' corrupted run."),
    ] = 0,
    component: Annotated[
        str,
        typer.Option(
            help="resid_pre, resid_post, attn_out, mlp_out, heads (every head's z), 'all', or a "
            "comma-separated list."
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
    example: Annotated[
        list[str] | None,
        typer.Option(help="Only these examples (id like builtin/3, or index); repeatable."),
    ] = None,
    category: Annotated[
        list[str] | None, typer.Option(help="Only these categories (e.g. Age); repeatable.")
    ] = None,
    context_condition: Annotated[
        str | None, typer.Option(help="Only 'ambig' or 'disambig' examples.")
    ] = None,
    limit: Annotated[int | None, typer.Option(help="Use only the first N examples.")] = None,
    sample: Annotated[
        int | None,
        typer.Option(help="A random sample of N examples (seeded by --seed), before --limit."),
    ] = None,
    batch_size: Annotated[int, typer.Option(help="Patch variants per forward pass.")] = 32,
    n_boot: Annotated[int, typer.Option(help="Bootstrap resamples for the intervals.")] = 1000,
    seed: Annotated[int, typer.Option(help="Seed of the bootstrap and of --sample.")] = 0,
    cluster: Annotated[
        str,
        typer.Option(
            help="What the bootstrap resamples: template (category + question_index) or example."
        ),
    ] = "template",
    control_run: Annotated[
        Path | None,
        typer.Option(
            help="A replay of the same examples under another plan (e.g. baseline): patch it "
            "the same way and report run - control with paired intervals."
        ),
    ] = None,
    device: Annotated[str, typer.Option(help="cpu, cuda or mps.")] = "cpu",
    dtype: Annotated[str, typer.Option(help="float32, bfloat16 or float16.")] = "float32",
    top: Annotated[int, typer.Option(help="Rows to print (strongest |effect| first).")] = 15,
    as_json: Annotated[bool, typer.Option("--json", help="Print the JSON summary.")] = False,
) -> None:
    """Patch an activation from one round into another at the read-out position.

    Reports the logit difference (correct option minus stereotyped option) of the unpatched
    target, the unpatched source and the patched run, the normalised effect (1: the patch
    carries the whole change between the rounds) and delta (patched minus unpatched, in
    logits: read it when the rounds barely differ), per layer/component/head with 95%
    bootstrap intervals. Writes patching/NAME.parquet (per example) and NAME.json into the run.

    In TransformerLens' terms the source round (--round) is the **clean** run and the target
    round (--target-round) the **corrupted** run: denoise patches clean activations into the
    corrupted run, as TL's patching functions do. The files' column 'clean' holds the target
    round's unpatched value, which is TL's *corrupted* baseline.
    """
    import json

    from interp.options import check_at_least
    from interp.patching import patch_run

    check_at_least(top, 0, "--top")

    result = patch_run(
        run,
        layer="all" if layer == "all" else _int(layer, "--layer"),
        round=round,
        target_round=target_round,
        component=component,
        direction=direction,
        positions=positions,
        method=method,
        verify_top=verify_top,
        examples=[int(e) if e.isdigit() else e for e in example] if example else None,
        categories=category or None,
        context_condition=context_condition,
        limit=limit,
        sample=sample,
        batch_size=batch_size,
        n_boot=n_boot,
        seed=seed,
        cluster=cluster,
        control_run=control_run,
        device=device,
        dtype=dtype,
        progress=not as_json,
    )
    if as_json:
        typer.echo(json.dumps(result.summary, indent=2, allow_nan=False))
        return
    typer.echo(format_patching(result.summary, top))
    typer.echo(f"written: {', '.join(str(p) for p in result.paths)}")


def _int(text: str, flag: str) -> int:
    from interp.errors import InterpError

    try:
        return int(text)
    except ValueError:
        raise InterpError(f"{flag} {text!r}: use a layer index or 'all'") from None


def format_patching(summary: dict[str, Any], top: int = 15) -> str:
    """The table a person reads: the strongest rows, effect with its 95% interval."""
    counts = summary["examples"]
    config = summary["config"]
    source, target = config["round"], config["target_round"]
    denoise = config["direction"] == "denoise"
    recipient, donor = (target, source) if denoise else (source, target)
    lines = [
        f"{summary['name']}: {config['direction']} round {source} -> target round "
        f"{target}, {config['method']}, n = {counts['used']} examples "
        f"({counts['excluded_no_target']} without a stereotyped option and "
        f"{counts['excluded_target_is_label']} whose stereotyped option is correct excluded)",
        f"roles in TransformerLens' terms: source = round {source} = TL's clean run; target = "
        f"round {target} = TL's corrupted run; patched = the round-{recipient} run with round "
        f"{donor}'s activation "
        + ("(TL's denoising: clean -> corrupted)" if denoise else "(noising: corrupted -> clean)"),
        f"value = logit[correct] - logit[stereotyped] at the read-out; target = unpatched round "
        f"{target} (the files' 'clean' column), source = unpatched round {source}",
        "effect = ratio of means (headline); delta = mean(patched - unpatched recipient), in "
        "logits; effect_mean = mean of per-example ratios",
    ]
    alignment = summary.get("alignment")
    if alignment and alignment["positions"] > 1:
        lo, hi = alignment["shared_tail_min"], alignment["shared_tail_max"]
        lines.append(
            f"positions last:{alignment['positions']}: every aligned token identical in both "
            f"rounds (shared tail {lo if lo == hi else f'{lo}-{hi}'} tokens)"
        )
    lines.append(
        f"{'method':<11} {'layer':>5} {'component':<10} {'head':>4} {'target':>8} {'source':>8} "
        f"{'patched':>8}  {'effect [95% CI]':<24} {'delta [95% CI]':<24} {'effect_mean':>11}"
    )
    rows = summary["table"]
    if len(rows) > top:  # the strongest first; the denominator is shared, so |delta| ranks too
        rows = sorted(rows, key=lambda r: -abs(r["delta"] if r["delta"] is not None else 0.0))
    for row in rows[:top]:
        head = "-" if row["head"] < 0 else str(row["head"])
        lines.append(
            f"{row['method']:<11} {row['layer']:>5} {row['component']:<10} {head:>4} "
            f"{_num(row['clean']):>8} {_num(row['source']):>8} {_num(row['patched']):>8}  "
            f"{_with_ci(row, 'effect'):<24} {_with_ci(row, 'delta'):<24} "
            f"{_num(row['effect_mean']):>11}"
        )
    cluster = summary.get("cluster")
    if cluster:
        note = f"; {cluster['note']}" if cluster.get("note") else ""
        lines.append(
            f"intervals: cluster bootstrap over {cluster['n_clusters']} {cluster['key']} clusters"
            f"{note}"
        )
    control = summary.get("control")
    if control:
        lines += _control_lines(control, top)
    verify = summary.get("verify")
    if verify:
        lines.append(
            f"attribution vs exact on the top {verify['k']}: Spearman rho = "
            f"{_num(verify['spearman'])}"
        )
    return "\n".join(lines)


def _control_lines(control: dict[str, Any], top: int) -> list[str]:
    """Run - control per variant (strongest |delta difference| first)."""
    lines = [
        f"control {control['run']} (plan {control['plan']}): run - control, paired 95% CI",
        f"{'layer':>5} {'component':<10} {'head':>4}  {'effect run':>10} {'control':>8}  "
        f"{'effect diff [95% CI]':<26} {'delta diff [95% CI]':<26}",
    ]
    rows = control["table"]
    if len(rows) > top:
        rows = sorted(rows, key=lambda r: -abs(r["delta_diff"] or 0.0))
    for row in rows[:top]:
        head = "-" if row["head"] < 0 else str(row["head"])
        lines.append(
            f"{row['layer']:>5} {row['component']:<10} {head:>4}  {_num(row['effect_run']):>10} "
            f"{_num(row['effect_control']):>8}  {_with_ci(row, 'effect_diff'):<26} "
            f"{_with_ci(row, 'delta_diff'):<26}"
        )
    return lines


def _num(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"


def _with_ci(row: dict[str, Any], name: str) -> str:
    lo, hi = row.get(f"{name}_lo"), row.get(f"{name}_hi")
    if lo is None or hi is None:
        return _num(row[name])
    return f"{_num(row[name])} [{lo:.2f}, {hi:.2f}]"
