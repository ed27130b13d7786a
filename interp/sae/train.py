"""Train an SAE with sae-lens' own runner on our model and a locally built corpus.

`train_sae` hands sae-lens' ``LanguageModelSAETrainingRunner`` our loaded ``HookedTransformer``
(``override_model``: the fast block path stays on, since sae-lens caches one residual hook)
and a ``datasets.Dataset`` of packed token sequences (``override_dataset``: nothing from a
hub). The sink is excluded inside the runner, without a second activation path: every packed
sequence starts with the tokenizer's BOS (`interp.sae.corpus`); the runner's ``seqpos_slice``
drops positions 0 and 1 (the first content token after the BOS is sometimes a second sink in
SmolLM2, at up to 160x the median norm) and its ``exclude_special_tokens`` drops the special
tokens elsewhere, before the activations reach the trainer. `interp.sae.evals` scores the
same positions. No wandb, no
checkpoints; sae-lens' coarse progress bar (every 100 steps) is replaced by one per step.

The output folder is what ``SAE.load_from_disk`` loads (``cfg.json`` +
``sae_weights.safetensors``, the inference form of the trained SAE), plus ``training.json``
(corpus hash and split sizes, tokens, model weights hash, hook, hyperparameters, seconds,
loss curve) and ``evals.json`` (`interp.sae.evals` on the held-out split). It is written into a
temporary sibling folder and renamed into place at the end, so a failed or killed training
leaves no half-written SAE. Training is deterministic for a seed: the SAE's initialisation and
sae-lens' buffer shuffling draw from torch's global generator, seeded here (and restored
afterwards), and the corpus order is seeded.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import shutil
import tempfile
import time
import warnings
from contextlib import contextmanager
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from interp.errors import InterpError
from interp.runs.distributed import Workers, single_process
from interp.runs.lock import output_lock, public_modes
from interp.sae.corpus import Corpus, CorpusConfig, build_corpus, check_corpus_config
from interp.sae.evals import SINK_POSITIONS
from interp.sae.load import SAE_CONFIG, SAE_WEIGHTS, model_for

if TYPE_CHECKING:
    import pandas as pd
    import torch
    from transformer_lens import HookedTransformer

ARCHITECTURES = ("topk", "batchtopk", "jumprelu", "standard")
TRAINING_FILE = "training.json"
EVALS_FILE = "evals.json"
# Default sparsity coefficient of the penalised architectures: standard's L1 coefficient (on
# activations times decoder norms) and jumprelu's L0 coefficient.
DEFAULT_PENALTY = {"standard": 5.0, "jumprelu": 1.0}
MAX_CURVE_POINTS = 200
NORM_BATCHES = 4  # batches drawn (and not trained on) to estimate the input scaling


def option(default: Any = MISSING, help: str = "", **kw: Any) -> Any:
    """A config field with its command-line help in ``metadata["help"]`` (the CLI generates
    the option from the field: ``--`` + the name with dashes, the type, the default)."""
    return field(default=default, metadata={"help": help}, **kw)


@dataclass
class TrainingOptions:
    """The options SAE and transcoder training share (``interp sae train`` and ``interp sae
    train-transcoders``), declared once. Each field's ``metadata["help"]`` is its option's
    help; :class:`TrainConfig` and :class:`TranscoderTrainConfig` add their own fields and
    defaults (`training_fields` lists them for the command line)."""

    out: str = option("artifacts/saes/demo", "The folder to write (new or empty).")
    width: int = option(2048, "Latents (d_sae) or features per layer.")
    tokens: int | None = option(
        None, "Training tokens (default: one pass over the training split)."
    )
    lr: float = option(5e-4, "Adam learning rate.")
    batch_tokens: int = option(1024, "Activations per optimiser step.")
    seed: int = option(0, "Initialisation, shuffling, split, order.")
    eval_tokens: int = option(8192, "Held-out tokens evaluated at the end.")
    corpus: CorpusConfig = option(
        help="The texts trained and evaluated on (--corpus, --data, --run, --plan, --system, "
        "--context, --heldout).",
        default_factory=CorpusConfig,
    )


SHARED_TRAINING_FIELDS = tuple(f.name for f in fields(TrainingOptions))


def training_fields(config_class: type) -> list[tuple[str, Any, Any, str]]:
    """The options a training config declares, for the command line to generate: one
    ``(name, type, default, help)`` per field, the shared ones (:class:`TrainingOptions`)
    first; ``corpus`` is left out (its options come from `CorpusConfig`).

    Args:
        config_class: :class:`TrainConfig` or :class:`TranscoderTrainConfig`.

    Returns:
        The fields' names, types (as annotated), defaults and help texts.
    """
    out = []
    for f in fields(config_class):
        if f.name == "corpus":
            continue
        default = f.default if f.default is not MISSING else None
        out.append((f.name, f.type, default, f.metadata.get("help", "")))
    return out


def check_training_options(config: TrainingOptions) -> None:
    """Refuse shared training settings that cannot train (no model needed).

    Raises:
        InterpError: Width or tokens out of range, a learning rate or batch that is not
            positive, no evaluation tokens, an ``out`` that is not a new or empty folder, or
            a corpus that cannot be built.
    """
    check_budget_flags(config.width, config.tokens)
    if not (math.isfinite(config.lr) and config.lr > 0):
        raise InterpError("--lr must be a number > 0")
    if config.batch_tokens < 1:
        raise InterpError("--batch-tokens must be at least 1")
    if config.eval_tokens < 1:
        raise InterpError("--eval-tokens must be at least 1")
    out = Path(config.out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise InterpError(f"--out {out} exists and is not an empty folder; choose a new one")
    check_corpus_config(config.corpus)


@dataclass
class TrainConfig(TrainingOptions):
    """One SAE training run; shared by :func:`train_sae` and ``interp sae train``.

    The shared fields (out, width, tokens, lr, batch_tokens, seed, eval_tokens, corpus) are
    :class:`TrainingOptions`'s; ``training.json`` records them in :data:`RECORD_ORDER`.
    """

    out: str = option("artifacts/saes/demo", "The SAE folder to write (new or empty).")
    width: int = option(2048, "Latents (d_sae).")
    hook: str = option("blocks.12.hook_resid_post", "The hook the SAE reads.")
    architecture: str = option("topk", "topk, batchtopk, jumprelu or standard.")
    k: int = option(32, "topk/batchtopk: active latents per token.")
    l1: float | None = option(
        None, "standard: L1 coefficient (default 5); jumprelu: L0 coefficient (1)."
    )

    def record(self) -> dict[str, Any]:
        """The settings as ``training.json`` records them (the corpus apart)."""
        values = asdict(self)
        return {key: values[key] for key in RECORD_ORDER}


# training.json's "config" order (the order of the fields before they were shared).
RECORD_ORDER = (
    "out",
    "hook",
    "architecture",
    "width",
    "k",
    "l1",
    "tokens",
    "lr",
    "batch_tokens",
    "seed",
    "eval_tokens",
)


@dataclass(frozen=True)
class TrainResult:
    """What :func:`train_sae` trained and wrote."""

    path: Path
    training: dict[str, Any]
    evals: dict[str, Any]
    sae: Any  # the trained sae-lens TrainingSAE, in memory (the folder holds its inference form)

    @property
    def loss_curve(self) -> pd.DataFrame:
        """The training loss curve (``training.json``'s ``loss_curve``), one row a point."""
        import pandas as pd

        return pd.DataFrame(self.training["loss_curve"])

    def __repr__(self) -> str:
        t = self.training
        return (
            f"TrainResult({str(self.path)!r}, {t['architecture']} x {t['width']} at "
            f"{t['hook']}, {t['tokens']['trained']} tokens, explained variance "
            f"{self.evals.get('explained_variance')})"
        )

    def _repr_html_(self) -> str:
        """A small HTML card for notebooks (:func:`interp.runs.display.html_card`)."""
        from interp.runs.display import html_card

        t = self.training
        facts = [
            ("path", self.path),
            ("architecture", t.get("architecture")),
            ("width", t.get("width")),
            ("hook", t.get("hook")),
            ("tokens trained", (t.get("tokens") or {}).get("trained")),
            *((f"eval: {k}", v) for k, v in self.evals.items() if not isinstance(v, dict | list)),
        ]
        return html_card(
            f"TrainResult {self.path.name}", facts[:16], {"loss_curve": self.loss_curve}
        )


def check_train_config(config: TrainConfig, model: HookedTransformer | None = None) -> int:
    """Refuse settings that cannot train, before anything is computed or written; returns the
    SAE's input width (``d_in``) when a model is given, else 0."""
    if config.architecture not in ARCHITECTURES:
        raise InterpError(
            f"--architecture {config.architecture!r}: choose from {', '.join(ARCHITECTURES)}"
        )
    check_budget_flags(config.width, config.tokens)
    if config.architecture in ("topk", "batchtopk") and not 1 <= config.k <= config.width:
        raise InterpError(f"--k must be between 1 and --width ({config.width})")
    if config.l1 is not None and not (math.isfinite(config.l1) and config.l1 >= 0):
        raise InterpError("--l1 must be a number >= 0")
    check_training_options(config)
    if model is None:
        return 0
    d_in = hook_width(model, config.hook)
    check_memory(1, d_in, config.width, config.batch_tokens, str(model.cfg.device))
    return d_in


# --- budgets ------------------------------------------------------------------------------------
# Settings that cannot finish are refused before anything runs, each with its reason:
# - --width at most MAX_WIDTH latents (2^24, the largest d_sae an SAE folder may declare), and
#   the training state must fit the device's available memory (check_memory);
# - --tokens at most MAX_TRAIN_TOKENS (10^11: over a day at a million tokens a second), and at
#   most MAX_EPOCHS passes over the training split (more repeats the same text to no end).
MAX_WIDTH = 1 << 24
MAX_TRAIN_TOKENS = 10**11
MAX_EPOCHS = 1000
BYTES_PER_PARAM = 16  # float32 weights, gradients and Adam's two moments
BYTES_PER_ACT = 12  # float32 pre-activation, activation and gradient, per latent per token


def check_budget_flags(width: int, tokens: int | None) -> None:
    """The bounds that need no model: width and tokens in range."""
    if not 1 <= width <= MAX_WIDTH:
        raise InterpError(f"--width {width}: use 1..{MAX_WIDTH} latents")
    if tokens is not None and tokens < 1:
        raise InterpError("--tokens must be at least 1")
    if tokens is not None and tokens > MAX_TRAIN_TOKENS:
        raise InterpError(
            f"--tokens {tokens}: at most {MAX_TRAIN_TOKENS} (10^11) training tokens; more would "
            "train for days even at a million tokens a second"
        )


def check_epochs(tokens: int, train_tokens: int) -> None:
    """Refuse more than MAX_EPOCHS passes over the training split."""
    if train_tokens and tokens > MAX_EPOCHS * train_tokens:
        raise InterpError(
            f"--tokens {tokens} is {tokens / train_tokens:.3g} passes over the training split "
            f"({train_tokens} tokens); at most {MAX_EPOCHS} are allowed: add text or lower --tokens"
        )


def check_memory(n: int, d_in: int, width: int, batch_tokens: int, device: str) -> None:
    """Refuse ``n`` SAEs (or transcoders) of ``width`` latents over ``d_in`` whose training
    state (weights, gradients and Adam moments of 2 x width x d_in parameters each, and one
    batch's activations) is larger than the memory available on ``device``."""
    params = 2 * width * d_in + width + d_in
    need = n * (BYTES_PER_PARAM * params + BYTES_PER_ACT * batch_tokens * width)
    have = available_memory(device)
    if have is not None and need > have:
        raise InterpError(
            f"--width {width}: training needs about {need / 2**30:.1f} GiB ({n} x 2 x {width} x "
            f"{d_in} parameters with their gradients and Adam state, and a batch of "
            f"{batch_tokens} x {width} activations); {device} has {have / 2**30:.1f} GiB available"
        )


def available_memory(device: str) -> int | None:
    """Bytes free on ``device`` (cuda: the device's free memory; cpu: MemAvailable); None when
    it cannot be told."""
    if device.startswith("cuda"):
        import torch

        try:
            return int(torch.cuda.mem_get_info(torch.device(device))[0])
        except (RuntimeError, AssertionError, ValueError):
            return None
    if device != "cpu":
        return None
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError):
        return None


