"""PostgreSQL records applied in step (`PostgresStore._apply_in_step`) against the plan
one record at a time: the same results and the same rows, in a few round trips a batch."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import random
import uuid
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import psycopg
import pytest
from conftest import with_search_path
from store_workloads import mixed_events, record_in_chunks, with_a_leased_run

from listener.events import RunEvent, RunStatus
from listener.store import RecordResult
from listener.store.postgres import PostgresStore

# What both ways of recording must leave behind; times are left out, as each took its own
# "now", and call ids too: calls of different runs take ids in another order in step.
_SNAPSHOT = {
    "events": "SELECT delivery_id, provider, application, run_id, status, occurred_at, origin,"
    " payload FROM events ORDER BY delivery_id",
    "runs": "SELECT run_id, provider, application, status, grace_seconds, registered,"
    " poll_attempts, status_calls, lease_owner, lease_expires_at IS NULL,"
    " next_poll_at IS NULL, last_event_at IS NULL FROM runs ORDER BY run_id",
    "transitions": "SELECT run_id, status, delivery_id FROM transitions ORDER BY run_id, status",
    # Within a run and handler, calls keep their order: a handler sees a run's transitions
    # in the order they were made.
    "calls": "SELECT handler, run_id, status, delivery_id, state, attempts FROM handler_calls"
    " ORDER BY run_id, handler, id",
}


@contextlib.contextmanager
def another_schema(base_url: str) -> Iterator[str]:
    schema = f"t_{uuid.uuid4().hex}"
    with psycopg.connect(base_url, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    try:
        yield with_search_path(base_url, schema)
    finally:
        with psycopg.connect(base_url, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def snapshot(url: str) -> dict[str, list[tuple[Any, ...]]]:
    with psycopg.connect(url) as conn:
        return {name: conn.execute(sql).fetchall() for name, sql in _SNAPSHOT.items()}


def without_call_ids(results: list[RecordResult]) -> list[tuple[RecordResult, int]]:
    return [(dataclasses.replace(r, call_ids=()), len(r.call_ids)) for r in results]


@pytest.mark.parametrize("seed", range(3))
async def test_records_in_step_match_records_one_by_one(
    pg_schema_url: str, pg_base_url: str, seed: int
) -> None:
    deliveries = mixed_events(random.Random(seed), 120)
    with another_schema(pg_base_url) as alone_url:
        urls = {"together": pg_schema_url, "alone": alone_url}
        stores = {name: PostgresStore(url) for name, url in urls.items()}
        results: dict[str, list[RecordResult]] = {}
        try:
            for store in stores.values():
                await store.open()
                await with_a_leased_run(store)
            for url in urls.values():
                # A transition stored without its run's status having moved: reaching it
                # again is old news, with no handler calls.
                with psycopg.connect(url) as conn:
                    conn.execute(
                        "INSERT INTO transitions VALUES ('run-2', 'succeeded', 'old', now())"
                    )
            together = stores["together"]
            results["together"] = await record_in_chunks(together, deliveries)
            assert together.largest_batch > 1
            assert together.isolated_batches == 0  # every batch went through in step
            results["alone"] = [await stores["alone"].record(e, h) for e, h in deliveries]
        finally:
            for store in stores.values():
                await store.close()
        assert without_call_ids(results["together"]) == without_call_ids(results["alone"])
        assert snapshot(urls["together"]) == snapshot(urls["alone"])


async def test_a_failing_record_in_step_loses_only_itself(pg_schema_url: str) -> None:
    store = PostgresStore(pg_schema_url)
    await store.open()
    try:
        good = [RunEvent(f"ok{i}", "nextmv", "routing", f"run{i}", RunStatus.SUCCEEDED)
                for i in range(10)]  # fmt: skip
        naive = RunEvent("bad", "nextmv", "routing", "run-bad", RunStatus.SUCCEEDED,
                         occurred_at=datetime(2026, 1, 1))  # fmt: skip
        writes = [store.record(e, ["h"]) for e in good[:5]]
        writes.append(store.record(naive, ["h"]))
        writes.extend(store.record(e, ["h"]) for e in good[5:])
        results = await asyncio.gather(*writes, return_exceptions=True)
        assert isinstance(results[5], ValueError)
        assert all(not isinstance(r, BaseException) for i, r in enumerate(results) if i != 5)
        assert store.isolated_batches >= 1
        assert (await store.counts()).events == 10
        assert await store.get_run("run-bad") is None
        calls = await store.claim_calls("me", limit=20, lease_seconds=60)
        assert sorted(c.run_id for c in calls) == sorted(e.run_id for e in good)
    finally:
        await store.close()
