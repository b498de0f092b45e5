"""The store contract: every test runs against SQLite and against PostgreSQL."""

from __future__ import annotations

import asyncio
import random
import sqlite3
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from listener.events import Origin, RunEvent, RunStatus, Transition, next_status
from listener.store import (
    CallState,
    NewRun,
    PruneCounts,
    SchemaTooNew,
    StoreUnavailable,
    WebhookEpisode,
)
from listener.store.postgres import PostgresStore
from listener.store.sqlite import SQLiteStore

AnyStore = SQLiteStore | PostgresStore
Factory = Callable[..., Awaitable[Any]]
S = RunStatus


def now() -> datetime:
    return datetime.now(UTC)


def ev(
    delivery: str,
    run: str,
    status: RunStatus,
    *,
    provider: str = "nextmv",
    app: str = "routing",
    origin: Origin = Origin.WEBHOOK,
    payload: dict[str, Any] | None = None,
) -> RunEvent:
    return RunEvent(
        delivery_id=delivery,
        provider=provider,
        application=app,
        run_id=run,
        status=status,
        origin=origin,
        payload=payload if payload is not None else {"run": run, "status": status.value},
    )


def raw(url: str, sql: str) -> list[tuple[Any, ...]]:
    """Run one statement straight on the test database, outside any store."""
    if url.startswith("sqlite:"):
        conn = sqlite3.connect(url[len("sqlite:///") :])
        try:
            with conn:
                return conn.execute(sql).fetchall()
        finally:
            conn.close()
    import psycopg

    with psycopg.connect(url, autocommit=True) as pg:
        cur = pg.execute(sql)
        return cur.fetchall() if cur.description is not None else []


async def all_pages(fetch: Callable[[str | None], Awaitable[Any]]) -> list[Any]:
    items: list[Any] = []
    cursor: str | None = None
    while True:
        page = await fetch(cursor)
        items.extend(page.items)
        if page.next_cursor is None:
            return items
        cursor = page.next_cursor


# -- opening -------------------------------------------------------------------------


async def test_open_is_idempotent_and_reports_version(store: AnyStore) -> None:
    await store.open()
    await store.ping()
    assert await store.schema_version() == 9


async def test_schema_too_new_is_refused(store_factory: Factory, store_url: str) -> None:
    first = await store_factory()
    await first.close()
    raw(
        store_url, "INSERT INTO schema_version (version, applied_at) VALUES (99, CURRENT_TIMESTAMP)"
    )
    with pytest.raises(SchemaTooNew, match="99"):
        await store_factory()


async def test_concurrent_opens_apply_the_schema_once(
    store_factory: Factory, store_url: str
) -> None:
    stores = [await store_factory(open_store=False) for _ in range(6)]
    await asyncio.gather(*(s.open() for s in stores))
    assert [await s.schema_version() for s in stores] == [9] * 6
    assert raw(store_url, "SELECT count(*) FROM schema_version") == [(9,)]
    # All of them write to the same tables.
    await asyncio.gather(*(s.record(ev(f"d{i}", f"r{i}", S.RUNNING)) for i, s in enumerate(stores)))
    assert (await stores[0].counts()).events == 6


async def test_closed_store_is_unavailable(store_factory: Factory) -> None:
    store = await store_factory()
    await store.close()
    with pytest.raises(StoreUnavailable):
        await store.record(ev("d1", "r1", S.RUNNING))
    with pytest.raises(StoreUnavailable):
        await store.get_run("r1")


# -- runs ----------------------------------------------------------------------------


async def test_register_run_twice_is_harmless(store: AnyStore) -> None:
    submitted = now() - timedelta(minutes=5)
    deadline = now() + timedelta(hours=1)
    run = NewRun(
        run_id="r1",
        provider="nextmv",
        application="routing",
        submitted_at=submitted,
        grace_seconds=30,
        deadline=deadline,
        callback={"url": "https://example.invalid/hooks/nextmv"},
        metadata={"team": "ops", "n": 3},
    )
    assert await store.register_run(run) is True
    first = await store.get_run("r1")
    again = NewRun("r1", "nextmv", "routing", grace_seconds=1, metadata={"team": "other"})
    assert await store.register_run(again) is False
    assert await store.get_run("r1") == first
    assert first is not None
    assert first.status is S.QUEUED
    assert first.submitted_at == submitted
    assert first.submitted_at.tzinfo == UTC
    assert first.grace_seconds == 30
    assert first.deadline == deadline
    assert first.next_poll_at == submitted + timedelta(seconds=30)
    assert first.last_event_at is None
    assert first.poll_attempts == 0
    assert first.lease_owner is None
    assert first.lease_expires_at is None
    assert first.callback == {"url": "https://example.invalid/hooks/nextmv"}
    assert first.metadata == {"team": "ops", "n": 3}
    assert await store.get_run("missing") is None


async def test_registration_after_the_runs_own_event_fills_in_details(store: AnyStore) -> None:
    created = await store.record(ev("d1", "r1", S.RUNNING))
    assert created.run_created
    deadline = now() + timedelta(hours=2)
    run = NewRun("r1", "nextmv", "routing", grace_seconds=5, deadline=deadline, metadata={"a": 1})
    assert await store.register_run(run) is False
    record = await store.get_run("r1")
    assert record is not None
    assert record.status is S.RUNNING  # the event's news stands
    assert record.grace_seconds == 5
    assert record.deadline == deadline
    assert record.metadata == {"a": 1}
    assert record.last_event_at is not None
    assert record.next_poll_at == record.last_event_at + timedelta(seconds=5)
    # Now registered: a further registration changes nothing.
    assert await store.register_run(NewRun("r1", "nextmv", "routing", grace_seconds=99)) is False
    assert await store.get_run("r1") == record


# -- record ----------------------------------------------------------------------------


async def test_record_new_event_moves_the_run_and_enqueues_calls(store: AnyStore) -> None:
    await store.register_run(NewRun("r1", "nextmv", "routing", grace_seconds=20))
    event = ev("d1", "r1", S.RUNNING, payload={"nested": {"list": [1, 2.5, "x", None]}, "ü": "✓"})
    result = await store.record(event, ["a", "b"])
    assert result.duplicate is False
    assert result.run_created is False
    assert result.transition == Transition("r1", S.RUNNING)
    assert result.status is S.RUNNING
    assert len(result.call_ids) == 2
    assert await store.get_event("d1") == event
    assert await store.get_event("nope") is None
    run = await store.get_run("r1")
    assert run is not None
    assert run.status is S.RUNNING
    assert run.last_event_at is not None
    assert run.next_poll_at == run.last_event_at + timedelta(seconds=20)
    calls = [await store.get_call(i) for i in result.call_ids]
    assert [(c.handler, c.status, c.state, c.attempts) for c in calls if c] == [
        ("a", S.RUNNING, CallState.PENDING, 0),
        ("b", S.RUNNING, CallState.PENDING, 0),
    ]
    assert all(c is not None and c.event == event for c in calls)
    assert await store.get_call(10_000) is None


