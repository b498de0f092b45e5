"""The default store: one SQLite file in WAL mode, embedded in the listener process.

All writes go through one writer thread with its own connection. It takes the writes
queued meanwhile (up to `MAX_BATCH`), applies them in one transaction, commits once and
then wakes every waiting caller: concurrent `record` calls share one fsync (group commit),
and no two writers in this process ever fight over SQLite's single write lock. Within a
batch, the `record` calls are applied together (`record_many`: a few statements for the
whole batch, each taking its rows as one JSON array) and so are the `complete_call` calls;
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
import json
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar, cast

from listener.events import Origin, RunEvent, RunStatus, Transition, next_status
from listener.store import _common as c
from listener.store._planned import PlannedStore
from listener.store.base import (
    HandlerCall,
    RecordResult,
    StoreUnavailable,
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


# WAL checkpoints (copying committed pages back into the database file) are done by the
# writer thread when it runs out of work, at most every CHECKPOINT_INTERVAL seconds and
# CHECKPOINT_AFTER_COMMITS commits, rather than by SQLite inside whichever commit crosses
# its threshold: that commit, and everything queued behind it, would wait for the copy and
# its fsyncs. SQLite's own checkpoint stays on, at a higher threshold, for a writer that
# is never idle.
CHECKPOINT_INTERVAL = 0.1
CHECKPOINT_AFTER_COMMITS = 16
AUTOCHECKPOINT_PAGES = 4000


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
    due_calls_index=" INDEXED BY calls_due",
    leased_calls_index=" INDEXED BY calls_leased",
)


# -- several records in one go ---------------------------------------------------------
#
# The writer applies the `record` calls of a batch together, in a handful of statements
# for the whole batch instead of five per event. Each statement takes its rows as one JSON
# array parameter (read with `json_each`), so the SQL text is constant and its prepared
# statement is reused, and each is one call into SQLite: the writer thread gives up the
# GIL (and waits to get it back from the event loop's thread) once per statement, not
# once per row. What each call does is exactly what `_common.record_plan` does, applied
# in batch order; the plan stays the reference, and the fallback when a batch fails.
# Reading first and then writing is safe here because the writer holds SQLite's write
# lock for the whole transaction: nothing else can change these rows in between.

# What the batch reads before writing, in one statement: which deliveries are stored,
# the runs' status and grace (printed with 17 digits, so the float reads back exactly),
# the transitions they already made, and the last handler call id AUTOINCREMENT handed
# out (the new calls take the ids it would give them next).
_LOOK_UP = (
    "SELECT (SELECT json_group_array(delivery_id) FROM events"
    " WHERE delivery_id IN (SELECT value FROM json_each(?1))),"
    " (SELECT json_group_array(json_array(run_id, status, printf('%!.17g', grace_seconds)))"
    " FROM runs WHERE run_id IN (SELECT value FROM json_each(?2))),"
    " (SELECT json_group_array(json_array(run_id, status)) FROM transitions"
    " WHERE run_id IN (SELECT value FROM json_each(?2))),"
    " max(coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'handler_calls'), 0),"
    " coalesce((SELECT max(id) FROM handler_calls), 0))"
)


_INSERT_EVENTS = (
    "INSERT INTO events (delivery_id, provider, application, run_id, status, occurred_at,"
    " received_at, origin, payload)"
    " SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]'),"
    " json_extract(value, '$[2]'), json_extract(value, '$[3]'), json_extract(value, '$[4]'),"
    " json_extract(value, '$[5]'), ?1, json_extract(value, '$[6]'),"
    " json_extract(value, '$[7]') FROM json_each(?2)"
)
_INSERT_RUNS = (
    "INSERT INTO runs (run_id, provider, application, status, submitted_at, last_event_at,"
    " grace_seconds, deadline, next_poll_at, poll_attempts, callback, metadata, registered,"
    " updated_at)"
    " SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]'),"
    " json_extract(value, '$[2]'), json_extract(value, '$[3]'), json_extract(value, '$[4]'),"
    " ?1, json_extract(value, '$[5]'), NULL, json_extract(value, '$[6]'), 0, '{}', '{}', 0,"
    " ?1 FROM json_each(?2)"
)
# Terminal runs are never polled again and lose any poll lease; open ones are polled
# after their grace. Each run appears once, with its state after the whole batch.
_UPDATE_RUNS = (
    "UPDATE runs SET status = u.status, last_event_at = ?1, next_poll_at = u.next_poll_at,"
    " poll_attempts = 0,"
    " lease_owner = CASE WHEN u.terminal THEN NULL ELSE runs.lease_owner END,"
    " lease_expires_at = CASE WHEN u.terminal THEN NULL ELSE runs.lease_expires_at END,"
    " updated_at = ?1"
    " FROM (SELECT json_extract(value, '$[0]') AS run_id, json_extract(value, '$[1]') AS status,"
    " json_extract(value, '$[2]') AS next_poll_at, json_extract(value, '$[3]') AS terminal"
    " FROM json_each(?2)) AS u WHERE runs.run_id = u.run_id"
)
_INSERT_TRANSITIONS = (
    "INSERT INTO transitions (run_id, status, delivery_id, created_at)"
    " SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]'),"
    " json_extract(value, '$[2]'), ?1 FROM json_each(?2)"
)
_INSERT_CALLS = (
    "INSERT INTO handler_calls (id, handler, run_id, status, delivery_id, state, attempts,"
    " next_attempt_at, replays, created_at, updated_at)"
    " SELECT ?1 + key + 1, json_extract(value, '$[0]'), json_extract(value, '$[1]'),"
    " json_extract(value, '$[2]'), json_extract(value, '$[3]'), 'pending', 0, ?2, 0, ?2, ?2"
    " FROM json_each(?3)"
)
# Strict: a value JSON cannot carry exactly (NaN, a lone surrogate once encoded) fails the
# batch, which then runs its records one by one through the plan.
_ROWS = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"))


@dataclass(frozen=True, slots=True)
class RecordArgs:
    """A `record` call, as `record_many` takes it; called with a connection, it runs
    alone, through the plan."""

    event: RunEvent
    handlers: tuple[str, ...]
    default_grace_seconds: float

    def __call__(self, conn: sqlite3.Connection) -> RecordResult:
        plan = c.record_plan(DIALECT, self.event, self.handlers, self.default_grace_seconds)
        return c.drive(plan, _execute(conn))


@dataclass(frozen=True, slots=True)
class CompleteArgs:
    """A `complete_call` call, as `complete_many` takes it; called with a connection, it
    runs alone, through the plan."""

    call_id: int
    owner: str

    def __call__(self, conn: sqlite3.Connection) -> bool:
        return c.drive(c.complete_call_plan(DIALECT, self.call_id, self.owner), _execute(conn))


def batchable(event: RunEvent, handlers: Sequence[str]) -> bool:
    """Whether `record_many` may take this call: SQLite's JSON functions end a string at
    NUL, so text holding one goes through the plan, which binds it whole."""
    texts = (event.delivery_id, event.run_id, event.provider, event.application, *handlers)
    return not any(not isinstance(text, str) or "\x00" in text for text in texts)


class _Run:
    """A run's state as the batch moves it: status and grace."""

    __slots__ = ("grace", "status")

    def __init__(self, status: RunStatus, grace: float) -> None:
        self.status = status
        self.grace = grace


