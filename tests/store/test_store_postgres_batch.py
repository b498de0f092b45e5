"""PostgreSQL records applied a wave at a time (`listener/store/_pg_batch.py`) against the
plan one record at a time: the same results and the same rows, in a few round trips a
batch; a record that fails loses only itself, and other writers' rows are respected."""

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

from listener.events import Origin, RunEvent, RunStatus, Transition
from listener.store import NewRun, RecordResult, StoreUnavailable
from listener.store.postgres import PostgresStore

# What both ways of recording must leave behind; times are left out, as each took its own
# "now", and call ids too: calls of different runs take ids in another order in a wave.
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
async def test_records_in_waves_match_records_one_by_one(
    pg_schema_url: str, pg_base_url: str, seed: int
) -> None:
    rng = random.Random(seed)
    # Some news learned by polls (counted as status calls), some by other ways.
    deliveries = [
        (dataclasses.replace(e, origin=rng.choice(list(Origin))), h)
        for e, h in mixed_events(rng, 120)
    ]
    with another_schema(pg_base_url) as alone_url:
        urls = {"together": pg_schema_url, "alone": alone_url}
        # The reference: the plan, one transaction per record.
        stores = {
            "together": PostgresStore(urls["together"]),
            "alone": PostgresStore(urls["alone"], group_commit=False),
        }
        results: dict[str, list[RecordResult]] = {}
        try:
            for store in stores.values():
                await store.open()
                await with_a_leased_run(store)
                # A known run with its own end callback and grace.
                await store.register_run(
                    NewRun("run-3", "nextmv", "routing", grace_seconds=12.5, on_end="pkg.mod:ended")
                )
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
            assert together.isolated_batches == 0  # every batch went through in waves
            results["alone"] = [await stores["alone"].record(e, h) for e, h in deliveries]
        finally:
            for store in stores.values():
                await store.close()
        assert without_call_ids(results["together"]) == without_call_ids(results["alone"])
        assert snapshot(urls["together"]) == snapshot(urls["alone"])


def _naive(event: RunEvent) -> RunEvent:
    return dataclasses.replace(event, occurred_at=datetime(2026, 1, 1))


def _nan_payload(event: RunEvent) -> RunEvent:
    return dataclasses.replace(event, payload={"score": float("nan")})


def _nul_in_payload(event: RunEvent) -> RunEvent:
    return dataclasses.replace(event, payload={"text": "a\x00b"})


# A record can fail at each point of a wave: before any statement (a naive time), while
# its rows are encoded (NaN, which JSON cannot carry), in the first round trip (the server
# refuses a NUL in the payload) or in the second (a handler name the table refuses).
_SPOILERS = {
    "naive time": (_naive, ("h",)),
    "nan in payload": (_nan_payload, ("h",)),
    "nul in payload": (_nul_in_payload, ("h",)),
    "null handler": (lambda event: event, (None,)),
}


@pytest.mark.parametrize("spoiler", _SPOILERS)
async def test_a_failing_record_in_a_wave_loses_only_itself(
    pg_schema_url: str, spoiler: str
) -> None:
    spoil, bad_handlers = _SPOILERS[spoiler]
    store = PostgresStore(pg_schema_url)
    await store.open()
    try:
        good = [RunEvent(f"ok{i}", "nextmv", "routing", f"run{i}", RunStatus.SUCCEEDED)
                for i in range(10)]  # fmt: skip
        bad = spoil(RunEvent("bad", "nextmv", "routing", "run-bad", RunStatus.SUCCEEDED))
        writes = [store.record(e, ["h"]) for e in good[:5]]
        writes.append(store.record(bad, bad_handlers))  # type: ignore[arg-type]
        writes.extend(store.record(e, ["h"]) for e in good[5:])
        results = await asyncio.gather(*writes, return_exceptions=True)
        assert isinstance(results[5], Exception)
        assert not isinstance(results[5], StoreUnavailable)
        assert all(not isinstance(r, BaseException) for i, r in enumerate(results) if i != 5)
        assert store.isolated_batches >= 1
        assert (await store.counts()).events == 10
        assert await store.get_event("bad") is None
        assert await store.get_run("run-bad") is None
        calls = await store.claim_calls("me", limit=20, lease_seconds=60)
        assert sorted(c.run_id for c in calls) == sorted(e.run_id for e in good)
    finally:
        await store.close()


