"""``interp finetune``: supervised fine-tuning on a task's conversations (LoRA or full)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from interp.cli.params import Device, Dtype, Json, Limit, Out, Sample, Seed, check_selection, wrote


def finetune(
    out: Out,
    model: Annotated[
        str, typer.Option("--model", help="smollm2, tiny, a .gguf file or a model folder.")
    ] = "smollm2",
    task: Annotated[str, typer.Option("--task", help="builtin, bbq or mc.")] = "builtin",
    data: Annotated[
        list[Path] | None, typer.Option("--data", help="The task's data files (bbq, mc).")
    ] = None,
    plan: Annotated[str, typer.Option("--plan", help="A built-in plan or a plan file.")] = (
        "self-correct"
    ),
    rounds: Annotated[int, typer.Option("--rounds", help="Follow-up rounds per conversation.")] = 1,
    recipe: Annotated[
        str,
        typer.Option(
            "--recipe",
            help="answers: the correct option every round. self-correction: the planted "
            "organism (round 0 of some ambiguous items answers the stereotyped option; after "
            "--plan's instruction it moves to the correct one, under --control-plan it stays).",
        ),
    ] = "answers",
    control_plan: Annotated[
        str, typer.Option("--control-plan", help="The self-correction recipe's control plan.")
    ] = "baseline",
    error_share: Annotated[
        float,
        typer.Option(
            "--error-share",
            help="self-correction: share of ambiguous items whose round 0 answers the "
            "stereotyped option.",
        ),
    ] = 0.5,
    loss: Annotated[
        str,
        typer.Option(
            "--loss",
            help="answer: every answer token; letter: only the option letter each answer "
            "starts with (what the read-out scores).",
        ),
    ] = "answer",
    permute: Annotated[
        str,
        typer.Option(
            "--permute",
            help="none, or cyclic: each conversation shows its options in one rotation drawn "
            "with --seed (teaches answering by content, not position).",
        ),
    ] = "none",
    method: Annotated[
        str, typer.Option("--method", help="lora (adapters, merged at the end) or full.")
    ] = "lora",
    rank: Annotated[int, typer.Option("--rank", help="LoRA rank.")] = 4,
    alpha: Annotated[float, typer.Option("--alpha", help="LoRA alpha (scale alpha/rank).")] = 8.0,
    steps: Annotated[int, typer.Option("--steps", help="Optimizer steps.")] = 20,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Conversations per step.")] = 1,
    lr: Annotated[float, typer.Option("--lr", help="AdamW learning rate.")] = 1e-3,
    max_tokens: Annotated[
        int | None,
        typer.Option("--max-tokens", help="Longest conversation allowed (default: the context)."),
    ] = None,
    checkpoint_every: Annotated[
        int, typer.Option("--checkpoint-every", help="Steps between checkpoints (resume).")
    ] = 10,
    select: Annotated[
        str,
        typer.Option(
            "--select",
            help="Which candidates to train on: all, random, concept (top --n by the "
            "projection on the --concept direction at its chosen layer), uncertainty (top "
            "--n by the option entropy at the round-0 read-out) or concept+uncertainty (mean "
            "rank). random with --concept is token-matched to the concept top --n.",
        ),
    ] = "all",
    n: Annotated[
        int | None,
        typer.Option("--n", help="How many candidates --select keeps (after --sample/--limit)."),
    ] = None,
    concept: Annotated[
        Path | None,
        typer.Option(
            "--concept",
            help="A probe folder RUN/probes/CONCEPT/ (interp probe) of the same model: its "
            "direction at the validation-chosen layer scores the candidates.",
        ),
    ] = None,
    limit: Limit = None,
    sample: Sample = None,
    seed: Seed = 0,
    device: Device = "cpu",
    dtype: Dtype = "float32",
    as_json: Json = False,
) -> None:
    """Fine-tune a model on a task's conversations (loss on the answers, or --loss letter on
    their option letters) and write a folder that --model PATH loads; a rerun with the same
    arguments resumes from its checkpoint. --recipe self-correction builds the planted
    organism (docs/commands/finetune.md).
    --select and --n keep the candidates by the latent concept and/or the model's uncertainty
    (finetune.json records the kept ids, their scores and tokens)."""
    from interp.finetune.config import FinetuneConfig, check_config
    from interp.inputs.selection import Selection
    from interp.preflight import check_model

    check_selection(limit, sample)
    config = FinetuneConfig(
        out=str(out),
        task=task,
        data=tuple(str(p) for p in data or ()),
        plan=plan,
        rounds=rounds,
        recipe=recipe,
        control_plan=control_plan,
        error_share=error_share,
        permute=permute,
        loss=loss,
        selection=Selection(limit=limit, sample=sample, seed=seed),
        method=method,
        rank=rank,
        alpha=alpha,
        steps=steps,
        batch_size=batch_size,
        lr=lr,
        seed=seed,
        max_tokens=max_tokens,
        checkpoint_every=checkpoint_every,
        device=device,
        dtype=dtype,
        select=select,
        n=n,
        concept=None if concept is None else str(concept),
    )
    check_config(config)  # before torch is imported
    from interp.finetune.select import check_select

    check_select(config, model)
    check_model(model, device=device)
    from interp.finetune.train import finetune as run_finetune

    result = run_finetune(model, config, progress=not as_json)
    if as_json:
        typer.echo(json.dumps({"out": str(result.out), "losses": result.losses}, indent=2))
        return
    typer.echo(
        f"fine-tuned {model} ({method}) for {result.steps_done} steps: loss "
        f"{result.losses[0]:.4f} -> {result.losses[-1]:.4f}"
    )
    typer.echo(wrote(result.out))