def _stamp(value: datetime | None) -> float | None:
    return None if value is None else value.timestamp()


def record_many(conn: sqlite3.Connection, items: Sequence[RecordArgs]) -> list[RecordResult]:
    """Apply several `record` calls, in order, inside the caller's write transaction.
    Every call must be `batchable`."""
    now = c.utcnow()
    at = now.timestamp()
    delivery_ids = list(dict.fromkeys(item.event.delivery_id for item in items))
    run_ids = list(dict.fromkeys(item.event.run_id for item in items))
    known = conn.execute(_LOOK_UP, (_ROWS.encode(delivery_ids), _ROWS.encode(run_ids))).fetchone()
    seen = set(json.loads(known[0]))
    runs = {
        run_id: _Run(RunStatus(status), float(grace))
        for run_id, status, grace in json.loads(known[1])
    }
    reached = {(run_id, status) for run_id, status in json.loads(known[2])}
    last_call_id = int(known[3])

    event_rows: list[list[Any]] = []
    run_rows: list[list[Any]] = []
    transition_rows: list[list[Any]] = []
    call_rows: list[list[Any]] = []
    moved_runs: dict[str, _Run] = {}  # runs to update, each once, with its final state
    results: list[RecordResult] = []
    for item in items:
        event = item.event
        run_id = event.run_id
        reported = RunStatus(event.status)
        run = runs.get(run_id)
        if event.delivery_id in seen:
            status = run.status if run is not None else reported
            results.append(RecordResult(True, False, None, status))
            continue
        seen.add(event.delivery_id)
        occurred = c.as_utc(event.occurred_at)
        event_rows.append(
            [
                event.delivery_id,
                event.provider,
                event.application,
                run_id,
                reported.value,
                occurred.timestamp(),
                Origin(event.origin).value,
                c.dump_json(event.payload),
            ]
        )
        current: RunStatus | None
        if run is None:
            grace = float(item.default_grace_seconds)
            run_rows.append(
                [
                    run_id,
                    event.provider,
                    event.application,
                    reported.value,
                    min(occurred, now).timestamp(),
                    grace,
                    _stamp(c.next_poll_at(reported, now, grace)),
                ]
            )
            run = runs[run_id] = _Run(reported, grace)
            created = True
            current = None
        else:
            created = False
            current = run.status
        moved: RunStatus | None = None
        target = next_status(current, reported)
        if target is not None and (run_id, target.value) not in reached:
            reached.add((run_id, target.value))
            transition_rows.append([run_id, target.value, event.delivery_id])
            moved = target
        status = moved if moved is not None else (current if current is not None else reported)
        if not created:
            run.status = status
            moved_runs[run_id] = run
        call_ids: tuple[int, ...] = ()
        if moved is not None and item.handlers:
            names = c.unique_handlers(item.handlers)
            first = last_call_id + len(call_rows) + 1
            call_ids = tuple(range(first, first + len(names)))
            for name in names:
                call_rows.append([name, run_id, moved.value, event.delivery_id])
        transition = Transition(run_id, moved) if moved is not None else None
        results.append(RecordResult(False, created, transition, status, call_ids))

    if event_rows:
        conn.execute(_INSERT_EVENTS, (at, _ROWS.encode(event_rows)))
    if run_rows:
        conn.execute(_INSERT_RUNS, (at, _ROWS.encode(run_rows)))
    if moved_runs:
        updates = [
            [
                run_id,
                run.status.value,
                _stamp(c.next_poll_at(run.status, now, run.grace)),
                run.status.is_terminal,
            ]
            for run_id, run in moved_runs.items()
        ]
        conn.execute(_UPDATE_RUNS, (at, _ROWS.encode(updates)))
    if transition_rows:
        conn.execute(_INSERT_TRANSITIONS, (at, _ROWS.encode(transition_rows)))
    if call_rows:
        conn.execute(_INSERT_CALLS, (last_call_id, at, _ROWS.encode(call_rows)))
    return results