def hook_width(model: HookedTransformer, hook: str) -> int:
    """The width of ``hook``'s activations, refusing hooks the model lacks or whose width is
    not one vector per position (attention patterns, per-head hooks)."""
    if hook not in model.hook_dict:
        raise InterpError(
            f"--hook {hook}: model {model.cfg.model_name} ({model.cfg.n_layers} layers) has no "
            "such hook (e.g. blocks.0.hook_resid_post)"
        )
    if hook.endswith(("mlp.hook_post", "mlp.hook_pre")):
        width = model.cfg.d_mlp
    elif "hook_resid" in hook or hook.endswith(("hook_attn_out", "hook_mlp_out")):
        width = model.cfg.d_model
    else:
        raise InterpError(
            f"--hook {hook}: an SAE here reads a residual-stream or MLP hook "
            "(e.g. blocks.12.hook_resid_post)"
        )
    return int(width)


def train_sae(
    source: str | HookedTransformer,
    config: TrainConfig,
    *,
    model: HookedTransformer | None = None,
    progress: bool = True,
    workers: Workers | None = None,
    device: str = "cpu",
) -> TrainResult:
    """Train an SAE on ``source``'s activations as ``config`` says and write its folder (see
    the module docstring).

    Args:
        source: The model: a name or path ``load_model`` takes ("smollm2", "tiny", a .gguf
            file, a model folder), or a loaded ``HookedTransformer``.
        config: The hook, architecture, sizes, budget and corpus.
        model: ``source`` already loaded (None: loaded here unless ``source`` is a model).
        progress: Show a progress bar per step.
        workers: Not supported (training runs in this process); must be None.
        device: Where a model loaded here runs.

    Returns:
        The folder written, its training record and evals, and the trained SAE.

    Raises:
        InterpError: Settings that cannot train, an ``out`` that is not new or empty, a hook
            the model lacks, too little memory or text.
    """
    single_process(workers, "train_sae")
    check_train_config(config)  # before a model loads
    model = model_for(source, model, device)
    d_in = check_train_config(config, model)
    out = Path(config.out)
    # one writer per --out from the start; the lock also clears killed writers' partials
    with output_lock(out):
        if out.exists() and (not out.is_dir() or any(out.iterdir())):  # made while we checked
            raise InterpError(f"--out {out} exists and is not an empty folder; choose a new one")
        return _train_sae(config, model, d_in, out, progress)


