"""The console's store operations, on both backends: a run's history and the audit."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from listener.events import Origin, RunEvent, RunStatus
from listener.store.postgres import PostgresStore
from listener.store.sqlite import SQLiteStore

AnyStore = SQLiteStore | PostgresStore


def ev(delivery: str, run: str, status: RunStatus, origin: Origin = Origin.WEBHOOK) -> RunEvent:
    return RunEvent(
        delivery_id=delivery,
        provider="nextmv",
        application="routing",
        run_id=run,
        status=status,
        origin=origin,
        payload={"run": run, "status": status.value},
    )


async def test_run_history_holds_events_and_the_transitions_they_made(store: AnyStore) -> None:
    await store.record(ev("d1", "r1", RunStatus.RUNNING), ["h"])
    await store.record(ev("d2", "r1", RunStatus.RUNNING, Origin.POLL), ["h"])
    await store.record(ev("d3", "r1", RunStatus.SUCCEEDED, Origin.POLL), ["h"])
    await store.record(ev("x1", "other", RunStatus.FAILED), ["h"])

    history = await store.run_history("r1")

    assert [s.event.delivery_id for s in history.events] == ["d1", "d2", "d3"]
    assert all(s.received_at.tzinfo is not None for s in history.events)
    assert [(t.status, t.event.delivery_id) for t in history.transitions] == [
        (RunStatus.RUNNING, "d1"),
        (RunStatus.SUCCEEDED, "d3"),
    ]
    assert history.transitions[1].event.origin is Origin.POLL


async def test_run_history_finds_transitions_past_the_event_limit(store: AnyStore) -> None:
    await store.record(ev("d1", "r1", RunStatus.RUNNING))
    await store.record(ev("d2", "r1", RunStatus.RUNNING))
    await store.record(ev("d3", "r1", RunStatus.FAILED))

    history = await store.run_history("r1", limit=1)

    assert [s.event.delivery_id for s in history.events] == ["d1"]
    assert [t.event.delivery_id for t in history.transitions] == ["d1"]
    assert (await store.run_history("r1", limit=2)).transitions[1].event.delivery_id == "d3"


async def test_run_history_of_an_unknown_run_is_empty(store: AnyStore) -> None:
    history = await store.run_history("nope")
    assert history.events == []
    assert history.transitions == []


async def test_audit_rows_come_back_newest_first_in_pages(store: AnyStore) -> None:
    before = datetime.now(UTC)
    ids = [
        await store.record_audit(
            actor="admin", action=f"replay {i}", count=i, detail={"call_ids": [i], "n": "é"}
        )
        for i in range(5)
    ]
    assert ids == sorted(ids)

    first = await store.list_audit(limit=3)
    assert [r.action for r in first.items] == ["replay 4", "replay 3", "replay 2"]
    assert first.items[0].count == 4
    assert first.items[0].detail == {"call_ids": [4], "n": "é"}
    assert first.items[0].actor == "admin"
    assert first.items[0].at >= before
    assert first.next_cursor is not None
    rest = await store.list_audit(limit=3, cursor=first.next_cursor)
    assert [r.action for r in rest.items] == ["replay 1", "replay 0"]
    assert rest.next_cursor is None


async def test_audit_refuses_a_cursor_of_another_listing(store: AnyStore) -> None:
    await store.record(ev("d1", "r1", RunStatus.RUNNING))
    await store.record(ev("d2", "r2", RunStatus.RUNNING))
    page = await store.list_runs(limit=1)
    assert page.next_cursor is not None
    with pytest.raises(ValueError, match="cursor"):
        await store.list_audit(cursor=page.next_cursor)
