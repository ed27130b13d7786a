"""``interp sae``: sparse autoencoders with sae-lens (`interp.sae`).

A typer sub-app; `interp.cli` registers each subcommand on ``sae_app`` (with its one-line
user errors) and adds the sub-app as ``interp sae``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

sae_app = typer.Typer(
    help="Sparse autoencoders (sae-lens): train one on offline corpora, evaluate it.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

CorpusOpt = Annotated[
    list[str],
    typer.Option(
        "--corpus",
        help="bbq (--data BBQ files), builtin (the 48 built-in items), concepts (probes/data "
        "statements), run (--run DIR), text (--data .txt or .jsonl with a 'text' field); "
        "repeat or comma-separate to combine.",
    ),
]
DataOpt = Annotated[
    list[Path] | None, typer.Option("--data", help="Files of the bbq or text corpus.")
]
RunOpt = Annotated[
    list[Path] | None, typer.Option("--run", help="Run directories (corpus run); repeat.")
]
ModelOpt = Annotated[
    str, typer.Option(help="smollm2, tiny, a .gguf file, a model folder or a TL name.")
]
ContextOpt = Annotated[int, typer.Option(help="Tokens per packed sequence (sink included).")]
HeldoutOpt = Annotated[float, typer.Option(help="Share of groups held out for evaluation.")]
PlanOpt = Annotated[str, typer.Option(help="bbq/builtin: the plan whose round 0 renders them.")]
SystemOpt = Annotated[
    str | None, typer.Option(help="bbq/builtin: a system prompt (default: the template's).")
]


def _corpus_config(corpus, data, runs, plan, system, context, heldout, seed):
    from interp.sae.corpus import CorpusConfig

    kinds = [k.strip() for part in corpus for k in part.split(",") if k.strip()]
    return CorpusConfig(
        corpus=kinds,
        data=[str(p) for p in data or []],
        runs=[str(p) for p in runs or []],
        plan=plan,
        system=system,
        context=context,
        heldout=heldout,
        seed=seed,
    )


def train(
    out: Annotated[Path, typer.Option(help="The SAE folder to write (new or empty).")],
    corpus: CorpusOpt = ["concepts"],  # noqa: B006 (typer reads the default)
    data: DataOpt = None,
    run: RunOpt = None,
    model: ModelOpt = "smollm2",
    hook: Annotated[str, typer.Option(help="The hook the SAE reads.")] = (
        "blocks.12.hook_resid_post"
    ),
    architecture: Annotated[
        str, typer.Option(help="topk, batchtopk, jumprelu or standard.")
    ] = "topk",
    width: Annotated[int, typer.Option(help="Latents (d_sae).")] = 2048,
    k: Annotated[int, typer.Option(help="topk/batchtopk: active latents per token.")] = 32,
    l1: Annotated[
        float | None,
        typer.Option(help="standard: L1 coefficient (default 5); jumprelu: L0 coefficient (1)."),
    ] = None,
    tokens: Annotated[
        int | None,
        typer.Option(help="Training tokens (default: one pass over the training split)."),
    ] = None,
    lr: Annotated[float, typer.Option(help="Adam learning rate.")] = 5e-4,
    batch_tokens: Annotated[int, typer.Option(help="Activations per optimiser step.")] = 1024,
    context: ContextOpt = 128,
    heldout: HeldoutOpt = 0.1,
    eval_tokens: Annotated[int, typer.Option(help="Held-out tokens evaluated at the end.")] = 8192,
    plan: PlanOpt = "self-correct",
    system: SystemOpt = None,
    seed: Annotated[int, typer.Option(help="Initialisation, shuffling, split, order.")] = 0,
    device: Annotated[str, typer.Option(help="cpu or cuda.")] = "cpu",
    as_json: Annotated[bool, typer.Option("--json", help="Print evals.json.")] = False,
) -> None:
    """Train an SAE on a hook of the model with sae-lens, on offline corpora.

    Writes OUT/: cfg.json and sae_weights.safetensors (sae-lens' SAE.load_from_disk opens
    them), training.json (corpus hash, tokens, model hash, loss curve) and evals.json
    (explained variance, L0, dead latents, CE loss recovered, KL on held-out tokens).
    """
    from interp.loading import load_model
    from interp.sae.evals import format_evals
    from interp.sae.train import TrainConfig, check_train_config, train_sae

    config = TrainConfig(
        out=str(out),
        hook=hook,
        architecture=architecture,
        width=width,
        k=k,
        l1=l1,
        tokens=tokens,
        lr=lr,
        batch_tokens=batch_tokens,
        seed=seed,
        eval_tokens=eval_tokens,
        corpus=_corpus_config(corpus, data, run, plan, system, context, heldout, seed),
    )
    check_train_config(config)  # before the model loads
    result = train_sae(config, load_model(model, device=device), progress=not as_json)
    if as_json:
        typer.echo(json.dumps(result.evals, indent=2, allow_nan=False))
        return
    t = result.training
    typer.echo(
        f"trained {t['architecture']} SAE ({t['width']} latents) at {t['hook']} on "
        f"{t['tokens']['trained']} tokens ({t['tokens']['epochs']:.2f} epochs) in "
        f"{t['seconds']['train']:.0f} s"
    )
    typer.echo(format_evals(result.evals))
    typer.echo(f"wrote {result.path}")


def evaluate(
    sae: Annotated[Path, typer.Option(help="An sae-lens SAE folder.")],
    corpus: CorpusOpt = ["concepts"],  # noqa: B006
    data: DataOpt = None,
    run: RunOpt = None,
    model: ModelOpt = "smollm2",
    context: ContextOpt = 128,
    heldout: HeldoutOpt = 0.1,
    eval_tokens: Annotated[int, typer.Option(help="Held-out tokens evaluated (at most).")] = 8192,
    plan: PlanOpt = "self-correct",
    system: SystemOpt = None,
    seed: Annotated[int, typer.Option(help="The corpus split and order.")] = 0,
    device: Annotated[str, typer.Option(help="cpu or cuda.")] = "cpu",
    as_json: Annotated[bool, typer.Option("--json", help="Print the metrics as JSON.")] = False,
) -> None:
    """Evaluate an SAE on the held-out split of a corpus.

    Explained variance, mean L0, dead and dense latents, next-token CE loss with the SAE
    spliced in vs. clean vs. zero-ablated (CE loss recovered), and KL. With the corpus
    settings and seed it was trained with, the held-out tokens are ones it never saw.
    """
    from interp.errors import InterpError
    from interp.loading import load_model
    from interp.sae.corpus import check_corpus_config
    from interp.sae.evals import evaluate_on_corpus, format_evals
    from interp.sae.load import read_sae_config

    config = _corpus_config(corpus, data, run, plan, system, context, heldout, seed)
    check_corpus_config(config)
    read_sae_config(sae)  # a folder that is no SAE is refused before the model loads
    if eval_tokens < 1:
        raise InterpError("--eval-tokens must be at least 1")
    evals = evaluate_on_corpus(
        load_model(model, device=device), str(sae), config, max_tokens=eval_tokens
    )
    if as_json:
        typer.echo(json.dumps(evals, indent=2, allow_nan=False))
        return
    typer.echo(format_evals(evals))
    if evals["trained_on_this_corpus"] is False:
        typer.echo(
            "note: this SAE was trained on another corpus (or split); its held-out tokens "
            "here may include tokens it was trained on"
        )
