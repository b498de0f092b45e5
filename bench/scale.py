"""How the store's hot queries grow with the number of runs it holds.

    python bench/scale.py [--sizes 10000,100000,1000000] [--backends sqlite,postgres]
                          [--repeat N] [--ids counter|ordered|random]

For each backend and size, a fresh store is filled with that many runs and ten events
each, a transition per run and a handler call per ended run, written straight in bulk SQL
(INSERT ... SELECT over a generated series): one run submitted a second, the newest now;
one in 20 running and one queued (their next poll a minute after submission, so the
open ones are a backlog of overdue runs), one failed, the rest succeeded; of the calls,
one in 50 pending and due, one in 500 under a lease that ran out, the rest done. Then,
through the store's own methods, each of these is timed (median of `--repeat` calls,
after one unmeasured call):

* the poller's claim of 50 overdue runs, and the dispatcher's claim of 10 handler calls
  (each claim takes rows off the backlog, as it does in service);
* the newest 100 runs, the open runs, the newest 100 events, one run's events, and the
  run ends of the last hour (what `listener health` reads);
* one chunk of retention (up to 1000 each of calls and runs, and the runs' events).

It prints each query's time at each size and the ratio of the largest size to the
smallest, against the goal of staying within 2x. SQLite runs on a file in a temporary
directory, removed at the end; PostgreSQL uses LISTENER_TEST_POSTGRES_URL or the local
default in a schema of its own, dropped at the end, and is left out when unreachable.
The script reports; it always exits 0.

`--ids` chooses how run ids (and the delivery ids, which start with their run's id) lie
in key order, which decides how many index pages a retention chunk changes: `counter`
(the default) is `run-1`, `run-2`, ...: the oldest runs' keys lie close together in a
small store and far apart in a large one, where 5- to 7-digit ids sort between them;
`ordered` pads the counter (`run-0000001`), so keys follow the time of submission, as
ids led by a time or a counter do; `random` spreads them by a hash at every size.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
import urllib.parse
import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from listener.events import RunStatus
from listener.store.base import Store
from listener.store.postgres import PostgresStore
from listener.store.sqlite import SQLiteStore

DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"
DEFAULT_SIZES = (10_000, 100_000, 1_000_000)
GOAL = 2.0
# Runs written per fill statement: each a transaction of bounded size.
FILL_CHUNK = 100_000
OPEN = [RunStatus.QUEUED, RunStatus.RUNNING]
ID_LAYOUTS = ("counter", "ordered", "random")
# Odd, so i * _MIX mod 2**32 is a bijection: `random` ids stay unique.
_MIX = 2654435761


@dataclass(frozen=True)
class Bulk:
    """How a backend spells the few things the fill statements need."""

    runs_from: Callable[[int, int], tuple[str, str]]  # (prefix, FROM) for runs lo..hi
    events_from: Callable[[int, int], tuple[str, str]]  # the same, times j in 0..9
    ts: Callable[[str], str]  # seconds since the epoch as a time value
    json: Callable[[str], str]  # a JSON object of an id
    padded: Callable[[str], str]  # an integer as seven digits
    hashed: Callable[[str], str]  # an integer as eight hex digits of a hash of it


def _pg_series(lo: int, hi: int) -> tuple[str, str]:
    return "", f"generate_series({lo}, {hi}) AS s(i)"


def _pg_events(lo: int, hi: int) -> tuple[str, str]:
    return "", f"generate_series({lo}, {hi}) AS s(i), generate_series(0, 9) AS k(j)"


def _sqlite_cte(lo: int, hi: int) -> str:
    return (
        f"WITH RECURSIVE s(i) AS (SELECT {lo} UNION ALL SELECT i + 1 FROM s WHERE i < {hi}),"
        " k(j) AS (SELECT 0 UNION ALL SELECT j + 1 FROM k WHERE j < 9) "
    )


PG = Bulk(
    runs_from=_pg_series,
    events_from=_pg_events,
    ts=lambda expr: f"to_timestamp({expr})",
    json=lambda expr: f"jsonb_build_object('id', {expr})",
    padded=lambda expr: f"lpad(({expr})::text, 7, '0')",
    hashed=lambda expr: f"lpad(to_hex(({expr}) * {_MIX} % 4294967296), 8, '0')",
)
SQLITE = Bulk(
    runs_from=lambda lo, hi: (_sqlite_cte(lo, hi), "s"),
    events_from=lambda lo, hi: (_sqlite_cte(lo, hi), "s, k"),
    ts=lambda expr: f"({expr})",
    json=lambda expr: f"json_object('id', {expr})",
    padded=lambda expr: f"printf('%07d', {expr})",
    hashed=lambda expr: f"printf('%08x', ({expr}) * {_MIX} % 4294967296)",
)

_STATUS = (
    "CASE i % 20 WHEN 0 THEN 'running' WHEN 1 THEN 'queued' WHEN 2 THEN 'failed'"
    " ELSE 'succeeded' END"
)


def run_id(ids: str, i: int) -> str:
    """Run i's id under the layout `ids` (see `--ids`), as `_key` spells it in SQL."""
    if ids == "ordered":
        return f"run-{i:07d}"
    if ids == "random":
        return f"run-{i * _MIX % 2**32:08x}"
    return f"run-{i}"


