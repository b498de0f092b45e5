"""The hot queries' SQLite plans stay on indexes (`listener/store/_plans/`).

The same queries as on PostgreSQL (test_store_plans_postgres.py), over the same data:
each plan's statements run under EXPLAIN QUERY PLAN and for real, in a transaction rolled
back. SQLite keeps no statistics here (the store never runs ANALYZE), so its plans are
what it picks from the SQL and the indexes alone: none may read runs, events,
handler_calls or transitions in full, and a claim, or retention's pick, must not sort what it reads.
"""

from __future__ import annotations

import asyncio
import re
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest
from hot_queries import BIG_TABLES, NARROW_TABLES, SQLITE, HotQuery, fill_statements, hot_queries

from listener.store import _plans as plans
from listener.store._sqlite_conn import DIALECT
from listener.store.sqlite import SQLiteStore

RUNS = 20_000
NOW = time.time()
QUERIES = hot_queries(DIALECT, RUNS, NOW)
# What the plans call each big table: its name, or the alias the shared SQL gives it.
_ALIASES = {"runs": "runs", "r": "runs", "events": "events", "e": "events"}
_ALIASES |= {"handler_calls": "handler_calls", "c": "handler_calls", "h": "handler_calls"}
_ALIASES |= {"transitions": "transitions", "t": "transitions"}


@pytest.fixture(scope="module")
def filled(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("plans") / "listener.db"

    async def migrate() -> None:
        store = SQLiteStore(f"sqlite:///{path}")
        await store.open()
        await store.close()

    asyncio.run(migrate())
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        for statement in fill_statements(SQLITE, RUNS, NOW):
            conn.execute(statement)
    finally:
        conn.close()
    return path


Explained = list[tuple[str, list[str], int]]  # each statement, its plan's lines, its rows


def explain(path: Path, plan: plans.Plan[Any]) -> Explained:
    seen: Explained = []
    conn = sqlite3.connect(path, isolation_level=None)
    conn.row_factory = sqlite3.Row
    try:

        def run(sql: str, params: list[Any]) -> list[Any]:
            lines = [str(row[-1]) for row in conn.execute(f"EXPLAIN QUERY PLAN {sql}", params)]
            rows = conn.execute(sql, params).fetchall()
            seen.append((sql, lines, len(rows)))
            return rows

        conn.execute("BEGIN")
        try:
            plans.drive(plan, run)
        finally:
            conn.execute("ROLLBACK")
    finally:
        conn.close()
    return seen


def full_scans(lines: list[str]) -> list[str]:
    """The big tables read in full: `SCAN t` with no index (`SCAN t USING INDEX i` walks
    an index in order, and stops at the limit)."""
    scans = (re.fullmatch(r"SCAN (\w+)", line.strip()) for line in lines)
    tables = BIG_TABLES + NARROW_TABLES
    return [m.group(1) for m in scans if m is not None and _ALIASES.get(m.group(1)) in tables]


@pytest.mark.parametrize("query", QUERIES, ids=[q.name for q in QUERIES])
def test_a_hot_query_reads_through_indexes(filled: Path, query: HotQuery) -> None:
    seen = explain(filled, query.make())
    assert seen[0][2] == query.found, seen[0][0]
    for sql, lines, _ in seen:
        assert full_scans(lines) == [], (sql, lines)
    if query.in_order:
        assert not any("TEMP B-TREE" in line for line in seen[0][1]), seen[0]
    if query.index is not None:
        assert any(f"INDEX {query.index}" in line for line in seen[0][1]), seen[0]
