"""The hot queries' PostgreSQL plans stay on indexes (`listener/store/_plans/`).

A schema is filled with many runs, their events, transitions and handler calls (and
ANALYZEd), so that the planner would read a whole table wherever no index fits; each
plan's statements are then run under EXPLAIN (planned for their values, and generic, as a
prepared statement may be) and for real, in a transaction rolled back, and no statement
may scan runs, events or handler_calls in full; nor transitions, once sequential scans
are priced out (at this size, reading all of it is cheaper than probing its index). A
claim, and retention's pick, must also read rows in the order wanted from an index (no
Sort): it stops at its limit however long the backlog.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import psycopg
import psycopg.sql
import pytest
from conftest import postgres_base_url, with_search_path
from hot_queries import BIG_TABLES, NARROW_TABLES, POSTGRES, HotQuery, fill_statements, hot_queries
from psycopg.rows import DictRow, dict_row

from listener.store import _plans as plans
from listener.store.postgres import DIALECT, PostgresStore, _pg_sql

RUNS = 20_000
NOW = time.time()
QUERIES = hot_queries(DIALECT, RUNS, NOW)


@pytest.fixture(scope="module")
def filled() -> Iterator[str]:
    """A URL on a schema at the current version, filled with `RUNS` runs."""
    base = postgres_base_url()
    schema = f"t_{uuid.uuid4().hex}"
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    url = with_search_path(base, schema)
    try:

        async def migrate() -> None:
            store = PostgresStore(url)
            await store.open()
            await store.close()

        asyncio.run(migrate())
        with psycopg.connect(url, autocommit=True) as conn:
            for statement in fill_statements(POSTGRES, RUNS, NOW):
                conn.execute(statement)  # no parameters: `%` is the modulo
            conn.execute("ANALYZE")
        yield url
    finally:
        with psycopg.connect(base, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def _nodes(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield node
    for child in node.get("Plans", []):
        yield from _nodes(child)


Explained = list[tuple[str, dict[str, Any], int]]  # each statement, its plan, its rows


_PG_TYPES = {datetime: "timestamptz", str: "text", int: "bigint", float: "float8"}


def literal(value: Any) -> str:
    return psycopg.sql.Literal(value).as_string(None)


def _numbered(sql: str) -> str:
    """The shared `?` placeholders as PREPARE takes them: $1, $2, ..."""
    parts = sql.split("?")
    return parts[0] + "".join(f"${n}{part}" for n, part in enumerate(parts[1:], start=1))


def explain(url: str, plan: plans.Plan[Any], *, generic: bool, seq_scans: bool = True) -> Explained:
    """Each statement of `plan` with its plan and how many rows it returned when run,
    all in a transaction rolled back afterwards. `generic`: the plan made without the
    parameters' values, as PostgreSQL may use once a statement is prepared (psycopg
    prepares one it has run five times on a connection). `seq_scans=False` prices
    sequential scans out, so that a table is read in full only where no index fits."""
    seen: Explained = []
    with psycopg.connect(url, row_factory=dict_row) as conn:
        sync: psycopg.Connection[DictRow] = conn
        sync.execute(f"SET plan_cache_mode = {'force_generic_plan' if generic else 'auto'}")
        if not seq_scans:
            sync.execute("SET enable_seqscan = off")

        def run(sql: str, params: list[Any]) -> list[Any]:
            # EXPLAIN plans a statement for its parameters' values; a prepared one is
            # planned as prepared statements are, generic when forced to.
            name = f"hot_{len(seen)}"
            types = ", ".join(_PG_TYPES[type(value)] for value in params)
            sync.execute(f"PREPARE {name}{f'({types})' if types else ''} AS {_numbered(sql)}")
            args = ", ".join(literal(value) for value in params)
            cur = sync.execute(f"EXPLAIN (FORMAT JSON) EXECUTE {name}{f'({args})' if args else ''}")
            row = cur.fetchone()
            assert row is not None
            tree = row["QUERY PLAN"][0]["Plan"]
            cur = sync.execute(_pg_sql(sql), params)
            rows = list(cur.fetchall()) if cur.description is not None else []
            seen.append((sql, tree, len(rows)))
            return rows

        with sync.transaction(force_rollback=True):
            plans.drive(plan, run)
    return seen


def full_scans(tree: dict[str, Any], tables: tuple[str, ...] = BIG_TABLES) -> list[str]:
    return [
        str(node["Relation Name"])
        for node in _nodes(tree)
        if node["Node Type"] == "Seq Scan" and node.get("Relation Name") in tables
    ]


def sorts(tree: dict[str, Any]) -> list[str]:
    return [node["Node Type"] for node in _nodes(tree) if "Sort" in node["Node Type"]]


@pytest.mark.parametrize("generic", [False, True], ids=["custom plan", "generic plan"])
@pytest.mark.parametrize("query", QUERIES, ids=[q.name for q in QUERIES])
def test_a_hot_query_reads_through_indexes(filled: str, query: HotQuery, generic: bool) -> None:
    seen = explain(filled, query.make(), generic=generic)
    # The data is what the plan is about: the first statement finds the rows meant.
    assert seen[0][2] == query.found, seen[0][0]
    for sql, tree, _ in seen:
        assert full_scans(tree) == [], (sql, tree)
    if query.in_order:
        assert sorts(seen[0][1]) == [], (seen[0][0], seen[0][1])
    if query.index is not None:
        used = {node.get("Index Name") for node in _nodes(seen[0][1])}
        assert query.index in used, (seen[0][0], seen[0][1])


@pytest.mark.parametrize("generic", [False, True], ids=["custom plan", "generic plan"])
@pytest.mark.parametrize("query", QUERIES, ids=[q.name for q in QUERIES])
def test_a_hot_query_has_an_index_for_the_narrow_tables(
    filled: str, query: HotQuery, generic: bool
) -> None:
    # Retention deletes a chunk's transitions by run id, run ends read them by time: with
    # sequential scans priced out, each finds an index, which the planner takes once the
    # table outgrows this one (retention's delete probes transitions_pkey at 1M runs).
    seen = explain(filled, query.make(), generic=generic, seq_scans=False)
    for sql, tree, _ in seen:
        assert full_scans(tree, BIG_TABLES + NARROW_TABLES) == [], (sql, tree)
