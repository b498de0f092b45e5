"""The store goes away while webhooks arrive: 503 with Retry-After meanwhile, and once it
is back, every delivery is stored and handled once.

PostgreSQL: a TCP proxy between the listener and the server aborts every connection and
refuses new ones, then listens again. SQLite: another process holds the database's write
lock (as a maintenance session would), then lets go. Both are real failures of the
store, met through the store's own code paths; nothing in the listener is patched.
"""

from __future__ import annotations

from pathlib import Path

from scenarios import Tally, assert_held, run_postgres_outage, run_sqlite_outage


def _exercised(tally: Tally) -> None:
    assert tally.notes["acknowledged before the cut"] > 0
    assert tally.notes["refused 503 during the outage"] > 0


async def test_postgres_outage(pg_schema_url: str) -> None:
    tally = await run_postgres_outage(pg_schema_url)
    assert_held(tally)
    assert tally.lost == 0
    assert tally.double_calls == 0
    _exercised(tally)


async def test_sqlite_write_lock_outage(tmp_path: Path) -> None:
    tally = await run_sqlite_outage(tmp_path)
    assert_held(tally)
    assert tally.lost == 0
    assert tally.double_calls == 0
    _exercised(tally)
