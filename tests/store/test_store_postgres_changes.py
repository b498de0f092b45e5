"""PostgreSQL replicas telling each other what they committed (`listener/store/_pg_changes.py`):
the notices a batch sends, and a follower hearing them, across a lost connection too."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable

import psycopg
import pytest
from helpers import WAIT_LIMIT

from listener.events import RunEvent, RunStatus, Transition
from listener.store import Change, RecordResult
from listener.store._pg_changes import (
    MAX_PAYLOAD_CHARS,
    channel_for,
    notices_for,
    parse_notice,
)
from listener.store.postgres import PostgresStore


def result(run_id: str, status: RunStatus | None, calls: tuple[int, ...] = ()) -> RecordResult:
    transition = Transition(run_id, status) if status is not None else None
    return RecordResult(False, False, transition, status or RunStatus.RUNNING, calls)


def test_a_batch_that_enqueued_nothing_and_ended_nothing_sends_no_notice() -> None:
    assert notices_for([result("r1", RunStatus.RUNNING), result("r2", None), "other"]) == []


def test_a_notice_says_whether_calls_wait_and_which_runs_ended() -> None:
    notices = notices_for(
        [result("r1", RunStatus.RUNNING, (1,)), result("r2", RunStatus.FAILED), ValueError()]
    )
    assert [parse_notice(n) for n in notices] == [Change(calls=True, ended=("r2",))]
    assert notices_for([result("r3", RunStatus.SUCCEEDED)]) == [
        json.dumps({"calls": False, "ended": ["r3"]}, separators=(",", ":"))
    ]


def test_many_ended_runs_go_out_in_notices_under_the_size_limit() -> None:
    ended = [result(f"run-{n:05d}-{'x' * 40}", RunStatus.SUCCEEDED, (n,)) for n in range(400)]
    notices = notices_for(ended)
    assert len(notices) > 1
    assert all(len(n) <= MAX_PAYLOAD_CHARS + 50 for n in notices)
    heard = [parse_notice(n) for n in notices]
    assert all(change is not None and change.calls for change in heard)
    runs = [run for change in heard if change is not None for run in change.ended]
    assert runs == [r.transition.run_id for r in ended if r.transition is not None]


def test_a_notice_this_version_cannot_read_is_ignored() -> None:
    assert parse_notice("not json") is None
    assert parse_notice("[1, 2]") is None
    assert parse_notice('{"calls": true}') == Change(calls=True)


def test_each_schema_has_its_own_short_plain_channel() -> None:
    channels = {channel_for(schema) for schema in ("public", "t_1", 'odd "schema"', "")}
    assert len(channels) == 4
    assert all(len(c) <= 63 and c.replace("_", "").isalnum() for c in channels)


async def heard(changes: list[Change], check: Callable[[list[Change]], bool]) -> None:
    async with asyncio.timeout(WAIT_LIMIT):
        while not check(changes):
            await asyncio.sleep(0.02)


@pytest.fixture
async def replicas(pg_schema_url: str) -> AsyncIterator[tuple[PostgresStore, PostgresStore]]:
    follower, writer = PostgresStore(pg_schema_url), PostgresStore(pg_schema_url)
    await follower.open()
    await writer.open()
    try:
        yield follower, writer
    finally:
        await writer.close()
        await follower.close()


def ended_runs(changes: list[Change]) -> list[str]:
    return [run for change in changes for run in change.ended]


@pytest.mark.parametrize("group_commit", [True, False])
async def test_a_replica_hears_calls_enqueued_and_runs_ended_by_another(
    pg_schema_url: str, group_commit: bool
) -> None:
    follower = PostgresStore(pg_schema_url)
    writer = PostgresStore(pg_schema_url, group_commit=group_commit)
    await follower.open()
    await writer.open()
    changes: list[Change] = []
    task = asyncio.create_task(follower.follow_changes(changes.append))
    try:
        # Once following, it says calls may be waiting (it cannot know what it missed).
        await heard(changes, lambda seen: Change(calls=True) in seen)
        await writer.record(RunEvent("d1", "nextmv", "routing", "r1", RunStatus.RUNNING), ["h"])
        await writer.record(RunEvent("d2", "nextmv", "routing", "r1", RunStatus.SUCCEEDED))
        await heard(changes, lambda seen: ended_runs(seen) == ["r1"])
        assert changes[-2:] == [Change(calls=True), Change(calls=False, ended=("r1",))]
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await writer.close()
        await follower.close()


async def test_a_follower_whose_connection_is_lost_connects_again(
    replicas: tuple[PostgresStore, PostgresStore], pg_base_url: str
) -> None:
    follower, writer = replicas
    changes: list[Change] = []
    task = asyncio.create_task(follower.follow_changes(changes.append))
    try:
        await heard(changes, lambda seen: len(seen) == 1)
        channel = channel_for(follower.url.rsplit("%3D", 1)[1])
        with psycopg.connect(pg_base_url, autocommit=True) as admin:
            ended = admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE application_name = 'listener-changes' AND query = %s",
                [f'LISTEN "{channel}"'],
            ).fetchall()
        assert ended == [(True,)]
        # Back: it says calls may be waiting again, then hears what is committed next.
        await heard(changes, lambda seen: len(seen) == 2)
        await writer.record(RunEvent("d1", "nextmv", "routing", "r9", RunStatus.FAILED))
        await heard(changes, lambda seen: ended_runs(seen) == ["r9"])
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
