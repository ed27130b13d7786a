"""``interp sae``: sparse autoencoders with sae-lens (`interp.sae`): ``train`` one on offline
corpora, ``eval`` it on held-out tokens, read a run with it (``features``).

A typer sub-app; the commands are registered at the end of this module, and `interp.cli` gives
each its one-line user errors and adds the sub-app as ``interp sae``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from interp.cli.params import (
    Device,
    Dtype,
    Examples,
    Json,
    Layers,
    Limit,
    Out,
    Run,
    Sample,
    Seed,
    check_selection,
    parse_examples,
    parse_layers,
    wrote,
)

sae_app = typer.Typer(
    help="Sparse autoencoders (sae-lens): train one on offline corpora, evaluate it, read a "
    "run with it (which latents the rounds switch on or off).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # plain help, as the app's (interp.cli)
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
# Here --run names run directories as a corpus source (corpus run), several at once.
RunOpt = Annotated[
    list[Path] | None,
    typer.Option("--run", help="Run directories written by `interp replay` (corpus run); repeat."),
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
    out: Out,
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
    seed: Seed = 0,
    device: Device = "cpu",
    as_json: Json = False,
) -> None:
    """Train an SAE on a hook of the model with sae-lens, on offline corpora.

    Writes OUT/: cfg.json and sae_weights.safetensors (sae-lens' SAE.load_from_disk opens
    them), training.json (corpus hash, tokens, model hash, loss curve) and evals.json
    (explained variance, L0, dead latents, CE loss recovered, KL on held-out tokens).
    """
    from interp.preflight import check_model

    check_model(model, device=device)  # before torch is imported
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
    check_train_config(config)  # before the model loads (and before TransformerLens imports)
    result = train_sae(model, config, progress=not as_json, device=device)
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
    typer.echo(wrote(result.path))


def train_transcoders(
    out: Out,
    corpus: CorpusOpt = ["concepts"],  # noqa: B006 (typer reads the default)
    data: DataOpt = None,
    run: RunOpt = None,
    model: ModelOpt = "smollm2",
    layers: Layers = "all",
    width: Annotated[int, typer.Option(help="Features per layer.")] = 1024,
    l1: Annotated[
        float, typer.Option(help="L1 coefficient (activations x decoder-row norms).")
    ] = 2.0,
    l1_warmup: Annotated[
        float, typer.Option(help="Share of the steps over which the L1 coefficient rises.")
    ] = 0.2,
    tokens: Annotated[
        int | None,
        typer.Option(help="Training tokens (default: one pass over the training split)."),
    ] = None,
    lr: Annotated[float, typer.Option(help="Adam learning rate.")] = 1e-3,
    batch_tokens: Annotated[int, typer.Option(help="Activations per optimiser step.")] = 1024,
    context: ContextOpt = 128,
    heldout: HeldoutOpt = 0.1,
    eval_tokens: Annotated[int, typer.Option(help="Held-out tokens evaluated at the end.")] = 8192,
    plan: PlanOpt = "self-correct",
    system: SystemOpt = None,
    seed: Seed = 0,
    device: Device = "cpu",
    as_json: Json = False,
) -> None:
    """Train a transcoder per layer (MLP input -> MLP output, ReLU features) on offline
    corpora, from one activation stream (sae-lens' multi-hook store).

    Writes OUT/ in circuit-tracer's transcoder-set layout (config.yaml, layer_<L>.safetensors),
    transcoders.json (corpus, tokens, loss curves) and evals.json: the replacement model's
    next-token loss (every MLP replaced; with and without error terms) vs. the original on
    held-out tokens. --layers: the layers to train (circuit-tracer needs all).
    """
    from interp.preflight import check_model

    check_model(model, device=device)  # before torch is imported
    from interp.sae.transcoders import (
        TranscoderTrainConfig,
        check_transcoder_config,
        format_replacement,
    )
    from interp.sae.transcoders import train_transcoders as train_all

    config = TranscoderTrainConfig(
        out=str(out),
        layers=parse_layers(layers),
        width=width,
        l1=l1,
        l1_warmup=l1_warmup,
        tokens=tokens,
        lr=lr,
        batch_tokens=batch_tokens,
        seed=seed,
        eval_tokens=eval_tokens,
        corpus=_corpus_config(corpus, data, run, plan, system, context, heldout, seed),
    )
    check_transcoder_config(config)  # before the model loads (and before TransformerLens imports)
    result = train_all(model, config, progress=not as_json, device=device)
    if as_json:
        typer.echo(json.dumps(result.evals, indent=2, allow_nan=False))
        return
    t = result.record
    typer.echo(
        f"trained {len(t['layers'])} transcoders ({t['width']} features each) on "
        f"{t['tokens']['trained']} tokens in {t['seconds']['train']:.0f} s "
        f"({t['train_tokens_per_s']} tokens/s)"
    )
    typer.echo(format_replacement(result.evals))
    typer.echo(wrote(result.path))


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
    seed: Seed = 0,
    device: Device = "cpu",
    as_json: Json = False,
) -> None:
    """Evaluate an SAE on the held-out split of a corpus.

    Explained variance, mean L0, dead and dense latents, next-token CE loss with the SAE
    spliced in vs. clean vs. zero-ablated (CE loss recovered), and KL. With the corpus
    settings and seed it was trained with, the held-out tokens are ones it never saw.
    """
    from interp.preflight import check_model

    check_model(model, device=device)  # before torch is imported
    from interp.sae.evals import EvalConfig, evaluate_sae, format_evals

    config = EvalConfig(
        sae=str(sae),
        corpus=_corpus_config(corpus, data, run, plan, system, context, heldout, seed),
        eval_tokens=eval_tokens,
    )
    # the corpus, a folder that is no SAE and --eval-tokens: refused before the model loads
    evals = evaluate_sae(model, config, device=device).metrics
    if as_json:
        typer.echo(json.dumps(evals, indent=2, allow_nan=False))
        return
    typer.echo(format_evals(evals))
    if evals["trained_on_this_corpus"] is False:
        typer.echo(
            "note: this SAE was trained on another corpus (or split); its held-out tokens "
            "here may include tokens it was trained on"
        )


def features(
    run: Run,
    sae: Annotated[
        Path,
        typer.Option(
            help="An sae-lens SAE folder (cfg.json + sae_weights.safetensors) at a hook the run "
            "stored (e.g. blocks.12.hook_resid_post)."
        ),
    ],
    top: Annotated[
        int,
        typer.Option("--top-latents", help="Latents kept per round (changes, contrasts)."),
    ] = 16,
    contexts: Annotated[
        Path | None,
        typer.Option(
            help="A held-out corpus (plain text, paragraphs split at blank lines; or .jsonl with "
            "a 'text' field) for the top latents' max-activating contexts. This loads the run's "
            "model and runs it over the corpus (everything else needs no model)."
        ),
    ] = None,
    n_contexts: Annotated[int, typer.Option(help="Contexts kept per top latent.")] = 8,
    context_len: Annotated[int, typer.Option(help="Tokens per corpus chunk.")] = 64,
    max_corpus_tokens: Annotated[
        int, typer.Option(help="Read at most this many corpus tokens.")
    ] = 100_000,
    n_shuffles: Annotated[
        int, typer.Option(help="Shuffles of the round labels for the control.")
    ] = 100,
    n_boot: Annotated[int, typer.Option(help="Bootstrap resamples for the intervals.")] = 1000,
    seed: Seed = 0,
    cluster: Annotated[
        str,
        typer.Option(
            help="What the bootstrap resamples: template (category + question_index) or example."
        ),
    ] = "template",
    examples: Examples = None,
    limit: Limit = None,
    sample: Sample = None,
    device: Device = "cpu",
    dtype: Dtype = "float32",
    as_json: Json = False,
) -> None:
    """Which SAE latents the rounds of a run switch on or off at the read-out.

    Encodes the run's stored read-out activations at the SAE's hook (no model forward) and
    writes RUN/sae/NAME/ (NAME: the SAE folder's name): per latent x round mean activation and
    firing rate with 95% cluster-bootstrap intervals; the latents that change most from round 0
    to each round, with a shuffled-round control; latents that separate stereotyped vs other
    answers and correct vs wrong at each round; cosines with the concept directions `interp
    probe` stored; with --contexts, each top latent's max-activating corpus contexts.

    --device and --dtype matter with --contexts only. --examples, --limit and --sample read
    only those run examples (--sample drawn as replay draws it, seeded by --seed; on a
    permuted run over base examples, every order kept): each keeps the activations the full
    analysis gives it, while the means, intervals, shuffled-round control and top latents are
    those of the selection. A selection is printed, never stored over RUN/sae/NAME/.
    No --control-run: compare two plans by reading each run with the same SAE.
    """
    from interp import preflight
    from interp.options import check_at_least

    picked = parse_examples(examples)
    check_selection(limit, sample)
    check_at_least(top, 1, "--top-latents")  # the library's check, with the flag's name

    manifest = preflight.run_manifest(run)  # before torch is imported
    if contexts is not None:  # the contexts are read with the run's model
        preflight.check_run_model(manifest, dtype=dtype, device=device)

    from interp.report.tables import fixed
    from interp.sae.latent_changes import FeaturesConfig, sae_features

    config = FeaturesConfig(
        sae=str(sae),
        top=top,
        contexts=None if contexts is None else str(contexts),
        n_contexts=n_contexts,
        context_len=context_len,
        max_corpus_tokens=max_corpus_tokens,
        n_shuffles=n_shuffles,
        n_boot=n_boot,
        seed=seed,
        cluster=cluster,
        examples=None if picked is None else tuple(picked),
        limit=limit,
        sample=sample,
    )
    result = sae_features(run, config, device=device, dtype=dtype, progress=not as_json)
    summary = result.summary
    if "selection" in summary:  # computed, not stored
        typer.echo(
            f"note: the features of {summary['n_examples']} selected examples; "
            f"{run / 'sae' / result.name} (every example) is left as it is",
            err=True,
        )
    if as_json:
        typer.echo(json.dumps(summary, indent=2, allow_nan=False))
        return
    typer.echo(
        f"{result.name} at {result.hook}: {summary['n_examples']} examples x "
        f"{summary['n_rounds']} rounds, {summary['latents_active']} of {summary['sae']['d_sae']} "
        "latents fire at least once"
    )
    typer.echo("round  latent   change [95% CI]             p_shuffled  null max |change| q95")
    for r, best in summary["strongest_change"].items():
        lo, hi = best["ci"]
        typer.echo(
            f"{r:>5}  {best['latent']:>6}   {fixed(best['change']):>8} "
            f"[{fixed(lo)}, {fixed(hi)}]{'':<6} {fixed(best['p_shuffled']):>10}  "
            f"{fixed(best['null_max_q95']):>8}"
        )
    for note in summary["notes"]:
        typer.echo(f"note: {note}")
    if result.paths:  # else a note said why it was printed, not stored
        typer.echo(wrote(result.paths[-1].parent))


sae_app.command("train")(train)
sae_app.command("train-transcoders")(train_transcoders)
sae_app.command("eval")(evaluate)
sae_app.command("features")(features)
