"""The one record path: handlers matched, one commit, and one rule for telling the listener."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
from helpers import event

from listener.events import Origin, RunEvent, RunStatus
from listener.recording import EventRecorder
from listener.registry import Handlers
from listener.store import Store, open_store
from listener.store.base import RecordResult


@pytest.fixture
async def store() -> AsyncIterator[Store]:
    opened = await open_store("sqlite://:memory:")
    yield opened
    await opened.close()


def recorder_with_handler() -> tuple[EventRecorder, list[tuple[RunEvent, RecordResult]]]:
    handlers = Handlers()

    @handlers.on(RunStatus.SUCCEEDED)
    def done(event: RunEvent) -> None: ...

    heard: list[tuple[RunEvent, RecordResult]] = []
    return EventRecorder(handlers, lambda e, r: heard.append((e, r))), heard


async def test_a_new_transition_is_stored_with_its_calls_and_heard(store: Store) -> None:
    recorder, heard = recorder_with_handler()
    done = event("r-1", "succeeded")
    result = await recorder.record(store, done)
    assert result.transition is not None
    assert len(result.call_ids) == 1
    assert heard == [(done, result)]
    calls = await store.list_calls(run_id="r-1")
    assert [call.handler for call in calls.items] == [next(iter(recorder.handlers)).name]


async def test_a_duplicate_is_not_heard_and_a_known_status_is(store: Store) -> None:
    recorder, heard = recorder_with_handler()
    await recorder.record(store, event("r-2", "succeeded", delivery_id="a"))
    again = await recorder.record(store, event("r-2", "succeeded", delivery_id="a"))
    assert again.duplicate
    # Another report of the same end (a poll after the webhook): stored, no new calls, and
    # heard, so a waiter on that run wakes whichever path told the listener first.
    known = await recorder.record(
        store, RunEvent.from_poll("local", "routing", "r-2", RunStatus.SUCCEEDED)
    )
    assert (known.duplicate, known.transition, known.call_ids) == (False, None, ())
    assert [result for _, result in heard] == [heard[0][1], known]


async def test_every_origin_takes_the_same_path(store: Store) -> None:
    recorder, heard = recorder_with_handler()
    now = datetime(2026, 1, 2, tzinfo=UTC)
    events = [
        event("r-web", "succeeded", delivery_id="w-1"),
        RunEvent.from_poll("local", "routing", "r-poll", RunStatus.SUCCEEDED, occurred_at=now),
        RunEvent.tracked("local", "routing", "r-track", RunStatus.SUCCEEDED),
        RunEvent.expired("local", "routing", "r-late", deadline=now),
    ]
    for each in events:
        result = await recorder.record(store, each)
        assert result.transition is not None
    assert [e.origin for e, _ in heard] == [Origin.WEBHOOK, Origin.POLL, Origin.TRACK, Origin.POLL]
    # The handler subscribes to `succeeded` only: the expired run got no call.
    assert [len(r.call_ids) for _, r in heard] == [1, 1, 1, 0]


async def test_nothing_is_heard_without_a_listener(store: Store) -> None:
    recorder = EventRecorder(Handlers())
    result = await recorder.record(store, event("r-3"))
    assert result.run_created
