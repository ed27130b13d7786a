"""``interp sae``: sparse autoencoders with sae-lens (`interp.sae`): ``train`` one on offline
corpora, ``eval`` it on held-out tokens, read a run with it (``features``).

A typer sub-app; the commands are registered at the end of this module, and `interp.cli` gives
each its one-line user errors and adds the sub-app as ``interp sae``.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

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
from interp.sae.train import TrainConfig
from interp.sae.transcoders import TranscoderTrainConfig

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
    str, typer.Option(help="smollm2, gemma3-270m, tiny, a .gguf file, a model folder or a TL name.")
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


# --- sae train and sae train-transcoders: generated from the training configs --------------

# Training fields the command line declares in its own vocabulary (name -> annotation,
# default) instead of from the field: --out is required, --layers takes the layers grammar,
# --seed is the shared seed.
CLI_FIELDS: dict[str, tuple[Any, Any]] = {
    "out": (Out, inspect.Parameter.empty),
    "layers": (Layers, "all"),
    "seed": (Seed, 0),
}
# The training commands' options that are no config field: the corpus's, the model, the
# device, --json.
CLI_ONLY: dict[str, tuple[Any, Any]] = {
    "corpus": (CorpusOpt, ["concepts"]),
    "data": (DataOpt, None),
    "run": (RunOpt, None),
    "model": (ModelOpt, "smollm2"),
    "context": (ContextOpt, 128),
    "heldout": (HeldoutOpt, 0.1),
    "plan": (PlanOpt, "self-correct"),
    "system": (SystemOpt, None),
    "device": (Device, "cpu"),
    "as_json": (Json, False),
}
# Where the options stand in --help: the corpus first, then the command's own fields, then the
# shared budget and the rest. A training field placed nowhere (one added to TrainingOptions or
# a config) goes before --device: every field is an option.
_HEAD = ("out", "corpus", "data", "run", "model")
_TAIL = (
    "tokens",
    "lr",
    "batch_tokens",
    "context",
    "heldout",
    "eval_tokens",
    "plan",
    "system",
    "seed",
    "device",
    "as_json",
)


def training_parameters(config_class: type, own: tuple[str, ...]) -> list[inspect.Parameter]:
    """The options of a training command: one per field of ``config_class``
    (:func:`interp.sae.train.training_fields`: its type, default and help; :data:`CLI_FIELDS`
    for those the command line declares itself), and :data:`CLI_ONLY`; ``own``: the
    command's fields placed after the corpus (the rest follow in :data:`_TAIL`'s order)."""
    import typing

    from interp.sae.train import training_fields

    hints = typing.get_type_hints(config_class)
    declared: dict[str, tuple[Any, Any]] = {}
    for name, _type, default, help in training_fields(config_class):
        declared[name] = CLI_FIELDS.get(name) or (
            Annotated[hints[name], typer.Option(help=help)],
            default,
        )
    declared.update(CLI_ONLY)
    placed = [*_HEAD, *own, *_TAIL]
    unplaced = [name for name in declared if name not in placed]
    at = placed.index("device")
    order = [*placed[:at], *unplaced, *placed[at:]]
    return [
        inspect.Parameter(
            name,
            inspect.Parameter.KEYWORD_ONLY,
            annotation=declared[name][0],
            default=declared[name][1],
        )
        for name in order
    ]


def training_command(
    name: str, config_class: type, own: tuple[str, ...], body: Callable[..., None], doc: str
) -> Callable[..., None]:
    """A typer command whose options are :func:`training_parameters`; it calls ``body`` with
    the config's field values (``corpus`` the built CorpusConfig) and the rest by name."""

    def command(**given: Any) -> None:
        corpus = _corpus_config(
            given.pop("corpus"),
            given.pop("data"),
            given.pop("run"),
            given.pop("plan"),
            given.pop("system"),
            given.pop("context"),
            given.pop("heldout"),
            given["seed"],
        )
        body(corpus=corpus, **given)

    params = training_parameters(config_class, own)
    command.__signature__ = inspect.Signature(params, return_annotation=None)  # type: ignore[attr-defined]
    command.__annotations__ = {p.name: p.annotation for p in params} | {"return": None}
    command.__name__ = command.__qualname__ = name
    command.__doc__ = doc
    return command


def _train_sae(out: Path, model: str, device: str, as_json: bool, **fields: Any) -> None:
    from interp.preflight import check_model

    check_model(model, device=device)  # before torch is imported
    from interp.sae.evals import format_evals
    from interp.sae.train import TrainConfig, check_train_config, train_sae

    config = TrainConfig(out=str(out), **fields)
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


def _train_transcoders(
    out: Path, model: str, device: str, as_json: bool, layers: str, **fields: Any
) -> None:
    from interp.preflight import check_model

    check_model(model, device=device)  # before torch is imported
    from interp.sae.transcoders import (
        TranscoderTrainConfig,
        check_transcoder_config,
        format_replacement,
    )
    from interp.sae.transcoders import train_transcoders as train_all

    config = TranscoderTrainConfig(out=str(out), layers=parse_layers(layers), **fields)
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


train = training_command(
    "train",
    TrainConfig,
    ("hook", "architecture", "width", "k", "l1"),
    _train_sae,
    """Train an SAE on a hook of the model with sae-lens, on offline corpora.

    Writes OUT/: cfg.json and sae_weights.safetensors (sae-lens' SAE.load_from_disk opens
    them), training.json (corpus hash, tokens, model hash, loss curve) and evals.json
    (explained variance, L0, dead latents, CE loss recovered, KL on held-out tokens).
    """,
)
train_transcoders = training_command(
    "train_transcoders",
    TranscoderTrainConfig,
    ("layers", "width", "l1", "l1_warmup"),
    _train_transcoders,
    """Train a transcoder per layer (MLP input -> MLP output, ReLU features) on offline
    corpora, from one activation stream (sae-lens' multi-hook store).

    Writes OUT/ in circuit-tracer's transcoder-set layout (config.yaml, layer_<L>.safetensors),
    transcoders.json (corpus, tokens, loss curves) and evals.json: the replacement model's
    next-token loss (every MLP replaced; with and without error terms) vs. the original on
    held-out tokens. --layers: the layers to train (circuit-tracer needs all).
    """,
)


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
