"""The PostgreSQL store, for several listener replicas sharing one database.

psycopg 3. `record` and `record_unroutable` go through one group writer: a thread with a
connection of its own that takes the writes queued meanwhile (up to `MAX_BATCH`), applies
them in one transaction, commits once and only then wakes the callers (a write that fails
is rolled back alone: the batch is run again with a savepoint per write). The records of
a batch go in waves of distinct runs and deliveries (records of one run, or of one
delivery, go in later waves, in their order), and each wave is applied set-wise
(`_pg_batch.record_wave`): one statement per step for all its records, the statements of
a step pipelined, so a wave costs a few round trips however many records it holds.
Everything else runs in its own short
transaction on an async connection pool. Claims pick rows with
`FOR UPDATE SKIP LOCKED`, so replicas never get the same call or run. The schema is
created in the connection's current schema (the first in `search_path`), under an
advisory lock so that concurrent openers migrate once.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar, cast

import psycopg
import psycopg.errors
from psycopg.rows import DictRow, dict_row
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool, ConnectionPool

from listener.events import RunEvent
from listener.redaction import redact_url, scrub, url_secrets
from listener.store import _common as c
from listener.store import _pg_changes as changes
from listener.store import _plans as plans
from listener.store._group_commit import MAX_BATCH, GroupWriter, Job, Outcome
from listener.store._pg_batch import RecordArgs, drive_rounds, record_wave
from listener.store._planned import PlannedStore
from listener.store.base import (
    Change,
    RecordResult,
    StoreUnavailable,
)

__all__ = ["MIGRATIONS", "PostgresStore"]

T = TypeVar("T")
Conn = psycopg.AsyncConnection[DictRow]
SyncConn = psycopg.Connection[DictRow]

# Ordered schema scripts: entry i takes a database from version i to version i + 1.
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """CREATE TABLE runs (
            run_id text PRIMARY KEY,
            provider text NOT NULL,
            application text NOT NULL,
            status text NOT NULL,
            submitted_at timestamptz NOT NULL,
            last_event_at timestamptz,
            grace_seconds double precision NOT NULL,
            deadline timestamptz,
            next_poll_at timestamptz,
            poll_attempts integer NOT NULL DEFAULT 0,
            lease_owner text,
            lease_expires_at timestamptz,
            callback jsonb NOT NULL DEFAULT '{}',
            metadata jsonb NOT NULL DEFAULT '{}',
            registered integer NOT NULL DEFAULT 1,
            updated_at timestamptz NOT NULL
        )""",
        "CREATE INDEX runs_by_submitted ON runs (submitted_at, run_id)",
        "CREATE INDEX runs_by_next_poll ON runs (next_poll_at) WHERE next_poll_at IS NOT NULL",
        "CREATE INDEX runs_by_deadline ON runs (deadline) WHERE deadline IS NOT NULL",
        """CREATE TABLE events (
            id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            delivery_id text NOT NULL UNIQUE,
            provider text NOT NULL,
            application text NOT NULL,
            run_id text NOT NULL,
            status text NOT NULL,
            occurred_at timestamptz NOT NULL,
            received_at timestamptz NOT NULL,
            origin text NOT NULL,
            payload jsonb NOT NULL
        )""",
        "CREATE INDEX events_by_received ON events (received_at, id)",
        "CREATE INDEX events_by_run ON events (run_id, received_at, id)",
        """CREATE TABLE transitions (
            run_id text NOT NULL,
            status text NOT NULL,
            delivery_id text NOT NULL,
            created_at timestamptz NOT NULL,
            PRIMARY KEY (run_id, status)
        )""",
        """CREATE TABLE handler_calls (
            id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            handler text NOT NULL,
            run_id text NOT NULL,
            status text NOT NULL,
            delivery_id text NOT NULL,
            state text NOT NULL,
            attempts integer NOT NULL DEFAULT 0,
            next_attempt_at timestamptz NOT NULL,
            last_error text,
            lease_owner text,
            lease_expires_at timestamptz,
            replays integer NOT NULL DEFAULT 0,
            created_at timestamptz NOT NULL,
            updated_at timestamptz NOT NULL
        )""",
        "CREATE INDEX calls_due ON handler_calls (next_attempt_at, id) WHERE state = 'pending'",
        "CREATE INDEX calls_leased ON handler_calls (lease_expires_at) WHERE state = 'running'",
        "CREATE INDEX calls_by_run_handler ON handler_calls (run_id, handler, id)",
        "CREATE INDEX calls_by_state ON handler_calls (state, id)",
        """CREATE TABLE unroutable (
            id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            source text NOT NULL,
            delivery_id text UNIQUE,
            reason text NOT NULL,
            body bytea NOT NULL,
            headers jsonb NOT NULL,
            received_at timestamptz NOT NULL
        )""",
    ),
    # Status calls made for a run over its life (poll_attempts restarts with each news).
    ("ALTER TABLE runs ADD COLUMN status_calls integer NOT NULL DEFAULT 0",),
    # Request budgets shared by every replica (`listener.budget`), and run ends by time,
    # for the health report (`listener.health`).
    (
        """CREATE TABLE rate_budgets (
            name text PRIMARY KEY,
            tokens double precision NOT NULL,
            updated_at timestamptz NOT NULL
        )""",
        "CREATE INDEX transitions_by_created ON transitions (created_at)",
    ),
    # The function called once when the run ends, with its context (`listener.run_end`).
    (
        "ALTER TABLE runs ADD COLUMN on_end text",
        "ALTER TABLE runs ADD COLUMN on_end_context jsonb NOT NULL DEFAULT '{}'",
    ),
    # Each provider's webhook state shared by every replica (`listener.watching`), so a
    # degraded episode is told once, not once per replica.
    (
        """CREATE TABLE webhook_episodes (
            provider text PRIMARY KEY,
            degraded integer NOT NULL,
            since timestamptz,
            updated_at timestamptz NOT NULL
        )""",
    ),
    # Operator actions taken in the console (`Store.record_audit`).
    (
        """CREATE TABLE audit (
            id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            at timestamptz NOT NULL,
            actor text NOT NULL,
            action text NOT NULL,
            count integer NOT NULL DEFAULT 0,
            detail jsonb NOT NULL DEFAULT '{}'
        )""",
        "CREATE INDEX audit_by_at ON audit (at, id)",
    ),
    # Indexes the hot queries walk in their own order, so each reads about as many rows as
    # it returns however large the tables grow (`tests/store/test_store_plans_postgres.py`):
    # open runs by when they are due (the poller's claim), expired leases in claim order,
    # done calls by age (retention), open runs newest first (the streams' listing). Runs
    # and calls are updated in place all their life: room left in each page lets an update
    # that changes no indexed column stay in it.
    (
        "DROP INDEX runs_by_next_poll",
        "DROP INDEX runs_by_deadline",
        "CREATE INDEX runs_due ON runs ((CASE WHEN next_poll_at IS NULL THEN deadline"
        " WHEN deadline IS NULL OR next_poll_at <= deadline THEN next_poll_at ELSE deadline END),"
        " run_id) WHERE status IN ('queued', 'running')",
        "DROP INDEX calls_leased",
        "CREATE INDEX calls_leased ON handler_calls (lease_expires_at, id) WHERE state = 'running'",
        "CREATE INDEX calls_done ON handler_calls (updated_at, id) WHERE state = 'done'",
        "CREATE INDEX runs_open ON runs (submitted_at, run_id)"
        " WHERE status IN ('queued', 'running')",
        "ALTER TABLE runs SET (fillfactor = 80)",
        "ALTER TABLE handler_calls SET (fillfactor = 80)",
    ),
    # When a run was reported overdue, so that each run is reported once by any process.
    ("ALTER TABLE runs ADD COLUMN overdue_noticed_at timestamptz",),
    # When a handler call's last attempt was claimed: how long it took, for the console.
    ("ALTER TABLE handler_calls ADD COLUMN started_at timestamptz",),
)

# First half of the advisory lock key taken while migrating ("list" in ASCII); the second
# half is the schema's name, so databases holding several schemas migrate them independently.
_MIGRATION_LOCK = 0x6C697374
# A batch that deadlocks with another replica's batch is rolled back and tried again.
_BATCH_TRIES = 3


def _utc(value: Any) -> datetime:
    return cast(datetime, value).astimezone(UTC)


def _cursor_time(value: Any) -> str:
    return _utc(value).isoformat()


def _jsonb(value: Mapping[str, Any]) -> Jsonb:
    return Jsonb(dict(value))


DIALECT = plans.Dialect(
    time_param=lambda value: value,  # Dialect.t has made it UTC already
    time_value=_utc,
    json_param=_jsonb,
    json_value=lambda value: value,
    key_to_cursor=_cursor_time,
    cursor_to_key=datetime.fromisoformat,
    cursor_time_type=str,
    for_update=" FOR UPDATE",
    skip_locked=" FOR UPDATE SKIP LOCKED",
    arrays=True,
    probe=" OFFSET 0",
    lateral=True,
)


@functools.lru_cache(maxsize=256)
def _pg_sql(sql: str) -> str:
    """The shared `?` placeholders, spelled the way psycopg expects."""
    return sql.replace("%", "%%").replace("?", "%s")


async def _drive(conn: Conn, plan: plans.Plan[T]) -> T:
    try:
        sql, params = next(plan)
        while True:
            cur = await conn.execute(_pg_sql(sql), params)
            rows: list[c.Row] = []
            if cur.description is not None:
                rows.extend(await cur.fetchall())
            sql, params = plan.send(rows)
    except StopIteration as done:
        return cast(T, done.value)


class _JobFailed(Exception):
    """A job failed on the fast path: the batch is rolled back and run again isolated.
    Without an error, nothing failed: another writer got in the fast path's way, and the
    plans, run again, decide with what that writer did."""

    def __init__(self, error: Exception | None) -> None:
        super().__init__(str(error) if error is not None else "raced another writer")
        self.error = error


def _execute_sync(conn: SyncConn) -> Callable[[str, list[Any]], list[c.Row]]:
    def run(sql: str, params: list[Any]) -> list[c.Row]:
        cur = conn.execute(_pg_sql(sql), params)
        return list(cur.fetchall()) if cur.description is not None else []

    return run


def _execute_pipelined(conn: SyncConn) -> Callable[[list[plans.Stmt]], list[list[c.Row]]]:
    """Several statements in one round trip (psycopg's pipeline mode), each one's rows."""

    def run_all(stmts: list[plans.Stmt]) -> list[list[c.Row]]:
        cursors = []
        with conn.pipeline():
            for sql, params in stmts:
                cur = conn.cursor()
                cur.execute(_pg_sql(sql), params)
                cursors.append(cur)
        return [list(cur.fetchall()) if cur.description is not None else [] for cur in cursors]

    return run_all


_NOTIFY = "SELECT pg_notify(%s, %s)"


class PostgresStore(PlannedStore):
    """The `Store` on PostgreSQL. See the module docstring. Every operation is one plan
    (see `PlannedStore`): reads and most writes in a transaction of their own on the pool,
    records and unroutable deliveries through the group writer.

    `url` keeps the address with any password masked, so it is safe to log; the real one
    is only handed to the driver.
    """

    dialect = DIALECT

    def __init__(
        self,
        url: str,
        *,
        default_grace_seconds: float = 60.0,
        min_size: int = 1,
        max_size: int = 10,
        group_commit: bool = True,
        pool_timeout: float = 1.0,
        open_timeout: float = 5.0,
    ) -> None:
        self._conninfo = url
        self.url = redact_url(url)
        self.default_grace_seconds = default_grace_seconds
        self.min_size = min_size
        self.max_size = max(max_size, min_size)
        # False commits every record alone, on its own pooled connection: the same SQL,
        # one transaction per event. It is the baseline group commit is measured against.
        self.group_commit = group_commit
        # How long one operation waits for a connection before the store is unavailable:
        # during an outage a delivery is answered 503 within about this long, and its
        # sender retries. Opening waits longer, for a server that is still starting.
        self.pool_timeout = pool_timeout
        self.open_timeout = max(open_timeout, pool_timeout)
        self._secrets = url_secrets(url)
        self._pool: AsyncConnectionPool[Conn] | None = None
        # The group writer runs on a thread with a blocking connection of its own: a round
        # trip there costs a fraction of one made through the event loop, and the writer
        # makes several per event.
        self._writer = GroupWriter(
            self._apply, max_batch=MAX_BATCH, name="listener-postgres-writer"
        )
        self._writer_pool: ConnectionPool[SyncConn] | None = None
        self._closing = False
        # Statistics: batches run again with a savepoint per write after one failed.
        self.isolated_batches = 0
        # The channel of this store's schema (set on open), for `follow_changes`.
        self._channel = changes.channel_for("")

    def __repr__(self) -> str:
        return f"PostgresStore({self.url!r})"

    # -- plumbing ----------------------------------------------------------------------

    def _unavailable(self, exc: BaseException) -> StoreUnavailable:
        if isinstance(exc, StoreUnavailable):
            return exc
        message = scrub(str(exc).strip() or type(exc).__name__, self._secrets)
        err = StoreUnavailable(f"PostgreSQL store {self.url} unavailable: {message}")
        err.__cause__ = exc
        return err

    def _ready_pool(self) -> AsyncConnectionPool[Conn]:
        if self._pool is None or self._closing:
            raise StoreUnavailable("the store is not open")
        return self._pool

    async def _run(self, make: Callable[[], plans.Plan[T]], *, notify: bool = False) -> T:
        """One plan in its own transaction on a pooled connection; with `notify`, what it
        did is announced to the other replicas in the same transaction."""
        pool = self._ready_pool()
        try:
            async with pool.connection() as conn, conn.transaction():
                value = await _drive(conn, make())
                for payload in changes.notices_for([value]) if notify else ():
                    await conn.execute(_NOTIFY, [self._channel, payload])
                return value
        except psycopg.OperationalError as exc:
            raise self._unavailable(exc) from exc

    async def _submit(self, make: Callable[[], plans.Plan[T]], args: Any = None) -> T:
        """A plan for the group writer, committed with whatever else is queued."""
        if not self.group_commit:
            return await self._run(make, notify=True)
        self._ready_pool()

        def job(conn: SyncConn) -> T:
            return plans.drive(make(), _execute_sync(conn))

        return await self._writer.submit(job, args)

    async def record(self, event: RunEvent, handlers: Sequence[str] = ()) -> RecordResult:
        names = tuple(handlers)

        def make() -> plans.Plan[RecordResult]:
            return plans.record_plan(self.dialect, event, names, self.default_grace_seconds)

        return await self._submit(make, RecordArgs(event, names, self.default_grace_seconds))

    async def follow_changes(self, on_change: Callable[[Change], None]) -> None:
        """Other replicas' new handler calls and ended runs, as their commits announce
        them on this schema's channel (see `listener.store._pg_changes`), until cancelled."""
        self._ready_pool()
        await changes.follow(
            self._conninfo, self._channel, on_change, connect_timeout=self.open_timeout
        )

    _read_plan = _run
    _write_plan = _run
    _delivery_plan = _submit

    # Statistics: transactions the group writer committed, and the writes they carried.
    @property
    def commits(self) -> int:
        return self._writer.commits

    @property
    def writes(self) -> int:
        return self._writer.writes

    @property
    def largest_batch(self) -> int:
        return self._writer.largest_batch

    def _apply(self, batch: list[Job]) -> list[Outcome]:
        """Commit a batch (on the writer thread). The fast path runs it without savepoints;
        when a job fails, the batch is rolled back and run again with one savepoint per job,
        so the failing job loses only itself. A batch that deadlocks with another replica's
        is rolled back and tried again."""
        isolate = False
        tries = 0
        while True:
            try:
                return self._apply_once(batch, isolate=isolate)
            except _JobFailed as failed:
                if len(batch) == 1 and failed.error is not None:
                    return [(False, failed.error)]
                isolate = True
                self.isolated_batches += 1
            except psycopg.errors.TransactionRollback as exc:
                tries += 1
                if tries >= _BATCH_TRIES:
                    raise self._unavailable(exc) from exc
            except psycopg.OperationalError as exc:
                raise self._unavailable(exc) from exc

    def _apply_once(self, batch: list[Job], *, isolate: bool) -> list[Outcome]:
        pool = self._writer_pool
        if pool is None:
            raise StoreUnavailable("the store is not open")
        outcomes: list[Outcome] = []
        with pool.connection() as conn, conn.transaction():
            if not isolate:
                outcomes = self._apply_together(conn, batch)
            else:
                outcomes = self._apply_isolated(conn, batch)
            # Delivered to the other replicas only if the batch commits.
            for payload in changes.notices_for(value for ok, value in outcomes if ok):
                conn.execute(_NOTIFY, [self._channel, payload])
        return outcomes

    @staticmethod
    def _apply_isolated(conn: SyncConn, batch: list[Job]) -> list[Outcome]:
        """The batch with a savepoint per write: a failing write is rolled back alone."""
        outcomes: list[Outcome] = []
        for job in batch:
            try:
                with conn.transaction():  # a savepoint
                    value = job.fn(conn)
            except psycopg.OperationalError:
                raise
            except Exception as exc:
                outcomes.append((False, exc))
            else:
                outcomes.append((True, value))
        return outcomes

    @staticmethod
    def _apply_together(conn: SyncConn, batch: list[Job]) -> list[Outcome]:
        """The batch without savepoints, inside the caller's transaction; the first
        failure rolls it all back (`_JobFailed`). Its records run at the place of the
        first of them, in waves applied set-wise (`_pg_batch.record_wave`): a few round
        trips a wave instead of several per record (a record of a run, or a delivery,
        already in the wave waits for the next one)."""
        outcomes: list[Outcome | None] = [None] * len(batch)
        records = [i for i, job in enumerate(batch) if isinstance(job.args, RecordArgs)]
        first = records[0] if records else None
        try:
            for index, job in enumerate(batch):
                if outcomes[index] is not None:
                    continue
                if index != first:
                    outcomes[index] = (True, job.fn(conn))
                    continue
                items: list[RecordArgs] = [batch[i].args for i in records]
                for wave in plans.in_step_waves([item.keys for item in items]):
                    values = drive_rounds(
                        record_wave([items[i] for i in wave]), _execute_pipelined(conn)
                    )
                    if values is None:
                        raise _JobFailed(None)
                    for i, value in zip(wave, values, strict=True):
                        outcomes[records[i]] = (True, value)
        except psycopg.OperationalError:
            raise  # the connection or transaction is gone: the whole batch fails
        except _JobFailed:
            raise
        except Exception as exc:
            raise _JobFailed(exc) from exc  # rolls the transaction back
        return cast(list[Outcome], outcomes)

    async def _migrate(self, conn: Conn) -> None:
        async with conn.transaction():
            await conn.execute(
                f"SELECT pg_advisory_xact_lock({_MIGRATION_LOCK},"
                " hashtext(coalesce(current_schema(), '')))"
            )
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_version"
                " (version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
            )
            cur = await conn.execute("SELECT coalesce(max(version), 0) AS v FROM schema_version")
            row = await cur.fetchone()
            found = int(row["v"]) if row is not None else 0
            where = f"PostgreSQL database {self.url}"
            c.check_schema_version(found, len(MIGRATIONS), where)
            for version in range(found + 1, len(MIGRATIONS) + 1):
                for statement in MIGRATIONS[version - 1]:
                    await conn.execute(statement)
                await conn.execute("INSERT INTO schema_version (version) VALUES (%s)", [version])

    # -- lifecycle ---------------------------------------------------------------------

    async def open(self) -> None:
        if self._pool is not None:
            return
        pool: AsyncConnectionPool[Conn] = AsyncConnectionPool(
            self._conninfo,
            connection_class=psycopg.AsyncConnection[DictRow],
            kwargs={"row_factory": dict_row},
            min_size=self.min_size,
            max_size=self.max_size,
            open=False,
            timeout=self.pool_timeout,
            # A connection broken by a server restart is replaced before it is handed out.
            check=AsyncConnectionPool.check_connection,
            name="listener-store",
        )
        try:
            await pool.open(wait=True, timeout=self.open_timeout)
            async with pool.connection() as conn:
                await self._migrate(conn)
                cur = await conn.execute("SELECT current_schema() AS schema")
                row = await cur.fetchone()
                self._channel = changes.channel_for(str(row["schema"]) if row else "")
        except BaseException as exc:
            await pool.close()
            if isinstance(exc, psycopg.OperationalError):
                raise self._unavailable(exc) from exc
            raise
        if self.group_commit:
            writer_pool: ConnectionPool[SyncConn] = ConnectionPool(
                self._conninfo,
                connection_class=psycopg.Connection[DictRow],
                kwargs={"row_factory": dict_row},
                min_size=1,
                max_size=1,
                open=False,
                timeout=self.pool_timeout,
                check=ConnectionPool.check_connection,
                name="listener-store-writer",
                num_workers=1,
            )
            try:
                await asyncio.to_thread(writer_pool.open, True, self.open_timeout)
            except BaseException as exc:
                await asyncio.to_thread(writer_pool.close)
                await pool.close()
                if isinstance(exc, psycopg.OperationalError):
                    raise self._unavailable(exc) from exc
                raise
            self._writer_pool = writer_pool
            self._writer.start()
        self._pool = pool
        self._closing = False

    async def close(self) -> None:
        pool = self._pool
        if pool is None:
            return
        # Queued writes finish first: their callers are still waiting.
        await self._writer.stop()
        if self._writer_pool is not None:
            await asyncio.to_thread(self._writer_pool.close)
            self._writer_pool = None
        self._closing = True
        self._pool = None
        await pool.close()
