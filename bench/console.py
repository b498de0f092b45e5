"""Server time of the operator console's pages over a large store.

Fills SQLite and PostgreSQL with `--runs` runs (default 100,000) of `--events-per-run`
events each (default 10: 1,000,000 events), two transitions and one handler call per
ended run, straight through SQL (generated in the database, so filling is quick), then
times the console's pages in process (the ASGI app, no network): the runs page's first
page, a filtered first page, a keyset page deep in the list (90% of the way down), and
one run's timeline. The goal is under 100 ms each; the median and p95 of `--repeat`
requests are printed.

    .venv/bin/python bench/console.py [--runs 100000] [--events-per-run 10] [--repeat 20]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
import urllib.parse
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx

from listener.console import ConsoleSettings
from listener.console.app import console_app
from listener.health import percentile
from listener.metrics import Metrics
from listener.receiver import Receiver
from listener.recording import EventRecorder
from listener.registry import Handlers
from listener.sources import Source
from listener.store.base import Store
from listener.store.postgres import PostgresStore
from listener.store.sqlite import SQLiteStore

DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"
TOKEN = "bench-console-token-0123456789"
GOAL_MS = 100.0
# Runs are submitted half a second apart, from this far back.
SPACING = 0.5


@dataclass
class Backend:
    store: Store
    handlers: Handlers = field(default_factory=Handlers)
    metrics: Metrics = field(default_factory=Metrics)
    sources: dict[str, Source] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.recorder = EventRecorder(self.handlers)
        self.receiver = Receiver(sources=(), recorder=self.recorder, metrics=self.metrics)


def _case(i: str, values: list[str]) -> str:
    whens = " ".join(f"WHEN {n} THEN '{v}'" for n, v in enumerate(values))
    return f"CASE {i} % {len(values)} {whens} END"


PROVIDERS = ["nextmv", "noxus", "local"]
APPS = ["routing", "pricing", "scheduling", "forecast"]
STATUS = (
    "CASE WHEN {i} % 20 = 0 THEN 'running' WHEN {i} % 10 = 1 THEN 'failed' ELSE 'succeeded' END"
)


def fill_sqlite(path: Path, runs: int, per_run: int, t0: float) -> None:
    import sqlite3

    conn = sqlite3.connect(path)
    try:
        with conn:
            conn.execute(
                "WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < ?)"
                " INSERT INTO runs (run_id, provider, application, status, submitted_at,"
                " last_event_at, grace_seconds, next_poll_at, callback, metadata, registered,"
                " updated_at)"
                f" SELECT printf('run-%07d', i), {_case('i', PROVIDERS)}, {_case('i', APPS)},"
                f" {STATUS.format(i='i')}, ? + i * ?, ? + i * ? + ?, 60,"
                " CASE WHEN i % 20 = 0 THEN ? + i * ? + 3600 END, '{}', '{}', 1, ? + i * ?"
                " FROM n",
                [runs - 1, t0, SPACING, t0, SPACING, per_run, t0, SPACING, t0, SPACING],
            )
            conn.execute(
                "WITH RECURSIVE k(j) AS (SELECT 0 UNION ALL SELECT j + 1 FROM k WHERE j < ?)"
                " INSERT INTO events (delivery_id, provider, application, run_id, status,"
                " occurred_at, received_at, origin, payload)"
                " SELECT r.run_id || '-' || j, r.provider, r.application, r.run_id,"
                " CASE WHEN j = ? AND r.status <> 'running' THEN r.status ELSE 'running' END,"
                " r.submitted_at + j, r.submitted_at + j + 0.2,"
                " CASE WHEN j % 3 = 2 THEN 'poll' ELSE 'webhook' END,"
                " '{\"run\":\"' || r.run_id || '\",\"seq\":' || j || '}'"
                " FROM runs r, k ORDER BY r.submitted_at, j",
                [per_run - 1, per_run - 1],
            )
            conn.execute(
                "INSERT INTO transitions (run_id, status, delivery_id, created_at)"
                " SELECT run_id, 'running', run_id || '-0', submitted_at + 0.2 FROM runs"
            )
            conn.execute(
                "INSERT INTO transitions (run_id, status, delivery_id, created_at)"
                " SELECT run_id, status, run_id || '-' || ?, last_event_at + 0.2 FROM runs"
                " WHERE status <> 'running'",
                [per_run - 1],
            )
            conn.execute(
                "INSERT INTO handler_calls (handler, run_id, status, delivery_id, state,"
                " attempts, next_attempt_at, last_error, replays, created_at, updated_at)"
                " SELECT 'notify', run_id, status, run_id || '-' || ?,"
                " CASE WHEN status = 'failed' THEN 'dead' ELSE 'done' END, 1,"
                " last_event_at, CASE WHEN status = 'failed' THEN 'boom' END, 0,"
                " last_event_at + 0.3, last_event_at + 0.4 FROM runs WHERE status <> 'running'",
                [per_run - 1],
            )
        conn.execute("ANALYZE")
    finally:
        conn.close()


def fill_postgres(url: str, runs: int, per_run: int, t0: datetime) -> None:
    import psycopg

    status = STATUS.format(i="i").replace("%", "%%")
    providers, apps = (_case("i", v).replace("%", "%%") for v in (PROVIDERS, APPS))
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO runs (run_id, provider, application, status, submitted_at,"
            " last_event_at, grace_seconds, next_poll_at, callback, metadata, registered,"
            " updated_at)"
            f" SELECT 'run-' || lpad(i::text, 7, '0'), {providers}, {apps}, {status},"
            " %(t0)s + make_interval(secs => i * %(sp)s),"
            " %(t0)s + make_interval(secs => i * %(sp)s + %(per)s), 60,"
            " CASE WHEN i %% 20 = 0 THEN %(t0)s + make_interval(secs => i * %(sp)s + 3600) END,"
            " '{}', '{}', 1, %(t0)s + make_interval(secs => i * %(sp)s)"
            " FROM generate_series(0, %(last)s) AS i",
            {"t0": t0, "sp": SPACING, "per": per_run, "last": runs - 1},
        )
        conn.execute(
            "INSERT INTO events (delivery_id, provider, application, run_id, status,"
            " occurred_at, received_at, origin, payload)"
            " SELECT r.run_id || '-' || j, r.provider, r.application, r.run_id,"
            " CASE WHEN j = %(lastj)s AND r.status <> 'running' THEN r.status ELSE 'running' END,"
            " r.submitted_at + make_interval(secs => j),"
            " r.submitted_at + make_interval(secs => j + 0.2),"
            " CASE WHEN j %% 3 = 2 THEN 'poll' ELSE 'webhook' END,"
            " jsonb_build_object('run', r.run_id, 'seq', j)"
            " FROM runs r, generate_series(0, %(lastj)s) AS j ORDER BY r.submitted_at, j",
            {"lastj": per_run - 1},
        )
        conn.execute(
            "INSERT INTO transitions (run_id, status, delivery_id, created_at)"
            " SELECT run_id, 'running', run_id || '-0', submitted_at FROM runs"
        )
        conn.execute(
            "INSERT INTO transitions (run_id, status, delivery_id, created_at)"
            " SELECT run_id, status, run_id || '-' || %s, last_event_at FROM runs"
            " WHERE status <> 'running'",
            [per_run - 1],
        )
        conn.execute(
            "INSERT INTO handler_calls (handler, run_id, status, delivery_id, state,"
            " attempts, next_attempt_at, last_error, replays, created_at, updated_at)"
            " SELECT 'notify', run_id, status, run_id || '-' || %s,"
            " CASE WHEN status = 'failed' THEN 'dead' ELSE 'done' END, 1,"
            " last_event_at, CASE WHEN status = 'failed' THEN 'boom' END, 0,"
            " last_event_at, last_event_at FROM runs WHERE status <> 'running'",
            [per_run - 1],
        )
        conn.execute("ANALYZE")


async def time_pages(store: Store, runs: int, t0: datetime, repeat: int) -> dict[str, list[float]]:
    app = console_app(Backend(store), ConsoleSettings(read_token=TOKEN, page_size=50))
    # A cursor 90% of the way down the newest-first list, got through the store's own
    # paging: the newest run before run number `deep`, and the page after it.
    deep = runs // 10
    before = t0 + timedelta(seconds=deep * SPACING + SPACING / 2)
    cursor = (await store.list_runs(until=before, limit=1)).next_cursor
    assert cursor is not None
    target = f"run-{runs // 2:07d}"
    pages = {
        "runs, first page": "/runs",
        "runs, status=failed": "/runs?status=failed&provider=noxus",
        "runs, deep keyset page": "/runs?" + urllib.parse.urlencode({"cursor": cursor}),
        "timeline of one run": "/run?" + urllib.parse.urlencode({"id": target}),
    }
    counts = await store.counts()
    assert sum(counts.runs_by_status.values()) == runs, "every run is stored"
    times: dict[str, list[float]] = {"stored events": [float(counts.events)]}
    transport = httpx.ASGITransport(app=app)
    headers = {"authorization": f"Bearer {TOKEN}"}
    async with httpx.AsyncClient(
        transport=transport, base_url="http://console", headers=headers
    ) as client:
        for name, path in pages.items():
            for _ in range(3):  # warm the caches and the connection pool
                answer = await client.get(path)
                assert answer.status_code == 200, (name, answer.status_code)
            samples = []
            for _ in range(repeat):
                started = time.perf_counter()
                answer = await client.get(path)
                samples.append((time.perf_counter() - started) * 1000)
                assert answer.status_code == 200
            if name == "runs, deep keyset page":
                assert f"run-{deep - 1:07d}" in answer.text, "the deep page starts after the cursor"
            if name == "timeline of one run":
                assert "moved to" in answer.text
            times[name] = samples
    return times


def report(backend: str, fill_seconds: float, times: dict[str, list[float]]) -> None:
    stored = int(times.pop("stored events")[0])
    print(f"\n{backend}: filled in {fill_seconds:.1f} s; {stored} events stored")
    print(f"  {'page':<26} {'median ms':>10} {'p95 ms':>8}  goal < {GOAL_MS:.0f} ms")
    for name, samples in times.items():
        p95 = percentile(samples, 0.95) or 0.0
        median = statistics.median(samples)
        verdict = "ok" if p95 < GOAL_MS else "over"
        print(f"  {name:<26} {median:>10.1f} {p95:>8.1f}  {verdict}")


async def bench_sqlite(runs: int, per_run: int, repeat: int) -> None:
    t0 = datetime.now(UTC) - timedelta(seconds=runs * SPACING + 3600)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "console.db"
        store = SQLiteStore(f"sqlite:///{path}")
        await store.open()
        await store.close()
        started = time.perf_counter()
        fill_sqlite(path, runs, per_run, t0.timestamp())
        filled = time.perf_counter() - started
        store = SQLiteStore(f"sqlite:///{path}")
        await store.open()
        try:
            times = await time_pages(store, runs, t0, repeat)
        finally:
            await store.close()
    report(f"sqlite ({runs} runs, {runs * per_run} events)", filled, times)


def with_search_path(url: str, schema: str) -> str:
    parts = urllib.parse.urlsplit(url)
    query = [*urllib.parse.parse_qsl(parts.query), ("options", f"-csearch_path={schema}")]
    return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query)))


async def bench_postgres(runs: int, per_run: int, repeat: int) -> None:
    import psycopg

    base = os.environ.get("LISTENER_TEST_POSTGRES_URL") or DEFAULT_POSTGRES_URL
    try:
        with psycopg.connect(base, connect_timeout=3, autocommit=True) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        print(f"\npostgresql left out: not reachable ({type(exc).__name__})")
        return
    schema = f"bench_console_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    url = with_search_path(base, schema)
    t0 = datetime.now(UTC) - timedelta(seconds=runs * SPACING + 3600)
    try:
        store = PostgresStore(url)
        await store.open()
        try:
            started = time.perf_counter()
            await asyncio.to_thread(fill_postgres, url, runs, per_run, t0)
            filled = time.perf_counter() - started
            times = await time_pages(store, runs, t0, repeat)
        finally:
            await store.close()
    finally:
        with psycopg.connect(base, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    report(f"postgresql ({runs} runs, {runs * per_run} events)", filled, times)


async def main(runs: int, per_run: int, repeat: int, backends: list[str]) -> None:
    print(
        f"console pages, server time in process; {runs} runs x {per_run} events; "
        f"{repeat} requests each"
    )
    if "sqlite" in backends:
        await bench_sqlite(runs, per_run, repeat)
    if "postgresql" in backends:
        await bench_postgres(runs, per_run, repeat)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=100_000)
    parser.add_argument("--events-per-run", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument(
        "--backend", action="append", choices=["sqlite", "postgresql"], help="default: both"
    )
    args = parser.parse_args()
    if args.runs < 100 or args.events_per_run < 2:
        sys.exit("--runs must be at least 100 and --events-per-run at least 2")
    asyncio.run(
        main(args.runs, args.events_per_run, args.repeat, args.backend or ["sqlite", "postgresql"])
    )