async def test_duplicate_delivery_changes_nothing(store: AnyStore) -> None:
    await store.record(ev("d1", "r1", S.RUNNING), ["a"])
    before = (await store.get_run("r1"), await store.counts())
    # Same delivery id, even claiming another status: nothing moves.
    result = await store.record(ev("d1", "r1", S.SUCCEEDED), ["a", "b"])
    assert result.duplicate is True
    assert result.transition is None
    assert result.status is S.RUNNING
    assert result.call_ids == ()
    assert (await store.get_run("r1"), await store.counts()) == before
    event = await store.get_event("d1")
    assert event is not None
    assert event.status is S.RUNNING


async def test_out_of_order_events_never_move_a_run_back(store: AnyStore) -> None:
    await store.register_run(NewRun("r1", "nextmv", "routing"))
    assert (await store.record(ev("d1", "r1", S.RUNNING), ["h"])).transition is not None
    late_queued = await store.record(ev("d2", "r1", S.QUEUED), ["h"])
    assert late_queued.transition is None
    assert late_queued.status is S.RUNNING
    assert late_queued.call_ids == ()
    assert (await store.record(ev("d3", "r1", S.SUCCEEDED), ["h"])).status is S.SUCCEEDED
    late_running = await store.record(ev("d4", "r1", S.RUNNING), ["h"])
    assert late_running.duplicate is False  # stored, but no news
    assert late_running.transition is None
    assert late_running.status is S.SUCCEEDED
    run = await store.get_run("r1")
    assert run is not None
    assert run.status is S.SUCCEEDED
    assert run.next_poll_at is None
    assert await store.get_event("d4") is not None
    assert (await store.counts()).calls_by_state["pending"] == 2


async def test_terminal_status_is_sticky(store: AnyStore) -> None:
    await store.record(ev("d1", "r1", S.SUCCEEDED), ["h"])
    for i, status in enumerate([S.FAILED, S.CANCELED, S.EXPIRED, S.QUEUED]):
        result = await store.record(ev(f"late{i}", "r1", status), ["h"])
        assert result.transition is None
        assert result.status is S.SUCCEEDED
    calls = await store.list_calls(run_id="r1")
    assert [c.status for c in calls.items] == [S.SUCCEEDED]


async def test_expired_then_a_real_terminal_answer_moves(store: AnyStore) -> None:
    await store.record(ev("d1", "r1", S.RUNNING), ["h"])
    expired = await store.record(ev("p1", "r1", S.EXPIRED, origin=Origin.POLL), ["h"])
    assert expired.transition == Transition("r1", S.EXPIRED)
    succeeded = await store.record(ev("d2", "r1", S.SUCCEEDED), ["h"])
    assert succeeded.transition == Transition("r1", S.SUCCEEDED)
    assert len(succeeded.call_ids) == 1
    assert (await store.record(ev("d3", "r1", S.FAILED), ["h"])).transition is None
    run = await store.get_run("r1")
    assert run is not None
    assert run.status is S.SUCCEEDED


async def test_record_for_an_unknown_run_creates_it(store_factory: Factory) -> None:
    store = await store_factory(default_grace_seconds=42.0)
    result = await store.record(ev("d1", "new-run", S.RUNNING, provider="flow", app="etl"), ["h"])
    assert result.run_created is True
    assert result.transition == Transition("new-run", S.RUNNING)
    run = await store.get_run("new-run")
    assert run is not None
    assert (run.provider, run.application, run.status) == ("flow", "etl", S.RUNNING)
    assert run.grace_seconds == 42.0
    assert run.deadline is None
    assert run.last_event_at is not None
    assert run.next_poll_at == run.last_event_at + timedelta(seconds=42)
    finished = await store.record(ev("d2", "done-run", S.FAILED))
    assert finished.run_created is True
    assert finished.call_ids == ()
    done = await store.get_run("done-run")
    assert done is not None
    assert done.status is S.FAILED
    assert done.next_poll_at is None


async def test_calls_are_enqueued_once_per_handler_and_only_on_a_new_transition(
    store: AnyStore,
) -> None:
    first = await store.record(ev("d1", "r1", S.SUCCEEDED), ["a", "b", "a"])
    assert len(first.call_ids) == 2
    # The same transition reported again by another path (a poll): no new calls.
    again = await store.record(ev("p1", "r1", S.SUCCEEDED, origin=Origin.POLL), ["a", "b"])
    assert again.duplicate is False
    assert again.transition is None
    assert again.call_ids == ()
    calls = (await store.list_calls(run_id="r1")).items
    assert sorted(c.handler for c in calls) == ["a", "b"]
    assert {c.event.delivery_id for c in calls} == {"d1"}
    # A transition with no handlers subscribed is still stored.
    quiet = await store.record(ev("d2", "r2", S.RUNNING), [])
    assert quiet.transition == Transition("r2", S.RUNNING)
    assert quiet.call_ids == ()


async def test_random_event_sequences_follow_next_status(store: AnyStore) -> None:
    rng = random.Random(20240509)
    statuses = list(RunStatus)
    for n in range(12):
        run_id = f"seq{n}"
        expected: RunStatus | None = None
        moves: list[RunStatus] = []
        for i in range(rng.randint(1, 8)):
            status = rng.choice(statuses)
            result = await store.record(ev(f"{run_id}-{i}", run_id, status), ["h"])
            target = next_status(expected, status)
            if target is not None and target not in moves:
                moves.append(target)
                expected = target
                assert result.transition == Transition(run_id, target)
            else:
                assert result.transition is None
            assert result.status is expected
        calls = await store.list_calls(run_id=run_id)
        assert [c.status for c in reversed(calls.items)] == moves


async def test_group_commit_batches_concurrent_records(store: AnyStore) -> None:
    before = store.commits
    events = [ev(f"g{i}", f"run{i % 50}", S.RUNNING if i < 50 else S.SUCCEEDED) for i in range(500)]
    results = await asyncio.gather(*(store.record(e, ["h"]) for e in events))
    assert all(not r.duplicate for r in results)
    counts = await store.counts()
    assert counts.events == 500
    assert counts.runs_by_status["succeeded"] + counts.runs_by_status["running"] == 50
    for e in events[::37]:
        assert await store.get_event(e.delivery_id) == e
    commits = store.commits - before
    # Behaviour, not timing: many callers shared each commit.
    assert 0 < commits < len(events)
    assert store.largest_batch > 1


async def test_a_poll_and_a_stream_telling_the_same_end_at_once_make_one_transition(
    store: AnyStore,
) -> None:
    # Each run's end arrives by poll and by stream in the same instant: the records land in
    # the same batches, and one of each pair must make the transition and its call.
    runs = [f"both{i}" for i in range(40)]
    writes = []
    for run in runs:
        writes.append(store.record(ev(f"poll-{run}", run, S.SUCCEEDED, origin=Origin.POLL), ["h"]))
        writes.append(
            store.record(ev(f"stream-{run}", run, S.SUCCEEDED, origin=Origin.STREAM), ["h"])
        )
    results = await asyncio.gather(*writes)
    for n, run in enumerate(runs):
        pair = results[2 * n : 2 * n + 2]
        assert sorted(r.transition is not None for r in pair) == [False, True], run
        assert all(not r.duplicate for r in pair)
        assert sum(len(r.call_ids) for r in pair) == 1
        calls = await store.list_calls(run_id=run)
        assert [c.status for c in calls.items] == [S.SUCCEEDED]
    assert store.largest_batch > 1


