"""What the replay loop needs from a task, as one small protocol (:class:`TaskScorer`).

The loop (:mod:`interp.replay.loop`) picks a task's scorer once, by name, from the registry
(:func:`scorer_for`) and from then on asks it: which examples and plan to replay, how to hash
their files, whether their options are reordered, whether the transcripts fit, what each
assistant turn starts with, how to score a round at the read-out, which columns a row adds,
what the manifest says of the task, and which metrics the finished rounds table gets. It never
branches on the task's name.

The multiple-choice tasks (``bbq``, ``builtin``, ``mc``) are :class:`ChoiceScorer` (option
letters or texts scored at the read-out, or a generated answer parsed); Winogender is
:class:`interp.inputs.winogender.WinogenderScorer` (pronouns scored at the read-out), its
metrics :func:`interp.metrics.winogender.winogender_metrics`.

A ``config`` here is a :class:`interp.replay.loop.ReplayConfig` (typed ``Any``: this module is
below the loop, which imports it).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import pandas as pd
import torch
from jaxtyping import Float
from transformer_lens import HookedTransformer
from transformer_lens.cache.key_value_cache import TransformerLensKeyValueCache

from interp.errors import InterpError
from interp.inputs.bbq_rules import templates_hash
from interp.inputs.lengths import LengthSettings, check_context_length
from interp.inputs.permute import check_order_count, expand
from interp.inputs.plans import Plan, load_plan, option_letter
from interp.inputs.tasks import Example, load_task, task_data_hash
from interp.inputs.winogender import WinogenderScorer
from interp.metrics.rounds import compute_metrics
from interp.metrics.winogender import winogender_metrics
from interp.model.kvcache import logits_on_frozen_cache

# (base example index, option order) of each replayed row; None when the options keep their order
Views = list[tuple[int, tuple[int, ...]]] | None


@runtime_checkable
class RoundScorer(Protocol):
    """Scores one round of one batch at the read-out (made per batch by a task's scorer)."""

    def score(
        self,
        model: HookedTransformer,
        cache: TransformerLensKeyValueCache,
        logits: Float[torch.Tensor, "batch d_vocab"],
        batch: Sequence[Example],
        generated: Sequence[str],
    ) -> list[dict[str, Any]]:
        """One row entry per example of ``batch``.

        Args:
            model: The replayed model.
            cache: The batch's KV cache, holding each transcript up to the read-out.
            logits: The next-token logits at every example's read-out.
            batch: The batch's examples.
            generated: Each example's generated text this round ("" when none).

        Returns:
            Per example a dict with at least ``choice``, ``option_logprobs``, ``entropy`` and
            ``answer_text`` (what the transcript continues with).
        """
        ...


@runtime_checkable
class TaskScorer(Protocol):
    """What replay needs from a task; each task (or family of tasks) implements it once.

    Attributes:
        schema_version: The lowest manifest schema its rows need (1: multiple-choice rows;
            2: rows with columns an interp that reads only schema 1 would misread).
    """

    schema_version: int

    def validate(self, config: Any) -> None:
        """Refuse (``InterpError``) the settings this task does not take."""
        ...

    def load(self, config: Any) -> tuple[Plan, list[Example]]:
        """The plan and every example of the config's data files (before sample/limit)."""
        ...

    def data_hash(self, config: Any) -> str:
        """The SHA-256 of the data the config names (its fingerprint and manifest)."""
        ...

    def expand(self, examples: list[Example], config: Any) -> tuple[list[Example], Views]:
        """The examples to replay under the config's option orders, and their views."""
        ...

    def check_lengths(
        self, tokenizer: Any, n_ctx: int, plan: Plan, examples: list[Example], config: Any
    ) -> None:
        """Refuse (``InterpError``) an example whose final transcript would not fit ``n_ctx``."""
        ...

    def answer_prefix(self, plan: Plan, example: Example) -> str:
        """What the assistant turn starts with before the read-out."""
        ...

    def round_scorer(self, tokenizer: Any, config: Any, letters: list[int]) -> RoundScorer:
        """The scorer of one batch's rounds (``letters``: the option letters' token ids)."""
        ...

    def row_fields(self, example: Example, entry: dict[str, Any]) -> dict[str, Any]:
        """Columns that a row of ``example`` adds to (or overrides in) the common ones."""
        ...

    def task_record(self, config: Any, n_examples: int, targets: dict[str, Any]) -> dict[str, Any]:
        """The manifest's ``task`` section."""
        ...

    def metrics(self, rounds: pd.DataFrame, seed: int) -> dict[str, Any]:
        """The run's ``metrics.json``, computed from its rounds table."""
        ...


class ChoiceScorer:
    """The multiple-choice tasks (``bbq``, ``builtin``, ``mc``): option letters (or texts)
    scored at the read-out in choice mode, a generated answer parsed in generate mode."""

    schema_version = 1

    def validate(self, config: Any) -> None:
        """Only Winogender takes a statistics file.

        Args:
            config: The replay's settings.

        Raises:
            InterpError: ``config.stats`` is set.
        """
        if config.stats is not None:
            raise InterpError(f"stats applies to task winogender only, not {config.task!r}")

    def load(self, config: Any) -> tuple[Plan, list[Example]]:
        """The plan and examples (:func:`interp.inputs.tasks.load_task`).

        Args:
            config: The replay's settings (task, data, bbq_templates, plan).

        Returns:
            The plan and the task's examples.
        """
        plan = load_plan(config.plan)
        return plan, load_task(config.task, config.data or None, bbq_templates=config.bbq_templates)

    def data_hash(self, config: Any) -> str:
        """SHA-256 of the task's data files (:func:`interp.inputs.tasks.task_data_hash`).

        Args:
            config: The replay's settings (task, data).

        Returns:
            The hex digest.
        """
        return task_data_hash(config.task, config.data or None)

    def expand(self, examples: list[Example], config: Any) -> tuple[list[Example], Views]:
        """Every example under every option order ``config.permute`` asks for.

        Args:
            examples: The selected examples.
            config: The replay's settings (permute, max_orders).

        Returns:
            The rows to replay, and their (base index, order) views; None when unpermuted.

        Raises:
            InterpError: An example would get more than ``config.max_orders`` orders.
        """
        check_order_count(examples, config.permute, config.max_orders)  # before building them
        rows, views = expand(examples, config.permute)
        return rows, views if config.permute != "none" else None

    def check_lengths(
        self, tokenizer: Any, n_ctx: int, plan: Plan, examples: list[Example], config: Any
    ) -> None:
        """:func:`interp.inputs.lengths.check_context_length` with the config's settings.

        Args:
            tokenizer: The model's tokenizer.
            n_ctx: The model's context length.
            plan: The replay's plan.
            examples: The rows to replay.
            config: The replay's settings (rounds, mode, max_new_tokens, system).
        """
        lengths = LengthSettings(config.rounds, config.mode, config.max_new_tokens, config.system)
        check_context_length(tokenizer, n_ctx, plan, examples, lengths)

    def answer_prefix(self, plan: Plan, example: Example) -> str:
        """The plan's answer prefix (one for every example).

        Args:
            plan: The replay's plan.
            example: The example (unused).

        Returns:
            ``plan.answer_prefix``.
        """
        return plan.answer_prefix

    def round_scorer(self, tokenizer: Any, config: Any, letters: list[int]) -> RoundScorer:
        """Scores options (choice mode) or parses a generated answer (generate mode).

        Args:
            tokenizer: The model's tokenizer (unused: the letters are already tokenized).
            config: The replay's settings (mode, score).
            letters: The option letters' token ids.

        Returns:
            The batch's round scorer.
        """
        return _ChoiceRounds(config.mode, config.score, letters)

    def row_fields(self, example: Example, entry: dict[str, Any]) -> dict[str, Any]:
        """None: a multiple-choice row is the common row.

        Args:
            example: The row's example.
            entry: Its scored entry.

        Returns:
            An empty dict.
        """
        return {}

    def task_record(self, config: Any, n_examples: int, targets: dict[str, Any]) -> dict[str, Any]:
        """The manifest's ``task`` section: name, files, data hash, examples, bias targets.

        Args:
            config: The replay's settings (task, data, bbq_templates).
            n_examples: The replayed rows (examples x orders).
            targets: :func:`interp.inputs.tasks.target_summary` of the selected examples.

        Returns:
            The section, its keys in the manifest's order.
        """
        return {
            "name": config.task,
            "files": [str(Path(f).resolve()) for f in config.data],
            "data_hash": self.data_hash(config),
            "n_examples": n_examples,
            # bias targets: how many examples have one, why the others have none, warnings
            "targets": targets,
            "bbq_templates": None
            if config.bbq_templates is None
            else {
                "path": str(Path(config.bbq_templates).resolve()),
                "hash": templates_hash(config.bbq_templates),
            },
        }

    def metrics(self, rounds: pd.DataFrame, seed: int) -> dict[str, Any]:
        """:func:`interp.metrics.rounds.compute_metrics`.

        Args:
            rounds: The run's rounds table.
            seed: The replay's seed (the bootstrap's).

        Returns:
            The metrics.
        """
        return compute_metrics(rounds, seed=seed)


class _ChoiceRounds:
    """One batch's rounds of a multiple-choice task."""

    def __init__(self, mode: str, score: str, letters: list[int]) -> None:
        self.mode, self.kind, self.letters = mode, score, letters

    def score(self, model, cache, logits, batch, generated) -> list[dict[str, Any]]:
        if self.mode == "choice":
            option_lp = _option_logprobs(model, cache, logits, batch, self.letters, self.kind)
        else:
            option_lp = torch.full((len(batch), max(len(ex.options) for ex in batch)), float("nan"))
        return [_score(ex, option_lp[b], self.mode, generated[b]) for b, ex in enumerate(batch)]


# The registry: task name -> its scorer. A task not named here is a multiple-choice task (an
# unknown name is refused by load_task, with the list of tasks).
_CHOICE = ChoiceScorer()
SCORERS: dict[str, TaskScorer] = {
    WinogenderScorer.task: WinogenderScorer(metrics=winogender_metrics),
}


def scorer_for(task: str) -> TaskScorer:
    """The scorer of ``task``.

    Args:
        task: The task's name (``ReplayConfig.task``).

    Returns:
        Its registered scorer; :class:`ChoiceScorer` for any other name.
    """
    return SCORERS.get(task, _CHOICE)


# --- multiple-choice scoring -----------------------------------------------------------------

# A bare letter counts only when nothing word-like follows it: "the answer is a college
# student" names no letter (the article "a"), "the answer is a." does.
_LETTER_PATTERNS = (
    r"\(([a-z])\)",
    r"(?:^|\s)([a-z])\)",
    r"answer is:?\s*\(?([a-z])(?=\s*(?:[).,;:!]|$))",
)


def parse_choice(text: str, options: Sequence[str]) -> int:
    """The option a generated answer names, or -1 when it names none (never a guess)."""
    lowered = text.lower()
    for pattern in _LETTER_PATTERNS:
        match = re.search(pattern, lowered)
        if match and ord(match.group(1)) - ord("a") < len(options):
            return ord(match.group(1)) - ord("a")
    named = [i for i, o in enumerate(options) if o.lower().strip(". ") in lowered]
    return named[0] if len(named) == 1 else -1


def _option_logprobs(
    model: HookedTransformer,
    cache: TransformerLensKeyValueCache,
    logits: Float[torch.Tensor, "batch d_vocab"],
    batch: list[Example],
    letters: list[int],
    score: str,
) -> Float[torch.Tensor, "batch option"]:
    """Each option's log-probability at the read-out: of its letter, or (``score="text"``)
    of its whole text ``letter) option`` as the continuation, or (``"text-mean"``) that
    log-probability divided by the continuation's token count (NaN where an example has fewer
    options than the batch's widest)."""
    first = torch.log_softmax(logits.float(), -1).cpu()
    width = max(len(ex.options) for ex in batch)
    if score == "letter":
        out = first[:, letters[:width]].clone()
    else:
        out = torch.stack(
            [
                _continuation_logprob(model, cache, first, batch, i, mean=score == "text-mean")
                for i in range(width)
            ],
            dim=1,
        )
    for b, ex in enumerate(batch):
        out[b, len(ex.options) :] = float("nan")
    return out


def _continuation_logprob(model, cache, first, batch, i: int, mean: bool = False) -> torch.Tensor:
    """log P(option i's text | prompt) for every example, on a frozen cache (the option
    tokens are scored, not kept); with ``mean``, per token (divided by the token count)."""
    tok = model.tokenizer
    conts = [
        tok.encode(
            f"{option_letter(i)}) {ex.options[min(i, len(ex.options) - 1)]}",
            add_special_tokens=False,
        )
        for ex in batch
    ]
    logits = logits_on_frozen_cache(model, cache, conts, tok.pad_token_id)
    later = torch.log_softmax(logits.float(), -1).cpu()
    total = torch.zeros(len(batch))
    for b, c in enumerate(conts):
        total[b] = first[b, c[0]] + sum(later[b, j - 1, c[j]] for j in range(1, len(c)))
        if mean:
            total[b] /= len(c)
    return total


def _score(ex: Example, logprobs: torch.Tensor, mode: str, generated: str) -> dict[str, Any]:
    logprobs = logprobs[: len(ex.options)]
    if mode == "generate":
        choice = parse_choice(generated, ex.options)
        answer = generated
        option_lp = [float("nan")] * len(ex.options)
        entropy = float("nan")
    else:
        choice = int(logprobs.argmax())
        answer = f"{option_letter(choice)}) {ex.options[choice]}"
        option_lp = [float(x) for x in logprobs]
        p = torch.softmax(logprobs, -1)
        entropy = float(-(p * torch.log(p.clamp_min(1e-30))).sum())
    return {
        "choice": choice,
        "option_logprobs": option_lp,
        "entropy": entropy,
        "answer_text": answer,
    }
