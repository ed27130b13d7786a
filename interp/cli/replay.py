"""``interp replay``: the command behind :func:`interp.replay.loop.replay`."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Annotated

import typer

from interp.cli.metrics import show_metrics
from interp.cli.params import (
    Device,
    Dtype,
    GpusOption,
    Json,
    Limit,
    Out,
    RayAddressOption,
    Sample,
    Seed,
    ThreadsOption,
    WorkersOption,
    workers_from_flags,
    wrote,
)
from interp.errors import InterpError


def replay(
    out: Out,
    model: Annotated[
        str, typer.Option(help="smollm2 or gemma3-270m (embedded), tiny, a .gguf file, a folder.")
    ] = "smollm2",
    task: Annotated[
        str, typer.Option(help="bbq, builtin (48 items shipped), mc or winogender.")
    ] = "builtin",
    data: Annotated[
        list[str] | None,
        typer.Option(
            help="Data file(s) for bbq/mc: --data A.jsonl B.jsonl; winogender: templates.tsv "
            "or the upstream all_sentences.tsv."
        ),
    ] = None,
    plan: Annotated[
        str,
        typer.Option(
            help="baseline, self-correct, instruct-first, negated, cot, feedback-oracle, "
            "feedback-self, or a YAML/JSON file (winogender: baseline, self-correct, "
            "match-stats)."
        ),
    ] = "self-correct",
    bbq_templates: Annotated[
        Path | None,
        typer.Option(
            help="bbq: the BBQ repository's templates/ folder. The official bias target of "
            "Race_x_gender and Race_x_SES needs it; without it their examples get no target "
            "(counted, with a warning)."
        ),
    ] = None,
    rounds: Annotated[int, typer.Option(help="Follow-up rounds R; the run holds 0..R.")] = 3,
    limit: Limit = None,
    sample: Sample = None,
    hooks: Annotated[
        list[str] | None,
        typer.Option(
            help="Activations to store at each read-out: resid_post (default), resid_pre, "
            "resid_mid, attn_out, mlp_out (every layer), or names like blocks.12.hook_resid_post."
        ),
    ] = None,
    mode: Annotated[
        str, typer.Option(help="choice: score option letters; generate: greedy + parse.")
    ] = "choice",
    score: Annotated[
        str,
        typer.Option(
            help="choice mode: letter (default) scores each option by the log-prob of its "
            "letter, one token per option; text by the summed log-prob of its whole text "
            "'letter) option', which favours options of few tokens such as 'Unknown'; "
            "text-mean by that log-prob per token (length-normalised)."
        ),
    ] = "letter",
    max_new_tokens: Annotated[int, typer.Option(help="generate mode: tokens per answer.")] = 48,
    batch_size: Annotated[int, typer.Option(help="Examples per forward pass.")] = 8,
    seed: Seed = 0,
    system: Annotated[
        str | None, typer.Option(help="System prompt (default: the template's own).")
    ] = None,
    device: Device = "cpu",
    dtype: Dtype = "float32",
    force_round0: Annotated[
        str | None,
        typer.Option(
            help="Forced-history control (choice mode): write this option into the transcript "
            "as the round-0 answer instead of the model's choice: label (the correct one), "
            "target (the stereotyped one), unknown, or a letter (a, b, c, ...). The model's own "
            "round-0 scores stay recorded; examples without that option are left out (counted).",
        ),
    ] = None,
    permute: Annotated[
        str,
        typer.Option(
            help="Option orders: none (as written, default), cyclic (the k rotations of k "
            "options) or all (k! orders). Each order is its own conversation and row; "
            "interp metrics then adds debiased scores (orders averaged per example).",
        ),
    ] = "none",
    stats: Annotated[
        Path | None,
        typer.Option(
            help="winogender: the occupations' statistics TSV with bls_pct_female (default: "
            "occupations-stats.tsv beside the first --data file)."
        ),
    ] = None,
    workers: WorkersOption = None,
    ray_address: RayAddressOption = None,
    gpus_per_worker: GpusOption = 0.0,
    threads_per_worker: ThreadsOption = 1,
    max_orders: Annotated[
        int,
        typer.Option(
            help="Refuse a permuted replay that gives any example more orders than this "
            "(--permute all is k!: 120 orders for 5 options, 720 for 6); raise it to run "
            "such a replay anyway.",
        ),
    ] = 24,
    as_json: Json = False,
) -> None:
    """Replay self-correction rounds and store answers, scores and read-out activations.

    A killed replay, run again with the same arguments, resumes where it stopped (with or
    without --workers: finished batches are kept). --sample and --limit pick examples across
    all data files; --seed also seeds the bootstrap intervals (and the tiny model).
    """
    from interp import preflight

    preflight.check_model(model, dtype=dtype, device=device)  # before torch is imported
    if permute != "none" and mode != "choice":  # replay's own check, without torch's import
        raise InterpError(
            f"--permute {permute} needs --mode choice (its debiased accuracy averages the "
            "options' scores over orders; generate mode scores none)"
        )
    if ray_address is not None:  # a bad or unreachable address: before anything is written
        from interp.runs.distributed import check_address

        check_address(ray_address)

    from interp.replay.loop import ReplayConfig
    from interp.replay.loop import replay as run_replay

    config = ReplayConfig(
        out=str(out),
        model=model,
        task=task,
        data=list(data or []),
        bbq_templates=None if bbq_templates is None else str(bbq_templates),
        plan=plan,
        rounds=rounds,
        limit=limit,
        sample=sample,
        hooks=list(hooks) if hooks else ReplayConfig().hooks,
        mode=mode,
        score=score,
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
        seed=seed,
        system=system,
        device=device,
        dtype=dtype,
        force_round0=force_round0,
        permute=permute,
        stats=None if stats is None else str(stats),
        max_orders=max_orders,
    )
    if permute == "all":  # k! grows fast: say what it costs before any compute
        from interp.replay.loop import planned_conversations

        n_examples, n_rows = planned_conversations(config)
        typer.echo(
            f"warning: --permute all replays {n_examples} examples as {n_rows} conversations "
            f"({n_rows / max(n_examples, 1):.0f} orders per example on average), each for "
            f"{rounds + 1} rounds; --permute cyclic needs one order per option",
            err=True,
        )
    command = "interp " + shlex.join(sys.argv[1:])
    spread = workers_from_flags(workers, ray_address, gpus_per_worker, threads_per_worker)
    run = run_replay(config, progress=not as_json, command=command, workers=spread)
    forced = run.manifest.get("force_round0")
    if forced and forced["skipped"]:
        typer.echo(
            f"warning: --force-round0 {forced['option']}: {len(forced['skipped'])} of the "
            f"{forced['n_selected']} selected examples have no such option and were left out "
            "(their ids: manifest.json, force_round0.skipped)",
            err=True,
        )
    show_metrics(run.path, as_json)
    if not as_json:
        typer.echo(wrote(run.path))