async def test_a_failing_write_in_a_batch_loses_only_itself(store: AnyStore) -> None:
    good = [ev(f"ok{i}", f"ok-run{i}", S.SUCCEEDED) for i in range(40)]
    bad = ev("bad", "bad-run", S.SUCCEEDED)
    writes = [store.record(e, ["h"]) for e in good[:20]]
    writes.append(store.record(bad, [None]))  # type: ignore[list-item]
    writes.extend(store.record(e, ["h"]) for e in good[20:])
    results = await asyncio.gather(*writes, return_exceptions=True)
    failure = results[20]
    assert isinstance(failure, Exception)
    assert not isinstance(failure, StoreUnavailable)
    assert all(not isinstance(r, BaseException) for i, r in enumerate(results) if i != 20)
    assert await store.get_event("bad") is None
    assert await store.get_run("bad-run") is None
    assert (await store.counts()).events == 40
    assert (await store.counts()).calls_by_state["pending"] == 40


# -- unroutable ----------------------------------------------------------------------


async def test_unroutable_deliveries_are_kept_once(store: AnyStore) -> None:
    body = b'{"weird": true}\x00\xff'
    headers = {"content-type": "application/json", "webhook-id": "u1"}
    kw: dict[str, Any] = {"source": "nextmv", "reason": "no run id", "headers": headers}
    assert await store.record_unroutable(delivery_id="u1", body=body, **kw) is True
    assert await store.record_unroutable(delivery_id="u1", body=b"again", **kw) is False
    assert await store.record_unroutable(delivery_id=None, body=b"a", **kw) is True
    assert await store.record_unroutable(delivery_id=None, body=b"b", **kw) is True
    page = await store.list_unroutable(limit=2)
    assert [r.body for r in page.items] == [b"b", b"a"]
    assert page.next_cursor is not None
    rest = await store.list_unroutable(limit=2, cursor=page.next_cursor)
    assert rest.next_cursor is None
    (kept,) = rest.items
    assert (kept.source, kept.delivery_id, kept.reason, kept.body) == (
        "nextmv",
        "u1",
        "no run id",
        body,
    )
    assert kept.headers == headers
    assert kept.received_at.tzinfo == UTC
    assert (await store.counts()).unroutable == 3


# -- handler calls ---------------------------------------------------------------------


async def one_call(store: AnyStore, run_id: str = "r1", handler: str = "h") -> int:
    result = await store.record(ev(f"d-{run_id}", run_id, S.SUCCEEDED), [handler])
    (call_id,) = result.call_ids
    return call_id


async def test_claim_and_complete(store: AnyStore) -> None:
    call_id = await one_call(store)
    t0 = now() + timedelta(seconds=1)
    (call,) = await store.claim_calls("w1", limit=10, lease_seconds=30, now=t0)
    assert call.id == call_id
    assert call.state is CallState.RUNNING
    assert call.attempts == 1
    assert call.lease_owner == "w1"
    assert call.lease_expires_at == t0 + timedelta(seconds=30)
    assert call.event.delivery_id == "d-r1"
    assert await store.claim_calls("w2", limit=10, lease_seconds=30, now=t0) == []
    assert await store.complete_call(call_id, "w2") is False
    assert await store.complete_call(call_id, "w1") is True
    done = await store.get_call(call_id)
    assert done is not None
    assert done.state is CallState.DONE
    assert done.lease_owner is None
    assert await store.complete_call(call_id, "w1") is False
    assert (
        await store.claim_calls("w1", limit=10, lease_seconds=30, now=t0 + timedelta(days=1)) == []
    )


async def test_fail_retries_then_dead_letters(store: AnyStore) -> None:
    call_id = await one_call(store)
    t0 = now() + timedelta(seconds=1)
    await store.claim_calls("w1", limit=1, lease_seconds=30, now=t0)
    retry_at = t0 + timedelta(seconds=10)
    assert await store.fail_call(call_id, "w2", error="nope", retry_at=retry_at) is False
    assert await store.fail_call(call_id, "w1", error="boom", retry_at=retry_at) is True
    waiting = await store.get_call(call_id)
    assert waiting is not None
    assert (waiting.state, waiting.attempts, waiting.last_error) == (CallState.PENDING, 1, "boom")
    assert waiting.next_attempt_at == retry_at
    assert waiting.lease_owner is None
    assert await store.claim_calls("w1", limit=1, lease_seconds=30, now=t0) == []
    (again,) = await store.claim_calls("w1", limit=1, lease_seconds=30, now=retry_at)
    assert again.attempts == 2
    assert await store.fail_call(call_id, "w1", error="still boom", retry_at=None) is True
    dead = await store.get_call(call_id)
    assert dead is not None
    assert dead.state is CallState.DEAD
    assert dead.last_error == "still boom"
    assert await store.fail_call(call_id, "w1", error="x", retry_at=None) is False
    far = t0 + timedelta(days=30)
    assert await store.claim_calls("w1", limit=1, lease_seconds=30, now=far) == []
    assert [c.id for c in (await store.list_calls(state=CallState.DEAD)).items] == [call_id]


async def test_an_expired_lease_makes_a_call_claimable_again(store: AnyStore) -> None:
    call_id = await one_call(store)
    t0 = now() + timedelta(seconds=1)
    await store.claim_calls("w1", limit=5, lease_seconds=30, now=t0)
    assert (
        await store.claim_calls("w2", limit=5, lease_seconds=30, now=t0 + timedelta(seconds=29))
        == []
    )
    (taken,) = await store.claim_calls(
        "w2", limit=5, lease_seconds=30, now=t0 + timedelta(seconds=31)
    )
    assert taken.id == call_id
    assert taken.attempts == 2
    assert taken.lease_owner == "w2"
    # The crashed claimer came back: it no longer holds the call.
    assert await store.complete_call(call_id, "w1") is False
    assert await store.fail_call(call_id, "w1", error="late", retry_at=None) is False
    assert await store.release_call(call_id, "w1") is False
    assert await store.complete_call(call_id, "w2") is True


async def test_release_gives_a_call_back_without_counting_the_attempt(store: AnyStore) -> None:
    call_id = await one_call(store)
    (call,) = await store.claim_calls("w1", limit=1, lease_seconds=30)
    assert call.attempts == 1
    assert await store.release_call(call_id, "w2") is False
    assert await store.release_call(call_id, "w1") is True
    released = await store.get_call(call_id)
    assert released is not None
    assert (released.state, released.attempts, released.lease_owner) == (CallState.PENDING, 0, None)
    (again,) = await store.claim_calls("w2", limit=1, lease_seconds=30)
    assert again.attempts == 1
    assert await store.release_call(call_id, "w1") is False


