"""``interp sae``: sparse autoencoders (sae-lens) on a run. ``features`` reads a run with an SAE."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

sae_app = typer.Typer(
    help="Sparse autoencoders (sae-lens) on the runs of this toolkit.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",
)


def features(
    run: Annotated[Path, typer.Option(help="A run directory written by `interp replay`.")],
    sae: Annotated[
        Path,
        typer.Option(
            help="An sae-lens SAE folder (cfg.json + sae_weights.safetensors) at a hook the run "
            "stored (e.g. blocks.12.hook_resid_post)."
        ),
    ],
    top: Annotated[int, typer.Option(help="Latents kept per round (changes, contrasts).")] = 16,
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
    seed: Annotated[int, typer.Option(help="Seed of the bootstrap and the shuffles.")] = 0,
    cluster: Annotated[
        str,
        typer.Option(
            help="What the bootstrap resamples: template (category + question_index) or example."
        ),
    ] = "template",
    device: Annotated[str, typer.Option(help="cpu, cuda or mps (for --contexts).")] = "cpu",
    dtype: Annotated[str, typer.Option(help="float32, bfloat16 or float16.")] = "float32",
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Which SAE latents the rounds of a run switch on or off at the read-out.

    Encodes the run's stored read-out activations at the SAE's hook (no model forward) and
    writes RUN/sae/NAME/ (NAME: the SAE folder's name): per latent x round mean activation and
    firing rate with 95% cluster-bootstrap intervals; the latents that change most from round 0
    to each round, with a shuffled-round control; latents that separate stereotyped vs other
    answers and correct vs wrong at each round; cosines with the concept directions `interp
    probe` stored; with --contexts, each top latent's max-activating corpus contexts.
    """
    from interp.sae.features import FeaturesConfig, sae_features
    from interp.tables import fixed

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
    )
    result = sae_features(run, config, device=device, dtype=dtype)
    summary = result.summary
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
    typer.echo(f"wrote {result.paths[-1].parent}" if result.paths else "")


sae_app.command("features")(features)
