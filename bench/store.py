"""Events recorded per second: group commit against one transaction per event.

    python bench/store.py [--events N] [--concurrency C]

Each candidate records the same workload: N new events, each for a new run reaching a
terminal status with two handlers subscribed (so one event, one run, one transition and two
handler calls are written per `record`), from C concurrent callers, the way the receiver
calls the store while many webhooks arrive at once.

* group commit: the store as shipped. Concurrent calls queue for its writer thread, which
  commits whatever is queued meanwhile in one transaction.
* one per event: the same store built with `group_commit=False`: the same SQL, but every
  event is committed alone. SQLite runs them one after another on its writer thread (one
  writer at a time is all SQLite allows); PostgreSQL runs them concurrently on its pool's
  connections, as a plain per-request transaction would.

Each row also says how many bytes the store holds per event afterwards (the event, its
run, its transition and two handler calls, with their indexes): what a run costs on disk
until retention prunes it.

SQLite runs on a file in a temporary directory with `synchronous=FULL`, the store's
default; PostgreSQL uses LISTENER_TEST_POSTGRES_URL or the local default, in a throwaway
schema, and is left out when unreachable. The target is group commit at least 5x the
per-event path on each backend. The script reports; it always exits 0.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
import tempfile
import time
import urllib.parse
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from listener.events import RunEvent, RunStatus
from listener.store.postgres import PostgresStore
from listener.store.sqlite import SQLiteStore

DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"
HANDLERS = ("notify", "save")
TARGET = 5.0
WARMUP = 50


@dataclass
class Result:
    backend: str
    mode: str
    events: int
    seconds: float
    commits: int
    # Bytes the store holds afterwards (tables and indexes, the warm-up's rows included).
    stored: int = 0

    @property
    def rate(self) -> float:
        return self.events / self.seconds

    @property
    def bytes_per_event(self) -> float:
        return self.stored / (self.events + WARMUP)


def make_event(tag: str, i: int) -> RunEvent:
    return RunEvent(
        delivery_id=f"{tag}-d{i}",
        provider="nextmv",
        application="routing",
        run_id=f"{tag}-r{i}",
        status=RunStatus.SUCCEEDED,
        payload={"run_id": f"{tag}-r{i}", "status_v2": "succeeded", "metadata": {"n": i}},
    )


async def drive(store: Any, tag: str, events: int, concurrency: int) -> float:
    """Seconds to record `events` events from `concurrency` concurrent callers."""
    for i in range(WARMUP):
        await store.record(make_event(f"{tag}-warm", i), HANDLERS)
    todo = iter(range(events))

    async def caller() -> None:
        for i in todo:
            await store.record(make_event(tag, i), HANDLERS)

    started = time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    assert (await store.counts()).events == events + WARMUP
    return elapsed


async def bench_sqlite(events: int, concurrency: int) -> list[Result]:
    results = []
    workdir = tempfile.mkdtemp(prefix="listener-bench-")
    try:
        for mode, group in [("one per event", False), ("group commit", True)]:
            path = Path(workdir) / f"{'group' if group else 'naive'}.db"
            store = SQLiteStore(f"sqlite:///{path}", group_commit=group)
            await store.open()
            try:
                seconds = await drive(store, mode[:5], events, concurrency)
                commits = store.commits
            finally:
                await store.close()
            results.append(Result("sqlite", mode, events, seconds, commits, sqlite_bytes(path)))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return results


def sqlite_bytes(path: Path) -> int:
    """The database file's size once its write-ahead log is folded in."""
    import sqlite3

    conn = sqlite3.connect(path)
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
    finally:
        conn.close()
    return path.stat().st_size


def with_search_path(url: str, schema: str) -> str:
    parts = urllib.parse.urlsplit(url)
    query = [*urllib.parse.parse_qsl(parts.query), ("options", f"-csearch_path={schema}")]
    return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query)))


async def bench_postgres(events: int, concurrency: int) -> list[Result] | str:
    import psycopg

    base = os.environ.get("LISTENER_TEST_POSTGRES_URL") or DEFAULT_POSTGRES_URL
    try:
        with psycopg.connect(base, connect_timeout=3, autocommit=True) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        return f"PostgreSQL left out: not reachable ({type(exc).__name__})"
    results = []
    for mode, group in [("one per event", False), ("group commit", True)]:
        schema = f"bench_{uuid.uuid4().hex}"
        with psycopg.connect(base, autocommit=True) as conn:
            conn.execute(f'CREATE SCHEMA "{schema}"')
        try:
            store = PostgresStore(with_search_path(base, schema), group_commit=group)
            await store.open()
            try:
                seconds = await drive(store, mode[:5], events, concurrency)
                commits = store.commits if group else events + WARMUP
            finally:
                await store.close()
            with psycopg.connect(base) as conn:
                row = conn.execute(
                    "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0) FROM pg_class c"
                    " JOIN pg_namespace n ON n.oid = c.relnamespace"
                    " WHERE n.nspname = %s AND c.relkind = 'r'",
                    [schema],
                ).fetchone()
            stored = int(row[0]) if row is not None else 0
            results.append(Result("postgresql", mode, events, seconds, commits, stored))
        finally:
            with psycopg.connect(base, autocommit=True) as conn:
                conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    return results


def print_table(rows: list[Result]) -> None:
    print(
        f"{'backend':<11} {'mode':<14} {'events':>7} {'seconds':>8} {'events/s':>9} "
        f"{'commits':>8} {'vs one per event':>17} {'bytes/event':>12}"
    )
    baseline: dict[str, float] = {}
    for row in rows:
        if row.mode == "one per event":
            baseline[row.backend] = row.rate
        ratio = row.rate / baseline[row.backend]
        print(
            f"{row.backend:<11} {row.mode:<14} {row.events:>7} {row.seconds:>8.2f} "
            f"{row.rate:>9.0f} {row.commits:>8} {ratio:>16.1f}x {row.bytes_per_event:>12.0f}"
        )


async def main(events: int, concurrency: int) -> None:
    print(
        f"{events} events per candidate, {concurrency} concurrent callers, "
        f"{len(HANDLERS)} handlers each\n"
    )
    rows = await bench_sqlite(events, concurrency)
    pg = await bench_postgres(events, concurrency)
    note = pg if isinstance(pg, str) else None
    if not isinstance(pg, str):
        rows.extend(pg)
    print_table(rows)
    if note:
        print(note)
    print()
    for name, backend in (("SQLite", "sqlite"), ("PostgreSQL", "postgresql")):
        rates = {r.mode: r.rate for r in rows if r.backend == backend}
        if len(rates) < 2:
            continue
        ratio = rates["group commit"] / rates["one per event"]
        verdict = "PASS" if ratio >= TARGET else "FAIL"
        print(f"{name} group commit {ratio:.1f}x one per event (target {TARGET:.0f}x): {verdict}")


def cli(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=64)
    args = parser.parse_args(argv)
    asyncio.run(main(args.events, args.concurrency))


if __name__ == "__main__":
    cli()
