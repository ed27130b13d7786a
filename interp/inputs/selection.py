"""Which examples (and rows) a verb uses: one :class:`Selection` for every config that selects.

``replay``, ``patch`` (and the analyses built on them) spell the same choice the same way:
``examples`` (ids or indices), then a seeded random ``sample`` of N, then the first ``limit``;
on a permuted run N counts base examples, each kept with all its option orders.
:func:`choose` is the one implementation of sample-then-limit, so ``--sample 5 --seed 1``
keeps the same examples whichever verb is given it. ``rounds`` and ``orders`` keep rows of a
run's rounds table (:func:`select_rows`).

Importing this module loads neither torch nor pandas (the sample draws with torch's generator
so that runs keep their examples; it is imported when a sample is drawn).
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass, fields, replace
from typing import TYPE_CHECKING, Any, TypeVar

from interp.errors import InterpError
from interp.options import check_seed

if TYPE_CHECKING:
    import pandas as pd

T = TypeVar("T", bound=Hashable)
C = TypeVar("C")

# The fields a config stores flat, under the same names, when it selects examples.
FLAT = ("examples", "limit", "sample", "seed")


@dataclass(frozen=True)
class Selection:
    """Which examples of a task file or a run to use, and which of their rows.

    Applied in this order: ``examples``, then ``sample``, then ``limit``; ``rounds`` and
    ``orders`` then keep rows of the examples kept.

    Raises:
        InterpError: A limit or sample below 1, a seed outside 0..2**32-1, an empty or
            repeated ``examples``, ``rounds`` or ``orders``, or a negative round or order.
    """

    examples: tuple[str | int, ...] | None = None
    """Keep only these examples: example ids (str) or example indices (int)."""
    limit: int | None = None
    """Use only the first N examples left (on a permuted run N base examples, all orders)."""
    sample: int | None = None
    """A uniform random sample of N examples left (seeded by ``seed``, kept in their order),
    drawn before ``limit``; on a permuted run N base examples with all their orders."""
    seed: int = 0
    """Seed of ``sample``."""
    rounds: tuple[int, ...] | None = None
    """Keep only the rows of these rounds (None: every round)."""
    orders: tuple[int, ...] | None = None
    """Permuted runs: keep only these option orders, numbered per base example in run order
    (0: its first order, the options as written); None: every order."""

    def __post_init__(self) -> None:
        for name in ("examples", "rounds", "orders"):
            value = getattr(self, name)
            if value is None:
                continue
            if isinstance(value, str | int):
                value = (value,)
            value = tuple(value)
            object.__setattr__(self, name, value)
            if not value:
                raise InterpError(f"{name}: give at least one (or None for all)")
            if len(set(value)) != len(value):
                raise InterpError(f"{name}: {', '.join(map(str, value))} repeats one")
        for name in ("rounds", "orders"):
            for value in getattr(self, name) or ():
                if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                    raise InterpError(f"{name}: {value!r} is not a whole number >= 0")
        for value in self.examples or ():
            if isinstance(value, bool) or not isinstance(value, str | int):
                raise InterpError(f"examples: {value!r} is neither an example id nor an index")
        if self.limit is not None and (isinstance(self.limit, bool) or self.limit < 1):
            raise InterpError(f"limit must be at least 1 (got {self.limit})")
        if self.sample is not None and (isinstance(self.sample, bool) or self.sample < 1):
            raise InterpError(f"sample must be at least 1 (got {self.sample})")
        check_seed(self.seed)

    def is_all(self) -> bool:
        """Whether this selection keeps everything."""
        return all(
            getattr(self, name) is None
            for name in ("examples", "limit", "sample", "rounds", "orders")
        )


def with_selection(config: C, selection: Selection) -> C:
    """``config`` (a frozen or plain dataclass that selects examples) choosing as
    ``selection`` says: its ``examples``, ``limit``, ``sample`` and ``seed`` replaced.

    The configs store these fields flat (so their manifests, fingerprints and file names stay
    those of earlier runs); this is how one :class:`Selection` is handed to any of them. A
    config's ``seed`` may seed more than the sample (replay's model, patch's bootstrap).

    Args:
        config: A config with some of the fields ``examples``, ``limit``, ``sample``, ``seed``.
        selection: The choice to give it.

    Returns:
        A copy of ``config``.

    Raises:
        InterpError: ``selection`` sets something ``config`` cannot select by (replay has no
            ``examples``; no config selects rounds or option orders yet).
    """
    have = {f.name for f in fields(config)}  # type: ignore[arg-type]
    name = type(config).__name__
    for field in ("rounds", "orders"):
        if getattr(selection, field) is not None:
            raise InterpError(f"{name} selects no {field}: leave Selection.{field} out")
    changes = {field: getattr(selection, field) for field in FLAT if field in have}
    for field in FLAT:
        if field not in have and getattr(selection, field) not in (None, 0):
            raise InterpError(f"{name} selects no {field}: leave Selection.{field} out")
    return replace(config, **changes)  # type: ignore[type-var]


def choose(keys: Sequence[T], selection: Selection, what: str = "examples") -> list[T]:
    """The keys ``selection``'s sample and limit keep, in their order.

    ``keys`` are the candidates in order (examples loaded from a file, or a run's base
    examples left after its filters); ``examples``, ``rounds`` and ``orders`` are not applied
    here (the caller's table knows ids, indices and rows). The sample is drawn as replay has
    always drawn it: ``torch.randperm`` with a generator seeded by ``selection.seed``, the
    first N positions kept, sorted.

    Args:
        keys: The candidates, in order, each once.
        selection: The sample, its seed and the limit.
        what: How the refusal names the candidates ("examples loaded").

    Returns:
        The kept keys, in their order.

    Raises:
        InterpError: A sample larger than the candidates.
    """
    kept = list(keys)
    if selection.sample is not None:
        if selection.sample > len(kept):
            raise InterpError(f"--sample {selection.sample} exceeds the {len(kept)} {what}")
        import torch

        gen = torch.Generator().manual_seed(selection.seed)
        positions = torch.randperm(len(kept), generator=gen)[: selection.sample].tolist()
        kept = [kept[i] for i in sorted(positions)]
    if selection.limit is not None:
        kept = kept[: selection.limit]
    return kept


def example_mask(ids: Sequence[str], indices: Sequence[int], selection: Selection) -> list[bool]:
    """Which of a run's examples ``selection.examples`` names (all, without ``examples``).

    Args:
        ids: The examples' ``example_id``, in order.
        indices: Their ``example_index``, in the same order.
        selection: Ids (str) and indices (int) to keep.

    Returns:
        One bool per example.

    Raises:
        InterpError: An id or index that is not in the run.
    """
    if selection.examples is None:
        return [True] * len(ids)
    wanted_ids = {e for e in selection.examples if isinstance(e, str)}
    wanted_indices = {e for e in selection.examples if not isinstance(e, str)}
    known = set(ids) | set(indices)
    missing = [e for e in selection.examples if e not in known]
    if missing:
        raise InterpError(f"no such examples in the run: {', '.join(map(str, missing))}")
    return [i in wanted_ids or j in wanted_indices for i, j in zip(ids, indices, strict=True)]


def select_rows(rounds: pd.DataFrame, selection: Selection) -> pd.DataFrame:
    """The rows of a run's rounds table that ``selection`` keeps: its examples (ids or
    indices), sample and limit over base examples (all orders of a kept example), then its
    rounds and orders.

    Args:
        rounds: A rounds table (``example_index``, ``example_id``, ``round``; a permuted run
            also ``base_index``).
        selection: What to keep.

    Returns:
        The kept rows, in their order.

    Raises:
        InterpError: An unknown example, a round the run lacks, ``orders`` on an unpermuted
            run, or a sample larger than the examples.
    """
    firsts = rounds.groupby("example_index", sort=True).first()
    mask = example_mask(firsts["example_id"].tolist(), firsts.index.tolist(), selection)
    chosen = [int(i) for i, keep in zip(firsts.index, mask, strict=True) if keep]
    permuted = "base_index" in firsts.columns
    base: list[Any] = firsts.loc[chosen, "base_index"].tolist() if permuted else chosen
    what = "base examples" if permuted else "examples"
    kept = set(choose(list(dict.fromkeys(base)), selection, f"{what} selected"))
    keep_examples = {i for i, b in zip(chosen, base, strict=True) if b in kept}
    rows = rounds[rounds["example_index"].isin(keep_examples)]
    if selection.rounds is not None:
        missing = sorted(set(selection.rounds) - set(rounds["round"].unique().tolist()))
        if missing:
            last = int(rounds["round"].max())
            raise InterpError(f"rounds {missing}: the run has rounds 0..{last}")
        rows = rows[rows["round"].isin(selection.rounds)]
    if selection.orders is not None:
        if not permuted:
            raise InterpError("orders: the run is not permuted (replay it with --permute)")
        order = firsts.groupby("base_index", sort=False).cumcount()  # per example_index
        wanted = set(order.index[order.isin(selection.orders)].tolist())
        rows = rows[rows["example_index"].isin(wanted)]
    return rows
