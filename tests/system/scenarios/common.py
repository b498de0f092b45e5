"""What every scenario shares: the tally it reports, a handler that counts its calls, and
bounded readers of the store."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from listener.events import RunEvent
from listener.store.base import CallState, HandlerCall, RunRecord, Store

__all__ = [
    "PAGE",
    "CallLog",
    "Tally",
    "all_calls",
    "all_events",
    "all_runs",
    "assert_held",
    "settle_calls",
]

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


async def all_events(store: Store) -> list[RunEvent]:
    events: list[RunEvent] = []
    cursor: str | None = None
    while True:
        page = await store.list_events(limit=PAGE, cursor=cursor)
        events.extend(page.items)
        cursor = page.next_cursor
        if cursor is None:
            return events


async def all_calls(store: Store) -> list[HandlerCall]:
    calls: list[HandlerCall] = []
    cursor: str | None = None
    while True:
        page = await store.list_calls(limit=PAGE, cursor=cursor)
        calls.extend(page.items)
        cursor = page.next_cursor
        if cursor is None:
            return calls


async def all_runs(store: Store) -> list[RunRecord]:
    runs: list[RunRecord] = []
    cursor: str | None = None
    while True:
        page = await store.list_runs(limit=PAGE, cursor=cursor)
        runs.extend(page.items)
        cursor = page.next_cursor
        if cursor is None:
            return runs


async def settle_calls(store: Store, pause: float = 0.05) -> None:
    """Return once no handler call is pending or running. Callers bound it with a timeout."""
    while True:
        counts = await store.counts()
        busy = counts.calls_by_state.get(CallState.PENDING.value, 0) + counts.calls_by_state.get(
            CallState.RUNNING.value, 0
        )
        if not busy:
            return
        await asyncio.sleep(pause)


def assert_held(tally: Tally) -> None:
    """Fail with the scenario's problems in words unless it kept every promise."""
    shown = "\n  ".join(tally.problems[:25])
    more = f"\n  ... {len(tally.problems) - 25} more" if len(tally.problems) > 25 else ""
    assert tally.held, (
        f"{tally.name}: lost {tally.lost}, double calls {tally.double_calls}, "
        f"{len(tally.problems)} problems:\n  {shown}{more}"
    )