async def test_replay_makes_dead_and_done_calls_pending(store: AnyStore) -> None:
    dead_id = await one_call(store, "r1")
    done_id = await one_call(store, "r2")
    pending_id = await one_call(store, "r3")
    claimed = await store.claim_calls("w", limit=2, lease_seconds=30)
    assert [c.id for c in claimed] == [dead_id, done_id]
    await store.fail_call(dead_id, "w", error="bad", retry_at=None)
    await store.complete_call(done_id, "w")
    (running,) = await store.claim_calls("w", limit=1, lease_seconds=30)
    assert running.id == pending_id
    assert await store.replay_call(pending_id) is False  # running
    assert await store.replay_call(dead_id) is True
    assert await store.replay_call(dead_id) is False  # pending now
    assert await store.replay_call(done_id) is True
    assert await store.replay_call(999_999) is False
    for call_id in (dead_id, done_id):
        call = await store.get_call(call_id)
        assert call is not None
        assert (call.state, call.attempts, call.replays) == (CallState.PENDING, 0, 1)
    assert {c.id for c in await store.claim_calls("w", limit=9, lease_seconds=5)} == {
        dead_id,
        done_id,
    }


async def test_calls_for_one_run_and_handler_run_in_transition_order(store: AnyStore) -> None:
    first = await store.record(ev("d1", "r1", S.RUNNING), ["a", "b"])
    second = await store.record(ev("d2", "r1", S.SUCCEEDED), ["a", "b"])
    a1, b1 = first.call_ids
    a2, b2 = second.call_ids
    claimed = await store.claim_calls("w", limit=10, lease_seconds=30)
    assert [c.id for c in claimed] == [a1, b1]
    await store.complete_call(a1, "w")
    assert [c.id for c in await store.claim_calls("w", limit=10, lease_seconds=3600)] == [a2]
    # b1 failing and waiting for a retry still holds b2 back.
    retry_at = now() + timedelta(minutes=5)
    await store.fail_call(b1, "w", error="x", retry_at=retry_at)
    assert await store.claim_calls("w", limit=10, lease_seconds=30) == []
    (b1_again,) = await store.claim_calls("w", limit=10, lease_seconds=30, now=retry_at)
    assert b1_again.id == b1
    await store.fail_call(b1, "w", error="x", retry_at=None)  # dead: no longer in the way
    assert [c.id for c in await store.claim_calls("w", limit=10, lease_seconds=30)] == [b2]


async def test_list_calls_filters_and_pages(store: AnyStore) -> None:
    ids: list[int] = []
    for i in range(6):
        ids.extend((await store.record(ev(f"d{i}", f"r{i}", S.SUCCEEDED), ["a", "b"])).call_ids)
    everything = await all_pages(lambda cur: store.list_calls(limit=5, cursor=cur))
    assert [c.id for c in everything] == sorted(ids, reverse=True)
    claimed = await store.claim_calls("w", limit=3, lease_seconds=30)
    for call in claimed:
        await store.fail_call(call.id, "w", error="dead", retry_at=None)
    dead = await all_pages(lambda cur: store.list_calls(state=CallState.DEAD, limit=2, cursor=cur))
    assert sorted(c.id for c in dead) == sorted(c.id for c in claimed)
    only_a = await store.list_calls(handler="a")
    assert {c.handler for c in only_a.items} == {"a"}
    assert len(only_a.items) == 6
    one_run = await store.list_calls(run_id="r2", handler="b")
    assert [(c.run_id, c.handler) for c in one_run.items] == [("r2", "b")]
    assert (await store.list_calls(run_id="nope")).items == []


# -- polling ---------------------------------------------------------------------------


async def test_overdue_after_grace_and_leased_to_one_claimer(store: AnyStore) -> None:
    t0 = now()
    await store.register_run(NewRun("r1", "nextmv", "routing", submitted_at=t0, grace_seconds=10))
    assert (
        await store.claim_overdue_runs(
            "p1", limit=5, lease_seconds=60, now=t0 + timedelta(seconds=9)
        )
        == []
    )
    at = t0 + timedelta(seconds=11)
    (run,) = await store.claim_overdue_runs("p1", limit=5, lease_seconds=60, now=at)
    assert run.run_id == "r1"
    assert run.lease_owner == "p1"
    assert run.lease_expires_at == at + timedelta(seconds=60)
    assert await store.claim_overdue_runs("p2", limit=5, lease_seconds=60, now=at) == []
    later = at + timedelta(seconds=61)
    (taken,) = await store.claim_overdue_runs("p2", limit=5, lease_seconds=60, now=later)
    assert taken.lease_owner == "p2"


async def test_first_poll_comes_early_until_the_platform_speaks(store: AnyStore) -> None:
    t0 = now()
    await store.register_run(
        NewRun("r1", "nextmv", "routing", submitted_at=t0, grace_seconds=600, first_poll_seconds=5)
    )
    fresh = await store.get_run("r1")
    assert fresh is not None
    assert fresh.next_poll_at == t0 + timedelta(seconds=5)
    at = t0 + timedelta(seconds=6)
    (due,) = await store.claim_overdue_runs("p", limit=5, lease_seconds=60, now=at)
    assert due.run_id == "r1"
    # Once the platform has said something, silence is trusted for the whole grace.
    await store.register_run(
        NewRun("r2", "nextmv", "routing", submitted_at=t0, grace_seconds=600, first_poll_seconds=5)
    )
    await store.record(ev("d2", "r2", S.RUNNING))
    heard = await store.get_run("r2")
    assert heard is not None
    assert heard.last_event_at is not None
    assert heard.next_poll_at == heard.last_event_at + timedelta(seconds=600)


async def test_runs_due_soon_can_be_claimed_early_but_leases_hold(store: AnyStore) -> None:
    t0 = now()
    await store.register_run(NewRun("r1", "nextmv", "routing", submitted_at=t0, grace_seconds=10))
    early = t0 + timedelta(seconds=5)
    # Not due at t0+5, but due by t0+15: claimable early.
    assert await store.claim_overdue_runs("p1", limit=5, lease_seconds=60, now=early) == []
    (run,) = await store.claim_overdue_runs(
        "p1", limit=5, lease_seconds=8, now=early, due_by=early + timedelta(seconds=10)
    )
    assert run.lease_expires_at == early + timedelta(seconds=8)
    # Another claimer looking ahead past the lease's end still sees the lease as held.
    later = early + timedelta(seconds=6)
    assert (
        await store.claim_overdue_runs(
            "p2", limit=5, lease_seconds=60, now=later, due_by=later + timedelta(seconds=60)
        )
        == []
    )


async def test_overdue_when_the_deadline_passes(store: AnyStore) -> None:
    t0 = now()
    deadline = t0 + timedelta(seconds=5)
    run = NewRun("r1", "nextmv", "routing", submitted_at=t0, grace_seconds=3600, deadline=deadline)
    await store.register_run(run)
    assert await store.claim_overdue_runs("p", limit=5, lease_seconds=60, now=t0) == []
    (due,) = await store.claim_overdue_runs("p", limit=5, lease_seconds=60, now=deadline)
    assert due.run_id == "r1"


async def test_terminal_runs_are_never_overdue(store: AnyStore) -> None:
    await store.register_run(NewRun("r1", "nextmv", "routing", grace_seconds=0, deadline=now()))
    await store.record(ev("d1", "r1", S.CANCELED))
    far = now() + timedelta(days=365)
    assert await store.claim_overdue_runs("p", limit=5, lease_seconds=60, now=far) == []


