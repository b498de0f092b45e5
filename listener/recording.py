"""The one path an event takes into the store, whoever learned it.

A webhook, a stream message, a poll, a `track`, a cancel's answer and the listener's own
expiry verdict all record through `EventRecorder.record`: the handlers subscribed to the
event are matched, the store records the event with their pending calls in one commit,
and then, for anything the store had not seen, the listener is told (it wakes the
dispatcher and whoever waits for the run). One rule for every path, so a run learned by
poll wakes a waiter exactly as one learned by webhook does.
"""

from __future__ import annotations

from collections.abc import Callable

from listener.events import RunEvent
from listener.registry import Handlers
from listener.store.base import RecordResult, Store

__all__ = ["EventRecorder", "OnRecorded"]

OnRecorded = Callable[[RunEvent, RecordResult], None]


class EventRecorder:
    """Records events for one handler registry; `on_recorded` hears of every new one."""

    def __init__(self, handlers: Handlers, on_recorded: OnRecorded | None = None) -> None:
        self.handlers = handlers
        self.on_recorded = on_recorded

    async def record(self, store: Store, event: RunEvent) -> RecordResult:
        """Store `event` with a pending call for each matching handler, deduplicated by its
        delivery id and its transition. Raises `StoreUnavailable` when nothing was stored."""
        result = await store.record(event, handlers=self.handlers.match(event))
        if not result.duplicate and self.on_recorded is not None:
            self.on_recorded(event, result)
        return result
