"""What every scenario shares: the tally it reports, a handler that counts its calls, and
bounded readers of the store."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

from listener.errors import StoreUnavailable
from listener.events import RunEvent, RunStatus
from listener.store.base import CallState, HandlerCall, Page, RunRecord, Store, StoreCounts

__all__ = [
    "PAGE",
    "CallLog",
    "Tally",
    "all_calls",
    "all_events",
    "all_pages",
    "all_runs",
    "assert_held",
    "settle_calls",
    "wait_all_terminal",
]

T = TypeVar("T")

PAGE = 500


@dataclass(slots=True)
class Tally:
    """One scenario's outcome, as the reliability report prints it.

    `lost` and `double_calls` are the promise: both must be zero. `problems` says in words
    everything that went wrong (empty when the scenario held); `notes` holds counts that
    show the scenario did exercise what it claims to (webhooks dropped, 503s answered...).
    """

    name: str
    sent: int = 0  # HTTP deliveries made, retries included
    acknowledged: int = 0  # of those, answered 2xx
    stored: int = 0  # events in the store at the end (webhook and poll)
    handler_calls: int = 0  # handler invocations observed
    duplicates_suppressed: int = 0  # reports of a known transition that called nothing
    lost: int = 0
    double_calls: int = 0
    # Calls run again because their completion could not be written (the store was
    # down): handler calls are at-least-once by design; not counted as double calls.
    reruns: int = 0
    problems: list[str] = field(default_factory=list)
    notes: dict[str, int] = field(default_factory=dict)

    @property
    def held(self) -> bool:
        return not self.problems and self.lost == 0 and self.double_calls == 0

    def problem(self, text: str) -> None:
        self.problems.append(text)


class CallLog:
    """Counts handler invocations per (handler label, run id, status)."""

    def __init__(self) -> None:
        self.counts: Counter[tuple[str, str, str]] = Counter()

    def handler(self, label: str) -> Callable[[RunEvent], Awaitable[None]]:
        async def handle(event: RunEvent) -> None:
            self.counts[(label, event.run_id, event.status.value)] += 1

        return handle

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def count(self, label: str, run_id: str, status: str) -> int:
        return self.counts[(label, run_id, status)]

    def runs(self) -> set[str]:
        return {run_id for _, run_id, _ in self.counts}


async def all_pages(fetch: Callable[..., Awaitable[Page[T]]]) -> list[T]:
    """Every item of a store listing, read `PAGE` at a time: `fetch` is a bound listing
    method (`store.list_events`...), called with `limit` and `cursor`."""
    items: list[T] = []
    cursor: str | None = None
    while True:
        page = await fetch(limit=PAGE, cursor=cursor)
        items.extend(page.items)
        cursor = page.next_cursor
        if cursor is None:
            return items


async def all_events(store: Store) -> list[RunEvent]:
    return await all_pages(store.list_events)


async def all_calls(store: Store) -> list[HandlerCall]:
    return await all_pages(store.list_calls)


async def all_runs(store: Store) -> list[RunRecord]:
    return await all_pages(store.list_runs)


async def _counts_once_reachable(store: Store, pause: float) -> StoreCounts:
    """The store's counts, waiting out a store still reconnecting after an outage: the
    pool may back off between reconnection attempts for longer than one read waits."""
    while True:
        try:
            return await store.counts()
        except StoreUnavailable:
            await asyncio.sleep(pause)


async def settle_calls(store: Store, pause: float = 0.05) -> None:
    """Return once no handler call is pending or running. Callers bound it with a timeout."""
    while True:
        counts = await _counts_once_reachable(store, pause)
        busy = counts.calls_by_state.get(CallState.PENDING.value, 0) + counts.calls_by_state.get(
            CallState.RUNNING.value, 0
        )
        if not busy:
            return
        await asyncio.sleep(pause)


async def wait_all_terminal(store: Store, runs: int) -> None:
    """Return once the store holds `runs` runs in a terminal status. Callers bound it."""
    while True:
        counts = await _counts_once_reachable(store, 0.05)
        done = sum(
            n for status, n in counts.runs_by_status.items() if RunStatus(status).is_terminal
        )
        if done >= runs:
            return
        await asyncio.sleep(0.05)


def assert_held(tally: Tally) -> None:
    """Fail with the scenario's problems in words unless it kept every promise."""
    shown = "\n  ".join(tally.problems[:25])
    more = f"\n  ... {len(tally.problems) - 25} more" if len(tally.problems) > 25 else ""
    assert tally.held, (
        f"{tally.name}: lost {tally.lost}, double calls {tally.double_calls}, "
        f"{len(tally.problems)} problems:\n  {shown}{more}"
    )
