"""The fine-tuning settings and the refusals that need no model (nor torch)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from interp.errors import InterpError
from interp.finetune.recipes import check_recipe
from interp.inputs.selection import Selection

METHODS = ("lora", "full")
LOSSES = ("answer", "letter")


@dataclass(frozen=True)
class FinetuneConfig:
    """What to fine-tune on and how.

    Attributes:
        out: The output folder (must not exist).
        task: ``"builtin"``, ``"bbq"`` or ``"mc"``.
        data: The task's data files (none for ``"builtin"``).
        plan: A built-in plan name or a plan file (the user turns and answer prefix).
        rounds: Follow-up rounds per conversation (the conversation holds rounds 0..rounds).
        recipe: What each round answers (:mod:`interp.finetune.recipes`): ``"answers"`` (the
            correct option every round) or ``"self-correction"`` (the planted organism).
        control_plan: The self-correction recipe's control plan (the instruction plan is
            ``plan``).
        error_share: The self-correction recipe's share of planted stereotyped round-0 answers
            on ambiguous items.
        loss: ``"answer"`` (every answer token) or ``"letter"`` (only each answer's first
            token, the option letter the replay's read-out scores).
        permute: Option order of each training conversation: ``"none"`` or ``"cyclic"`` (one
            rotation drawn per conversation).
        selection: Which examples (``limit``/``sample``).
        method: ``"lora"`` (adapters, merged at the end) or ``"full"`` (every weight).
        rank: LoRA rank.
        alpha: LoRA scaling numerator (the update is ``alpha / rank * A @ B``).
        steps: Optimizer steps.
        batch_size: Conversations per step (their losses averaged over answer tokens).
        lr: AdamW learning rate.
        weight_decay: AdamW weight decay.
        seed: Seeds the example order and the LoRA initialisation.
        max_tokens: The longest conversation allowed (None: the model's context).
        checkpoint_every: Steps between checkpoints.
        max_steps_this_call: Stop after this many steps in this call, keeping the checkpoint
            (for tests and time-boxed jobs); None: run to the end.
        device: Torch device.
        dtype: ``"float32"`` (training in lower precision is not offered).
        select: Which candidates to train on (:mod:`interp.finetune.select`): ``"all"``,
            ``"random"``, ``"concept"``, ``"uncertainty"`` or ``"concept+uncertainty"``.
        n: How many candidates ``select`` keeps (required unless ``select="all"``).
        concept: A concept folder ``<run>/probes/<concept>/`` written by ``interp probe``
            (for ``concept`` and ``concept+uncertainty``; with ``random``, the draw is
            token-matched to the concept rule's top ``n``).
    """

    out: str
    task: str = "builtin"
    data: tuple[str, ...] = ()
    plan: str = "self-correct"
    rounds: int = 1
    recipe: str = "answers"
    control_plan: str = "baseline"
    error_share: float = 0.5
    permute: str = "none"
    loss: str = "answer"
    selection: Selection = field(default_factory=Selection)
    method: str = "lora"
    rank: int = 4
    alpha: float = 8.0
    steps: int = 20
    batch_size: int = 1
    lr: float = 1e-3
    weight_decay: float = 0.0
    seed: int = 0
    max_tokens: int | None = None
    checkpoint_every: int = 10
    max_steps_this_call: int | None = None
    device: str = "cpu"
    dtype: str = "float32"
    select: str = "all"
    n: int | None = None
    concept: str | None = None

    def hyper(self) -> dict[str, Any]:
        """The settings that decide the weights (a resumed run must match them)."""
        d = asdict(self)
        for k in ("out", "max_steps_this_call", "device"):
            d.pop(k)
        d["data"] = list(self.data)
        return d


@dataclass
class FinetuneResult:
    """What ``finetune`` did.

    Attributes:
        out: The output folder (None when stopped early by ``max_steps_this_call``).
        steps_done: Optimizer steps done so far.
        losses: The loss of every step so far.
        finished: Whether the output folder was written.
    """

    out: Path | None
    steps_done: int
    losses: list[float]
    finished: bool


def partial_dir(out: Path) -> Path:
    """Where the checkpoints of a fine-tune into ``out`` live (next to it, hidden).

    Args:
        out: The output folder.

    Returns:
        ``<parent>/.<name>.partial``.
    """
    return out.parent / f".{out.name}.partial"


def check_config(config: FinetuneConfig) -> None:
    """Refusals the settings and the file system decide, before any model is loaded.

    Args:
        config: The settings.

    Raises:
        InterpError: A bad setting, an existing output, or a missing data file.
    """
    out = Path(config.out)
    if out.exists():
        raise InterpError(f"{out} already exists; choose another --out or remove it")
    if config.method not in METHODS:
        raise InterpError(f"unknown method {config.method!r}; choose one of: {', '.join(METHODS)}")
    if config.steps < 1 or config.batch_size < 1 or config.checkpoint_every < 1:
        raise InterpError("--steps, --batch-size and --checkpoint-every must be at least 1")
    if config.method == "lora" and config.rank < 1:
        raise InterpError("--rank must be at least 1")
    if config.rounds < 0:
        raise InterpError("--rounds must be 0 or more")
    if not (config.lr > 0 and math.isfinite(config.lr)):
        raise InterpError("--lr must be a positive number")
    if config.dtype != "float32":
        raise InterpError("fine-tuning runs in float32 only; drop --dtype")
    check_recipe(config.recipe, config.error_share, config.permute)
    if config.loss not in LOSSES:
        raise InterpError(f"unknown loss {config.loss!r}; choose one of: {', '.join(LOSSES)}")
    for path in config.data:
        if not Path(path).is_file():
            raise InterpError(f"no such data file: {path}")
    if not out.parent.is_dir():
        raise InterpError(f"{out.parent} is not a folder")