async def test_overdue_runs_soonest_first_and_by_provider(store: AnyStore) -> None:
    t0 = now()
    for run_id, provider, grace in [("r1", "nextmv", 20), ("r2", "nextmv", 10), ("r3", "flow", 5)]:
        await store.register_run(
            NewRun(run_id, provider, "app", submitted_at=t0, grace_seconds=grace)
        )
    at = t0 + timedelta(seconds=30)
    (soonest,) = await store.claim_overdue_runs(
        "p", limit=1, lease_seconds=60, provider="nextmv", now=at
    )
    assert soonest.run_id == "r2"
    rest = await store.claim_overdue_runs("p", limit=5, lease_seconds=60, now=at)
    assert [r.run_id for r in rest] == ["r3", "r1"]


async def test_an_event_pushes_the_next_poll_back(store: AnyStore) -> None:
    long_ago = now() - timedelta(hours=1)
    await store.register_run(
        NewRun("r1", "nextmv", "routing", submitted_at=long_ago, grace_seconds=10)
    )
    (_run,) = await store.claim_overdue_runs("p", limit=5, lease_seconds=60)
    assert await store.reschedule_poll("r1", "p", next_poll_at=long_ago, attempts=3)
    await store.record(ev("d1", "r1", S.RUNNING))
    fresh = await store.get_run("r1")
    assert fresh is not None
    assert fresh.last_event_at is not None
    assert fresh.next_poll_at == fresh.last_event_at + timedelta(seconds=10)
    assert fresh.poll_attempts == 0
    assert await store.claim_overdue_runs("p", limit=5, lease_seconds=60) == []
    assert fresh.next_poll_at is not None
    (due,) = await store.claim_overdue_runs("p", limit=5, lease_seconds=60, now=fresh.next_poll_at)
    assert due.run_id == "r1"


async def test_a_terminal_event_clears_the_poll_lease(store: AnyStore) -> None:
    await store.register_run(NewRun("r1", "nextmv", "routing", grace_seconds=0))
    (_run,) = await store.claim_overdue_runs(
        "p", limit=5, lease_seconds=60, now=now() + timedelta(seconds=1)
    )
    await store.record(ev("d1", "r1", S.RUNNING))
    leased = await store.get_run("r1")
    assert leased is not None
    assert leased.lease_owner == "p"
    await store.record(ev("d2", "r1", S.SUCCEEDED))
    done = await store.get_run("r1")
    assert done is not None
    assert done.lease_owner is None
    assert done.next_poll_at is None
    assert await store.reschedule_poll("r1", "p", next_poll_at=now(), attempts=1) is False
    assert await store.release_run("r1", "p") is False


async def test_reschedule_and_release(store: AnyStore) -> None:
    t0 = now()
    await store.register_run(NewRun("r1", "nextmv", "routing", submitted_at=t0, grace_seconds=0))
    await store.claim_overdue_runs("p", limit=5, lease_seconds=60, now=t0)
    next_poll = t0 + timedelta(seconds=40)
    assert await store.reschedule_poll("r1", "other", next_poll_at=next_poll, attempts=2) is False
    assert await store.reschedule_poll("r1", "p", next_poll_at=next_poll, attempts=2) is True
    run = await store.get_run("r1")
    assert run is not None
    assert (run.next_poll_at, run.poll_attempts, run.lease_owner) == (next_poll, 2, None)
    assert await store.claim_overdue_runs("p", limit=5, lease_seconds=60, now=t0) == []
    (_again,) = await store.claim_overdue_runs("p", limit=5, lease_seconds=60, now=next_poll)
    assert await store.release_run("r1", "other") is False
    assert await store.release_run("r1", "p") is True
    released = await store.get_run("r1")
    assert released is not None
    assert released.lease_owner is None
    assert released.next_poll_at == next_poll
    assert released.poll_attempts == 2
    (back,) = await store.claim_overdue_runs("q", limit=5, lease_seconds=60, now=next_poll)
    assert back.lease_owner == "q"


# -- listings and counts ---------------------------------------------------------------


async def test_list_runs_filters_and_pages(store: AnyStore) -> None:
    base = datetime(2025, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)
    providers = ["nextmv", "flow", "workflow"]
    for i in range(25):
        # Every fifth run shares its submission time with the one before: ties break by id.
        moment = base + timedelta(seconds=i - (i % 5 == 4))
        run = NewRun(f"r{i:02d}", providers[i % 3], f"app{i % 2}", submitted_at=moment)
        await store.register_run(run)
    for i in range(0, 25, 4):
        await store.record(ev(f"d{i}", f"r{i:02d}", S.RUNNING, provider=providers[i % 3]))
    everything = await all_pages(lambda cur: store.list_runs(limit=7, cursor=cur))
    keys = [(r.submitted_at, r.run_id) for r in everything]
    assert keys == sorted(keys, reverse=True)
    assert len({r.run_id for r in everything}) == 25
    running = await all_pages(lambda cur: store.list_runs(status=[S.RUNNING], limit=2, cursor=cur))
    assert sorted(r.run_id for r in running) == [f"r{i:02d}" for i in range(0, 25, 4)]
    flow_app1 = await store.list_runs(provider="flow", application="app1")
    assert sorted(r.run_id for r in flow_app1.items) == [
        f"r{i:02d}" for i in range(25) if i % 3 == 1 and i % 2 == 1
    ]
    window = await store.list_runs(
        since=base + timedelta(seconds=10), until=base + timedelta(seconds=15)
    )
    assert sorted(r.run_id for r in window.items) == ["r10", "r11", "r12", "r13", "r14"]
    assert (await store.list_runs(status=[])).items == []
    assert (await store.list_runs(provider="none")).next_cursor is None


async def test_list_events_filters_and_pages(store: AnyStore) -> None:
    first = [
        ev(f"a{i}", f"r{i % 4}", [S.QUEUED, S.RUNNING][i % 2], origin=Origin.WEBHOOK)
        for i in range(12)
    ]
    for e in first:
        await store.record(e)
    between = now()
    second = [
        ev(f"b{i}", f"r{i % 4}", S.SUCCEEDED, app="flow", origin=Origin.POLL) for i in range(9)
    ]
    for e in second:
        await store.record(e)
    everything = await all_pages(lambda cur: store.list_events(limit=4, cursor=cur))
    assert [e.delivery_id for e in everything] == [e.delivery_id for e in reversed(first + second)]
    polled = await all_pages(lambda cur: store.list_events(origin=Origin.POLL, limit=4, cursor=cur))
    assert {e.delivery_id for e in polled} == {e.delivery_id for e in second}
    run1 = await store.list_events(run_id="r1")
    assert {e.delivery_id for e in run1.items} == {
        e.delivery_id for e in first + second if e.run_id == "r1"
    }
    running = await store.list_events(status=[S.RUNNING], provider="nextmv", application="routing")
    assert {e.delivery_id for e in running.items} == {
        e.delivery_id for e in first if e.status is S.RUNNING
    }
    recent = await store.list_events(since=between)
    assert {e.delivery_id for e in recent.items} == {e.delivery_id for e in second}
    older = await store.list_events(until=between)
    assert {e.delivery_id for e in older.items} == {e.delivery_id for e in first}