async def _wait_for_a_writer_blocked_on(url: str, statement: str) -> None:
    """Until some connection waits for a lock in `statement` (bounded by the test's time)."""
    with psycopg.connect(url, autocommit=True) as conn:
        while True:
            row = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                " AND query LIKE %s",
                [statement + "%"],
            ).fetchone()
            if row is not None and row[0] > 0:
                return
            await asyncio.sleep(0.01)


async def test_a_run_another_writer_creates_meanwhile_is_taken_as_known(
    pg_schema_url: str,
) -> None:
    store = PostgresStore(pg_schema_url)
    await store.open()
    try:
        # Another writer creates the run and holds its transaction open: the batch does
        # not see the run when it reads the runs, and finds it when it tries to create it.
        with psycopg.connect(pg_schema_url) as other:
            other.execute(
                "INSERT INTO runs (run_id, provider, application, status, submitted_at,"
                " grace_seconds, registered, updated_at)"
                " VALUES ('run-x', 'nextmv', 'routing', 'running', now(), 7.5, 0, now())"
            )
            other.execute("INSERT INTO transitions VALUES ('run-x', 'running', 'd-other', now())")
            events = [
                RunEvent("d1", "nextmv", "routing", "run-x", RunStatus.SUCCEEDED),
                RunEvent("d2", "nextmv", "routing", "run-y", RunStatus.RUNNING),
            ]
            writes = asyncio.gather(*(store.record(e, ["h"]) for e in events))
            await _wait_for_a_writer_blocked_on(pg_schema_url, "INSERT INTO runs")
            other.commit()
            taken, fresh = await writes
        assert store.isolated_batches == 1
        assert (taken.duplicate, taken.run_created) == (False, False)
        assert taken.transition == Transition("run-x", RunStatus.SUCCEEDED)
        assert len(taken.call_ids) == 1
        assert (fresh.run_created, fresh.status) == (True, RunStatus.RUNNING)
        run = await store.get_run("run-x")
        assert run is not None
        assert run.status is RunStatus.SUCCEEDED
        assert run.grace_seconds == 7.5  # the other writer's run, moved on
        # The other writer's transition stays its own: no second call for `running`.
        calls = await store.claim_calls("me", limit=10, lease_seconds=60)
        assert sorted((c.run_id, c.status.value) for c in calls) == [
            ("run-x", "succeeded"),
            ("run-y", "running"),
        ]
    finally:
        await store.close()


async def test_replicas_recording_the_same_runs_at_once_make_each_transition_once(
    pg_schema_url: str,
) -> None:
    rng = random.Random(7)
    stores = [PostgresStore(pg_schema_url) for _ in range(2)]
    for store in stores:
        await store.open()
    try:
        statuses = [RunStatus.QUEUED, RunStatus.RUNNING, RunStatus.SUCCEEDED]

        def deliveries(tag: str) -> list[tuple[RunEvent, tuple[str, ...]]]:
            return [
                (
                    RunEvent(f"{tag}-{i}", "nextmv", "routing", f"run-{i}", rng.choice(statuses)),
                    ("h",),
                )
                for i in range(40)
            ]

        # Each round, both replicas get an event of their own for each of the same runs.
        work = [deliveries(f"d{n}-{r}") for r in range(3) for n in range(len(stores))]
        results: list[RecordResult] = []
        for start in range(0, len(work), len(stores)):
            batches = await asyncio.gather(
                *(record_in_chunks(store, work[start + n]) for n, store in enumerate(stores))
            )
            results.extend(r for batch in batches for r in batch)
    finally:
        for store in stores:
            await store.close()
    assert not any(r.duplicate or r.foreign for r in results)
    # Each run was created by one record, and each transition made by one.
    assert sum(r.run_created for r in results) == 40
    made = sorted((r.transition.run_id, r.transition.status.value) for r in results if r.transition)
    stored = snapshot(pg_schema_url)
    assert made == sorted((run, status) for run, status, _ in stored["transitions"])
    # One handler call per transition, under the id its record was told.
    called = sorted(i for r in results for i in r.call_ids)
    with psycopg.connect(pg_schema_url) as conn:
        rows = conn.execute("SELECT id, run_id, status FROM handler_calls ORDER BY id").fetchall()
    assert called == [row[0] for row in rows]
    assert sorted((row[1], row[2]) for row in rows) == made
