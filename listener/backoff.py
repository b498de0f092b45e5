"""Retry schedules: exponential backoff with full jitter. Pure functions, no clock."""

from __future__ import annotations

import random

__all__ = ["ceiling", "delay"]

# 2**62 times any sane base is far above any cap; stopping there keeps floats finite.
_MAX_DOUBLINGS = 62


def ceiling(attempt: int, base: float = 1.0, cap: float = 300.0, factor: float = 2.0) -> float:
    """The longest wait after failed attempt number `attempt` (1 for the first failure).

    `base` grows by `factor` (doubles, by default) with each attempt, up to `cap`.
    """
    if attempt < 1:
        raise ValueError("attempt counts from 1")
    if base < 0 or cap < 0:
        raise ValueError("base and cap must not be negative")
    if factor < 1:
        raise ValueError("factor must be at least 1")
    return min(cap, base * factor ** min(attempt - 1, _MAX_DOUBLINGS))


def delay(
    attempt: int,
    base: float = 1.0,
    cap: float = 300.0,
    rng: random.Random | None = None,
) -> float:
    """Seconds to wait after failed attempt `attempt`: uniform in [0, ceiling].

    Full jitter spreads the retries of many calls that failed together (a handler's
    downstream went away) instead of sending them back in lockstep.
    """
    top = ceiling(attempt, base, cap)
    return (rng or random).uniform(0.0, top)