async def test_bad_arguments_are_refused(store: AnyStore) -> None:
    for bad in ["not a cursor!", "", "WyJjYWxscyIsMV0"]:  # the last is a calls cursor
        with pytest.raises(ValueError, match="cursor"):
            await store.list_runs(cursor=bad)
    with pytest.raises(ValueError, match="limit"):
        await store.list_events(limit=0)
    with pytest.raises(ValueError, match="naive"):
        await store.claim_calls("w", limit=1, lease_seconds=1, now=datetime(2025, 1, 1))


async def test_counts(store: AnyStore) -> None:
    await store.register_run(NewRun("q1", "nextmv", "routing"))
    await store.record(ev("d1", "r1", S.RUNNING), ["a"])
    await store.record(ev("d2", "r2", S.SUCCEEDED), ["a", "b"])
    await store.record(ev("d3", "r2", S.SUCCEEDED))
    await store.record_unroutable(source="s", delivery_id=None, reason="r", body=b"", headers={})
    (_claimed,) = await store.claim_calls("w", limit=1, lease_seconds=30)
    counts = await store.counts()
    assert counts.runs_by_status == {
        "queued": 1,
        "running": 1,
        "succeeded": 1,
        "failed": 0,
        "canceled": 0,
        "expired": 0,
    }
    assert counts.calls_by_state == {"pending": 2, "running": 1, "done": 0, "dead": 0}
    assert (counts.events, counts.unroutable) == (3, 1)


# -- retention ---------------------------------------------------------------------------


async def settle(store: AnyStore, *, dead: frozenset[str] = frozenset()) -> None:
    """Run every due call to its end: dead for the handlers in `dead`, else done."""
    while calls := await store.claim_calls("w", limit=100, lease_seconds=30):
        for call in calls:
            if call.handler in dead:
                assert await store.fail_call(call.id, "w", error="boom", retry_at=None)
            else:
                assert await store.complete_call(call.id, "w")


def soon() -> datetime:
    """A `before` that takes in everything finished so far."""
    return now() + timedelta(seconds=1)


def nothing(more: bool = False) -> PruneCounts:
    return PruneCounts(runs=0, events=0, transitions=0, calls=0, unroutable=0, more=more)


async def test_prune_removes_a_finished_run_with_its_events_transitions_and_calls(
    store: AnyStore, store_url: str
) -> None:
    await store.register_run(NewRun("r1", "nextmv", "routing"))
    await store.record(ev("d1", "r1", S.RUNNING), ["a", "b"])
    await store.record(ev("d2", "r1", S.SUCCEEDED), ["a", "b"])
    await store.record(ev("d3", "r1", S.SUCCEEDED), ["a", "b"])  # no transition, no call
    await settle(store)
    assert len((await store.list_calls(run_id="r1", state=CallState.DONE)).items) == 4

    counts = await store.prune(before=soon())
    assert counts == PruneCounts(runs=1, events=3, transitions=2, calls=4, unroutable=0, more=False)
    assert await store.get_run("r1") is None
    assert [await store.get_event(d) for d in ("d1", "d2", "d3")] == [None, None, None]
    assert (await store.list_events(run_id="r1")).items == []
    assert (await store.list_calls(run_id="r1")).items == []
    assert raw(store_url, "SELECT count(*) FROM transitions") == [(0,)]
    left = await store.counts()
    assert sum(left.runs_by_status.values()) == 0
    assert sum(left.calls_by_state.values()) == 0
    assert left.events == 0
    assert await store.prune(before=soon()) == nothing()


async def test_prune_never_touches_a_run_that_is_not_terminal(store: AnyStore) -> None:
    await store.register_run(NewRun("q1", "nextmv", "routing"))
    await store.record(ev("d1", "r1", S.RUNNING), ["h"])
    await store.record(ev("d2", "r2", S.QUEUED))
    await settle(store)  # r1's call is done, but r1 is still running

    assert await store.prune(before=now() + timedelta(days=365)) == nothing()
    for run_id, status in (("q1", S.QUEUED), ("r1", S.RUNNING), ("r2", S.QUEUED)):
        run = await store.get_run(run_id)
        assert run is not None
        assert run.status is status
    assert await store.get_event("d1") is not None
    assert await store.get_event("d2") is not None
    (call,) = (await store.list_calls(run_id="r1")).items
    assert call.state is CallState.DONE


async def test_prune_keeps_a_finished_run_with_a_dead_call(store: AnyStore) -> None:
    kept = ev("d1", "r1", S.SUCCEEDED)
    await store.record(kept, ["a", "b"])
    await store.record(ev("d2", "r2", S.FAILED), ["a"])
    await settle(store, dead=frozenset({"b"}))  # r1: a done, b dead; r2: a done

    counts = await store.prune(before=soon())
    assert counts == PruneCounts(runs=1, events=1, transitions=1, calls=2, unroutable=0, more=False)
    assert await store.get_run("r2") is None
    assert await store.get_event("d2") is None
    run = await store.get_run("r1")
    assert run is not None
    assert run.status is S.SUCCEEDED
    assert await store.get_event("d1") == kept
    (dead,) = (await store.list_calls(run_id="r1")).items
    assert (dead.handler, dead.state) == ("b", CallState.DEAD)
    assert [c.id for c in (await store.list_calls(state=CallState.DEAD)).items] == [dead.id]
    # The dead letter can still be replayed with its event.
    assert await store.replay_call(dead.id) is True
    (again,) = await store.claim_calls("w", limit=10, lease_seconds=30)
    assert (again.id, again.event.delivery_id) == (dead.id, "d1")


async def test_prune_keeps_a_finished_run_with_a_pending_or_running_call(
    store: AnyStore,
) -> None:
    await store.record(ev("d1", "r1", S.SUCCEEDED), ["h"])
    (claimed,) = await store.claim_calls("w", limit=1, lease_seconds=30)
    await store.record(ev("d2", "r2", S.CANCELED), ["h"])

    assert await store.prune(before=soon()) == nothing()
    assert claimed.run_id == "r1"
    for run_id, delivery, state in (("r1", "d1", CallState.RUNNING), ("r2", "d2", None)):
        assert await store.get_run(run_id) is not None
        assert await store.get_event(delivery) is not None
        (call,) = (await store.list_calls(run_id=run_id)).items
        assert call.state is (state or CallState.PENDING)


async def test_prune_keeps_recent_rows(store: AnyStore) -> None:
    await store.record(ev("d1", "r1", S.SUCCEEDED), ["h"])
    await store.record(ev("d2", "r2", S.EXPIRED))
    await settle(store)
    await store.record_unroutable(source="s", delivery_id="u1", reason="r", body=b"", headers={})

    assert await store.prune(before=now() - timedelta(days=1)) == nothing()
    assert await store.get_run("r1") is not None
    assert await store.get_run("r2") is not None
    assert await store.get_event("d1") is not None
    assert len((await store.list_calls(state=CallState.DONE)).items) == 1
    assert len((await store.list_unroutable()).items) == 1


