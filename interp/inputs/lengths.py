"""Will every transcript fit the model's context? Checked before a replay runs anything.

A replay whose transcripts outgrow the model's context (``model.cfg.n_ctx``: the rotary
tables end there) would fail inside a forward pass after the compute of every earlier batch
was spent. The final transcript's length is known before any forward pass, up to the answers:

- choice mode: each round's answer is one of the example's options, ``letter) text``; the
  bound takes the option with the most tokens, every round;
- generated text (generate mode's answers, a plan's ``think_tokens`` before the answer
  prefix) is bounded by its budget: ``--max-new-tokens``, ``think_tokens``.

Everything else in the transcript (chat markup, the plan's follow-ups, answer prefixes, the
system prompt) is the same for every example, so it is measured once, on the first example,
with the tokenizer's own chat template, and rounds beyond the plan's follow-ups (which
repeat the last one) are extrapolated, not built. Per example only round 0 (the question) and
the options are tokenized. One token per round of slack covers a tokenizer that merges
across the end of an answer.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from interp.errors import InterpError
from interp.inputs.conversation import RoundInput, build_conversation
from interp.inputs.plans import Plan, option_letter
from interp.inputs.tasks import Example


@dataclass(frozen=True)
class LengthSettings:
    """What of a replay's configuration decides transcript lengths."""

    rounds: int
    mode: str = "choice"
    max_new_tokens: int = 48
    system: str | None = None


def transcript_bounds(
    tokenizer, plan: Plan, examples: Sequence[Example], settings: LengthSettings
) -> list[int]:
    """An upper bound of each example's final transcript length, in tokens.

    Args:
        tokenizer: The model's tokenizer (with chat template).
        plan: The prompting plan.
        examples: The examples to replay.
        settings: Rounds, mode, generation budget and system message of the replay.

    Returns:
        One bound per example, in tokens (empty for no examples).
    """
    if not examples:
        return []
    ref = examples[0]
    shared = _shared_tokens(tokenizer, plan, ref, settings)
    ref_own = _own_tokens(tokenizer, plan, ref, settings)
    return [shared + _own_tokens(tokenizer, plan, ex, settings) - ref_own for ex in examples]


def check_context_length(
    tokenizer, n_ctx: int, plan: Plan, examples: Sequence[Example], settings: LengthSettings
) -> None:
    """Refuse, naming the first example that does not fit, when a final transcript could
    exceed ``n_ctx`` tokens.

    Args:
        tokenizer: The model's tokenizer (with chat template).
        n_ctx: The model's context length, in tokens.
        plan: The prompting plan.
        examples: The examples to replay.
        settings: Rounds, mode, generation budget and system message of the replay.

    Raises:
        InterpError: The rounds alone cannot fit, or some example's bound exceeds ``n_ctx``.
    """
    if settings.rounds + 1 > n_ctx:  # every round adds at least its read-out token
        raise InterpError(
            f"--rounds {settings.rounds} cannot fit the model's context of {n_ctx} tokens "
            "(every round adds tokens); use fewer rounds"
        )
    bounds = transcript_bounds(tokenizer, plan, examples, settings)
    over = [(ex, n) for ex, n in zip(examples, bounds, strict=True) if n > n_ctx]
    if not over:
        return
    ex, need = over[0]
    others = f" (and {len(over) - 1} more examples)" if len(over) > 1 else ""
    raise InterpError(
        f"example {ex.example_id} ({ex.source}){others}: its transcript over rounds "
        f"0..{settings.rounds} can reach {need} tokens, more than the model's context of "
        f"{n_ctx}; use fewer --rounds, {_budget_hint(plan, settings)}or leave out long examples"
    )


def _budget_hint(plan: Plan, settings: LengthSettings) -> str:
    if settings.mode == "generate":
        return "a smaller --max-new-tokens, "
    return "a plan with fewer think_tokens, " if plan.think_tokens > 0 else ""


def _thinks(plan: Plan, settings: LengthSettings, r: int) -> bool:
    return settings.mode == "generate" or (plan.think_tokens > 0 and r > 0)


