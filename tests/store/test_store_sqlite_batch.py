"""The SQLite fast paths (`listener/store/_sqlite_batch.py`) against the shared plans:
records and completions applied together leave what one plan per write leaves."""

from __future__ import annotations

import asyncio
import functools
import random
import sqlite3
from datetime import datetime
from pathlib import Path

import pytest
from store_workloads import mixed_events, record_in_chunks, with_a_leased_run

from listener.events import RunEvent, RunStatus
from listener.store import RecordResult
from listener.store._plans import complete_call_plan
from listener.store._sqlite_conn import DIALECT
from listener.store.sqlite import SQLiteStore


def event(delivery: str, run: str = "r1") -> RunEvent:
    return RunEvent(delivery, "nextmv", "routing", run, RunStatus.SUCCEEDED)


def _table(path: Path, sql: str) -> list[tuple[object, ...]]:
    conn = sqlite3.connect(path)
    try:
        with conn:
            return conn.execute(sql).fetchall()
    finally:
        conn.close()


# What both ways of recording must leave behind; times are left out, as each store took
# its own "now".
_SNAPSHOT = {
    "events": "SELECT delivery_id, provider, application, run_id, status, occurred_at, origin,"
    " payload FROM events ORDER BY delivery_id",
    "runs": "SELECT run_id, provider, application, status, grace_seconds, registered,"
    " poll_attempts, lease_owner, lease_expires_at IS NULL, next_poll_at IS NULL,"
    " last_event_at IS NULL FROM runs ORDER BY run_id",
    "transitions": "SELECT run_id, status, delivery_id FROM transitions ORDER BY run_id, status",
    "calls": "SELECT id, handler, run_id, status, delivery_id, state, attempts FROM handler_calls"
    " ORDER BY id",
}