async def test_prune_removes_old_unroutable_deliveries(store: AnyStore) -> None:
    for i in range(3):
        await store.record_unroutable(
            source="s", delivery_id=f"u{i}", reason="r", body=b"x", headers={}
        )
    assert await store.prune(before=now() - timedelta(days=1)) == nothing()
    counts = await store.prune(before=soon())
    assert counts == PruneCounts(runs=0, events=0, transitions=0, calls=0, unroutable=3, more=False)
    assert (await store.list_unroutable()).items == []
    # Gone, a delivery id may be kept again.
    assert await store.record_unroutable(
        source="s", delivery_id="u0", reason="r", body=b"", headers={}
    )


async def test_prune_works_in_chunks_of_limit(store: AnyStore) -> None:
    for i in range(3):
        await store.record(ev(f"d{i}", f"r{i}", S.SUCCEEDED), ["h"])
    for i in range(3):
        await store.record_unroutable(
            source="s", delivery_id=f"u{i}", reason="r", body=b"", headers={}
        )
    await settle(store)

    first = await store.prune(before=soon(), limit=2)
    assert first == PruneCounts(runs=2, events=2, transitions=2, calls=2, unroutable=2, more=True)
    second = await store.prune(before=soon(), limit=2)
    assert second == PruneCounts(runs=1, events=1, transitions=1, calls=1, unroutable=1, more=False)
    assert await store.prune(before=soon(), limit=2) == nothing()
    assert sum((await store.counts()).runs_by_status.values()) == 0


async def test_prune_says_more_while_any_limit_is_reached(store: AnyStore) -> None:
    # Two runs left without calls, two done calls whose runs stay for a dead call.
    await store.record(ev("d1", "r1", S.SUCCEEDED))
    await store.record(ev("d2", "r2", S.SUCCEEDED))
    await store.record(ev("d3", "r3", S.FAILED), ["a", "b", "x"])
    await settle(store, dead=frozenset({"x"}))

    # Both limits reached: more, though as it happens nothing is left behind.
    first = await store.prune(before=soon(), limit=2)
    assert (first.runs, first.calls, first.more) == (2, 2, True)
    assert await store.prune(before=soon(), limit=2) == nothing()
    assert await store.get_run("r3") is not None


async def test_a_delivery_for_a_pruned_run_creates_it_again(store: AnyStore) -> None:
    await store.register_run(NewRun("r1", "nextmv", "routing", metadata={"team": "ops"}))
    await store.record(ev("d1", "r1", S.SUCCEEDED), ["h"])
    await settle(store)
    assert (await store.prune(before=soon())).runs == 1

    # A retry of the pruned delivery is taken as new.
    retry = ev("d1", "r1", S.SUCCEEDED)
    again = await store.record(retry, ["h"])
    assert again.duplicate is False
    assert again.run_created is True
    assert again.transition == Transition("r1", S.SUCCEEDED)
    assert len(again.call_ids) == 1
    run = await store.get_run("r1")
    assert run is not None
    assert (run.status, run.metadata) == (S.SUCCEEDED, {})
    assert await store.get_event("d1") == retry
    newer = await store.record(ev("d2", "r1", S.SUCCEEDED), ["h"])
    assert (newer.duplicate, newer.run_created, newer.transition) == (False, False, None)


async def test_prune_refuses_bad_arguments(store: AnyStore) -> None:
    await store.record(ev("d1", "r1", S.SUCCEEDED))
    for bad in (0, -1):
        with pytest.raises(ValueError, match="limit"):
            await store.prune(before=soon(), limit=bad)
    with pytest.raises(ValueError, match="naive"):
        await store.prune(before=datetime(2025, 1, 1))
    assert await store.get_run("r1") is not None
    assert (await store.prune(before=soon(), limit=1)).runs == 1


# -- several stores on one database ----------------------------------------------------


async def test_two_stores_never_claim_the_same_call_or_run(store_factory: Factory) -> None:
    one = await store_factory()
    two = await store_factory()
    results = await asyncio.gather(
        *(one.record(ev(f"d{i}", f"r{i}", S.SUCCEEDED), ["h"]) for i in range(120))
    )
    all_calls = {i for r in results for i in r.call_ids}
    t0 = now()
    for i in range(80):
        await two.register_run(
            NewRun(f"poll{i}", "nextmv", "app", submitted_at=t0, grace_seconds=0)
        )

    async def claim_calls(store: AnyStore, owner: str) -> list[int]:
        got: list[int] = []
        while batch := await store.claim_calls(owner, limit=7, lease_seconds=300):
            got.extend(c.id for c in batch)
        return got

    async def claim_runs(store: AnyStore, owner: str) -> list[str]:
        got: list[str] = []
        while batch := await store.claim_overdue_runs(owner, limit=6, lease_seconds=300):
            got.extend(r.run_id for r in batch)
        return got

    calls_a, calls_b, runs_a, runs_b = await asyncio.gather(
        claim_calls(one, "a"), claim_calls(two, "b"), claim_runs(one, "a"), claim_runs(two, "b")
    )
    assert not set(calls_a) & set(calls_b)
    assert len(calls_a) + len(calls_b) == len(all_calls)
    assert set(calls_a) | set(calls_b) == all_calls
    assert not set(runs_a) & set(runs_b)
    assert sorted(runs_a + runs_b) == sorted(f"poll{i}" for i in range(80))


async def test_an_event_from_another_provider_moves_nothing(store: AnyStore) -> None:
    await store.register_run(NewRun("mine", "nextmv", "routing"))
    await store.record(ev("own-1", "mine", S.RUNNING))
    before = await store.counts()
    # One alone, then several at once (which a backend may apply together).
    alone = await store.record(ev("other-1", "mine", S.FAILED, provider="local"), ["h"])
    together = await asyncio.gather(
        *(store.record(ev(f"other-{i}", "mine", S.FAILED, provider="local"), ["h"])
          for i in range(2, 6)),
        store.record(ev("new-run", "theirs", S.FAILED, provider="local"), ["h"]),
    )  # fmt: skip
    for result in (alone, *together[:-1]):
        assert (result.foreign, result.transition, result.status) == (True, None, S.RUNNING)
        assert not result.duplicate
    assert together[-1].run_created
    assert not together[-1].foreign
    after = await store.counts()
    assert after.events == before.events + 1  # only the event of the run it created
    run = await store.get_run("mine")
    assert run is not None
    assert run.status is S.RUNNING
    assert await store.get_event("other-1") is None
    # Its own provider still moves it.
    assert (await store.record(ev("own-2", "mine", S.SUCCEEDED))).transition is not None


async def test_status_calls_count_every_poll_over_the_runs_life(store: AnyStore) -> None:
    long_ago = now() - timedelta(hours=1)
    await store.register_run(NewRun("r1", "nextmv", "routing", submitted_at=long_ago))
    for _ in range(2):  # two polls that learned nothing
        (_run,) = await store.claim_overdue_runs("p", limit=5, lease_seconds=60)
        assert await store.reschedule_poll("r1", "p", next_poll_at=long_ago, attempts=1)
    # A third that learned the run is running, and news by webhook (no status call).
    await store.record(ev("p3", "r1", S.RUNNING, origin=Origin.POLL))
    await store.record(ev("w1", "r1", S.RUNNING))
    run = await store.get_run("r1")
    assert run is not None
    assert (run.status_calls, run.poll_attempts) == (3, 0)
    # Polls recorded together (a backend may batch them) count one each.
    await asyncio.gather(
        *(store.record(ev(f"q{i}", "r1", S.RUNNING, origin=Origin.POLL)) for i in range(4))
    )
    run = await store.get_run("r1")
    assert run is not None
    assert run.status_calls == 7


