"""The default store: one SQLite file in WAL mode, embedded in the listener process.

All writes go through one writer thread with its own connection. It takes the writes
queued meanwhile (up to `MAX_BATCH`), applies them in one transaction, commits once and
then wakes every waiting caller: concurrent `record` calls share one fsync (group commit),
and no two writers in this process ever fight over SQLite's single write lock. A write
that fails is rolled back alone (the batch is run again with a savepoint per write).
Reads run on a small pool of read-only connections in worker threads; WAL lets them
proceed while the writer commits.

Durability: `synchronous=FULL`, so a commit is on disk before `record` returns and an
event that was answered 2xx survives a power cut, not just a killed process.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar, cast

from listener.events import Origin, RunEvent, RunStatus
from listener.store import _common as c
from listener.store.base import (
    CallState,
    HandlerCall,
    NewRun,
    Page,
    RecordResult,
    RunRecord,
    StoreCounts,
    StoreUnavailable,
    UnroutableRecord,
)

__all__ = ["MIGRATIONS", "SQLiteStore"]

T = TypeVar("T")

# Ordered schema scripts: entry i takes a database from version i to version i + 1.
# Times are REAL seconds since the epoch (UTC); JSON is TEXT.
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """CREATE TABLE runs (
            run_id TEXT PRIMARY KEY,
            provider TEXT NOT NULL,
            application TEXT NOT NULL,
            status TEXT NOT NULL,
            submitted_at REAL NOT NULL,
            last_event_at REAL,
            grace_seconds REAL NOT NULL,
            deadline REAL,
            next_poll_at REAL,
            poll_attempts INTEGER NOT NULL DEFAULT 0,
            lease_owner TEXT,
            lease_expires_at REAL,
            callback TEXT NOT NULL DEFAULT '{}',
            metadata TEXT NOT NULL DEFAULT '{}',
            registered INTEGER NOT NULL DEFAULT 1,
            updated_at REAL NOT NULL
        )""",
        "CREATE INDEX runs_by_submitted ON runs (submitted_at, run_id)",
        "CREATE INDEX runs_by_next_poll ON runs (next_poll_at) WHERE next_poll_at IS NOT NULL",
        "CREATE INDEX runs_by_deadline ON runs (deadline) WHERE deadline IS NOT NULL",
        """CREATE TABLE events (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            delivery_id TEXT NOT NULL UNIQUE,
            provider TEXT NOT NULL,
            application TEXT NOT NULL,
            run_id TEXT NOT NULL,
            status TEXT NOT NULL,
            occurred_at REAL NOT NULL,
            received_at REAL NOT NULL,
            origin TEXT NOT NULL,
            payload TEXT NOT NULL
        )""",
        "CREATE INDEX events_by_received ON events (received_at, id)",
        "CREATE INDEX events_by_run ON events (run_id, received_at, id)",
        """CREATE TABLE transitions (
            run_id TEXT NOT NULL,
            status TEXT NOT NULL,
            delivery_id TEXT NOT NULL,
            created_at REAL NOT NULL,
            PRIMARY KEY (run_id, status)
        ) WITHOUT ROWID""",
        """CREATE TABLE handler_calls (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            handler TEXT NOT NULL,
            run_id TEXT NOT NULL,
            status TEXT NOT NULL,
            delivery_id TEXT NOT NULL,
            state TEXT NOT NULL,
            attempts INTEGER NOT NULL DEFAULT 0,
            next_attempt_at REAL NOT NULL,
            last_error TEXT,
            lease_owner TEXT,
            lease_expires_at REAL,
            replays INTEGER NOT NULL DEFAULT 0,
            created_at REAL NOT NULL,
            updated_at REAL NOT NULL
        )""",
        "CREATE INDEX calls_due ON handler_calls (next_attempt_at, id) WHERE state = 'pending'",
        "CREATE INDEX calls_leased ON handler_calls (lease_expires_at) WHERE state = 'running'",
        "CREATE INDEX calls_by_run_handler ON handler_calls (run_id, handler, id)",
        "CREATE INDEX calls_by_state ON handler_calls (state, id)",
        """CREATE TABLE unroutable (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            source TEXT NOT NULL,
            delivery_id TEXT UNIQUE,
            reason TEXT NOT NULL,
            body BLOB NOT NULL,
            headers TEXT NOT NULL,
            received_at REAL NOT NULL
        )""",
    ),
)

# Primary result codes that mean "the database cannot serve right now", as opposed to a
# mistake in a statement (SQLITE_ERROR, constraint violations), which is left as it is.
_UNAVAILABLE_CODES = frozenset(
    {
        sqlite3.SQLITE_PERM,
        sqlite3.SQLITE_BUSY,
        sqlite3.SQLITE_LOCKED,
        sqlite3.SQLITE_NOMEM,
        sqlite3.SQLITE_READONLY,
        sqlite3.SQLITE_IOERR,
        sqlite3.SQLITE_CORRUPT,
        sqlite3.SQLITE_FULL,
        sqlite3.SQLITE_CANTOPEN,
        sqlite3.SQLITE_PROTOCOL,
        sqlite3.SQLITE_NOTADB,
    }
)


def _is_unavailable(exc: BaseException) -> bool:
    if isinstance(exc, StoreUnavailable | OSError):
        return True
    if type(exc) not in (sqlite3.OperationalError, sqlite3.DatabaseError):
        return False
    code = getattr(exc, "sqlite_errorcode", None)
    if code is None:
        return isinstance(exc, sqlite3.OperationalError)
    return (int(code) & 0xFF) in _UNAVAILABLE_CODES


def _execute(conn: sqlite3.Connection) -> Callable[[str, list[Any]], list[c.Row]]:
    def run(sql: str, params: list[Any]) -> list[c.Row]:
        return cast(list[c.Row], conn.execute(sql, params).fetchall())

    return run


DIALECT = c.Dialect(
    time_param=datetime.timestamp,  # Dialect.t has made it UTC already
    time_value=c.from_epoch,
    json_param=c.dump_json,
    json_value=c.load_json,
    key_to_cursor=float,
    cursor_to_key=float,
    cursor_time_type=float,
    for_update="",  # the writer holds SQLite's one write lock for the whole transaction
    skip_locked="",
)


def parse_sqlite_url(url: str) -> str | None:
    """The file path in a `sqlite:` URL, or None for an in-memory database."""
    if not url.startswith("sqlite://"):
        raise ValueError("a SQLite store URL starts with sqlite://")
    rest = url[len("sqlite://") :]
    if rest in (":memory:", "/:memory:"):
        return None
    if not rest.startswith("/") or len(rest) < 2 or "?" in rest:
        raise ValueError(
            "use sqlite:///relative/path.db, sqlite:////absolute/path.db or sqlite://:memory:"
        )
    return rest[1:]


class SQLiteStore:
    """The `Store` on one SQLite file (or memory). See the module docstring."""

    def __init__(
        self,
        url: str,
        *,
        default_grace_seconds: float = 60.0,
        group_commit: bool = True,
        busy_timeout: float = 10.0,
        readers: int = 4,
    ) -> None:
        self.url = url
        self.default_grace_seconds = default_grace_seconds
        # False commits every write alone: the same SQL, one transaction per write. It is
        # the honest baseline the benchmark measures group commit against.
        self.group_commit = group_commit
        self.busy_timeout = busy_timeout
        self._path = parse_sqlite_url(url)
        self._readers_max = max(1, readers)
        self._writer = c.GroupWriter(
            self._apply,
            max_batch=c.MAX_BATCH if group_commit else 1,
            name="listener-sqlite-writer",
        )
        self._writer_conn: sqlite3.Connection | None = None
        self._closing = False
        self._read_pool: queue.SimpleQueue[sqlite3.Connection] = queue.SimpleQueue()
        self._read_conns: list[sqlite3.Connection] = []
        self._read_lock = threading.Lock()
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None

    def __repr__(self) -> str:
        return f"SQLiteStore({self.url!r})"

    # -- plumbing ----------------------------------------------------------------------

    def _unavailable(self, exc: BaseException) -> StoreUnavailable:
        if isinstance(exc, StoreUnavailable):
            return exc
        where = self._path if self._path is not None else ":memory:"
        err = StoreUnavailable(f"SQLite store {where} unavailable: {exc}")
        err.__cause__ = exc
        return err

    def _connect(self, *, read_only: bool) -> sqlite3.Connection:
        target = self._path if self._path is not None else ":memory:"
        conn = sqlite3.connect(
            target, timeout=self.busy_timeout, isolation_level=None, check_same_thread=False
        )
        # sqlite3.Row reads columns by name, as the shared plans do, at C speed.
        conn.row_factory = sqlite3.Row
        conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout * 1000)}")
        if read_only:
            conn.execute("PRAGMA query_only = ON")
        else:
            conn.execute("PRAGMA synchronous = FULL")
        return conn

    def _enable_wal(self, conn: sqlite3.Connection) -> None:
        # Switching the journal mode needs a moment alone with the file; several processes
        # opening a new database at once can collide here, so retry within the busy timeout.
        give_up = time.monotonic() + self.busy_timeout
        while True:
            try:
                conn.execute("PRAGMA journal_mode = WAL").fetchall()
                return
            except sqlite3.OperationalError as exc:
                if not _is_unavailable(exc) or time.monotonic() >= give_up:
                    raise
                time.sleep(0.01)

    def _migrate(self, conn: sqlite3.Connection) -> None:
        # BEGIN IMMEDIATE takes the write lock first, so concurrent openers apply each
        # migration once, one after another.
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_version"
                " (version INTEGER PRIMARY KEY, applied_at REAL NOT NULL)"
            )
            row = conn.execute("SELECT coalesce(max(version), 0) AS v FROM schema_version")
            found = int(row.fetchone()["v"])
            c.check_schema_version(found, len(MIGRATIONS), f"SQLite database {self._path}")
            for version in range(found + 1, len(MIGRATIONS) + 1):
                for statement in MIGRATIONS[version - 1]:
                    conn.execute(statement)
                conn.execute(
                    "INSERT INTO schema_version (version, applied_at) VALUES (?, ?)",
                    (version, time.time()),
                )
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    def _setup(self) -> None:
        if self._path is not None:
            Path(self._path).parent.mkdir(parents=True, exist_ok=True)
        conn = self._connect(read_only=False)
        try:
            if self._path is not None:
                self._enable_wal(conn)
            self._migrate(conn)
        except BaseException:
            conn.close()
            raise
        self._writer_conn = conn

    # Statistics: transactions the writer committed, and the writes they carried.
    @property
    def commits(self) -> int:
        return self._writer.commits

    @property
    def writes(self) -> int:
        return self._writer.writes

    @property
    def largest_batch(self) -> int:
        return self._writer.largest_batch

    def _run_jobs(
        self, conn: sqlite3.Connection, batch: list[c.Job], *, isolate: bool
    ) -> list[c.Outcome] | None:
        """Run the batch in one transaction and commit it. Without `isolate`, give up and
        return None at the first job that fails; with it, each job runs in a savepoint and
        a failing job is rolled back alone."""
        outcomes: list[c.Outcome] = []
        conn.execute("BEGIN IMMEDIATE")
        for job in batch:
            if isolate:
                conn.execute("SAVEPOINT job")
            try:
                value = job.fn(conn)
            except Exception as exc:
                if _is_unavailable(exc):
                    raise
                if not isolate:
                    conn.execute("ROLLBACK")
                    return None
                conn.execute("ROLLBACK TO job")
                conn.execute("RELEASE job")
                outcomes.append((False, exc))
            else:
                if isolate:
                    conn.execute("RELEASE job")
                outcomes.append((True, value))
        conn.execute("COMMIT")
        return outcomes

    def _apply(self, batch: list[c.Job]) -> list[c.Outcome]:
        """Commit a batch (on the writer thread). The fast path runs it without savepoints;
        only when a job fails is the batch rolled back and run again with one savepoint per
        job, so that the failing job loses only itself and the others still commit."""
        conn = self._writer_conn
        if conn is None:
            raise StoreUnavailable("the store is not open")
        try:
            outcomes = self._run_jobs(conn, batch, isolate=False)
            if outcomes is None:
                outcomes = self._run_jobs(conn, batch, isolate=True)
        except Exception as exc:
            with contextlib.suppress(sqlite3.Error):
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
            if _is_unavailable(exc):
                raise self._unavailable(exc) from exc
            raise
        assert outcomes is not None
        return outcomes

    async def _write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if self._closing:
            raise StoreUnavailable("the store is not open")
        return await self._writer.submit(fn)

    def _read_sync(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        try:
            conn = self._read_pool.get_nowait()
        except queue.Empty:
            try:
                conn = self._connect(read_only=True)
            except Exception as exc:
                if _is_unavailable(exc):
                    raise self._unavailable(exc) from exc
                raise
            with self._read_lock:
                self._read_conns.append(conn)
        healthy = True
        try:
            # One read transaction: several statements see one snapshot.
            conn.execute("BEGIN")
            try:
                return fn(conn)
            finally:
                conn.execute("ROLLBACK")
        except Exception as exc:
            if _is_unavailable(exc):
                healthy = False
                raise self._unavailable(exc) from exc
            raise
        finally:
            if healthy:
                self._read_pool.put(conn)
            else:
                with self._read_lock:
                    self._read_conns.remove(conn)
                conn.close()

    async def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if self._path is None:
            # A memory database lives in the writer's connection alone.
            return await self._write(fn)
        if self._executor is None or self._closing:
            raise StoreUnavailable("the store is not open")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._read_sync, fn)

    @staticmethod
    def _plan(make: Callable[[], c.Plan[T]]) -> Callable[[sqlite3.Connection], T]:
        def run(conn: sqlite3.Connection) -> T:
            return c.drive(make(), _execute(conn))

        return run

    async def _write_plan(self, make: Callable[[], c.Plan[T]]) -> T:
        return await self._write(self._plan(make))

    async def _read_plan(self, make: Callable[[], c.Plan[T]]) -> T:
        return await self._read(self._plan(make))

    # -- lifecycle ---------------------------------------------------------------------

    async def open(self) -> None:
        if self._writer_conn is not None:
            return
        try:
            await asyncio.to_thread(self._setup)
        except Exception as exc:
            if _is_unavailable(exc):
                raise self._unavailable(exc) from exc
            raise
        self._closing = False
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=self._readers_max, thread_name_prefix="listener-sqlite-read"
        )
        self._writer.start()

    async def close(self) -> None:
        conn = self._writer_conn
        if conn is None:
            return
        self._closing = True
        await self._writer.stop()
        self._writer_conn = None
        conn.close()
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None
        with self._read_lock:
            for conn in self._read_conns:
                conn.close()
            self._read_conns.clear()
        while not self._read_pool.empty():
            self._read_pool.get_nowait()

    async def ping(self) -> None:
        await self._read_plan(c.ping_plan)

    async def schema_version(self) -> int:
        return await self._read_plan(c.schema_version_plan)

    # -- runs --------------------------------------------------------------------------

    async def register_run(self, run: NewRun) -> bool:
        return await self._write_plan(lambda: c.register_run_plan(DIALECT, run))

    async def get_run(self, run_id: str) -> RunRecord | None:
        return await self._read_plan(lambda: c.get_run_plan(DIALECT, run_id))

    async def list_runs(
        self,
        *,
        status: Sequence[RunStatus] | None = None,
        provider: str | None = None,
        application: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 100,
        cursor: str | None = None,
    ) -> Page[RunRecord]:
        return await self._read_plan(
            lambda: c.list_runs_plan(
                DIALECT,
                status=status,
                provider=provider,
                application=application,
                since=since,
                until=until,
                limit=limit,
                cursor=cursor,
            )
        )

    # -- events ------------------------------------------------------------------------

    async def record(self, event: RunEvent, handlers: Sequence[str] = ()) -> RecordResult:
        names = tuple(handlers)
        return await self._write_plan(
            lambda: c.record_plan(DIALECT, event, names, self.default_grace_seconds)
        )

    async def record_unroutable(
        self,
        *,
        source: str,
        delivery_id: str | None,
        reason: str,
        body: bytes,
        headers: Mapping[str, str],
    ) -> bool:
        return await self._write_plan(
            lambda: c.record_unroutable_plan(
                DIALECT,
                source=source,
                delivery_id=delivery_id,
                reason=reason,
                body=body,
                headers=headers,
            )
        )

    async def get_event(self, delivery_id: str) -> RunEvent | None:
        return await self._read_plan(lambda: c.get_event_plan(DIALECT, delivery_id))

    async def list_events(
        self,
        *,
        run_id: str | None = None,
        status: Sequence[RunStatus] | None = None,
        provider: str | None = None,
        application: str | None = None,
        origin: Origin | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 100,
        cursor: str | None = None,
    ) -> Page[RunEvent]:
        return await self._read_plan(
            lambda: c.list_events_plan(
                DIALECT,
                run_id=run_id,
                status=status,
                provider=provider,
                application=application,
                origin=origin,
                since=since,
                until=until,
                limit=limit,
                cursor=cursor,
            )
        )

    async def list_unroutable(
        self, *, limit: int = 100, cursor: str | None = None
    ) -> Page[UnroutableRecord]:
        return await self._read_plan(
            lambda: c.list_unroutable_plan(DIALECT, limit=limit, cursor=cursor)
        )

    # -- handler calls -----------------------------------------------------------------

    async def claim_calls(
        self, owner: str, *, limit: int, lease_seconds: float, now: datetime | None = None
    ) -> list[HandlerCall]:
        return await self._write_plan(
            lambda: c.claim_calls_plan(
                DIALECT, owner, limit=limit, lease_seconds=lease_seconds, now=now
            )
        )

    async def complete_call(self, call_id: int, owner: str) -> bool:
        return await self._write_plan(lambda: c.complete_call_plan(DIALECT, call_id, owner))

    async def fail_call(
        self, call_id: int, owner: str, *, error: str, retry_at: datetime | None
    ) -> bool:
        return await self._write_plan(
            lambda: c.fail_call_plan(DIALECT, call_id, owner, error=error, retry_at=retry_at)
        )

    async def release_call(self, call_id: int, owner: str) -> bool:
        return await self._write_plan(lambda: c.release_call_plan(DIALECT, call_id, owner))

    async def replay_call(self, call_id: int) -> bool:
        return await self._write_plan(lambda: c.replay_call_plan(DIALECT, call_id))

    async def get_call(self, call_id: int) -> HandlerCall | None:
        return await self._read_plan(lambda: c.get_call_plan(DIALECT, call_id))

    async def list_calls(
        self,
        *,
        state: CallState | None = None,
        run_id: str | None = None,
        handler: str | None = None,
        limit: int = 100,
        cursor: str | None = None,
    ) -> Page[HandlerCall]:
        return await self._read_plan(
            lambda: c.list_calls_plan(
                DIALECT, state=state, run_id=run_id, handler=handler, limit=limit, cursor=cursor
            )
        )

    # -- polling -----------------------------------------------------------------------

    async def claim_overdue_runs(
        self,
        owner: str,
        *,
        limit: int,
        lease_seconds: float,
        provider: str | None = None,
        now: datetime | None = None,
    ) -> list[RunRecord]:
        return await self._write_plan(
            lambda: c.claim_overdue_runs_plan(
                DIALECT,
                owner,
                limit=limit,
                lease_seconds=lease_seconds,
                provider=provider,
                now=now,
            )
        )

    async def reschedule_poll(
        self, run_id: str, owner: str, *, next_poll_at: datetime, attempts: int
    ) -> bool:
        return await self._write_plan(
            lambda: c.reschedule_poll_plan(
                DIALECT, run_id, owner, next_poll_at=next_poll_at, attempts=attempts
            )
        )

    async def release_run(self, run_id: str, owner: str) -> bool:
        return await self._write_plan(lambda: c.release_run_plan(DIALECT, run_id, owner))

    # -- reporting ---------------------------------------------------------------------

    async def counts(self) -> StoreCounts:
        return await self._read_plan(c.counts_plan)
