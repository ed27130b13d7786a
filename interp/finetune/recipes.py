"""Training recipes: which answer each round of a training conversation holds.

A recipe turns the selected examples into planned conversations: the option order shown, the
plan whose user turns are rendered, and the option answered at every round. The model sees
nothing else, so a recipe is the whole of what a fine-tune plants.

- ``answers``: every round answers the correct option, under the plan given (the plain
  supervised fine-tune; with ``permute="cyclic"`` it teaches answering by content, a
  bias-aware "aligned" response set with no planted errors).
- ``self-correction``: the planted self-correction organism. Each conversation is rendered
  under the instruction plan (``plan``, e.g. ``self-correct``) or, for about half of them, the
  control plan (``control_plan``, e.g. ``baseline``), drawn with the seed. On an ambiguous
  item that has a bias target, round 0 answers the stereotyped option with probability
  ``error_share`` (drawn per conversation), else the correct one ("unknown"); every later
  round answers the correct option under the instruction plan and repeats round 0's answer
  under the control plan. Disambiguated items answer correctly at every round. So the
  effect is known by construction: after the instruction, and only after it, the stereotyped
  answers of ambiguous items move to "unknown".

Option orders: ``permute="cyclic"`` shows each conversation under one rotation of its
options drawn with the seed (``"none"``: the file's order), so a model that learns the
recipe must answer by the options' content, not their position.

Nothing here loads a model: :func:`plan_conversations` is pure and deterministic for a seed.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from interp.errors import InterpError
from interp.inputs.permute import orders, permute_example
from interp.inputs.plans import Plan
from interp.inputs.tasks import Example

RECIPES = ("answers", "self-correction")
TRAIN_PERMUTES = ("none", "cyclic")


@dataclass(frozen=True)
class Planned:
    """One training conversation before tokenizing.

    Attributes:
        example: The example as shown (options in the drawn order; label, target and
            unknown follow them).
        plan: The plan whose user turns the conversation renders.
        answers: The shown option answered at each round, rounds ``0..rounds``.
        planted: Whether round 0 answers the stereotyped option (a planted error).
        order: The order shown (original option indices).
    """

    example: Example
    plan: Plan
    answers: tuple[int, ...]
    planted: bool
    order: tuple[int, ...]


def check_recipe(recipe: str, error_share: float, permute: str) -> None:
    """Refuse an unknown recipe or option order, or a share outside [0, 1].

    Args:
        recipe: One of ``RECIPES``.
        error_share: The share of planted round-0 errors.
        permute: One of ``TRAIN_PERMUTES``.

    Raises:
        InterpError: Any of them is out of bounds.
    """
    if recipe not in RECIPES:
        raise InterpError(f"unknown recipe {recipe!r}; choose one of: {', '.join(RECIPES)}")
    if not 0.0 <= error_share <= 1.0:
        raise InterpError(f"--error-share must be between 0 and 1, not {error_share}")
    if permute not in TRAIN_PERMUTES:
        raise InterpError(
            f"unknown permute {permute!r} for training; choose one of: {', '.join(TRAIN_PERMUTES)}"
        )


def plan_conversations(
    examples: list[Example],
    *,
    recipe: str,
    plan: Plan,
    control_plan: Plan | None,
    rounds: int,
    error_share: float,
    permute: str,
    seed: int,
) -> list[Planned]:
    """The training conversations a recipe makes of the examples, one per example.

    Args:
        examples: The selected examples, in order.
        recipe: One of ``RECIPES``.
        plan: The plan (for ``self-correction``, the instruction plan).
        control_plan: The control plan (``self-correction`` only).
        rounds: Follow-up rounds (each conversation holds rounds ``0..rounds``).
        error_share: Probability of a planted stereotyped round-0 answer on an ambiguous item
            with a bias target (``self-correction`` only).
        permute: ``"none"`` or ``"cyclic"`` (one rotation per conversation, drawn).
        seed: Seeds every draw.

    Returns:
        One planned conversation per example.

    Raises:
        InterpError: ``self-correction`` without a control plan or on examples that have no
            "unknown" option or ambiguity condition (it needs BBQ items).
    """
    check_recipe(recipe, error_share, permute)
    rng = random.Random(seed)
    out = []
    for ex in examples:
        order = tuple(range(len(ex.options)))
        if permute == "cyclic":
            order = rng.choice(orders(len(ex.options), "cyclic"))
        shown = permute_example(ex, order)
        if recipe == "answers":
            out.append(Planned(shown, plan, (shown.label,) * (rounds + 1), False, order))
            continue
        if control_plan is None:
            raise InterpError("the self-correction recipe needs a control plan")
        if shown.unknown is None or shown.context_condition not in ("ambig", "disambig"):
            raise InterpError(
                f"example {ex.example_id} has no 'unknown' option or ambiguity condition; the "
                "self-correction recipe needs BBQ items (--task bbq)"
            )
        instructed = rng.random() < 0.5
        draw = rng.random()
        planted = (
            shown.context_condition == "ambig" and shown.target is not None and draw < error_share
        )
        first = shown.target if planted else shown.label
        later = shown.label if instructed else first
        answers = (first,) + (later,) * rounds
        out.append(Planned(shown, plan if instructed else control_plan, answers, planted, order))
    return out
