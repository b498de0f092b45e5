"""The default store: one SQLite file in WAL mode, embedded in the listener process.

All writes go through one writer thread with its own connection. It takes the writes
queued meanwhile (up to `MAX_BATCH`), applies them in one transaction, commits once and
then wakes every waiting caller: concurrent `record` calls share one fsync (group commit),
and no two writers in this process ever fight over SQLite's single write lock. Within a
batch, the `record` calls are applied together (`_sqlite_batch.record_many`: a few
statements for the whole batch, each taking its rows as one JSON array) and so are the
`complete_call` calls;
a write that fails is rolled back alone (the batch is run again with a savepoint per
write, each write through its own plan). Reads run on a small pool of read-only
connections in worker threads; WAL lets them proceed while the writer commits.

The writer thread holds the GIL only between calls into SQLite, and every call (every
statement, every row fetched) gives it up and must win it back from the event loop's
thread; so the hot writes (records, completions, claims) take a few statements per batch,
each returning at most one row, however many writes the batch holds.

Durability: `synchronous=FULL`, so a commit is on disk before `record` returns and an
event that was answered 2xx survives a power cut, not just a killed process.
WAL checkpoints run on the writer thread when it has nothing queued (see
`CHECKPOINT_INTERVAL`), not inside a commit that callers are waiting for.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar, cast

from listener.events import RunEvent
from listener.store import _common as c
from listener.store import _plans as plans
from listener.store._group_commit import MAX_BATCH, GroupWriter, Job, Outcome
from listener.store._planned import PlannedStore
from listener.store._sqlite_batch import (
    CompleteArgs,
    RecordArgs,
    apply_together,
    batchable,
)
from listener.store._sqlite_conn import DIALECT, execute_on, is_unavailable
from listener.store._sqlite_schema import MIGRATIONS
from listener.store.base import (
    HandlerCall,
    RecordResult,
    StoreUnavailable,
)

__all__ = ["MIGRATIONS", "SQLiteStore"]

T = TypeVar("T")

# WAL checkpoints (copying committed pages back into the database file) are done by the
# writer thread when it runs out of work, at most every CHECKPOINT_INTERVAL seconds and
# CHECKPOINT_AFTER_COMMITS commits, rather than by SQLite inside whichever commit crosses
# its threshold: that commit, and everything queued behind it, would wait for the copy and
# its fsyncs. SQLite's own checkpoint stays on, at a higher threshold, for a writer that
# is never idle.
CHECKPOINT_INTERVAL = 0.1
CHECKPOINT_AFTER_COMMITS = 16
AUTOCHECKPOINT_PAGES = 4000


def _create_private(path: str) -> None:
    """Create the database file readable by its owner only (0600): it holds payloads and
    callback nonces. SQLite gives its -wal and -shm files the database file's mode. An
    existing file keeps the mode its owner gave it."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    except OSError:
        return  # SQLite's own open reports the problem, with its usual message
    os.close(fd)


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


