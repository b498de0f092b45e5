"""Reliability report: "nothing lost, nothing handled twice, nobody gets in", in numbers.

Runs the system-test scenarios (tests/system/scenarios) once each, in a bounded form, and
prints per scenario: deliveries sent (HTTP requests, retries included), acknowledged
(2xx), events stored, handler calls, duplicates suppressed (reports of a known transition
that called nothing), lost and double calls (both must be 0), and re-runs of handler calls
whose completion could not be written during a store outage, or that were in flight in a
process killed with SIGKILL (at-least-once, documented).

The crash and replica scenarios run real `listener serve` processes; each waits out the
dispatch lease of the killed process (handler timeout plus 30 s), so each takes about 35 s.

    .venv/bin/python bench/reliability.py

PostgreSQL scenarios use LISTENER_TEST_POSTGRES_URL, else the local default server, in a
throwaway schema; they are reported as skipped when no server answers. Always exits 0:
this is a report; the system tests are what fail the build.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "system"))

from scenarios import (  # noqa: E402
    ChaosSettings,
    HostileSettings,
    Tally,
    run_chaos,
    run_crash,
    run_hostile,
    run_postgres_outage,
    run_replicas,
    run_sqlite_outage,
)

DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"
COLUMNS = (
    ("sent", 7),
    ("2xx", 7),
    ("stored", 7),
    ("handled", 8),
    ("dup.supp", 9),
    ("lost", 5),
    ("double", 7),
    ("rerun", 6),
)
NAME_WIDTH = 31

Scenario = Callable[[Path], Awaitable[Tally]]


def postgres_url() -> str | None:
    """The PostgreSQL server to use, or None when none answers."""
    import psycopg

    url = os.environ.get("LISTENER_TEST_POSTGRES_URL") or DEFAULT_POSTGRES_URL
    try:
        with psycopg.connect(url, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error:
        return None
    return url


@contextlib.contextmanager
def postgres_schema(base: str) -> Iterator[str]:
    """`base` with a fresh schema first on the search path; the schema is dropped after."""
    import psycopg

    schema = f"reliability_{uuid.uuid4().hex}"
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    parts = urlsplit(base)
    query = [*parse_qsl(parts.query), ("options", f"-csearch_path={schema}")]
    try:
        yield urlunsplit(parts._replace(query=urlencode(query)))
    finally:
        with psycopg.connect(base, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def scenarios(pg: str | None) -> list[tuple[str, Scenario | None]]:
    async def chaos_sqlite(tmp: Path) -> Tally:
        return await run_chaos(f"sqlite:///{tmp / 'chaos.db'}", name="chaos (SQLite, 300 runs)")

    async def chaos_postgres(tmp: Path) -> Tally:
        assert pg is not None
        with postgres_schema(pg) as url:
            return await run_chaos(
                url, ChaosSettings(runs=300, seed=8), name="chaos (PostgreSQL, 300 runs)"
            )

    async def outage_postgres(tmp: Path) -> Tally:
        assert pg is not None
        with postgres_schema(pg) as url:
            return await run_postgres_outage(url)

    async def outage_sqlite(tmp: Path) -> Tally:
        return await run_sqlite_outage(tmp)

    async def hostile(tmp: Path) -> Tally:
        return await run_hostile(tmp, HostileSettings(), name="hostile input (3,600 requests)")

    async def crash(tmp: Path) -> Tally:
        return await run_crash(tmp)

    async def replicas(tmp: Path) -> Tally:
        assert pg is not None
        with postgres_schema(pg) as url:
            return await run_replicas(url, tmp)

    return [
        ("chaos (SQLite, 300 runs)", chaos_sqlite),
        ("chaos (PostgreSQL, 300 runs)", chaos_postgres if pg else None),
        ("store outage (PostgreSQL)", outage_postgres if pg else None),
        ("store outage (SQLite)", outage_sqlite),
        ("hostile input (3,600 requests)", hostile),
        ("process crash (SQLite)", crash),
        ("replica killed (PostgreSQL)", replicas if pg else None),
    ]


def header() -> str:
    cells = "".join(f"{title:>{width}}" for title, width in COLUMNS)
    return f"{'scenario':<{NAME_WIDTH}}{cells}  result     time"


def row(tally: Tally, seconds: float) -> str:
    values = (
        tally.sent,
        tally.acknowledged,
        tally.stored,
        tally.handler_calls,
        tally.duplicates_suppressed,
        tally.lost,
        tally.double_calls,
        tally.reruns,
    )
    cells = "".join(f"{value:>{width}}" for value, (_, width) in zip(values, COLUMNS, strict=True))
    verdict = "held" if tally.held else "FAILED"
    return f"{tally.name[:NAME_WIDTH]:<{NAME_WIDTH}}{cells}  {verdict:<8}{seconds:6.1f}s"


async def main(only: str | None) -> None:
    pg = postgres_url()
    print("listener reliability report")
    print(f"  PostgreSQL: {'available' if pg else 'not reachable; its scenarios are skipped'}")
    print()
    print(header())
    print("-" * len(header()))
    details: list[str] = []
    for name, scenario in scenarios(pg):
        if only is not None and only.lower() not in name.lower():
            continue
        if scenario is None:
            print(f"{name:<{NAME_WIDTH}}  skipped")
            continue
        started = time.monotonic()
        with tempfile.TemporaryDirectory(prefix="listener-reliability-") as tmp:
            try:
                tally = await scenario(Path(tmp))
            except Exception as exc:
                seconds = time.monotonic() - started
                print(f"{name:<{NAME_WIDTH}}  ERROR {type(exc).__name__}: {exc}  ({seconds:.1f}s)")
                continue
        print(row(tally, time.monotonic() - started), flush=True)
        notes = ", ".join(f"{key} {value}" for key, value in tally.notes.items())
        details.append(f"{tally.name}: {notes}")
        details += [f"    problem: {problem}" for problem in tally.problems[:20]]
    print()
    print("sent: HTTP deliveries made, retries included; 2xx: of those acknowledged;")
    print("stored: events in the store (webhook and poll); handled: handler calls;")
    print("dup.supp: reports of an already known transition that called no handler;")
    print("lost and double: the promise, both 0; rerun: a handler call run again because")
    print("its completion could not be written while the store was down, or because its")
    print("process was killed while it ran (at-least-once).")
    print()
    for line in details:
        print(line)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", help="run only scenarios whose name contains this text")
    args = parser.parse_args()
    # The scenarios provoke failures on purpose (and some libraries set their loggers'
    # levels themselves): only errors belong on the console.
    console = logging.StreamHandler()
    console.setLevel(logging.ERROR)
    console.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.ERROR, handlers=[console])
    asyncio.run(main(args.only))
