"""Bulk recovery over both backends: replay by filter, backfill, unroutable reprocessing;
each in chunks, stopped after its first chunk and run again, with every total exactly once."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from listener.errors import PayloadNotUnderstood, RecoveryError
from listener.events import RunEvent, RunStatus
from listener.recording import EventRecorder
from listener.recovery import (
    BackfillCounts,
    CallFilter,
    ReplayCounts,
    ReprocessCounts,
    backfill,
    check_handler_names,
    counts_dict,
    replay_calls,
    reprocess_unroutable,
)
from listener.registry import Handlers
from listener.signatures import StandardWebhooks, generate_hmac_secret
from listener.sources import Source
from listener.store.base import CallState, Store

NOW = datetime(2026, 12, 7, 6, 0, tzinfo=UTC)


class Stop(Exception):
    """Raised by a progress callback: the operation ends after that chunk."""


def stop_after_first(counts: object) -> None:
    raise Stop


async def dead_calls(store: Store, specs: list[tuple[str, str, str]]) -> list[int]:
    """One failed run per (run id, provider, handler), its call dead-lettered."""
    for index, (run_id, provider, handler) in enumerate(specs):
        event = RunEvent(f"d-{index}", provider, "routing", run_id, RunStatus.FAILED)
        await store.record(event, [handler])
    claimed = await store.claim_calls("t", limit=100, lease_seconds=60)
    for call in claimed:
        await store.fail_call(call.id, "t", error="boom", retry_at=None)
    return sorted(call.id for call in claimed)


# -- the filter ---------------------------------------------------------------------------


def test_the_filter_reads_what_an_operator_writes() -> None:
    f = CallFilter.parse(states=["dead", "done"], handlers=["a.x"], since="2h", now=NOW)
    assert f.states == (CallState.DEAD, CallState.DONE)
    assert f.handlers == ("a.x",)
    assert (f.since, f.until) == (NOW - timedelta(hours=2), NOW)
    at = CallFilter.parse(since="2026-12-07T04:00:00Z", until="2026-12-07T05:00", now=NOW)
    assert (at.since, at.until) == (NOW - timedelta(hours=2), NOW - timedelta(hours=1))


def test_counts_are_plain_data_for_any_front_end() -> None:
    f = CallFilter.parse(states=["done"], since="2h", now=NOW)
    data = counts_dict(ReplayCounts(filter=f, matched=3))
    assert json.loads(json.dumps(data)) == data
    assert data["filter"]["states"] == ["done"]
    assert data["filter"]["until"] == NOW.isoformat()
    assert (data["matched"], data["interrupted"]) == (3, False)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"states": ["pending"]}, "state 'pending' cannot be replayed"),
        ({"states": ["running", "dead"]}, "state 'running' cannot be replayed"),
        ({"states": []}, "name at least one state"),
        ({"since": "yesterday"}, "--since: 'yesterday' is neither a duration"),
        ({"until": "2h", "since": "1h"}, "the window is empty"),
        ({"handlers": [""]}, "handler names must be non-empty"),
        ({"provider": ""}, "provider must not be empty"),
    ],
)
def test_a_bad_filter_says_what_is_wrong(kwargs: Mapping[str, Any], message: str) -> None:
    with pytest.raises(RecoveryError, match=message):
        CallFilter.parse(now=NOW, **kwargs)


# -- replay -------------------------------------------------------------------------------


async def test_replay_by_filter_counts_first_then_replays_once(store: Store) -> None:
    ids = await dead_calls(
        store,
        [("r1", "nextmv", "a.x"), ("r2", "nextmv", "a.y"), ("r3", "local", "a.x")],
    )
    by_x = CallFilter(handlers=("a.x",))
    dry = await replay_calls(store, by_x, dry_run=True)
    assert (dry.matched, dry.replayed, dry.dry_run) == (2, 0, True)
    assert all(call.state is CallState.DEAD for call in (await store.list_calls()).items)

    nextmv_x = CallFilter(handlers=("a.x",), provider="nextmv")
    done = await replay_calls(store, nextmv_x)
    assert (done.matched, done.replayed, done.skipped) == (1, 1, 0)
    assert done.filter.until is not None  # the window got its end when it started
    states = {call.id: call.state for call in (await store.list_calls()).items}
    assert states == {ids[0]: CallState.PENDING, ids[1]: CallState.DEAD, ids[2]: CallState.DEAD}
    # Run again, the replayed call is pending: nothing more.
    again = await replay_calls(store, nextmv_x)
    assert (again.matched, again.replayed) == (0, 0)


async def test_replay_of_a_call_already_pending_is_a_no_op(store: Store) -> None:
    [call_id] = await dead_calls(store, [("r1", "nextmv", "a.x")])
    assert await store.replay_call(call_id)
    assert await store.replay_calls([call_id]) == []
    call = await store.get_call(call_id)
    assert call is not None
    assert call.replays == 1


async def test_replay_takes_a_time_window_on_when_the_call_last_changed(store: Store) -> None:
    await dead_calls(store, [("r1", "nextmv", "a.x")])
    later = datetime.now(UTC) + timedelta(hours=1)
    past = await replay_calls(store, CallFilter(until=later - timedelta(hours=2)))
    assert past.matched == 0
    now = await replay_calls(store, CallFilter(since=later - timedelta(hours=2), until=later))
    assert now.replayed == 1


async def test_replay_stopped_after_a_chunk_continues_on_rerun(store: Store) -> None:
    ids = await dead_calls(store, [(f"r{i}", "nextmv", "a.x") for i in range(5)])
    window = CallFilter().fixed()
    with pytest.raises(Stop):
        await replay_calls(store, window, chunk_size=2, progress=stop_after_first)
    seen: list[ReplayCounts] = []
    rest = await replay_calls(store, window, chunk_size=2, progress=seen.append)
    assert (rest.matched, rest.replayed, rest.chunks) == (3, 3, 2)
    assert [counts.replayed for counts in seen] == [2, 3]
    calls = [await store.get_call(call_id) for call_id in ids]
    assert [(c.state, c.replays) for c in calls if c is not None] == [(CallState.PENDING, 1)] * 5


async def test_should_stop_ends_between_chunks_with_what_was_done(store: Store) -> None:
    await dead_calls(store, [(f"r{i}", "nextmv", "a.x") for i in range(3)])
    asked: list[int] = []

    def should_stop() -> bool:
        asked.append(1)
        return len(asked) > 1

    counts = await replay_calls(store, CallFilter(), chunk_size=1, should_stop=should_stop)
    assert (counts.replayed, counts.interrupted) == (1, True)


async def test_a_handler_name_must_be_registered_or_stored(store: Store) -> None:
    await dead_calls(store, [("r1", "nextmv", "gone.handler")])
    handlers = Handlers()

    @handlers.on("failed", name="app.alert")
    def alert(event: RunEvent) -> None: ...

    await check_handler_names(store, handlers, ["app.alert", "gone.handler"])
    with pytest.raises(RecoveryError, match=r"unknown handler 'app\.typo'.*registered: app\.alert"):
        await check_handler_names(store, handlers, ["app.typo"])


# -- backfill -----------------------------------------------------------------------------


def later_handler() -> Handlers:
    handlers = Handlers()

    @handlers.on("succeeded", provider="nextmv", name="app.archive")
    def archive(event: RunEvent) -> None: ...

    return handlers


async def ended_runs(store: Store, count: int) -> None:
    """`count` nextmv runs that succeeded, one local one that succeeded, one that failed."""
    for index in range(count):
        await store.record(
            RunEvent(f"ok-{index}", "nextmv", "routing", f"n{index}", RunStatus.SUCCEEDED),
            ["app.log"],
        )
    await store.record(RunEvent("ok-local", "local", "routing", "l1", RunStatus.SUCCEEDED))
    await store.record(RunEvent("bad", "nextmv", "routing", "f1", RunStatus.FAILED))


async def test_backfill_enqueues_a_call_per_matching_transition_once(store: Store) -> None:
    await ended_runs(store, 3)
    since = datetime.now(UTC) - timedelta(hours=1)
    handlers = later_handler()
    dry = await backfill(store, handlers, "app.archive", since=since, dry_run=True)
    assert (dry.scanned, dry.matched, dry.enqueued) == (5, 3, 0)
    assert (await store.list_calls(handler="app.archive")).items == []

    done = await backfill(store, handlers, "app.archive", since=since)
    assert (done.scanned, done.matched, done.enqueued, done.already) == (5, 3, 3, 0)
    calls = (await store.list_calls(handler="app.archive")).items
    assert sorted(call.run_id for call in calls) == ["n0", "n1", "n2"]
    assert {(call.state, call.status, call.event.provider) for call in calls} == {
        (CallState.PENDING, RunStatus.SUCCEEDED, "nextmv")
    }
    again = await backfill(store, handlers, "app.archive", since=since)
    assert (again.enqueued, again.already) == (0, 3)
    # Transitions before the window are not touched.
    none = await backfill(store, handlers, "app.archive", since=datetime.now(UTC))
    assert none.scanned == 0


async def test_backfill_stopped_after_a_chunk_enqueues_each_once_on_rerun(store: Store) -> None:
    await ended_runs(store, 7)
    since = datetime.now(UTC) - timedelta(hours=1)
    until = datetime.now(UTC) + timedelta(seconds=1)
    handlers = later_handler()
    with pytest.raises(Stop):
        await backfill(
            store,
            handlers,
            "app.archive",
            since=since,
            until=until,
            chunk_size=3,
            progress=stop_after_first,
        )
    assert len((await store.list_calls(handler="app.archive")).items) == 3
    seen: list[BackfillCounts] = []
    rest = await backfill(
        store, handlers, "app.archive", since=since, until=until, chunk_size=3, progress=seen.append
    )
    assert (rest.scanned, rest.matched, rest.enqueued, rest.already) == (9, 7, 4, 3)
    assert [counts.scanned for counts in seen] == [3, 6, 9]
    calls = (await store.list_calls(handler="app.archive")).items
    assert sorted(call.run_id for call in calls) == [f"n{i}" for i in range(7)]


async def test_backfill_counts_calls_under_an_earlier_name(store: Store) -> None:
    await store.record(
        RunEvent("ok", "nextmv", "routing", "n1", RunStatus.SUCCEEDED), ["old.archive"]
    )
    handlers = Handlers()
    handler = handlers.add(lambda event: None, "succeeded", name="app.archive")
    object.__setattr__(handler, "aliases", ("old.archive",))
    since = datetime.now(UTC) - timedelta(hours=1)
    counts = await backfill(store, handlers, "app.archive", since=since)
    assert (counts.matched, counts.enqueued, counts.already) == (1, 0, 1)


async def test_backfill_of_an_unknown_handler_names_the_known_ones(store: Store) -> None:
    since = datetime.now(UTC) - timedelta(hours=1)
    with pytest.raises(RecoveryError, match=r"unknown handler 'app\.nope'.*register app\.archive"):
        await backfill(store, later_handler(), "app.nope", since=since)
    with pytest.raises(RecoveryError, match="chunk size must be 1 to 1000"):
        await backfill(store, later_handler(), "app.archive", since=since, chunk_size=0)


# -- unroutable deliveries ------------------------------------------------------------------


def strict_parser(payload: Any, *, delivery_id: str) -> RunEvent:
    raise PayloadNotUnderstood("no run id")


def fixed_parser(payload: Any, *, delivery_id: str) -> RunEvent:
    if "job" not in payload:
        raise PayloadNotUnderstood("still no run id")
    return RunEvent(delivery_id, "local", "routing", payload["job"], RunStatus(payload["state"]))


def acme(parser: Any) -> Source:
    """A signed source reading payloads with `parser`."""
    return Source("acme", "local", StandardWebhooks([generate_hmac_secret()]), parser=parser)


async def keep_unroutable(store: Store, bodies: list[dict[str, Any]]) -> None:
    for index, body in enumerate(bodies):
        await store.record_unroutable(
            source="acme",
            delivery_id=f"acme:{index}",
            reason="PayloadNotUnderstood: no run id",
            body=json.dumps(body).encode(),
            headers={},
        )


def notify_on_success() -> EventRecorder:
    handlers = Handlers()

    @handlers.on("succeeded", name="app.notify")
    def notify(event: RunEvent) -> None: ...

    return EventRecorder(handlers)


async def test_reprocess_records_what_the_fixed_parser_reads(store: Store) -> None:
    bodies = [{"job": f"j{i}", "state": "succeeded"} for i in range(3)] + [{"other": 1}]
    await keep_unroutable(store, bodies)
    await store.record_unroutable(
        source="gone", delivery_id="gone:1", reason="r", body=b"{}", headers={}
    )
    recorder = notify_on_success()
    sources = {"acme": acme(fixed_parser)}
    dry = await reprocess_unroutable(store, recorder, sources, dry_run=True)
    assert (dry.scanned, dry.recorded, dry.unroutable, dry.skipped) == (5, 3, 1, 1)
    assert (await store.counts()).events == 0

    done = await reprocess_unroutable(store, recorder, sources)
    assert (done.recorded, done.duplicate, done.calls, done.unroutable, done.skipped) == (
        3,
        0,
        3,
        1,
        1,
    )
    events = (await store.list_events()).items
    assert sorted((e.run_id, e.delivery_id) for e in events) == [
        ("j0", "acme:0"),
        ("j1", "acme:1"),
        ("j2", "acme:2"),
    ]
    assert len((await store.list_calls(handler="app.notify")).items) == 3
    kept = {row.source: row.reason for row in (await store.list_unroutable()).items}
    assert kept == {"acme": "PayloadNotUnderstood: still no run id", "gone": "r"}
    again = await reprocess_unroutable(store, recorder, sources)
    assert (again.scanned, again.recorded, again.unroutable) == (2, 0, 1)


async def test_reprocess_stopped_after_a_chunk_records_each_once_on_rerun(store: Store) -> None:
    await keep_unroutable(store, [{"job": f"j{i}", "state": "succeeded"} for i in range(5)])
    recorder = notify_on_success()
    sources = {"acme": acme(fixed_parser)}
    with pytest.raises(Stop):
        await reprocess_unroutable(
            store, recorder, sources, chunk_size=2, progress=stop_after_first
        )
    seen: list[ReprocessCounts] = []
    rest = await reprocess_unroutable(store, recorder, sources, chunk_size=2, progress=seen.append)
    assert (rest.scanned, rest.recorded, rest.chunks) == (3, 3, 2)
    assert (await store.counts()).events == 5
    assert len((await store.list_calls(handler="app.notify")).items) == 5
    assert (await store.list_unroutable()).items == []


async def test_a_delivery_recorded_before_its_row_went_is_only_removed(store: Store) -> None:
    # A stop between the record and the row's deletion: the rerun finds the event stored.
    await keep_unroutable(store, [{"job": "j0", "state": "succeeded"}])
    recorder = notify_on_success()
    await recorder.record(
        store, fixed_parser({"job": "j0", "state": "succeeded"}, delivery_id="acme:0")
    )
    counts = await reprocess_unroutable(store, recorder, {"acme": acme(fixed_parser)})
    assert (counts.recorded, counts.duplicate) == (0, 1)
    assert (await store.list_unroutable()).items == []
    assert len((await store.list_calls(handler="app.notify")).items) == 1


async def test_a_token_source_and_a_still_broken_parser_keep_their_rows(store: Store) -> None:
    await keep_unroutable(store, [{"job": "j0", "state": "succeeded"}])
    recorder = notify_on_success()
    token = {"acme": Source("acme", "local", parser=fixed_parser, scheme=None)}
    assert token["acme"].uses_token
    skipped = await reprocess_unroutable(store, recorder, token)
    assert (skipped.skipped, skipped.recorded) == (1, 0)
    broken = await reprocess_unroutable(store, recorder, {"acme": acme(strict_parser)})
    assert (broken.unroutable, broken.recorded) == (1, 0)
    assert [row.reason for row in (await store.list_unroutable()).items] == [
        "PayloadNotUnderstood: no run id"
    ]


# -- the store's side -------------------------------------------------------------------------


async def test_transitions_are_walked_oldest_first_in_pages(store: Store) -> None:
    await ended_runs(store, 4)
    since = datetime.now(UTC) - timedelta(hours=1)
    seen: list[tuple[str, RunStatus]] = []
    cursor: str | None = None
    pages = 0
    while True:
        page = await store.list_transitions(since=since, limit=2, cursor=cursor)
        seen.extend((past.run_id, past.status) for past in page.items)
        pages += 1
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert pages == 3
    assert len(seen) == len(set(seen)) == 6
    assert {past for past in seen if past[0] == "f1"} == {("f1", RunStatus.FAILED)}


async def test_concurrent_enqueues_of_one_handler_make_one_call_each(
    store_factory: Any,
) -> None:
    first, second = await store_factory(), await store_factory()
    await ended_runs(first, 20)
    since = datetime.now(UTC) - timedelta(hours=1)
    page = await first.list_transitions(since=since, limit=100)
    transitions = [past.transition for past in page.items]
    made = await asyncio.gather(
        first.enqueue_calls("app.archive", transitions),
        second.enqueue_calls("app.archive", list(reversed(transitions))),
    )
    assert sum(len(ids) for ids in made) == len(transitions)
    calls = (await first.list_calls(handler="app.archive", limit=100)).items
    assert len({(call.run_id, call.status) for call in calls}) == len(calls) == 22
