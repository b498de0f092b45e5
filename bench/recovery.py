"""Bulk recovery: dead calls replayed a second in chunks against one `replay_call` each,
and past transitions backfilled a second.

    python bench/recovery.py [--calls N] [--chunk-size C]

For each backend, N failed runs each get one dead-lettered call. The baseline replays
them one at a time through `Store.replay_call` (what `listener replay CALL_ID` does,
called N times); the candidate is `recovery.replay_calls` over the same filter, C calls a
chunk. The store is filled again between the two, so both replay the same N calls. Then
a handler added later is backfilled over the N transitions (`recovery.backfill`), and
run again, when every transition already has its call.

SQLite runs on a file in a temporary directory (`synchronous=FULL`); PostgreSQL uses
LISTENER_TEST_POSTGRES_URL or the local default, in a throwaway schema, and is left out
when unreachable. The script reports; it always exits 0.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
import urllib.parse
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from listener.events import RunEvent, RunStatus
from listener.recovery import CallFilter, backfill, replay_calls
from listener.registry import Handlers
from listener.store.base import CallState
from listener.store.postgres import PostgresStore
from listener.store.sqlite import SQLiteStore

DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"


async def fill(store: Any, calls: int, tag: str) -> None:
    """`calls` failed runs, each with one dead call of `bench.alert` (calls replayed
    before, pending again, are completed)."""
    for i in range(calls):
        event = RunEvent(f"{tag}-{i}", "nextmv", "routing", f"{tag}-run-{i}", RunStatus.FAILED)
        await store.record(event, ["bench.alert"])
    # A few at once: the PostgreSQL pool hands out ten connections.
    while claimed := await store.claim_calls("bench", limit=8, lease_seconds=600):
        await asyncio.gather(
            *(
                store.fail_call(c.id, "bench", error="x", retry_at=None)
                if c.run_id.startswith(f"{tag}-")
                else store.complete_call(c.id, "bench")
                for c in claimed
            )
        )


async def dead_ids(store: Any) -> list[int]:
    ids: list[int] = []
    after = 0
    while chunk := await store.find_calls(states=[CallState.DEAD], after_id=after, limit=1000):
        ids.extend(chunk)
        after = chunk[-1]
    return ids


async def run_backend(name: str, make: Any, calls: int, chunk_size: int) -> list[str]:
    store = make()
    await store.open()
    try:
        await fill(store, calls, "a")
        ids = await dead_ids(store)
        started = time.perf_counter()
        for call_id in ids:
            await store.replay_call(call_id)
        one_by_one = time.perf_counter() - started

        await fill(store, calls, "b")
        started = time.perf_counter()
        counts = await replay_calls(store, CallFilter(), chunk_size=chunk_size)
        bulk = time.perf_counter() - started
        assert counts.replayed == calls, counts

        handlers = Handlers()
        handlers.add(lambda event: None, "failed", name="bench.archive")
        since = datetime.now(UTC) - timedelta(hours=1)
        started = time.perf_counter()
        first = await backfill(store, handlers, "bench.archive", since=since, chunk_size=chunk_size)
        backfilled = time.perf_counter() - started
        started = time.perf_counter()
        rerun = await backfill(store, handlers, "bench.archive", since=since, chunk_size=chunk_size)
        rerun_seconds = time.perf_counter() - started
        assert (first.enqueued, rerun.enqueued) == (2 * calls, 0), (first, rerun)
    finally:
        await store.close()
    transitions = first.scanned
    return [
        f"{name:<10} replay one by one {calls / one_by_one:9.0f} calls/s"
        f"   bulk {calls / bulk:9.0f} calls/s   {one_by_one / bulk:5.1f}x",
        f"{name:<10} backfill {transitions / backfilled:9.0f} transitions/s"
        f"   rerun (nothing to enqueue) {transitions / rerun_seconds:9.0f} transitions/s",
    ]


def with_search_path(url: str, schema: str) -> str:
    parts = urllib.parse.urlsplit(url)
    query = [*urllib.parse.parse_qsl(parts.query), ("options", f"-csearch_path={schema}")]
    return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query)))


async def main(calls: int, chunk_size: int) -> None:
    with tempfile.TemporaryDirectory() as directory:
        url = f"sqlite:///{Path(directory) / 'bench.db'}"
        for line in await run_backend("SQLite", lambda: SQLiteStore(url), calls, chunk_size):
            print(line)
    import psycopg

    base = os.environ.get("LISTENER_TEST_POSTGRES_URL") or DEFAULT_POSTGRES_URL
    try:
        with psycopg.connect(base, connect_timeout=3, autocommit=True) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        print(f"PostgreSQL    left out: {type(exc).__name__}")
        return
    schema = f"bench_{uuid.uuid4().hex}"
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    try:
        pg_url = with_search_path(base, schema)
        for line in await run_backend(
            "PostgreSQL", lambda: PostgresStore(pg_url), calls, chunk_size
        ):
            print(line)
    finally:
        with psycopg.connect(base, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def cli(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--chunk-size", type=int, default=500)
    args = parser.parse_args(argv)
    asyncio.run(main(args.calls, args.chunk_size))


if __name__ == "__main__":
    cli()