def _prefix(plan: Plan, settings: LengthSettings, r: int) -> str:
    """Round r's answer prefix as the replay writes it, with no generated text."""
    if settings.mode == "generate":
        return ""
    return "\n" + plan.answer_prefix if _thinks(plan, settings, r) else plan.answer_prefix


def _answer_tokens(tokenizer, ex: Example, settings: LengthSettings) -> int:
    """Tokens of the longest answer the replay can write for ``ex`` (choice mode)."""
    if settings.mode == "generate":
        return 0  # generated: counted in the budget instead
    return max(
        len(tokenizer.encode(f"{option_letter(i)}) {text}", add_special_tokens=False))
        for i, text in enumerate(ex.options)
    )


def _own_tokens(tokenizer, plan: Plan, ex: Example, settings: LengthSettings) -> int:
    """The tokens that differ between examples: round 0 up to its read-out, and the longest
    answer in every round."""
    user, instruction = plan.user_turn(ex, 0)
    prompt = build_conversation(
        tokenizer,
        [RoundInput(user=user, instruction=instruction, prefix=_prefix(plan, settings, 0))],
        answer_prefix=plan.answer_prefix,
        system=settings.system,
    )
    return len(prompt.tokens) + (settings.rounds + 1) * _answer_tokens(tokenizer, ex, settings)


def _shared_tokens(tokenizer, plan: Plan, ref: Example, settings: LengthSettings) -> int:
    """The bound for ``ref``: its final transcript measured over the rounds that differ, the
    repeating rounds extrapolated, plus generation budgets and slack."""
    rounds = settings.rounds
    # Rounds >= len(followups) all say the last follow-up: the transcript grows by the same
    # number of tokens with each, so build up to one of them past the last distinct round.
    built = min(rounds, len(plan.followups) + 1)
    answer = _longest_answer(tokenizer, ref, settings)

    def length(last: int) -> int:
        turns = [
            RoundInput(*plan.user_turn(ref, r), answer=answer, prefix=_prefix(plan, settings, r))
            for r in range(last + 1)
        ]
        conv = build_conversation(
            tokenizer, turns, answer_prefix=plan.answer_prefix, system=settings.system
        )
        return len(conv.tokens)

    total = length(built)
    if rounds > built:
        total += (rounds - built) * (total - length(built - 1))
    budget = settings.max_new_tokens if settings.mode == "generate" else plan.think_tokens
    # Rounds that write text of their own: all in generate mode, 1..rounds with think_tokens.
    thinking = rounds + 1 if settings.mode == "generate" else rounds if plan.think_tokens else 0
    # + 1 per generated text: decoded and tokenized again, it may not split the same way.
    return total + thinking * (budget + 1) + (rounds + 1)


def _longest_answer(tokenizer, ex: Example, settings: LengthSettings) -> str:
    if settings.mode == "generate":
        return ""
    texts = [f"{option_letter(i)}) {text}" for i, text in enumerate(ex.options)]
    return max(texts, key=lambda t: len(tokenizer.encode(t, add_special_tokens=False)))


def check_running_length(
    examples: Sequence[Example], lengths: Sequence[int], budget: int, n_ctx: int
) -> None:
    """During a replay: refuse before a forward pass when an example's transcript so far
    (``lengths``) plus the tokens still to be generated in this step (``budget``) exceed
    ``n_ctx``. The check up front counts generated text at its budget; decoded and tokenized
    again, text from a model can come back longer (e.g. bytes that are not UTF-8 return as
    U+FFFD), and this catches that as an error instead of a failing forward pass.

    Args:
        examples: The examples of the batch.
        lengths: Each example's transcript length so far, in tokens.
        budget: Tokens still to be generated in this step (0 for a read-out only).
        n_ctx: The model's context length, in tokens.

    Raises:
        InterpError: Some example would exceed ``n_ctx``.
    """
    for ex, n in zip(examples, lengths, strict=True):
        if n + budget > n_ctx:
            raise InterpError(
                f"example {ex.example_id} ({ex.source}): its transcript has grown to {n} tokens"
                f"{f' before {budget} more are generated' if budget else ''}, more than the "
                f"model's context of {n_ctx} (generated text tokenized again came back longer "
                "than its budget); use fewer --rounds or a smaller generation budget"
            )
