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
    """Check a seed option is a whole number numpy and torch accept.

    Args:
        seed: The seed given (an ``int``; ``bool`` is refused).
        flag: The option's name in the error message.

    Returns:
        ``seed`` unchanged.

    Raises:
        InterpError: ``seed`` is not an integer from 0 to ``MAX_SEED`` (2**32 - 1).

    Examples:
        >>> check_seed(7)
        7
        >>> check_seed(-1)
        Traceback (most recent call last):
        ...
        interp.errors.InterpError: --seed must be a whole number from 0 to 4294967295 (got -1)
    """
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise InterpError(f"{flag} must be a whole number from 0 to {MAX_SEED} (got {seed})")
    return seed


def check_n_boot(n_boot: int, flag: str = "--n-boot") -> int:
    """Check a bootstrap size option is within 0..MAX_N_BOOT.

    Args:
        n_boot: Number of bootstrap resamples (an ``int``; 0 means no intervals).
        flag: The option's name in the error message.

    Returns:
        ``n_boot`` unchanged.

    Raises:
        InterpError: ``n_boot`` is not an integer from 0 to ``MAX_N_BOOT`` (100,000).
    """
    if isinstance(n_boot, bool) or not isinstance(n_boot, int) or not 0 <= n_boot <= MAX_N_BOOT:
        raise InterpError(
            f"{flag} must be from 0 (no intervals) to {MAX_N_BOOT} resamples (got {n_boot})"
        )
    return n_boot


def check_at_least(value: int | None, low: int, flag: str) -> None:
    """``value`` (None: not given) is at least ``low``.

    Args:
        value: The option's value; None (not given) always passes.
        low: The smallest value allowed.
        flag: The option's name in the error message.

    Raises:
        InterpError: ``value`` is below ``low``.
    """
    if value is not None and value < low:
        raise InterpError(f"{flag} must be at least {low} (got {value})")
