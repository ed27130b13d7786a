"""Debiased scores of a permuted run (``interp replay --permute cyclic|all``).

A model that prefers a position (say the third letter) answers by position whatever the
content. Showing each example under several orders of its options and averaging, per base
example and round, each order's option probabilities *mapped back to the original options*
cancels a pure position preference: with cyclic orders every option sits at every position
exactly once, so a constant bonus for one position lifts every option equally.

Averaging in **probability space** (the default) is the mixture over orders: the debiased
distribution is what a reader who shuffles the options uniformly at random would see, its
entropy counts order-disagreement as uncertainty, and it is bounded (one order's near-zero
probability cannot veto an option). Averaging in **log space** (``space="log"``, the
renormalised geometric mean, a product of experts) cancels an additive logit bias exactly but
lets one confident order dominate. The debiased answer is the argmax, the debiased entropy
that of the averaged distribution.

Agreement: the share of base examples whose orders all give the same content answer (the
same original option, none unparsed) -- the plain measure of position-driven answers.

Generate mode stores no option probabilities; there each order's answer counts as a one-hot
distribution (unparsed answers count for nothing), so the debiased answer is a majority vote.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from interp.errors import InterpError

SPACES = ("prob", "log")
PERMUTED_COLUMNS = ("base_index", "permutation", "label_orig", "target_orig", "unknown_orig")
# Per-example fields the debiased table copies from the base example's first order.
_KEEP = (
    "example_id",
    "context_condition",
    "question_polarity",
    "category",
    "label_type",
    "question_index",
)


def check_space(space: str) -> None:
    """Refuse a debias space other than those in ``SPACES``.

    Args:
        space: ``"prob"`` or ``"log"``.

    Raises:
        InterpError: ``space`` is not one of ``SPACES``.
    """
    if space not in SPACES:
        raise InterpError(f"unknown debias space {space!r}; use one of {', '.join(SPACES)}")


def is_permuted(rounds: pd.DataFrame) -> bool:
    """Whether a rounds table comes from a permuted replay (it has ``base_index``).

    Args:
        rounds: A rounds table.

    Returns:
        True for a permuted run.
    """
    return "base_index" in rounds.columns


def _order_distribution(row: pd.Series, k: int) -> np.ndarray:
    """One order's option probabilities over the *original* options."""
    perm = [int(i) for i in row["permutation"]]
    logp = np.asarray(row["option_logprobs"], dtype=float)[:k]
    out = np.zeros(k)
    if np.isfinite(logp).all():
        shown = np.exp(logp - logp.max())
        shown /= shown.sum()
        out[perm] = shown
    elif int(row["choice_orig"]) >= 0:  # generate mode: the parsed answer, one-hot
        out[int(row["choice_orig"])] = 1.0
    return out


def debiased_rounds(rounds: pd.DataFrame, space: str = "prob") -> pd.DataFrame:
    """One row per (base example, round) with the columns of a rounds table
    (``interp.metrics.rounds.REQUIRED_COLUMNS``), in original option order: ``choice`` the debiased
    answer, ``option_logprobs`` the log of the averaged distribution, ``entropy`` its entropy,
    ``example_index`` the base index, and ``n_orders`` and ``agree`` (all orders gave the same
    content answer). ``space``: "prob" (default) or "log" (see the module docstring).

    Args:
        rounds: The rounds table of a permuted replay.
        space: ``"prob"`` or ``"log"``.

    Returns:
        The debiased rounds table.

    Raises:
        InterpError: ``space`` is unknown, or ``rounds`` lacks the permuted columns.
    """
    check_space(space)
    missing = [c for c in PERMUTED_COLUMNS if c not in rounds.columns]
    if missing:
        raise InterpError(f"not a permuted rounds table: it lacks {missing}")
    rows = []
    for (base, rnd), group in rounds.groupby(["base_index", "round"], sort=True):
        k = len(group["permutation"].iloc[0])
        dists = np.stack([_order_distribution(row, k) for _, row in group.iterrows()])
        if space == "log":
            with np.errstate(divide="ignore"):
                logs = np.log(dists).mean(axis=0)
            avg = np.exp(logs - logs.max()) if np.isfinite(logs).any() else np.zeros(k)
        else:
            avg = dists.mean(axis=0)
        total = avg.sum()
        first = group.iloc[0]
        label, target = int(first["label_orig"]), int(first["target_orig"])
        if total > 0:
            avg = avg / total
            choice = int(avg.argmax())
            with np.errstate(divide="ignore"):
                logp = np.log(avg)
            nz = avg[avg > 0]
            entropy = float(-(nz * np.log(nz)).sum())
        else:  # nothing parsed in any order
            choice, logp, entropy = -1, np.full(k, np.nan), float("nan")
        answers = group["choice_orig"].to_numpy(dtype=np.int64)
        rows.append(
            {
                "example_index": int(base),
                "round": int(rnd),
                "choice": choice,
                "option_logprobs": [float(x) for x in logp],
                "entropy": entropy,
                "correct": choice == label,
                "label": label,
                "target": target,
                "unknown": int(first["unknown_orig"]),
                "biased": target >= 0 and choice == target,
                **{c: first[c] for c in _KEEP if c in group.columns},
                "n_orders": len(group),
                "agree": bool((answers >= 0).all() and len(set(answers.tolist())) == 1),
            }
        )
    return pd.DataFrame(rows)


def position_by_order(rounds: pd.DataFrame) -> list[dict]:
    """Per round and order: the share of the order's parsed answers at each shown position.
    A model without position bias spreads each order's answers as the content dictates; one
    that answers by position gives every order the same shares.

    Args:
        rounds: The rounds table of a permuted replay.

    Returns:
        Per round: ``round`` and ``orders`` (each ``permutation``, ``n`` and ``shares``, a
        share None when no answer of the order parsed).
    """
    out = []
    frame = rounds.assign(_order=[tuple(int(i) for i in p) for p in rounds["permutation"]])
    for rnd, by_round in frame.groupby("round", sort=True):
        orders = []
        for perm, group in sorted(by_round.groupby("_order"), key=lambda kv: (len(kv[0]), kv[0])):
            choice = group["choice"].to_numpy(dtype=np.int64)
            parsed = choice[choice >= 0]
            shares = [
                float((parsed == j).mean()) if parsed.size else None for j in range(len(perm))
            ]
            orders.append({"permutation": list(perm), "n": int(len(group)), "shares": shares})
        out.append({"round": int(rnd), "orders": orders})
    return out
