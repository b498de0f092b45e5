"""Listener replicas on one PostgreSQL store, woken by each other's commits
(`listener/following.py`): with sweeps and reads an hour apart, a handler call and a
wait still complete at once. Each wait is bounded (WAIT_LIMIT) and never judged for speed."""

from __future__ import annotations

import asyncio
from pathlib import Path

import psycopg
from helpers import WAIT_LIMIT

from listener import DispatchSettings, Listener, PollSettings, RunEvent, RunStatus
from listener.store import Change, open_store
from listener.store._pg_changes import channel_for

HOUR = 3600.0


def replica(url: str, dispatch: DispatchSettings, seen: list[str]) -> Listener:
    listener = Listener(store_url=url, dispatch=dispatch, poll=PollSettings(enabled=False))

    @listener.on_any(name="tests.seen")
    async def handler(event: RunEvent) -> None:
        seen.append(event.run_id)

    return listener


async def following(base_url: str, channel: str, count: int) -> None:
    """Until `count` connections listen on `channel`."""
    async with asyncio.timeout(WAIT_LIMIT):
        while True:
            async with await psycopg.AsyncConnection.connect(base_url, autocommit=True) as conn:
                cur = await conn.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE query = %s",
                    [f'LISTEN "{channel}"'],
                )
                row = await cur.fetchone()
            if row is not None and row[0] >= count:
                return
            await asyncio.sleep(0.05)


async def test_a_replica_runs_handlers_and_ends_waits_for_what_another_recorded(
    pg_schema_url: str, pg_base_url: str
) -> None:
    seen: list[str] = []
    worker = replica(pg_schema_url, DispatchSettings(sweep_interval=HOUR), seen)
    receiver = replica(pg_schema_url, DispatchSettings(enabled=False), seen)
    async with worker, receiver:
        worker.client.poll_interval = HOUR
        await following(pg_base_url, channel_for(pg_schema_url.rsplit("%3D", 1)[1]), 2)
        waiting = asyncio.create_task(worker.client.wait("r1"))
        await asyncio.sleep(0)  # the wait reads the run (not there yet) and sleeps
        await receiver.record(RunEvent("d1", "local", "routing", "r1", RunStatus.SUCCEEDED))
        async with asyncio.timeout(WAIT_LIMIT):
            ended = await waiting
            while seen != ["r1"]:
                await asyncio.sleep(0.02)
        assert ended.delivery_id == "d1"
        assert ended.status is RunStatus.SUCCEEDED


async def test_a_store_with_no_feed_returns_from_following_at_once(tmp_path: Path) -> None:
    store = await open_store(f"sqlite:///{tmp_path / 'x.db'}")
    changes: list[Change] = []
    try:
        async with asyncio.timeout(WAIT_LIMIT):
            await store.follow_changes(changes.append)
    finally:
        await store.close()
    assert changes == []
