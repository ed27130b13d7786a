"""Option-order permutations: each example replayed under several orders of its options.

A *permutation* ``perm`` is a tuple of original option indices in the order shown: position
``j`` of the permuted example shows original option ``perm[j]``. So a shown index ``j`` maps
back to the original option ``perm[j]``, and an original index ``i`` is shown at
``perm.index(i)``. ``cyclic`` gives the k rotations of k options (every option once at every
position); ``all`` gives all k! orders; ``none`` only the identity (today's behaviour).

A permuted run stores one row per (example, order) on the example axis, in that order: base
example 0's orders first, then base example 1's, ... ``rounds.parquet`` names them with
``base_index`` (the example among those selected) and ``permutation``.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import replace

from interp.errors import InterpError
from interp.inputs.tasks import Example

PERMUTES = ("none", "cyclic", "all")
# ``all`` grows as k!: 24 orders for 4 options, 120 for 5, 720 for 6 -- 720 conversations per
# example, each replayed for every round. Above this many orders per example a replay is
# refused before anything is loaded or computed, unless the limit is raised (--max-orders).
DEFAULT_MAX_ORDERS = 24


def check_permute(permute: str) -> None:
    """Refuse a ``--permute`` value other than those in ``PERMUTES``.

    Args:
        permute: ``"none"``, ``"cyclic"`` or ``"all"``.

    Raises:
        InterpError: ``permute`` is not one of ``PERMUTES``.
    """
    if permute not in PERMUTES:
        raise InterpError(f"unknown permute {permute!r}; use one of {', '.join(PERMUTES)}")


def orders(k: int, permute: str) -> list[tuple[int, ...]]:
    """The orders of ``k`` options that ``permute`` asks for, identity first.

    Args:
        k: Number of options.
        permute: ``"none"`` (identity only), ``"cyclic"`` (the k rotations) or ``"all"``
            (all k! permutations).

    Returns:
        The orders, each a tuple of original option indices in the order shown.

    Raises:
        InterpError: ``permute`` is unknown.
    """
    check_permute(permute)
    identity = tuple(range(k))
    if permute == "none":
        return [identity]
    if permute == "cyclic":
        return [identity[s:] + identity[:s] for s in range(k)]
    return list(itertools.permutations(identity))


def n_orders(k: int, permute: str) -> int:
    """How many orders of ``k`` options ``permute`` gives (without building them).

    Args:
        k: Number of options.
        permute: ``"none"``, ``"cyclic"`` or ``"all"``.

    Returns:
        1, k or k!.

    Raises:
        InterpError: ``permute`` is unknown.
    """
    check_permute(permute)
    return 1 if permute == "none" else k if permute == "cyclic" else math.factorial(k)


def check_order_count(examples: list[Example], permute: str, max_orders: int) -> int:
    """The number of rows ``expand`` would make; refuses (InterpError) when some example
    would get more than ``max_orders`` orders.

    Args:
        examples: The examples to replay.
        permute: ``"none"``, ``"cyclic"`` or ``"all"``.
        max_orders: Most orders allowed per example (``--max-orders``), at least 1.

    Returns:
        The total number of rows (example x order).

    Raises:
        InterpError: ``max_orders`` is below 1, ``permute`` is unknown, or an example would get
            more than ``max_orders`` orders.
    """
    if max_orders < 1:
        raise InterpError(f"max_orders must be at least 1 (got {max_orders})")
    counts = [n_orders(len(e.options), permute) for e in examples]
    worst = max(counts, default=1)
    if worst > max_orders:
        k = max(len(e.options) for e in examples)
        raise InterpError(
            f"--permute {permute} gives {worst} orders for examples of {k} options "
            f"({sum(counts)} conversations for {len(examples)} examples, each replayed every "
            f"round); the limit is {max_orders} orders per example. Use --permute cyclic "
            f"({k} orders), or pass --max-orders {worst} to run it anyway"
        )
    return sum(counts)


def to_shown(index: int | None, perm: tuple[int, ...]) -> int | None:
    """Original option index -> its position in the order ``perm`` (None stays None).

    Args:
        index: An original option index, or None.
        perm: The order shown (original indices in shown order).

    Returns:
        The shown position, or None.
    """
    return None if index is None else perm.index(index)


def to_original(index: int, perm: tuple[int, ...]) -> int:
    """Shown position -> original option index; -1 (no answer / no such option) stays -1.

    Args:
        index: A shown position, or -1.
        perm: The order shown (original indices in shown order).

    Returns:
        The original option index, or -1.
    """
    return -1 if index < 0 else perm[index]


def permute_example(example: Example, perm: tuple[int, ...]) -> Example:
    """``example`` with its options shown in the order ``perm``; label, target and unknown
    follow their options. The id stays the base example's (``base_index`` tells orders apart).

    Args:
        example: The base example.
        perm: A permutation of ``range(len(example.options))``.

    Returns:
        The permuted copy.

    Raises:
        InterpError: ``perm`` is not a permutation of the example's option indices.
    """
    if sorted(perm) != list(range(len(example.options))):
        raise InterpError(f"{perm} is not an order of {len(example.options)} options")
    return replace(
        example,
        options=tuple(example.options[i] for i in perm),
        label=perm.index(example.label),
        target=to_shown(example.target, perm),
        unknown=to_shown(example.unknown, perm),
    )


def expand(
    examples: list[Example], permute: str
) -> tuple[list[Example], list[tuple[int, tuple[int, ...]]]]:
    """Every example under every order ``permute`` asks for, and for each resulting row its
    (base_index, permutation).

    Args:
        examples: The base examples.
        permute: ``"none"``, ``"cyclic"`` or ``"all"``.

    Returns:
        ``(rows, views)``: the permuted examples, base by base with the identity first, and
        each row's ``(base_index, permutation)``.

    Raises:
        InterpError: ``permute`` is unknown.
    """
    out: list[Example] = []
    views: list[tuple[int, tuple[int, ...]]] = []
    for base, example in enumerate(examples):
        for perm in orders(len(example.options), permute):
            out.append(permute_example(example, perm))
            views.append((base, perm))
    return out, views


ROLE_COLUMNS = ("choice", "label", "target", "unknown")


def add_view_columns(rounds, views: list[tuple[int, tuple[int, ...]]]):
    """``rounds`` (a rounds table whose ``example_index`` indexes ``views``) with
    ``base_index``, ``permutation`` (list of original indices in the order shown) and
    ``choice_orig``, ``label_orig``, ``target_orig``, ``unknown_orig`` (the shown columns
    mapped back to original options; -1 stays -1).

    Args:
        rounds: A rounds table of a permuted replay.
        views: Each row's ``(base_index, permutation)``, as :func:`expand` returned them.

    Returns:
        A copy of ``rounds`` with the added columns.
    """
    rounds = rounds.copy()
    perms = [views[int(i)][1] for i in rounds["example_index"]]
    rounds["base_index"] = [views[int(i)][0] for i in rounds["example_index"]]
    rounds["permutation"] = [list(p) for p in perms]
    for col in ROLE_COLUMNS:
        rounds[f"{col}_orig"] = [
            to_original(int(v), p) for v, p in zip(rounds[col], perms, strict=True)
        ]
    return rounds