def _train_sae(
    config: TrainConfig, model: HookedTransformer, d_in: int, out: Path, progress: bool
) -> TrainResult:
    started = dt.datetime.now(dt.UTC)
    t0 = time.perf_counter()
    corpus = build_corpus(config.corpus, model)
    t_corpus = time.perf_counter() - t0
    train_tokens = count_trainable(corpus.train, corpus.exclude_ids)
    tokens = config.tokens if config.tokens is not None else train_tokens
    check_epochs(tokens, train_tokens)
    if tokens < config.batch_tokens:
        raise InterpError(
            f"{tokens} training tokens are fewer than one batch (--batch-tokens "
            f"{config.batch_tokens}); add text, raise --tokens or lower --batch-tokens"
        )
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        t1 = time.perf_counter()
        sae, curve = _run_sae_lens(config, model, corpus, d_in, tokens, progress)
        t_train = time.perf_counter() - t1
        sae.save_inference_model(str(work))
        t2 = time.perf_counter()
        from interp.sae.evals import sae_metrics
        from interp.sae.load import load_sae

        saved = load_sae(work, model)  # evaluate what a user will load
        evals = sae_metrics(
            model, saved, corpus.heldout, corpus.exclude_ids, max_tokens=config.eval_tokens
        )
        evals["corpus_hash"] = corpus.hash
        t_eval = time.perf_counter() - t2
        training = _training_record(
            config,
            model,
            corpus,
            tokens,
            train_tokens,
            curve,
            sae,
            started=started,
            seconds={"corpus": t_corpus, "train": t_train, "eval": t_eval},
        )
        _write_json(work / TRAINING_FILE, training)
        _write_json(work / EVALS_FILE, evals)
        public_modes(work)  # mkdtemp made it 0700, safetensors files are 0600
        if out.is_dir():  # an empty folder given as --out (checked above)
            out.rmdir()
        work.rename(out)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return TrainResult(out, training, evals, sae)


