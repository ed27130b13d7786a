"""How good an SAE is on held-out tokens, measured as sae-lens' evals measure it.

`sae_metrics` runs the model over packed held-out sequences (`interp.sae.corpus`) three
times a batch, as ``sae_lens.evals.get_recons_loss`` does: clean, with the SAE spliced in at
its hook, and with the hook zero-ablated. From these: explained variance (sae-lens'
``ExplainedVarianceCalculator``), mean L0, cosine and norm ratio of the reconstructions,
per-latent firing densities (dead: never firing on these tokens; dense: firing on more than
``DENSE_THRESHOLD`` of them), next-token cross-entropy clean / SAE / zero-ablated with CE loss
recovered = (zero − SAE) / (zero − clean) (sae-lens' ``ce_loss_score``), and the KL divergence
from the clean distribution (its ``kl_div_score``).

Why not ``run_evals`` itself: it can leave out tokens only by id, not by position, and the
first content token of a sequence is sometimes a second attention sink (``SINK_POSITIONS``).
Here the scored positions are exactly the trained ones (`scored_mask`): not a special token
and not among the first ``SINK_POSITIONS``. The SAE is spliced in only there (elsewhere the
activation is kept, as sae-lens keeps it at ignored tokens); the zero-ablation zeroes every
position, sae-lens' definition. Each held-out sequence is evaluated once.

The verb: ``evaluate_sae(model_source, EvalConfig(sae=FOLDER, corpus=...))`` builds the corpus,
loads the SAE and returns an :class:`EvalResult` (``interp sae eval``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from interp.errors import InterpError
from interp.runs.distributed import Workers, single_process
from interp.sae.corpus import CorpusConfig

if TYPE_CHECKING:
    import pandas as pd
    import torch
    from sae_lens import SAE
    from transformer_lens import HookedTransformer

DENSE_THRESHOLD = 0.1  # a latent firing on more than this share of tokens is "dense"
MAX_BATCH = 8
# Positions left out at the start of every packed sequence: 0 (the BOS put there) and 1, the
# first content token, which SmolLM2 turns into a second attention sink in some sequences
# (2 of 108 packed sequences measured at layer 12: 90x and 160x the median norm).
SINK_POSITIONS = 2


def sae_metrics(
    model: HookedTransformer,
    sae: SAE,
    sequences: torch.Tensor,
    exclude_ids: list[int],
    *,
    max_tokens: int | None = None,
    skip_positions: int = SINK_POSITIONS,
) -> dict[str, Any]:
    """Metrics of ``sae`` on ``sequences`` (int64 ``[n_seq, context]``, each starting with the
    sink token), at most ``max_tokens`` positions of them (whole sequences, in order)."""
    import torch
    from sae_lens.evals import ExplainedVarianceCalculator

    hook = sae.cfg.metadata.hook_name
    if hook is None:
        raise InterpError("the SAE's config names no hook_name")
    used = heldout_sequences(sequences, max_tokens).to(model.cfg.device)
    n_seq, context = used.shape
    scored = scored_mask(used, exclude_ids, skip_positions)
    ev = ExplainedVarianceCalculator()
    sums = {"l0": 0.0, "cos": 0.0, "l2_ratio": 0.0}
    firing = torch.zeros(sae.cfg.d_sae)
    ce: dict[str, list[torch.Tensor]] = {"clean": [], "sae": [], "zero": []}
    kl: dict[str, list[torch.Tensor]] = {"sae": [], "zero": []}
    with torch.no_grad():
        for start in range(0, n_seq, MAX_BATCH):
            tokens = used[start : start + MAX_BATCH]
            mask = scored[start : start + MAX_BATCH]
            captured: dict[str, torch.Tensor] = {}

            def splice(
                act: torch.Tensor, hook: Any, mask: torch.Tensor = mask, captured: dict = captured
            ) -> torch.Tensor:
                feats = sae.encode(act.to(sae.device))
                recon = sae.decode(feats).to(act.dtype).to(act.device)
                captured["x"], captured["x_hat"] = act[mask], recon[mask]
                captured["feats"] = feats[mask.to(sae.device)]
                return torch.where(mask[..., None], recon, act)

            def zero(act: torch.Tensor, hook: Any) -> torch.Tensor:
                return torch.zeros_like(act)

            logits = {}
            for name, hooks in (("clean", []), ("sae", [(hook, splice)]), ("zero", [(hook, zero)])):
                out, loss = model.run_with_hooks(
                    tokens, return_type="both", loss_per_token=True, fwd_hooks=hooks
                )
                logits[name] = out
                ce[name].append(loss[mask[:, :-1]])  # loss at i predicts token i + 1
            clean_logp = logits["clean"].log_softmax(-1)
            for name in ("sae", "zero"):
                per_pos = (clean_logp.exp() * (clean_logp - logits[name].log_softmax(-1))).sum(-1)
                kl[name].append(per_pos[mask])
            x, x_hat, feats = captured["x"], captured["x_hat"], captured["feats"].float()
            ev.add_batch(sae_output=x_hat, hidden_acts=x)
            active = feats != 0
            sums["l0"] += float(active.sum())
            firing += active.sum(0).cpu()
            sums["cos"] += float(torch.nn.functional.cosine_similarity(x, x_hat, dim=-1).sum())
            sums["l2_ratio"] += float((x_hat.norm(dim=-1) / x.norm(dim=-1).clamp_min(1e-4)).sum())
    n = int(scored.sum())
    if n == 0:
        raise InterpError("the held-out sequences hold no token to score")
    mean = {k: float(torch.cat(v).mean()) for k, v in ce.items()}
    kls = {k: float(torch.cat(v).mean()) for k, v in kl.items()}
    density = firing / n
    metrics = {
        "explained_variance": ev.compute(),
        "mean_l0": sums["l0"] / n,
        "cosine": sums["cos"] / n,
        "l2_ratio": sums["l2_ratio"] / n,
        "ce_loss_clean": mean["clean"],
        "ce_loss_with_sae": mean["sae"],
        "ce_loss_zero_ablated": mean["zero"],
        # sae-lens' ce_loss_score and kl_div_score, on the same tokens
        "ce_loss_recovered": (mean["zero"] - mean["sae"]) / (mean["zero"] - mean["clean"]),
        "kl_with_sae": kls["sae"],
        "kl_zero_ablated": kls["zero"],
        "kl_recovered": (kls["zero"] - kls["sae"]) / kls["zero"],
    }
    return summarise(metrics, density, n_seq=n_seq, context=context, scored_tokens=n)


def scored_mask(
    sequences: torch.Tensor, exclude_ids: list[int], skip_positions: int = SINK_POSITIONS
) -> torch.Tensor:
    """The positions an SAE is trained and scored on: not an excluded (special) token and not
    among the first ``skip_positions`` of a sequence (the sink and its occasional twin)."""
    import torch

    keep = ~torch.isin(sequences, torch.tensor(exclude_ids, device=sequences.device))
    keep[:, :skip_positions] = False
    return keep


def summarise(
    metrics: dict[str, float],
    density: torch.Tensor,
    *,
    n_seq: int,
    context: int,
    scored_tokens: int,
) -> dict[str, Any]:
    """The metrics with the dead and dense latents counted from the firing densities."""
    width = int(density.numel())
    dead = int((density == 0).sum())
    dense = int((density > DENSE_THRESHOLD).sum())
    return {
        **metrics,
        "dead_latents": dead,
        "dead_fraction": dead / width,
        "dense_latents": dense,
        "dense_fraction": dense / width,
        "dense_threshold": DENSE_THRESHOLD,
        "heldout_sequences": n_seq,
        "context": context,
        "scored_tokens": scored_tokens,
        "width": width,
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


@dataclass
class EvalConfig:
    """One evaluation of an SAE on held-out tokens; shared by :func:`evaluate_sae` and
    ``interp sae eval``."""

    sae: str
    """An sae-lens SAE folder (cfg.json + sae_weights.safetensors)."""
    corpus: CorpusConfig = field(default_factory=CorpusConfig)
    """The corpus whose held-out split is scored (with the SAE's training settings and seed,
    tokens it never saw)."""
    eval_tokens: int = 8192
    """Held-out tokens evaluated (at most; whole sequences)."""

    def check(self) -> None:
        """Refuse what needs no model: a corpus that cannot be built, a folder that is no SAE,
        no tokens.

        Raises:
            InterpError: One of those.
        """
        from interp.sae.corpus import check_corpus_config
        from interp.sae.load import read_sae_config

        check_corpus_config(self.corpus)
        read_sae_config(self.sae)
        if self.eval_tokens < 1:
            raise InterpError("--eval-tokens must be at least 1")


@dataclass
class EvalResult:
    """What :func:`evaluate_sae` measured."""

    sae: str
    metrics: dict[str, Any]
    """The metrics as ``evals.json`` holds them (``corpus_hash`` and
    ``trained_on_this_corpus`` included)."""

    @property
    def trained_on_this_corpus(self) -> bool | None:
        """Whether the SAE's training.json records this corpus (None: no training.json)."""
        return self.metrics["trained_on_this_corpus"]

    @property
    def table(self) -> pd.DataFrame:
        """One row per metric (``metric``, ``value``)."""
        import pandas as pd

        return pd.DataFrame({"metric": list(self.metrics), "value": list(self.metrics.values())})

    def to_dict(self) -> dict[str, Any]:
        """The metrics (what ``interp sae eval --json`` prints)."""
        return self.metrics

    def __repr__(self) -> str:
        m = self.metrics
        return (
            f"EvalResult({self.sae!r}, explained variance {m.get('explained_variance')}, "
            f"{m.get('scored_tokens')} tokens, trained on this corpus: "
            f"{m.get('trained_on_this_corpus')})"
        )

    def _repr_html_(self) -> str:
        """A small HTML card for notebooks (:func:`interp.runs.display.html_card`)."""
        from interp.runs.display import html_card

        facts = [(k, v) for k, v in self.metrics.items() if not isinstance(v, dict | list)]
        return html_card(f"EvalResult {self.sae}", facts[:20])