def _key(b: Bulk, ids: str) -> str:
    return {"counter": "i", "ordered": b.padded("i"), "random": b.hashed("i")}[ids]


def fill_statements(b: Bulk, runs: int, now: float, ids: str = "counter") -> Iterator[str]:
    """The statements that fill an empty store with `runs` runs, chunk by chunk. Run i is
    submitted at now - (runs - i); its id is laid out as `ids` says."""
    key = _key(b, ids)
    rid, dlv = f"'run-' || {key}", f"'dlv-' || {key} || '-'"
    for lo in range(1, runs + 1, FILL_CHUNK):
        hi = min(runs, lo + FILL_CHUNK - 1)

        def at(offset: int) -> str:
            return b.ts(f"{now!r} - ({runs} - i) + {offset}")

        prefix, source = b.runs_from(lo, hi)
        yield (
            f"{prefix}INSERT INTO runs (run_id, provider, application, status, submitted_at,"
            " last_event_at, grace_seconds, deadline, next_poll_at, callback, metadata,"
            " updated_at)"
            f" SELECT {rid}, 'nextmv', 'app-' || (i % 10), {_STATUS}, {at(0)}, {at(9)},"
            f" 60, CASE WHEN i % 40 = 0 THEN {at(3600)} END,"
            f" CASE WHEN i % 20 IN (0, 1) THEN {at(60)} END, '{{}}', '{{}}', {at(9)}"
            f" FROM {source}"
        )
        prefix, source = b.events_from(lo, hi)
        event_at = b.ts(f"{now!r} - ({runs} - i) + j")
        yield (
            f"{prefix}INSERT INTO events (delivery_id, provider, application, run_id, status,"
            " occurred_at, received_at, origin, payload)"
            f" SELECT {dlv} || j, 'nextmv', 'app-' || (i % 10), {rid},"
            f" CASE WHEN j = 9 THEN {_STATUS} ELSE 'running' END, {event_at}, {event_at},"
            f" 'webhook', {b.json(rid)} FROM {source} ORDER BY i, j"
        )
        prefix, source = b.runs_from(lo, hi)
        yield (
            f"{prefix}INSERT INTO transitions (run_id, status, delivery_id, created_at)"
            f" SELECT {rid}, {_STATUS}, {dlv} || '9', {at(9)} FROM {source}"
        )
        yield (
            f"{prefix}INSERT INTO handler_calls (handler, run_id, status, delivery_id, state,"
            " attempts, next_attempt_at, lease_owner, lease_expires_at, created_at, updated_at)"
            f" SELECT 'notify', {rid},"
            f" CASE i % 20 WHEN 2 THEN 'failed' ELSE 'succeeded' END, {dlv} || '9',"
            " CASE WHEN i % 50 = 3 THEN 'pending' WHEN i % 500 = 7 THEN 'running'"
            " ELSE 'done' END, 1, "
            f"{at(10)}, CASE WHEN i % 500 = 7 THEN 'gone' END,"
            f" CASE WHEN i % 500 = 7 THEN {at(100)} END, {at(9)}, {at(10)}"
            f" FROM {source} WHERE i % 20 NOT IN (0, 1)"
        )


# -- the measured operations ----------------------------------------------------------


Op = Callable[[Store], Awaitable[Any]]


