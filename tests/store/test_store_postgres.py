"""What only the PostgreSQL backend does: schemas from the URL, secrets, reconnecting."""

from __future__ import annotations

import uuid

import psycopg
import pytest

from listener.events import RunEvent, RunStatus
from listener.store import StoreUnavailable, open_store
from listener.store.postgres import MIGRATIONS, PostgresStore


def event(delivery: str, run: str = "r1") -> RunEvent:
    return RunEvent(delivery, "nextmv", "routing", run, RunStatus.SUCCEEDED)


async def test_tables_land_in_the_schema_named_by_the_url(
    pg_schema_url: str, pg_base_url: str
) -> None:
    assert "options=-csearch_path%3D" in pg_schema_url
    store = await open_store(pg_schema_url)
    try:
        assert isinstance(store, PostgresStore)
        await store.record(event("d1"), ["h"])
    finally:
        await store.close()
    schema = pg_schema_url.rsplit("%3D", 1)[1]
    with psycopg.connect(pg_base_url) as conn:
        rows = conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = %s",
            [schema],
        ).fetchall()
    assert {r[0] for r in rows} == {
        "schema_version",
        "runs",
        "events",
        "transitions",
        "handler_calls",
        "unroutable",
        "rate_budgets",
        "webhook_episodes",
        "audit",
    }


async def test_a_version_4_database_gains_the_later_indexes(pg_schema_url: str) -> None:
    with psycopg.connect(pg_schema_url, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE schema_version (version integer PRIMARY KEY, applied_at"
            " timestamptz NOT NULL DEFAULT now())"
        )
        for version, statements in enumerate(MIGRATIONS[:4], start=1):
            for statement in statements:
                conn.execute(statement)
            conn.execute("INSERT INTO schema_version (version) VALUES (%s)", [version])
    store = PostgresStore(pg_schema_url)
    await store.open()
    try:
        assert await store.schema_version() == len(MIGRATIONS) == 9
        await store.record(event("d1"), ["h"])
        assert [
            call.handler for call in await store.claim_calls("me", limit=5, lease_seconds=9)
        ] == ["h"]
    finally:
        await store.close()
    with psycopg.connect(pg_schema_url) as conn:
        indexes = {
            row[0]
            for row in conn.execute(
                "SELECT indexname FROM pg_indexes WHERE schemaname = current_schema()"
            )
        }
        options: dict[str, list[str]] = dict(
            conn.execute(
                "SELECT relname, reloptions FROM pg_class"
                " WHERE relnamespace = current_schema()::regnamespace"
                " AND relname IN ('runs', 'handler_calls')"
            ).fetchall()
        )
    assert {"runs_due", "calls_leased", "calls_done", "runs_open"} <= indexes
    assert not {"runs_by_next_poll", "runs_by_deadline"} & indexes
    assert options == {"runs": ["fillfactor=80"], "handler_calls": ["fillfactor=80"]}


async def test_an_unreachable_server_is_unavailable_without_leaking_the_password() -> None:
    url = "postgresql://listener:s3cret-pw@127.0.0.1:1/test?connect_timeout=1"
    store = PostgresStore(url, pool_timeout=0.5, open_timeout=0.5)
    assert "s3cret-pw" not in store.url
    assert "s3cret-pw" not in repr(store)
    with pytest.raises(StoreUnavailable) as caught:
        await store.open()
    assert "s3cret-pw" not in str(caught.value)
    with pytest.raises(StoreUnavailable):
        await store.record(event("d1"))


async def test_connections_killed_by_the_server_are_replaced(
    pg_schema_url: str, pg_base_url: str
) -> None:
    name = f"listener-test-{uuid.uuid4().hex[:12]}"
    url = f"{pg_schema_url}&application_name={name}"
    # A connection being made when the kill lands fails, and the pool retries it after a
    # back-off of about a second: wait longer than that, as this is about replacement.
    store = PostgresStore(url, min_size=2, max_size=2, pool_timeout=5.0)
    await store.open()
    try:
        await store.record(event("d1", "r1"))
        with psycopg.connect(pg_base_url, autocommit=True) as admin:
            killed = admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE application_name = %s",
                [name],
            ).fetchall()
        assert killed
        assert (await store.record(event("d2", "r2"))).run_created
        assert await store.get_event("d2") is not None
        await store.ping()
    finally:
        await store.close()


async def test_one_transaction_per_write_without_group_commit(pg_schema_url: str) -> None:
    store = PostgresStore(pg_schema_url, group_commit=False, max_size=3)
    await store.open()
    try:
        for i in range(5):
            assert (await store.record(event(f"d{i}", f"r{i}"))).run_created
        assert store.commits == 0  # nothing went through the group writer
    finally:
        await store.close()
