"""How good an SAE is on held-out tokens, with sae-lens' own evals.

`evaluate_sae` runs ``sae_lens.evals.run_evals`` over packed held-out sequences
(`interp.sae.corpus`) through an ``ActivationsStore`` built on them: explained variance, mean
L0, the next-token cross-entropy with the SAE spliced in at its hook vs. clean vs. zero-ablated
(and CE loss recovered = (zero − SAE) / (zero − clean)), KL divergence from the clean
distribution with the SAE and with zero-ablation, and per-latent firing densities, from which
the dead (never firing on these tokens) and dense (firing on more than
``DENSE_THRESHOLD`` of them) latents are counted. The excluded tokens (the sink at position 0
of every sequence and the other special tokens) are left out of every metric, and at those
positions the SAE is not spliced in (sae-lens keeps the original activation there); the
zero-ablation zeroes the hook at every position, sae-lens' definition.

Each held-out sequence is evaluated exactly once: the batch size divides their number.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from interp.errors import InterpError

if TYPE_CHECKING:
    import torch
    from sae_lens import SAE
    from transformer_lens import HookedTransformer

DENSE_THRESHOLD = 0.1  # a latent firing on more than this share of tokens is "dense"
MAX_BATCH = 8


def evaluate_sae(
    model: HookedTransformer,
    sae: SAE,
    sequences: torch.Tensor,
    exclude_ids: list[int],
    *,
    max_tokens: int | None = None,
) -> dict[str, Any]:
    """Metrics of ``sae`` on ``sequences`` (int64 ``[n_seq, context]``, each starting with the
    sink token), at most ``max_tokens`` positions of them (whole sequences, in order)."""
    import torch
    from sae_lens.evals import EvalConfig, run_evals
    from sae_lens.training.activation_scaler import ActivationScaler
    from sae_lens.training.activations_store import ActivationsStore

    from interp.sae.train import _quiet_sae_lens, corpus_dataset

    hook = sae.cfg.metadata.hook_name
    if hook is None:
        raise InterpError("the SAE's config names no hook_name")
    n_seq, context = sequences.shape
    if max_tokens is not None:
        n_seq = min(n_seq, max(1, max_tokens // context))
    if n_seq == 0:
        raise InterpError(
            "the held-out split holds no whole sequence; raise --heldout, add text or "
            "lower --context"
        )
    batch = max(d for d in range(1, MAX_BATCH + 1) if n_seq % d == 0)
    used = sequences[:n_seq]
    with _quiet_sae_lens(), torch.no_grad():
        store = ActivationsStore(
            model=model,
            dataset=corpus_dataset(used),
            streaming=False,
            hook_name=hook,
            hook_head_index=None,
            context_size=context,
            d_in=sae.cfg.d_in,
            n_batches_in_buffer=2,
            total_training_tokens=n_seq * context,
            store_batch_size_prompts=batch,
            train_batch_size_tokens=batch * context,
            prepend_bos=True,
            normalize_activations="none",
            device=torch.device(str(model.cfg.device)),
            dtype="float32",
            sequence_separator_token=None,
            exclude_special_tokens=torch.tensor(exclude_ids, dtype=torch.long),
        )
        n_batches = n_seq // batch
        config = EvalConfig(
            batch_size_prompts=batch,
            n_eval_reconstruction_batches=n_batches,
            n_eval_sparsity_variance_batches=n_batches,
            compute_kl=True,
            compute_ce_loss=True,
            compute_l2_norms=True,
            compute_sparsity_metrics=True,
            compute_variance_metrics=True,
            compute_featurewise_density_statistics=True,
        )
        metrics, features = run_evals(
            sae, store, model, ActivationScaler(), config, exclude_special_tokens=exclude_ids
        )
    density = torch.tensor(features["feature_density"])
    scored = int((~torch.isin(used, torch.tensor(exclude_ids))).sum())
    return summarise(metrics, density, n_seq=n_seq, context=context, scored_tokens=scored)


def summarise(
    metrics: dict[str, Any],
    density: torch.Tensor,
    *,
    n_seq: int,
    context: int,
    scored_tokens: int,
) -> dict[str, Any]:
    """sae-lens' nested metrics as one flat record (its own numbers kept under ``sae_lens``)."""
    perf = metrics["model_performance_preservation"]
    behaviour = metrics["model_behavior_preservation"]
    recon = metrics["reconstruction_quality"]
    width = int(density.numel())
    dead = int((density == 0).sum())
    dense = int((density > DENSE_THRESHOLD).sum())
    return {
        "explained_variance": recon["explained_variance"],
        "mean_l0": metrics["sparsity"]["l0"],
        "dead_latents": dead,
        "dead_fraction": dead / width,
        "dense_latents": dense,
        "dense_fraction": dense / width,
        "dense_threshold": DENSE_THRESHOLD,
        "ce_loss_clean": perf["ce_loss_without_sae"],
        "ce_loss_with_sae": perf["ce_loss_with_sae"],
        "ce_loss_zero_ablated": perf["ce_loss_with_ablation"],
        "ce_loss_recovered": perf["ce_loss_score"],
        "kl_with_sae": behaviour["kl_div_with_sae"],
        "kl_zero_ablated": behaviour["kl_div_with_ablation"],
        "kl_recovered": behaviour["kl_div_score"],
        "cosine": recon["cossim"],
        "l2_ratio": metrics["shrinkage"]["l2_ratio"],
        "heldout_sequences": n_seq,
        "context": context,
        "scored_tokens": scored_tokens,
        "width": width,
        "sae_lens": metrics,
    }