# Which of the calls still run under the owner's lease, then those marked done: ids go in
# as one JSON array and come back as one, so a batch of completions is three steps of the
# SQLite engine however many calls it holds (rows returned one by one would each hand the
# GIL back and forth). The owner is bound on its own, so its text stays whole.
_LEASED_BY = (
    "SELECT json_group_array(id) FROM handler_calls"
    " WHERE id IN (SELECT value FROM json_each(?1)) AND state = 'running' AND lease_owner = ?2"
)
_COMPLETE = (
    "UPDATE handler_calls SET state = 'done', lease_owner = NULL, lease_expires_at = NULL,"
    " updated_at = ?3"
    " WHERE id IN (SELECT value FROM json_each(?1)) AND state = 'running' AND lease_owner = ?2"
)


def complete_many(conn: sqlite3.Connection, items: Sequence[CompleteArgs]) -> list[bool]:
    """Apply several `complete_call` calls, as `_common.complete_call_plan` would one by
    one, with a few statements per lease owner."""
    done: set[tuple[str, int]] = set()
    by_owner: dict[str, list[int]] = {}
    for item in items:
        by_owner.setdefault(item.owner, []).append(int(item.call_id))
    at = c.utcnow().timestamp()
    for owner, ids in by_owner.items():
        wanted = _ROWS.encode(ids)
        (found,) = conn.execute(_LEASED_BY, (wanted, owner)).fetchone()
        conn.execute(_COMPLETE, (wanted, owner, at))
        done.update((owner, int(call_id)) for call_id in json.loads(found))
    results: list[bool] = []
    for item in items:
        key = (item.owner, int(item.call_id))
        # As if run one after another: only the first of repeated completions changes it.
        results.append(key in done)
        done.discard(key)
    return results


# A claim in a few steps of the SQLite engine however many calls it takes: the picks come
# back as one JSON array (ids, and when each was due, printed exactly), the claim is one
# UPDATE, and the claimed calls with their events come back as one more JSON array, where
# each REAL is printed with 17 digits so that it reads back exactly. (Rows returned one by
# one would each hand the GIL to the event loop's thread and wait to get it back.)
def _exact(column: str) -> str:
    return f"CASE WHEN {column} IS NULL THEN NULL ELSE printf('%!.17g', {column}) END"