def count_trainable(sequences: torch.Tensor, exclude_ids: list[int]) -> int:
    """Positions of ``sequences`` the trainer sees (`interp.sae.evals.scored_mask`)."""
    from interp.sae.evals import scored_mask

    return int(scored_mask(sequences, exclude_ids).sum())


def runner_config(
    config: TrainConfig, model: HookedTransformer, corpus: Corpus, d_in: int, tokens: int
):
    """sae-lens' ``LanguageModelSAERunnerConfig`` for this run (no wandb, no checkpoints, no
    output folder: `train_sae` saves the SAE itself)."""
    from sae_lens import LanguageModelSAERunnerConfig, LoggingConfig
    from sae_lens.registry import get_sae_training_class

    _, cfg_class = get_sae_training_class(config.architecture)
    device = str(model.cfg.device)
    # Inputs scaled to mean norm sqrt(d_in) while training (estimated on a few batches, folded
    # into the saved weights): residual norms of ~100s would otherwise need many more steps.
    sae_fields: dict[str, Any] = {
        "d_in": d_in,
        "d_sae": config.width,
        "device": device,
        "normalize_activations": "expected_average_only_in",
    }
    if config.architecture in ("topk", "batchtopk"):
        sae_fields["k"] = config.k
    penalty = config.l1 if config.l1 is not None else DEFAULT_PENALTY.get(config.architecture)
    if config.architecture == "standard":
        sae_fields["l1_coefficient"] = penalty
    elif config.architecture == "jumprelu":
        sae_fields["l0_coefficient"] = penalty
    steps = max(1, tokens // config.batch_tokens)
    # Dead-latent statistics over the last ~quarter of training (and at least one step).
    window = max(1, steps // 4)
    return LanguageModelSAERunnerConfig(
        sae=cfg_class(**sae_fields),
        model_name=str(model.cfg.model_name),
        hook_name=config.hook,
        dataset_path="local",  # never read: override_dataset is the corpus
        streaming=False,
        is_dataset_tokenized=True,
        context_size=corpus.context,
        # the buffer sae-lens shuffles, in activations: about eight optimiser steps' worth
        n_batches_in_buffer=max(2, math.ceil(8 * config.batch_tokens / corpus.context)),
        training_tokens=tokens,
        store_batch_size_prompts=8,
        train_batch_size_tokens=config.batch_tokens,
        prepend_bos=True,  # every sequence starts with the sink token (BOS)
        # the sink (position 0) and the first content token, sometimes a second sink, are
        # sliced off; the special tokens elsewhere are dropped by id
        seqpos_slice=(SINK_POSITIONS, None),
        sequence_separator_token=None,
        exclude_special_tokens=list(corpus.exclude_ids),
        device=device,
        seed=config.seed,
        dtype="float32",
        lr=config.lr,
        lr_warm_up_steps=min(100, steps // 10),
        lr_scheduler_name="constant",
        dead_feature_window=window,
        feature_sampling_window=max(window, steps + 1),
        logger=LoggingConfig(log_to_wandb=False),
        checkpoint_path=None,
        output_path=None,
        n_checkpoints=0,
        verbose=False,
        n_batches_for_norm_estimate=NORM_BATCHES,
        # our model is loaded unprocessed; sae-lens' default ({"center_writing_weights":
        # False}) would make every load of the SAE warn about it
        model_from_pretrained_kwargs={},
    )


def corpus_dataset(sequences: torch.Tensor):
    """The packed sequences as the ``datasets.Dataset`` sae-lens reads (column ``tokens``)."""
    from datasets import Dataset

    return Dataset.from_dict({"tokens": sequences.tolist()})


def make_runner(
    config: TrainConfig, model: HookedTransformer, corpus: Corpus, d_in: int, tokens: int
):
    """sae-lens' runner on our model and corpus (also what the tests inspect)."""
    from sae_lens import LanguageModelSAETrainingRunner

    cfg = runner_config(config, model, corpus, d_in, tokens)
    return LanguageModelSAETrainingRunner(
        cfg, override_dataset=corpus_dataset(corpus.train), override_model=model
    )


def _run_sae_lens(
    config: TrainConfig,
    model: HookedTransformer,
    corpus: Corpus,
    d_in: int,
    tokens: int,
    progress: bool,
) -> tuple[Any, list[dict[str, float | int]]]:
    import torch

    curve: list[dict[str, float | int]] = []
    every = max(1, (tokens // config.batch_tokens) // MAX_CURVE_POINTS)
    with torch.random.fork_rng(devices=[]), _quiet_sae_lens():
        torch.manual_seed(config.seed)
        runner = make_runner(config, model, corpus, d_in, tokens)
        runner.run_trainer_with_interruption_handling = _recording_fit(
            curve, every, tokens, progress
        )
        sae = runner.run()
    return sae, curve


def _recording_fit(curve: list[dict[str, float | int]], every: int, tokens: int, progress: bool):
    """The runner's fit step, without its process-wide signal handlers, recording the loss
    curve (every ``every`` steps and the last) and driving our progress bar."""
    import torch
    from tqdm.auto import tqdm

    def fit(trainer):
        bar = tqdm(total=tokens, desc="training SAE", unit="tok", disable=not progress)
        step = trainer.step

        def recorded(batch: torch.Tensor):
            output = step(batch)
            n = trainer.n_training_steps
            if n % every == 0 or trainer.n_training_samples >= tokens:
                with torch.no_grad():
                    point = {
                        "step": n,
                        "tokens": trainer.n_training_samples,
                        "loss": float(output.loss),
                        "l0": float((output.feature_acts != 0).sum(-1).float().mean()),
                    }
                    point.update({k: float(v) for k, v in output.losses.items()})
                curve.append(point)
                bar.set_postfix(loss=f"{point['loss']:.4g}", l0=f"{point['l0']:.1f}")
            bar.update(min(batch.shape[0], max(0, tokens - bar.n)))
            return output

        trainer.step = recorded
        try:
            return trainer.fit()
        finally:
            bar.close()

    return fit


@contextmanager
def _quiet_sae_lens():
    """sae-lens' warnings about overriding its config with our model and dataset, and its
    own progress bar (updated every 100 steps), say nothing a user of this command needs."""
    import functools
    import logging

    from sae_lens.training import sae_trainer
    from tqdm.auto import tqdm

    logger = logging.getLogger("sae_lens")
    level = logger.level
    logger.setLevel(logging.ERROR)
    original = sae_trainer.tqdm
    sae_trainer.tqdm = functools.partial(tqdm, disable=True)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        sae_trainer.tqdm = original
        logger.setLevel(level)


def _training_record(
    config: TrainConfig,
    model: HookedTransformer,
    corpus: Corpus,
    tokens: int,
    train_tokens: int,
    curve: list[dict[str, float | int]],
    sae: Any,
    *,
    started: dt.datetime,
    seconds: dict[str, float],
) -> dict[str, Any]:
    from importlib import metadata

    source = getattr(model, "interp_source", None)
    meta = sae.cfg.metadata
    return {
        "hook": config.hook,
        "architecture": config.architecture,
        "d_in": int(sae.cfg.d_in),
        "width": config.width,
        "config": config.record(),
        "model": source.to_dict() if source is not None else {"model_id": model.cfg.model_name},
        "corpus": {**corpus.to_dict(), "config": asdict(config.corpus)},
        "tokens": {
            "trained": tokens,
            "train_split": train_tokens,
            "epochs": tokens / train_tokens,
            "excluded": (
                f"the first {SINK_POSITIONS} positions of every sequence (the sink, a BOS, and "
                "the first content token, sometimes a second sink) and special tokens"
            ),
        },
        "final": {
            "l0_during_training": getattr(meta, "l0", None),
            "dead_latents_at_end": getattr(meta, "num_dead_features", None),
        },
        "loss_curve": curve,
        "started_utc": started.isoformat(timespec="seconds"),
        "seconds": {k: round(v, 2) for k, v in seconds.items()},
        "train_tokens_per_s": round(tokens / seconds["train"], 1) if seconds["train"] else None,
        "versions": {p: metadata.version(p) for p in ("sae-lens", "transformer-lens", "torch")},
        "files": [SAE_CONFIG, SAE_WEIGHTS, TRAINING_FILE, EVALS_FILE],
    }


def _write_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, indent=2, allow_nan=False) + "\n", encoding="utf-8")