def format_evals(evals: dict[str, Any]) -> str:
    """The headline numbers, one per line, for the CLI."""
    rows = [
        ("explained variance", f"{evals['explained_variance']:.3f}"),
        ("mean L0", f"{evals['mean_l0']:.1f}"),
        (
            "dead latents",
            f"{evals['dead_latents']} of {evals['width']} ({evals['dead_fraction']:.1%})",
        ),
        (
            f"dense latents (> {evals['dense_threshold']:.0%} of tokens)",
            f"{evals['dense_latents']} ({evals['dense_fraction']:.1%})",
        ),
        (
            "CE loss clean / SAE / zero-ablated",
            f"{evals['ce_loss_clean']:.3f} / {evals['ce_loss_with_sae']:.3f} / "
            f"{evals['ce_loss_zero_ablated']:.3f}",
        ),
        ("CE loss recovered", f"{evals['ce_loss_recovered']:.3f}"),
        (
            "KL with SAE / zero-ablated",
            f"{evals['kl_with_sae']:.4f} / {evals['kl_zero_ablated']:.3f}",
        ),
        (
            "held-out tokens scored",
            f"{evals['scored_tokens']} ({evals['heldout_sequences']} sequences)",
        ),
    ]
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


def evaluate_on_corpus(
    model: HookedTransformer,
    sae_path: str,
    corpus_config: Any,
    *,
    max_tokens: int | None = None,
) -> dict[str, Any]:
    """Load the SAE at ``sae_path`` for ``model`` and evaluate it on the held-out split of the
    corpus ``corpus_config`` (a `CorpusConfig`) describes. ``trained_on_this_corpus`` says
    whether the SAE's ``training.json`` records the same corpus hash, i.e. whether the held-out
    split is the one its training never saw (None when the folder has no training.json)."""
    import json
    from pathlib import Path

    from interp.sae.corpus import build_corpus
    from interp.sae.load import load_sae

    sae = load_sae(sae_path, model)
    corpus = build_corpus(corpus_config, model)
    evals = evaluate_sae(model, sae, corpus.heldout, corpus.exclude_ids, max_tokens=max_tokens)
    evals["corpus_hash"] = corpus.hash
    record = Path(sae_path) / "training.json"
    trained_hash = None
    if record.is_file():
        try:
            trained_hash = json.loads(record.read_text(encoding="utf-8"))["corpus"]["hash"]
        except (OSError, ValueError, KeyError, TypeError):
            trained_hash = None
    evals["trained_on_this_corpus"] = None if trained_hash is None else trained_hash == corpus.hash
    return evals
