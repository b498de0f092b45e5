"""A request budget shared by every process on one store: one rate limit for all
replicas, however many there are.

The budget is a token bucket kept in the store (one row per name): `rate` tokens a
second, at most `burst` saved up. A process takes a slice of it at a time, spends the
slice locally, and comes back for more; N replicas together make at most `rate` calls a
second on average, where a limit per process would let them make N times as many. A
slice taken and not spent is lost, so the sharing errs on the side of fewer calls.
"""

from __future__ import annotations

import asyncio
import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    # Only for hints: the store's plans import this module's arithmetic.
    from listener.store import Store

__all__ = ["SharedRateLimiter", "slice_size", "take_from_bucket"]


def take_from_bucket(
    tokens: float, elapsed: float, *, rate: float, burst: float, want: int
) -> tuple[int, float]:
    """The whole tokens granted (at most `want`) and the tokens left, for a bucket that
    held `tokens` `elapsed` seconds ago. A negative `elapsed` (clocks of two machines
    disagreeing) refills nothing."""
    refilled = min(float(burst), tokens + max(0.0, elapsed) * rate)
    granted = max(0, min(want, math.floor(refilled)))
    return granted, refilled - granted


def slice_size(rate: float) -> int:
    """Tokens to take at a time: about a quarter of a second's worth, at least one, so
    a busy process asks the store a few times a second."""
    return max(1, math.floor(rate / 4))


class SharedRateLimiter:
    """`acquire()` returns once a token of the budget `name` in `store` is this caller's.

    Waiting for the bucket to refill is a sleep of the time one token takes; the store is
    asked only when this process's slice is spent.
    """

    def __init__(
        self,
        store: Store,
        name: str,
        rate: float,
        *,
        burst: int = 1,
    ) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        if burst < 1:
            raise ValueError("burst must be at least 1")
        self.store = store
        self.name = name
        self.rate = rate
        self.burst = burst
        self._slice = min(burst, slice_size(rate))
        self._held = 0
        self._lock = asyncio.Lock()

    async def acquire(self) -> None:
        async with self._lock:
            while self._held == 0:
                self._held = await self.store.take_budget(
                    self.name, rate=self.rate, burst=self.burst, want=self._slice
                )
                if self._held == 0:
                    await asyncio.sleep(1 / self.rate)
            self._held -= 1
