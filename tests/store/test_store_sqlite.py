"""What only the SQLite backend does: URLs, files, locking, and its failure modes."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from listener.events import RunEvent, RunStatus
from listener.store import NewRun, StoreUnavailable, open_store
from listener.store._plans import claim_calls_plan, drive
from listener.store._sqlite_conn import DIALECT
from listener.store.sqlite import SQLiteStore, parse_sqlite_url


def event(delivery: str, run: str = "r1") -> RunEvent:
    return RunEvent(delivery, "nextmv", "routing", run, RunStatus.SUCCEEDED)


def test_url_forms() -> None:
    assert parse_sqlite_url("sqlite:///relative/x.db") == "relative/x.db"
    assert parse_sqlite_url("sqlite:////abs/x.db") == "/abs/x.db"
    assert parse_sqlite_url("sqlite://:memory:") is None
    assert parse_sqlite_url("sqlite:///:memory:") is None
    for bad in ["sqlite:x.db", "sqlite://host/x.db", "sqlite:///", "sqlite:///x.db?mode=ro"]:
        with pytest.raises(ValueError, match="sqlite"):
            parse_sqlite_url(bad)


async def test_memory_store_works_end_to_end() -> None:
    store = await open_store("sqlite://:memory:")
    try:
        assert isinstance(store, SQLiteStore)
        first = event("d1")
        result = await store.record(first, ["h"])
        assert result.run_created
        assert await store.get_event("d1") == first
        (call,) = await store.claim_calls("w", limit=5, lease_seconds=10)
        assert await store.complete_call(call.id, "w")
        assert (await store.counts()).calls_by_state["done"] == 1
    finally:
        await store.close()


async def test_relative_path_creates_its_directory_in_wal_mode(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    store = await open_store("sqlite:///data/sub/listener.db")
    try:
        await store.record(event("d1"))
    finally:
        await store.close()
    path = tmp_path / "data" / "sub" / "listener.db"
    assert path.is_file()
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert conn.execute("SELECT count(*) FROM events").fetchone() == (1,)
    finally:
        conn.close()


async def test_a_path_that_cannot_be_created_is_unavailable(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    with pytest.raises(StoreUnavailable, match="unavailable"):
        await SQLiteStore(f"sqlite:///{blocker}/listener.db").open()


async def test_a_file_that_is_not_a_database_is_unavailable(tmp_path: Path) -> None:
    path = tmp_path / "junk.db"
    path.write_bytes(b"this is not a database file at all" * 200)
    with pytest.raises(StoreUnavailable):
        await SQLiteStore(f"sqlite:///{path}").open()


async def test_a_write_lock_held_too_long_is_unavailable_then_recovers(tmp_path: Path) -> None:
    path = tmp_path / "locked.db"
    store = SQLiteStore(f"sqlite:///{path}", busy_timeout=0.2)
    await store.open()
    try:
        await store.record(event("d0", "r0"))
        other = sqlite3.connect(path, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        try:
            with pytest.raises(StoreUnavailable, match="locked"):
                await store.record(event("d1"))
            # WAL: readers are not held up by another writer.
            assert await store.get_event("d0") is not None
        finally:
            other.execute("ROLLBACK")
            other.close()
        assert (await store.record(event("d1"))).run_created
        assert await store.get_event("d1") is not None
    finally:
        await store.close()


async def test_one_commit_per_write_without_group_commit(tmp_path: Path) -> None:
    store = SQLiteStore(f"sqlite:///{tmp_path / 'naive.db'}", group_commit=False)
    await store.open()
    try:
        for i in range(5):
            await store.record(event(f"d{i}", f"r{i}"))
        assert (store.commits, store.writes, store.largest_batch) == (5, 5, 1)
    finally:
        await store.close()


# -- writes applied together ---------------------------------------------------------------


async def test_a_write_submitted_before_close_is_committed(tmp_path: Path) -> None:
    store = SQLiteStore(f"sqlite:///{tmp_path / 'x.db'}")
    await store.open()
    pending = asyncio.create_task(store.record(event("d1")))
    await asyncio.sleep(0)  # submitted, not yet handed to the writer thread
    await store.close()
    assert (await pending).run_created
    reopened = SQLiteStore(f"sqlite:///{tmp_path / 'x.db'}")
    await reopened.open()
    try:
        assert await reopened.get_event("d1") is not None
    finally:
        await reopened.close()


async def test_claims_walk_their_index_whatever_the_backlog(tmp_path: Path) -> None:
    path = tmp_path / "x.db"
    store = SQLiteStore(f"sqlite:///{path}")
    await store.open()
    await store.close()
    conn = sqlite3.connect(path)
    plans: list[str] = []

    def explain(sql: str, params: list[Any]) -> list[Any]:
        rows = conn.execute(f"EXPLAIN QUERY PLAN {sql}", params).fetchall()
        plans.append(" | ".join(str(row[-1]) for row in rows))
        return []  # nothing claimable: the plan goes on to its next statement

    try:
        drive(claim_calls_plan(DIALECT, "me", limit=5, lease_seconds=9, now=None), explain)
    finally:
        conn.close()
    # Expired leases, then due calls, each read from its partial index in order and no
    # further than needed: never every pending call sorted.
    assert len(plans) == 2
    assert "calls_leased" in plans[0]
    assert "calls_due" in plans[1]
    assert all("TEMP B-TREE" not in plan for plan in plans), plans


async def test_a_stored_time_out_of_range_stops_no_claim_or_listing(tmp_path: Path) -> None:
    # A row written before times were checked on the way in: 9999-12-31T23:59:59.999999
    # stored as seconds reads back as year 10000, which no datetime holds.
    path = tmp_path / "x.db"
    store = SQLiteStore(f"sqlite:///{path}")
    await store.open()
    try:
        await store.record(RunEvent("bad", "p", "a", "r-bad", RunStatus.SUCCEEDED), ["h"])
        await store.record(RunEvent("good", "p", "a", "r-good", RunStatus.SUCCEEDED), ["h"])
    finally:
        await store.close()
    conn = sqlite3.connect(path)
    with conn:
        conn.execute("UPDATE events SET occurred_at = 253402300800.0 WHERE delivery_id = 'bad'")
    conn.close()
    store = SQLiteStore(f"sqlite:///{path}")
    await store.open()
    try:
        claimed = await store.claim_calls("me", limit=10, lease_seconds=60)
        assert sorted(call.event.run_id for call in claimed) == ["r-bad", "r-good"]
        listed = {event.delivery_id: event for event in (await store.list_events()).items}
        assert listed["bad"].occurred_at.year == 9999
        assert listed["good"].occurred_at.year > 2000
    finally:
        await store.close()


async def test_a_new_database_file_is_private_to_its_owner(tmp_path: Path) -> None:
    path = tmp_path / "private.db"
    store = SQLiteStore(f"sqlite:///{path}")
    await store.open()
    try:
        await store.record(RunEvent("d", "p", "a", "r", RunStatus.SUCCEEDED))
        for name in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
            assert name.stat().st_mode & 0o777 == 0o600, name
    finally:
        await store.close()
    # A file its owner made already keeps the mode it was given.
    shared = tmp_path / "shared.db"
    shared.touch(mode=0o640)
    shared.chmod(0o640)
    store = SQLiteStore(f"sqlite:///{shared}")
    await store.open()
    await store.close()
    assert shared.stat().st_mode & 0o777 == 0o640


async def test_a_version_1_database_gains_the_status_call_count(tmp_path: Path) -> None:
    path = tmp_path / "v1.db"
    store = SQLiteStore(f"sqlite:///{path}")
    await store.open()
    await store.register_run(NewRun("old", "local", "a"))
    await store.close()
    conn = sqlite3.connect(path)
    with conn:  # back to what version 1 wrote
        conn.execute("DROP INDEX runs_due")
        conn.execute("DROP INDEX calls_done")
        conn.execute("DROP INDEX runs_open")
        conn.execute("DROP INDEX calls_leased")
        conn.execute(
            "CREATE INDEX calls_leased ON handler_calls (lease_expires_at) WHERE state = 'running'"
        )
        conn.execute(
            "CREATE INDEX runs_by_next_poll ON runs (next_poll_at) WHERE next_poll_at IS NOT NULL"
        )
        conn.execute("CREATE INDEX runs_by_deadline ON runs (deadline) WHERE deadline IS NOT NULL")
        conn.execute("ALTER TABLE runs DROP COLUMN status_calls")
        conn.execute("DROP TABLE rate_budgets")
        conn.execute("DROP INDEX transitions_by_created")
        conn.execute("ALTER TABLE runs DROP COLUMN on_end")
        conn.execute("ALTER TABLE runs DROP COLUMN on_end_context")
        conn.execute("DROP TABLE webhook_episodes")
        conn.execute("DROP TABLE audit")
        conn.execute("ALTER TABLE runs DROP COLUMN overdue_noticed_at")
        conn.execute("ALTER TABLE handler_calls DROP COLUMN started_at")
        conn.execute("DELETE FROM schema_version WHERE version > 1")
    conn.close()
    store = SQLiteStore(f"sqlite:///{path}")
    await store.open()
    try:
        assert await store.schema_version() == 9
        run = await store.get_run("old")
        assert run is not None
        assert run.status_calls == 0
    finally:
        await store.close()
