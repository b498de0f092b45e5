"""Retention: deleting what is finished and old, so the store does not grow forever.

What goes (see `Store.prune`): done handler calls; terminal runs with no handler call
left, with their events and transitions; unroutable deliveries. What stays: every run
still in progress, and a finished run with a pending, running or dead handler call (dead
letters can still be replayed), with its events.

Deliveries are deduplicated by the events kept, so a delivery that a sender retries after
its event was pruned is taken as new (and its handlers run again). Nothing younger than
`MIN_AGE` seconds (one day) is ever pruned from here; keep more than the senders' retry
window, which is days for most platforms.

`prune_store` deletes in chunks until nothing old is left; `Pruner` does that in the
background of a started listener (`Listener(retention=...)`, `[listener] retention_days`).
Chunks are paced by time (`next_chunk`): each aims to take about `CHUNK_SECONDS`, so
deliveries that reach the store's writer during a pass wait about that long at most,
however large the store has grown and its chunks' deletes become.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from datetime import UTC, datetime, timedelta
from typing import Final

from listener.store.base import PruneCounts, Store

__all__ = [
    "CHUNK_SECONDS",
    "DEFAULT_INTERVAL",
    "FIRST_CHUNK",
    "FIRST_DELAY",
    "MIN_AGE",
    "MIN_CHUNK",
    "Pruner",
    "check_age",
    "cutoff",
    "describe_counts",
    "next_chunk",
    "prune_store",
    "removed",
]

log = logging.getLogger("listener.retention")

MIN_AGE: Final = 86400.0
# The background pruner's first pass comes this long after start (or after one interval,
# if that is shorter), away from the start-up work, then once every interval.
FIRST_DELAY: Final = 60.0
DEFAULT_INTERVAL: Final = 3600.0
# How long a paced chunk aims to take. A chunk is one write transaction: on SQLite,
# deliveries that arrive meanwhile wait for it, and a chunk of a fixed number of rows
# takes longer the larger the store (its deletes change more index pages).
CHUNK_SECONDS: Final = 0.05
# Rows of each kind a paced pass asks for first, and the fewest it ever asks for.
FIRST_CHUNK: Final = 100
MIN_CHUNK: Final = 10
_NOTHING: Final = PruneCounts(runs=0, events=0, transitions=0, calls=0, unroutable=0, more=False)


def check_age(seconds: float, name: str = "older_than") -> None:
    """Refuse an age under one day: a delivery its sender retries after its event was
    pruned would be taken as new. `name` is how the message names the setting."""
    if math.isnan(seconds) or seconds < MIN_AGE:
        raise ValueError(
            f"{name} must be at least one day ({MIN_AGE:g} s), got {seconds:g} s: a delivery "
            "that a sender retries after its event was pruned is taken as new, so keep more "
            "than the senders' retry window"
        )


def cutoff(older_than: float, *, name: str = "older_than", now: datetime | None = None) -> datetime:
    """The moment `older_than` seconds before `now` (default: the current time), after
    `check_age`; the earliest datetime when that is before the calendar starts."""
    check_age(older_than, name)
    moment = now or datetime.now(UTC)
    try:
        return moment - timedelta(seconds=older_than)
    except OverflowError:
        return datetime.min.replace(tzinfo=UTC)


def removed(counts: PruneCounts) -> int:
    """How many rows `counts` says were deleted, of every kind."""
    return counts.runs + counts.events + counts.transitions + counts.calls + counts.unroutable


def _plural(count: int, one: str, many: str) -> str:
    return f"{count} {one if count == 1 else many}"


def describe_counts(counts: PruneCounts) -> str:
    """`2 runs, 5 events, 2 transitions, 3 handler calls, 1 unroutable delivery`."""
    return ", ".join(
        [
            _plural(counts.runs, "run", "runs"),
            _plural(counts.events, "event", "events"),
            _plural(counts.transitions, "transition", "transitions"),
            _plural(counts.calls, "handler call", "handler calls"),
            _plural(counts.unroutable, "unroutable delivery", "unroutable deliveries"),
        ]
    )


def _add(total: PruneCounts, chunk: PruneCounts) -> PruneCounts:
    return PruneCounts(
        runs=total.runs + chunk.runs,
        events=total.events + chunk.events,
        transitions=total.transitions + chunk.transitions,
        calls=total.calls + chunk.calls,
        unroutable=total.unroutable + chunk.unroutable,
        more=chunk.more,
    )


def _check_chunks(limit: int, chunk_seconds: float | None) -> None:
    if limit < 1:
        raise ValueError("limit must be at least 1")
    if chunk_seconds is not None and not chunk_seconds > 0:
        raise ValueError("chunk_seconds must be positive")


def next_chunk(size: int, elapsed: float, *, target: float, largest: int) -> int:
    """The size of the chunk after a full one of `size` rows that took `elapsed` seconds:
    scaled toward taking `target` seconds, at most doubling (one quick chunk may be luck)
    and shrinking at once (one slow chunk already held deliveries up), kept within
    `MIN_CHUNK` and `largest`."""
    wanted = 2 * size if elapsed <= 0 else min(2 * size, int(size * target / elapsed))
    return max(min(MIN_CHUNK, largest), min(largest, wanted))


async def prune_store(
    store: Store,
    *,
    before: datetime,
    limit: int = 1000,
    chunk_seconds: float | None = CHUNK_SECONDS,
) -> PruneCounts:
    """Call `store.prune(before=..., limit=...)` until it reports nothing more, and return
    the sums. Each call is one short transaction of at most `limit` rows of each kind.

    Paced (the default): the first chunk asks for `FIRST_CHUNK` rows (or `limit`, if
    fewer) and each next one is sized by `next_chunk` to take about `chunk_seconds`,
    never more than `limit`. The time measured includes any wait for the store's writer,
    so a busy store gets smaller chunks. `chunk_seconds=None`: every chunk asks for
    `limit`.

    `more` in the result is False, unless the store said there was more but deleted
    nothing (it stops there rather than spin). Take `before` from `cutoff`, which refuses
    ages under one day.
    """
    _check_chunks(limit, chunk_seconds)
    size = limit if chunk_seconds is None else min(FIRST_CHUNK, limit)
    total = _NOTHING
    while True:
        started = time.perf_counter()
        chunk = await store.prune(before=before, limit=size)
        elapsed = time.perf_counter() - started
        total = _add(total, chunk)
        if not chunk.more or removed(chunk) == 0:
            return total
        if chunk_seconds is not None:
            size = next_chunk(size, elapsed, target=chunk_seconds, largest=limit)


class Pruner:
    """Prunes `store` of what is older than `older_than` seconds, in the background: first
    `min(FIRST_DELAY, interval)` seconds after `start()`, then every `interval` seconds.

    A pass that deleted something logs one INFO line with the counts. A pass that fails
    (the store is unavailable, say) logs a WARNING naming the exception type and is tried
    again at the next interval. `stop()` cancels the task; a chunk cut short is either
    committed or not, and the next pass deletes whatever is left. Chunks are paced as
    `prune_store` paces them: `chunk_seconds` each, at most `limit` rows of each kind.
    """

    def __init__(
        self,
        store: Store,
        older_than: float,
        *,
        interval: float = DEFAULT_INTERVAL,
        limit: int = 1000,
        chunk_seconds: float | None = CHUNK_SECONDS,
    ) -> None:
        check_age(older_than, "older_than")
        if not interval > 0:
            raise ValueError("interval must be positive")
        _check_chunks(limit, chunk_seconds)
        self.store = store
        self.older_than = older_than
        self.interval = interval
        self.limit = limit
        self.chunk_seconds = chunk_seconds
        # Passes that finished and that failed, and the counts of the last one that
        # finished: for tests and diagnostics.
        self.passes = 0
        self.failures = 0
        self.last: PruneCounts | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def start(self) -> None:
        if self._task is not None:
            raise RuntimeError("the pruner is already started")
        self._task = asyncio.create_task(self._loop(), name="listener-pruner")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is None:
            return
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    async def prune_once(self) -> PruneCounts:
        """One pass now: everything older than `older_than`, chunk by chunk."""
        before = cutoff(self.older_than)
        return await prune_store(
            self.store, before=before, limit=self.limit, chunk_seconds=self.chunk_seconds
        )

    async def _loop(self) -> None:
        await asyncio.sleep(min(FIRST_DELAY, self.interval))
        while True:
            try:
                counts = await self.prune_once()
            except Exception as exc:
                # The store may be down for a while: say so without details (a store
                # error may quote a URL) and try again at the next interval.
                self.failures += 1
                log.warning(
                    "pruning old records failed (%s); trying again in %g s",
                    type(exc).__name__,
                    self.interval,
                )
            else:
                self.passes += 1
                self.last = counts
                if removed(counts):
                    log.info(
                        "pruned %s older than %s",
                        describe_counts(counts),
                        _age_text(self.older_than),
                    )
            await asyncio.sleep(self.interval)


def _age_text(seconds: float) -> str:
    days = seconds / MIN_AGE
    return f"{days:g} day" if days == 1 else f"{days:g} days"