_PICK_CALLS = "SELECT " + ", ".join(
    "(SELECT json_group_array(json_array(id, printf('%!.17g', due)))"
    f" FROM ({c.claimable_calls(DIALECT, state, column, index)}))"
    for state, column, index in c.CLAIMABLE
)
_CLAIM = f"{c.CLAIM_SET} WHERE id IN (SELECT value FROM json_each(?))"
# The columns `_common.call_from_row` reads, in this order.
_CALL_FIELDS: tuple[tuple[str, str], ...] = (
    ("id", "c.id"),
    ("handler", "c.handler"),
    ("run_id", "c.run_id"),
    ("status", "c.status"),
    ("state", "c.state"),
    ("attempts", "c.attempts"),
    ("next_attempt_at", _exact("c.next_attempt_at")),
    ("last_error", "c.last_error"),
    ("lease_owner", "c.lease_owner"),
    ("lease_expires_at", _exact("c.lease_expires_at")),
    ("replays", "c.replays"),
    ("created_at", _exact("c.created_at")),
    ("updated_at", _exact("c.updated_at")),
    ("e_delivery_id", "e.delivery_id"),
    ("e_provider", "e.provider"),
    ("e_application", "e.application"),
    ("e_run_id", "e.run_id"),
    ("e_status", "e.status"),
    ("e_occurred_at", _exact("e.occurred_at")),
    ("e_origin", "e.origin"),
    ("e_payload", "e.payload"),
)
_CLAIMED = (
    f"SELECT json_group_array(json_array({', '.join(sql for _, sql in _CALL_FIELDS)}))"
    " FROM handler_calls c JOIN events e ON e.delivery_id = c.delivery_id"
    " WHERE c.id IN (SELECT value FROM json_each(?))"
)


def claim_calls(
    conn: sqlite3.Connection, owner: str, *, limit: int, lease_seconds: float, now: datetime | None
) -> list[HandlerCall]:
    """`_common.claim_calls_plan`, the same picks in the same order, in fewer steps."""
    c.check_limit(limit)
    at = c.as_utc(now) if now is not None else c.utcnow()
    params: list[Any] = []
    for _ in c.CLAIMABLE:
        params.extend([at.timestamp(), limit])
    ids: list[int] = []
    for found in conn.execute(_PICK_CALLS, params).fetchone():
        picked = sorted((float(due), int(call_id)) for call_id, due in json.loads(found))
        ids.extend(call_id for _, call_id in picked[: limit - len(ids)])
    if not ids:
        return []
    lease_end = c.after(at, lease_seconds).timestamp()
    conn.execute(_CLAIM, (owner, lease_end, at.timestamp(), _ROWS.encode(ids)))
    (rows,) = conn.execute(_CLAIMED, (_ROWS.encode(ids),)).fetchone()
    names = [name for name, _ in _CALL_FIELDS]
    claimed = [dict(zip(names, row, strict=True)) for row in json.loads(rows)]
    claimed.sort(key=lambda row: (float(row["next_attempt_at"]), row["id"]))
    return [c.call_from_row(row, c.from_epoch, c.load_json) for row in claimed]


def _apply_together(conn: sqlite3.Connection, items: list[Any]) -> list[Any]:
    """Several writes of one kind (all `RecordArgs` or all `CompleteArgs`) at once."""
    if isinstance(items[0], RecordArgs):
        return record_many(conn, items)
    return complete_many(conn, items)


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
        self._writer = c.GroupWriter(
            self._apply,
            max_batch=c.MAX_BATCH if group_commit else 1,
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
        self, conn: sqlite3.Connection, batch: list[c.Job], *, isolate: bool
    ) -> list[c.Outcome] | None:
        """Run the batch in one transaction and commit it. Without `isolate`, writes of a
        kind the store can apply together (`record`, `complete_call`) are, at the place of
        the first of them, and the first failure gives up and returns None; with it, each
        job runs alone in a savepoint and a failing job is rolled back alone."""
        outcomes: list[c.Outcome | None] = [None] * len(batch)
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
                    results = _apply_together(conn, [batch[i].args for i in group])
                    for i, result in zip(group, results, strict=True):
                        outcomes[i] = (True, result)
                    continue
                value = job.fn(conn)
            except Exception as exc:
                if _is_unavailable(exc):
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
        return cast(list[c.Outcome], outcomes)

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

    # The one writer thread commits in groups already.
    _delivery_plan = _write_plan

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
        if self._json:
            return await self._write(
                lambda conn: claim_calls(
                    conn, owner, limit=limit, lease_seconds=lease_seconds, now=now
                )
            )
        return await self._write_plan(
            lambda: c.claim_calls_plan(
                DIALECT, owner, limit=limit, lease_seconds=lease_seconds, now=now
            )
        )

    async def complete_call(self, call_id: int, owner: str) -> bool:
        job = CompleteArgs(call_id, owner)
        # Marked, so the writer can complete the calls of a batch in one statement.
        return await self._write(job, job)