async def test_a_webhook_episode_moves_once_however_many_processes_decide_it(
    store: AnyStore,
) -> None:
    began = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    assert await store.list_webhook_episodes() == []
    assert await store.move_webhook_episode(
        "nextmv", was_degraded=False, degraded=True, since=began
    )
    # A second process deciding the same move finds it made.
    assert not await store.move_webhook_episode(
        "nextmv", was_degraded=False, degraded=True, since=began + timedelta(seconds=5)
    )
    assert await store.list_webhook_episodes() == [WebhookEpisode("nextmv", True, began)]
    assert await store.move_webhook_episode("nextmv", was_degraded=True, degraded=False, since=None)
    assert not await store.move_webhook_episode(
        "nextmv", was_degraded=True, degraded=False, since=None
    )
    moves = await asyncio.gather(
        *(
            store.move_webhook_episode("local", was_degraded=False, degraded=True, since=began)
            for _ in range(8)
        )
    )
    assert moves.count(True) == 1
    assert await store.list_webhook_episodes() == [
        WebhookEpisode("local", True, began),
        WebhookEpisode("nextmv", False, None),
    ]


async def test_run_ends_say_which_run_and_when_it_was_submitted(store: AnyStore) -> None:
    submitted = now() - timedelta(minutes=10)
    await store.register_run(NewRun("r1", "nextmv", "routing", submitted_at=submitted))
    await store.record(ev("d1", "r1", S.SUCCEEDED))
    # A run first heard of by its end: submitted when first seen.
    await store.record(ev("d2", "r2", S.FAILED, origin=Origin.POLL))
    ends = {e.run_id: e for e in await store.list_run_ends(since=now() - timedelta(hours=1))}
    assert set(ends) == {"r1", "r2"}
    assert ends["r1"].submitted_at == submitted
    assert ends["r2"].submitted_at is not None
    assert ends["r2"].submitted_at > submitted


async def test_polls_of_silent_runs_are_brought_forward(store: AnyStore) -> None:
    t0 = now()
    old, young = t0 - timedelta(minutes=30), t0 - timedelta(minutes=1)
    for run_id, at, app in (
        ("old", old, "routing"),
        ("young", young, "routing"),
        ("other-app", old, "training"),
        ("due-soon", old, "routing"),
        ("leased", old, "routing"),
        ("ended", old, "routing"),
    ):
        await store.register_run(NewRun(run_id, "nextmv", app, submitted_at=at, grace_seconds=3600))
        await store.record(ev(f"{run_id}-running", run_id, S.RUNNING, app=app))
    await store.record(ev("ended-done", "ended", S.SUCCEEDED))
    soon, later = t0 + timedelta(seconds=5), t0 + timedelta(hours=2)
    assert len(await store.claim_overdue_runs("p", limit=10, lease_seconds=60, now=later)) == 5
    await store.reschedule_poll("due-soon", "p", next_poll_at=soon, attempts=0)
    await store.reschedule_poll("leased", "p", next_poll_at=t0 + timedelta(minutes=50), attempts=0)
    for run_id in ("old", "young", "other-app"):
        await store.release_run(run_id, "p")
    # Soonest due first: another poller now holds "due-soon" and "leased".
    held = await store.claim_overdue_runs("q", limit=2, lease_seconds=60, now=later)
    assert {r.run_id for r in held} == {"due-soon", "leased"}
    moved = await store.bring_forward_polls(
        "nextmv",
        "routing",
        submitted_before=t0 - timedelta(minutes=10),
        later_than=t0 + timedelta(seconds=30),
        to=t0,
    )
    assert moved == 1
    runs = {r.run_id: r for r in (await store.list_runs(limit=10)).items}
    assert runs["old"].next_poll_at == t0
    assert runs["young"].next_poll_at is not None
    assert runs["young"].next_poll_at > soon
    assert runs["other-app"].next_poll_at != t0
    assert runs["due-soon"].next_poll_at == soon
    assert runs["leased"].next_poll_at == t0 + timedelta(minutes=50)
    assert runs["ended"].next_poll_at is None
    (due,) = await store.claim_overdue_runs("p", limit=10, lease_seconds=60, now=t0)
    assert due.run_id == "old"


async def test_polls_of_every_other_application_are_brought_forward(store: AnyStore) -> None:
    t0 = now()
    for run_id, app in (("a", "routing"), ("b", "training"), ("c", "planning")):
        await store.register_run(
            NewRun(
                run_id, "nextmv", app, submitted_at=t0 - timedelta(minutes=5), grace_seconds=3600
            )
        )
        await store.record(ev(f"{run_id}-running", run_id, S.RUNNING, app=app))
    later = t0 + timedelta(seconds=30)
    moved = await store.bring_forward_polls(
        "nextmv", None, submitted_before=t0, later_than=later, to=t0, exclude=["routing"]
    )
    assert moved == 2
    due = await store.claim_overdue_runs("p", limit=10, lease_seconds=60, now=t0)
    assert sorted(r.run_id for r in due) == ["b", "c"]
    for run in due:
        await store.release_run(run.run_id, "p")
    assert (
        await store.bring_forward_polls(
            "nextmv", None, submitted_before=t0, later_than=later, to=t0
        )
        == 1
    )  # "a": the others are due already


async def test_a_run_polled_since_its_news_keeps_its_pollers_plan(store: AnyStore) -> None:
    t0 = now()
    far = t0 + timedelta(hours=1)
    await store.register_run(NewRun("r1", "nextmv", "routing", submitted_at=t0, grace_seconds=0))
    await store.claim_overdue_runs("p", limit=1, lease_seconds=60, now=t0)
    await store.reschedule_poll("r1", "p", next_poll_at=far, attempts=1)

    async def bring_forward() -> int:
        return await store.bring_forward_polls(
            "nextmv", "routing", submitted_before=t0, later_than=t0, to=t0
        )

    assert await bring_forward() == 0
    await store.record(ev("d1", "r1", S.RUNNING))  # news: the poll count starts again
    assert await bring_forward() == 1


async def test_a_call_keeps_when_its_last_attempt_started(store: AnyStore) -> None:
    await store.record(ev("d1", "r1", S.SUCCEEDED), ["h", "g"])
    before = now()
    claimed = await store.claim_calls("me", limit=2, lease_seconds=30)
    assert all(c.started_at is not None and c.started_at >= before for c in claimed)
    assert [c.last_duration for c in claimed] == [None, None]  # still running
    done, handed_back = claimed
    assert await store.complete_call(done.id, "me")
    assert await store.release_call(handed_back.id, "me")
    finished = await store.get_call(done.id)
    assert finished is not None
    assert finished.last_duration is not None
    assert finished.last_duration >= 0
    released = await store.get_call(handed_back.id)
    assert released is not None
    assert (released.started_at, released.last_duration) == (None, None)
