"""Ranges of the options several commands share (seeds, bootstrap sizes), checked before any
work starts: an option out of range is an `InterpError`, not a failure after the compute.

- ``--seed``: 0 .. 2**32 - 1 (numpy and torch generators take no other seeds);
- ``--n-boot``: 0 (no intervals) .. ``MAX_N_BOOT`` (100,000 resamples).
"""

from __future__ import annotations

from interp.errors import InterpError

MAX_SEED = 2**32 - 1
MAX_N_BOOT = 100_000


def check_seed(seed: int, flag: str = "--seed") -> int:
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise InterpError(f"{flag} must be a whole number from 0 to {MAX_SEED} (got {seed})")
    return seed


def check_n_boot(n_boot: int, flag: str = "--n-boot") -> int:
    if isinstance(n_boot, bool) or not isinstance(n_boot, int) or not 0 <= n_boot <= MAX_N_BOOT:
        raise InterpError(
            f"{flag} must be from 0 (no intervals) to {MAX_N_BOOT} resamples (got {n_boot})"
        )
    return n_boot


def check_at_least(value: int | None, low: int, flag: str) -> None:
    """``value`` (None: not given) is at least ``low``."""
    if value is not None and value < low:
        raise InterpError(f"{flag} must be at least {low} (got {value})")