def operations(runs: int, now: datetime, ids: str = "counter") -> dict[str, Op]:
    # Nine runs in ten are older: enough for every timed chunk to be a full one.
    old = now - timedelta(seconds=runs // 10)
    return {
        "claim overdue runs (50)": lambda s: s.claim_overdue_runs(
            "bench", limit=50, lease_seconds=300, now=now
        ),
        "claim handler calls (10)": lambda s: s.claim_calls(
            "bench", limit=10, lease_seconds=300, now=now
        ),
        "list runs (100)": lambda s: s.list_runs(limit=100),
        "list open runs (100)": lambda s: s.list_runs(status=OPEN, limit=100),
        "list events (100)": lambda s: s.list_events(limit=100),
        "list a run's events": lambda s: s.list_events(run_id=run_id(ids, runs // 2)),
        "run ends of the last hour": lambda s: s.list_run_ends(since=now - timedelta(hours=1)),
        "retention chunk (1000)": lambda s: s.prune(before=old, limit=1000),
    }


async def measure(
    store: Store, runs: int, now: datetime, repeat: int, ids: str
) -> dict[str, float]:
    times: dict[str, float] = {}
    for name, op in operations(runs, now, ids).items():
        await op(store)  # warms caches and prepared statements
        taken = []
        for _ in range(repeat):
            start = time.perf_counter()
            await op(store)
            taken.append(time.perf_counter() - start)
        times[name] = statistics.median(taken)
    return times


# -- backends -------------------------------------------------------------------------


async def fill_sqlite(path: Path, runs: int, ids: str) -> float:
    """Create a SQLite store at `path` and fill it with `runs` runs; the `now` they were
    laid out from (see `fill_statements`)."""
    store = SQLiteStore(f"sqlite:///{path}")
    await store.open()
    await store.close()
    now = time.time()
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        # Filling only: the measured store runs with its own settings.
        conn.execute("PRAGMA synchronous = OFF")
        conn.execute("PRAGMA cache_size = -1000000")
        for sql in fill_statements(SQLITE, runs, now, ids):
            conn.execute(sql)
    finally:
        conn.close()
    return now


async def bench_sqlite(runs: int, repeat: int, ids: str) -> tuple[dict[str, float], float]:
    root = Path(tempfile.mkdtemp(prefix="listener-scale-"))
    try:
        path = root / "listener.db"
        url = f"sqlite:///{path}"
        started = time.perf_counter()
        now = await fill_sqlite(path, runs, ids)
        filled = time.perf_counter() - started
        store = SQLiteStore(url)
        await store.open()
        try:
            now_at = datetime.fromtimestamp(now, UTC)
            return await measure(store, runs, now_at, repeat, ids), filled
        finally:
            await store.close()
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _with_search_path(url: str, schema: str) -> str:
    parts = urllib.parse.urlsplit(url)
    query = [*urllib.parse.parse_qsl(parts.query), ("options", f"-csearch_path={schema}")]
    return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query)))


@contextmanager
def pg_schema(base: str) -> Iterator[str]:
    import psycopg

    schema = f"bench_scale_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    try:
        yield _with_search_path(base, schema)
    finally:
        with psycopg.connect(base, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


async def bench_postgres(
    base: str, runs: int, repeat: int, ids: str
) -> tuple[dict[str, float], float]:
    import psycopg

    with pg_schema(base) as url:
        store = PostgresStore(url)
        await store.open()
        try:
            now = time.time()
            started = time.perf_counter()
            with psycopg.connect(url, autocommit=True) as conn:
                for sql in fill_statements(PG, runs, now, ids):
                    conn.execute(sql)  # no parameters: `%` is the modulo
                # What autovacuum would do soon after such a load: statistics for the planner.
                conn.execute("VACUUM ANALYZE")
            filled = time.perf_counter() - started
            now_at = datetime.fromtimestamp(now, UTC)
            return await measure(store, runs, now_at, repeat, ids), filled
        finally:
            await store.close()


def postgres_url() -> str | None:
    try:
        import psycopg
    except ImportError:
        return None
    url = os.environ.get("LISTENER_TEST_POSTGRES_URL") or DEFAULT_POSTGRES_URL
    try:
        with psycopg.connect(url, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error:
        return None
    return url


# -- report ---------------------------------------------------------------------------


def report(backend: str, ids: str, sizes: list[int], results: dict[int, dict[str, float]]) -> None:
    first, last = sizes[0], sizes[-1]
    head = "".join(f"{size:>12,}" for size in sizes)
    print(f"\n{backend} ({ids} ids): median ms per call, by runs held")
    print(f"{'query':<28}{head}   {last:,}/{first:,}  verdict")
    for name in results[first]:
        cells = "".join(f"{results[size][name] * 1000:>12.2f}" for size in sizes)
        ratio = results[last][name] / results[first][name]
        verdict = "flat" if ratio <= GOAL else f"grows (goal {GOAL:.0f}x)"
        print(f"{name:<28}{cells}   {ratio:>9.2f}x  {verdict}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--sizes",
        default=",".join(str(s) for s in DEFAULT_SIZES),
        help="runs per store, comma-separated (default: %(default)s)",
    )
    parser.add_argument("--backends", default="sqlite,postgres")
    parser.add_argument("--repeat", type=int, default=7, help="calls timed per query")
    parser.add_argument(
        "--ids",
        choices=ID_LAYOUTS,
        default="counter",
        help="how run ids lie in key order (default: %(default)s; see the module docstring)",
    )
    args = parser.parse_args()
    sizes = sorted(int(s) for s in args.sizes.split(","))
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    base = postgres_url() if "postgres" in backends else None
    if "postgres" in backends and base is None:
        print("PostgreSQL is not reachable: left out")
        backends.remove("postgres")
    for backend in backends:
        results: dict[int, dict[str, float]] = {}
        for runs in sizes:
            if backend == "sqlite":
                times, filled = asyncio.run(bench_sqlite(runs, args.repeat, args.ids))
            else:
                assert base is not None
                times, filled = asyncio.run(bench_postgres(base, runs, args.repeat, args.ids))
            results[runs] = times
            print(f"  {backend} {runs:>9,} runs: filled in {filled:.1f} s", flush=True)
        report(backend, args.ids, sizes, results)


if __name__ == "__main__":
    main()
