"""The one path an event takes into the store, whoever learned it.

A webhook, a stream message, a poll, a `track`, a cancel's answer and the listener's own
expiry verdict all record through `EventRecorder.record`: the handlers subscribed to the
event are matched, the store records the event with their pending calls in one commit,
and then, for anything the store had not seen, the listener is told (it wakes the
dispatcher and whoever waits for the run). One rule for every path, so a run learned by
poll wakes a waiter exactly as one learned by webhook does. With tracing on (see
`listener.tracing`), each record is a `listener.record` span in its run's trace.
"""

from __future__ import annotations

from collections.abc import Callable

from listener import tracing
from listener.events import RunEvent
from listener.registry import Handlers
from listener.store.base import RecordResult, Store

__all__ = ["EventRecorder", "OnRecorded"]

OnRecorded = Callable[[RunEvent, RecordResult], None]


class EventRecorder:
    """Records events for one handler registry; `on_recorded` hears of every new one.
    `traces` holds the runs' trace contexts, for the other parts of a listener too."""

    def __init__(
        self,
        handlers: Handlers,
        on_recorded: OnRecorded | None = None,
        *,
        traces: tracing.RunTraces | None = None,
    ) -> None:
        self.handlers = handlers
        self.on_recorded = on_recorded
        self.traces = traces if traces is not None else tracing.RunTraces()

    async def record(
        self, store: Store, event: RunEvent, *, check: tracing.Check | None = None
    ) -> RecordResult:
        """Store `event` with a pending call for each matching handler, deduplicated by its
        delivery id and its transition. Raises `StoreUnavailable` when nothing was stored.
        `check` is the receiver's signature check of the delivery, traced with it."""
        tracer = tracing.tracer()
        if tracer is None:
            return await self._record(store, event)
        parent = await self.traces.context(store, event.run_id)
        if check is not None:
            check.emit(parent, event)
        with tracing.recording(tracer, parent, event) as span:
            result = await self._record(store, event)
            tracing.recorded(span, result)
        return result

    async def _record(self, store: Store, event: RunEvent) -> RecordResult:
        result = await store.record(event, handlers=self.handlers.match(event))
        if not result.duplicate and self.on_recorded is not None:
            self.on_recorded(event, result)
        return result