@pytest.mark.parametrize("seed", range(6))
async def test_records_applied_together_match_records_one_by_one(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    deliveries = mixed_events(rng, 120)
    paths = {name: tmp_path / f"{name}.db" for name in ("together", "alone")}
    stores = {name: SQLiteStore(f"sqlite:///{path}") for name, path in paths.items()}
    results: dict[str, list[RecordResult]] = {}
    try:
        for store in stores.values():
            await store.open()
            await with_a_leased_run(store)
        for path in paths.values():
            # A transition stored without its run's status having moved (as left by an older
            # listener, say): reaching it again is old news, with no handler calls.
            _table(path, "INSERT INTO transitions VALUES ('run-2', 'succeeded', 'old', 0)")
        together = stores["together"]
        results["together"] = await record_in_chunks(together, deliveries)
        assert together.largest_batch > 1
        results["alone"] = [await stores["alone"].record(e, h) for e, h in deliveries]
    finally:
        for store in stores.values():
            await store.close()
    assert results["together"] == results["alone"]
    for sql in _SNAPSHOT.values():
        assert _table(paths["together"], sql) == _table(paths["alone"], sql)


async def test_text_with_nul_is_stored_whole_alongside_records_applied_together(
    tmp_path: Path,
) -> None:
    store = SQLiteStore(f"sqlite:///{tmp_path / 'x.db'}")
    await store.open()
    try:
        odd = [
            RunEvent("d\x00a", "nextmv", "routing", "plain-run", RunStatus.RUNNING),
            RunEvent("d-b", "nextmv", "routing", "run\x00b", RunStatus.SUCCEEDED),
            RunEvent("d-c", "nextmv", "rout\x00ing", "run-c", RunStatus.FAILED),
        ]
        plain = [event(f"p{i}", f"p-run{i}") for i in range(8)]
        results = await asyncio.gather(
            *(store.record(e, ["h"]) for e in plain[:4]),
            *(store.record(e, ["h"]) for e in odd),
            store.record(event("d-d", "run-d"), ["h\x00x"]),
            *(store.record(e, ["h"]) for e in plain[4:]),
        )
        assert store.largest_batch > 1
        assert all(r.run_created and r.transition is not None for r in results)
        for e in [*odd, *plain]:
            assert await store.get_event(e.delivery_id) == e
            run = await store.get_run(e.run_id)
            assert run is not None
            assert run.application == e.application
        calls = (await store.list_calls(run_id="run-d")).items
        assert [c.handler for c in calls] == ["h\x00x"]
        ids = [i for r in results for i in r.call_ids]
        assert len(set(ids)) == len(ids) == 12
    finally:
        await store.close()


async def test_a_failing_record_applied_together_loses_only_itself(tmp_path: Path) -> None:
    store = SQLiteStore(f"sqlite:///{tmp_path / 'x.db'}")
    await store.open()
    try:
        good = [event(f"ok{i}", f"run{i}") for i in range(10)]
        naive = RunEvent("bad", "nextmv", "routing", "run-bad", RunStatus.SUCCEEDED,
                         occurred_at=datetime(2026, 1, 1))  # fmt: skip
        writes = [store.record(e, ["h"]) for e in good[:5]]
        writes.append(store.record(naive, ["h"]))
        writes.extend(store.record(e, ["h"]) for e in good[5:])
        results = await asyncio.gather(*writes, return_exceptions=True)
        assert isinstance(results[5], ValueError)
        assert all(not isinstance(r, BaseException) for i, r in enumerate(results) if i != 5)
        assert (await store.counts()).events == 10
        assert await store.get_run("run-bad") is None
    finally:
        await store.close()


async def test_completions_applied_together_are_each_done_once(tmp_path: Path) -> None:
    store = SQLiteStore(f"sqlite:///{tmp_path / 'x.db'}")
    await store.open()
    try:
        for i in range(6):
            await store.record(event(f"d{i}", f"r{i}"), ["h"])
        calls = await store.claim_calls("me", limit=10, lease_seconds=60)
        ids = [call.id for call in calls]
        done = await asyncio.gather(
            *(store.complete_call(i, "me") for i in ids),
            store.complete_call(ids[0], "me"),  # again: already done
            store.complete_call(ids[1], "someone-else"),  # not the lease holder
        )
        assert done == [True] * len(ids) + [False, False]
        assert (await store.counts()).calls_by_state["done"] == len(ids)
    finally:
        await store.close()


async def test_completions_applied_together_match_the_complete_plan(tmp_path: Path) -> None:
    path = tmp_path / "base.db"
    store = SQLiteStore(f"sqlite:///{path}")
    await store.open()
    try:
        for i in range(12):
            await store.record(event(f"d{i}", f"r{i % 5}"), ["h", "g"])
        claimed = await store.claim_calls("me", limit=8, lease_seconds=60)
        await store.claim_calls("other", limit=3, lease_seconds=60)
    finally:
        await store.close()
    ids = [call.id for call in claimed]
    # Each of "me"'s calls, one twice, another claimer's call and an unknown id.
    requests = [(i, "me") for i in ids] + [(ids[0], "me"), (ids[-1] + 1, "me"), (999, "me")]
    copies = {}
    for name in ("plan", "together"):
        copies[name] = tmp_path / f"{name}.db"
        copies[name].write_bytes(path.read_bytes())
    by_plan = SQLiteStore(f"sqlite:///{copies['plan']}")
    together = SQLiteStore(f"sqlite:///{copies['together']}")
    await by_plan.open()
    await together.open()
    try:
        expected = [
            await by_plan._write_plan(functools.partial(complete_call_plan, DIALECT, i, owner))
            for i, owner in requests
        ]
        got = await asyncio.gather(*(together.complete_call(i, owner) for i, owner in requests))
        assert together.largest_batch > 1
    finally:
        await by_plan.close()
        await together.close()
    assert got == expected
    assert True in expected
    assert False in expected
    calls = (
        "SELECT id, state, attempts, lease_owner, lease_expires_at FROM handler_calls ORDER BY id"
    )
    assert _table(copies["together"], calls) == _table(copies["plan"], calls)