def evaluate_sae(
    source: str | HookedTransformer,
    config: EvalConfig,
    *,
    model: HookedTransformer | None = None,
    progress: bool = True,
    workers: Workers | None = None,
    device: str = "cpu",
) -> EvalResult:
    """Evaluate the SAE of ``config`` on the held-out split of its corpus.

    ``trained_on_this_corpus`` says whether the SAE's ``training.json`` records the same
    corpus hash, i.e. whether the held-out split is the one its training never saw (None when
    the folder has no training.json).

    Args:
        source: The model: a name or path ``load_model`` takes, or a loaded model.
        config: The SAE folder, the corpus and the token budget.
        model: ``source`` already loaded (None: loaded here unless ``source`` is a model).
        progress: Unused (the evaluation shows no bar); part of the verb shape.
        workers: Not supported (one process); must be None.
        device: Where a model loaded here runs.

    Returns:
        The metrics (explained variance, L0, dead/dense latents, CE loss recovered, KL).

    Raises:
        InterpError: A folder that is no SAE or does not fit the model, a corpus that cannot
            be built, or no held-out sequence.
    """
    import json

    from interp.sae.corpus import build_corpus
    from interp.sae.load import load_sae, model_for

    single_process(workers, "evaluate_sae")
    config.check()  # before a model loads
    model = model_for(source, model, device)
    sae = load_sae(config.sae, model)
    corpus = build_corpus(config.corpus, model)
    evals = sae_metrics(
        model, sae, corpus.heldout, corpus.exclude_ids, max_tokens=config.eval_tokens
    )
    evals["corpus_hash"] = corpus.hash
    record = Path(config.sae) / "training.json"
    trained_hash = None
    if record.is_file():
        try:
            trained_hash = json.loads(record.read_text(encoding="utf-8"))["corpus"]["hash"]
        except (OSError, ValueError, KeyError, TypeError):
            trained_hash = None
    evals["trained_on_this_corpus"] = None if trained_hash is None else trained_hash == corpus.hash
    return EvalResult(str(config.sae), evals)


def heldout_sequences(sequences: torch.Tensor, max_tokens: int | None) -> torch.Tensor:
    """The whole held-out sequences that fit in ``max_tokens`` (at least one); refused when
    the split holds none. Shared by the SAE and the transcoder evaluations."""
    n_seq, context = sequences.shape
    if max_tokens is not None:
        n_seq = min(n_seq, max(1, max_tokens // context))
    if n_seq == 0:
        raise InterpError(
            "the held-out split holds no whole sequence; raise --heldout, add text or "
            "lower --context"
        )
    return sequences[:n_seq]