class SQLiteStore(PlannedStore):
    """The `Store` on one SQLite file (or memory). See the module docstring.

    Operations that are one plan run through `PlannedStore`; records, claims and
    completions have their batched forms here.
    """

    dialect = DIALECT

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
        self._writer = GroupWriter(
            self._apply,
            max_batch=MAX_BATCH if group_commit else 1,
            name="listener-sqlite-writer",
            idle=self._checkpoint_when_idle,
        )
        self._checkpointed_after = 0  # the writer's commit count at the last checkpoint
        self._checkpointed_at = 0.0
        self._writer_conn: sqlite3.Connection | None = None
        # Whether this SQLite has the JSON functions `record_many` needs (3.38 and later
        # always do; older builds usually had them compiled in).
        self._json = False
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
            conn.execute(f"PRAGMA wal_autocheckpoint = {AUTOCHECKPOINT_PAGES}")
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
                if not is_unavailable(exc) or time.monotonic() >= give_up:
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
            _create_private(self._path)
        conn = self._connect(read_only=False)
        try:
            if self._path is not None:
                self._enable_wal(conn)
            self._migrate(conn)
        except BaseException:
            conn.close()
            raise
        try:
            conn.execute("SELECT json_extract(json_array(1), '$[0]')").fetchall()
            self._json = True
        except sqlite3.OperationalError:
            self._json = False
        self._writer_conn = conn

    def _checkpoint_when_idle(self) -> None:
        """On the writer thread, with nothing queued: a WAL checkpoint, now and then."""
        conn = self._writer_conn
        commits = self._writer.commits
        if conn is None or self._path is None:
            return
        if commits - self._checkpointed_after < CHECKPOINT_AFTER_COMMITS:
            return
        now = time.monotonic()
        if now - self._checkpointed_at < CHECKPOINT_INTERVAL:
            return
        self._checkpointed_after, self._checkpointed_at = commits, now
        # PASSIVE: copies what no reader still needs and never waits; what is left, the
        # next one copies. A failure here loses nothing: the WAL keeps every commit.
        with contextlib.suppress(sqlite3.Error):
            conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()

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
        self, conn: sqlite3.Connection, batch: list[Job], *, isolate: bool
    ) -> list[Outcome] | None:
        """Run the batch in one transaction and commit it. Without `isolate`, writes of a
        kind the store can apply together (`record`, `complete_call`) are, at the place of
        the first of them, and the first failure gives up and returns None; with it, each
        job runs alone in a savepoint and a failing job is rolled back alone."""
        outcomes: list[Outcome | None] = [None] * len(batch)
        together: dict[int, list[int]] = {}  # first index of a kind: all its indexes
        if not isolate:
            kinds: dict[type, list[int]] = {}
            for index, job in enumerate(batch):
                if job.args is not None:
                    kinds.setdefault(type(job.args), []).append(index)
            # A write alone takes its own plan: no gain in the batch form.
            together = {group[0]: group for group in kinds.values() if len(group) > 1}
        conn.execute("BEGIN IMMEDIATE")
        for index, job in enumerate(batch):
            if outcomes[index] is not None:
                continue
            if isolate:
                conn.execute("SAVEPOINT job")
            try:
                group = together.get(index)
                if group is not None:
                    results = apply_together(conn, [batch[i].args for i in group])
                    for i, result in zip(group, results, strict=True):
                        outcomes[i] = (True, result)
                    continue
                value = job.fn(conn)
            except Exception as exc:
                if is_unavailable(exc):
                    raise
                if not isolate:
                    conn.execute("ROLLBACK")
                    return None
                conn.execute("ROLLBACK TO job")
                conn.execute("RELEASE job")
                outcomes[index] = (False, exc)
            else:
                if isolate:
                    conn.execute("RELEASE job")
                outcomes[index] = (True, value)
        conn.execute("COMMIT")
        return cast(list[Outcome], outcomes)

    def _apply(self, batch: list[Job]) -> list[Outcome]:
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
            if is_unavailable(exc):
                raise self._unavailable(exc) from exc
            raise
        assert outcomes is not None
        return outcomes

    async def _write(self, fn: Callable[[sqlite3.Connection], T], args: Any = None) -> T:
        if self._closing:
            raise StoreUnavailable("the store is not open")
        return await self._writer.submit(fn, args)

    def _read_sync(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        try:
            conn = self._read_pool.get_nowait()
        except queue.Empty:
            try:
                conn = self._connect(read_only=True)
            except Exception as exc:
                if is_unavailable(exc):
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
            if is_unavailable(exc):
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
    def _plan(make: Callable[[], plans.Plan[T]]) -> Callable[[sqlite3.Connection], T]:
        def run(conn: sqlite3.Connection) -> T:
            return plans.drive(make(), execute_on(conn))

        return run

    async def _write_plan(self, make: Callable[[], plans.Plan[T]]) -> T:
        return await self._write(self._plan(make))

    async def _read_plan(self, make: Callable[[], plans.Plan[T]]) -> T:
        return await self._read(self._plan(make))

    # The one writer thread commits in groups already.
    _delivery_plan = _write_plan

    # -- lifecycle ---------------------------------------------------------------------

    async def open(self) -> None:
        if self._writer_conn is not None:
            return
        try:
            await asyncio.to_thread(self._setup)
        except Exception as exc:
            if is_unavailable(exc):
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

    # -- events ------------------------------------------------------------------------

    async def record(self, event: RunEvent, handlers: Sequence[str] = ()) -> RecordResult:
        job = RecordArgs(event, tuple(handlers), self.default_grace_seconds)
        # Marked as a record, the writer may apply it together with the others it batches.
        together = self._json and batchable(event, job.handlers)
        return await self._write(job, job if together else None)

    # -- handler calls -----------------------------------------------------------------

    async def claim_calls(
        self, owner: str, *, limit: int, lease_seconds: float, now: datetime | None = None
    ) -> list[HandlerCall]:
        return await self._write_plan(
            lambda: plans.claim_calls_plan(
                DIALECT, owner, limit=limit, lease_seconds=lease_seconds, now=now
            )
        )

    async def complete_call(self, call_id: int, owner: str) -> bool:
        job = CompleteArgs(call_id, owner)
        # Marked, so the writer can complete the calls of a batch in one statement.
        return await self._write(job, job)
