"""What both store backends share: time and JSON conversion, cursors, row to record
conversion, the schema version check, every operation written once as a
plan of SQL statements, and the group-commit writer thread.

Nothing here opens a database: each backend says how its columns decode and runs the
plans on its own connections.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import queue
import threading
from collections.abc import Callable, Generator, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar, cast

from listener.events import Origin, RunEvent, RunStatus, Transition, next_status
from listener.store.base import (
    CallState,
    HandlerCall,
    NewRun,
    Page,
    PruneCounts,
    RecordResult,
    RunRecord,
    SchemaTooNew,
    StoreCounts,
    StoreUnavailable,
    UnroutableRecord,
)

# A group commit writes at most this many queued items in one transaction.
MAX_BATCH = 256

T = TypeVar("T")
Row = Mapping[str, Any]
TimeDecoder = Callable[[Any], datetime]
JsonDecoder = Callable[[Any], Any]


# -- time ------------------------------------------------------------------------------


def utcnow() -> datetime:
    return datetime.now(UTC)


def as_utc(value: datetime) -> datetime:
    """A timezone-aware datetime in UTC; naive datetimes are refused, since their zone is
    a guess."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"naive datetime {value.isoformat()}; pass a timezone-aware one")
    return value.astimezone(UTC)


def from_epoch(value: Any) -> datetime:
    return datetime.fromtimestamp(float(value), UTC)


def after(now: datetime, seconds: float) -> datetime:
    return now + timedelta(seconds=seconds)


def next_poll_at(status: RunStatus, base: datetime, grace_seconds: float) -> datetime | None:
    """When the poller should next ask about a run: never once it is terminal."""
    if status.is_terminal:
        return None
    return after(base, grace_seconds)


def check_limit(limit: int) -> int:
    if limit < 1:
        raise ValueError(f"limit must be at least 1, not {limit}")
    return limit


def unique_handlers(handlers: Sequence[str]) -> list[str]:
    """Handler names in first-seen order, each once: one call per handler per transition."""
    return list(dict.fromkeys(handlers))


# -- JSON ------------------------------------------------------------------------------


# One encoder for every call: json.dumps with options builds a new one each time.
# Strict: a payload that is not plain JSON is a caller bug, not something to coerce.
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)


def dump_json(value: Mapping[str, Any]) -> str:
    return _ENCODER.encode(dict(value)) if value else "{}"


def load_json(value: Any) -> Any:
    if isinstance(value, str | bytes | bytearray):
        return json.loads(value)
    return value


# -- cursors ---------------------------------------------------------------------------

CursorValue = str | int | float


def encode_cursor(kind: str, *values: CursorValue) -> str:
    """An opaque page cursor: the listing it belongs to and the last row's sort key."""
    raw = json.dumps([kind, *values], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(kind: str, cursor: str, types: Sequence[type]) -> list[Any]:
    """The sort key inside `cursor`; ValueError when it is not one of ours for `kind`."""
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        data = json.loads(base64.urlsafe_b64decode(padded.encode()))
    except (binascii.Error, ValueError, UnicodeDecodeError) as exc:
        raise ValueError("invalid page cursor") from exc
    if not isinstance(data, list) or len(data) != len(types) + 1 or data[0] != kind:
        raise ValueError("invalid page cursor")
    values = data[1:]
    for value, expected in zip(values, types, strict=True):
        ok = (
            isinstance(value, int | float) and not isinstance(value, bool)
            if expected is float
            else type(value) is expected
        )
        if not ok:
            raise ValueError("invalid page cursor")
    return values


# -- rows to records -------------------------------------------------------------------


def _opt(decode: TimeDecoder, value: Any) -> datetime | None:
    return None if value is None else decode(value)


def run_from_row(row: Row, ts: TimeDecoder, js: JsonDecoder) -> RunRecord:
    return RunRecord(
        run_id=row["run_id"],
        provider=row["provider"],
        application=row["application"],
        status=RunStatus(row["status"]),
        submitted_at=ts(row["submitted_at"]),
        last_event_at=_opt(ts, row["last_event_at"]),
        grace_seconds=float(row["grace_seconds"]),
        deadline=_opt(ts, row["deadline"]),
        next_poll_at=_opt(ts, row["next_poll_at"]),
        poll_attempts=int(row["poll_attempts"]),
        lease_owner=row["lease_owner"],
        lease_expires_at=_opt(ts, row["lease_expires_at"]),
        callback=js(row["callback"]),
        metadata=js(row["metadata"]),
        updated_at=ts(row["updated_at"]),
    )


def event_from_row(row: Row, ts: TimeDecoder, js: JsonDecoder, prefix: str = "") -> RunEvent:
    """An event from an events row; `prefix` names its columns when joined to another table."""
    return RunEvent(
        delivery_id=row[f"{prefix}delivery_id"],
        provider=row[f"{prefix}provider"],
        application=row[f"{prefix}application"],
        run_id=row[f"{prefix}run_id"],
        status=RunStatus(row[f"{prefix}status"]),
        occurred_at=ts(row[f"{prefix}occurred_at"]),
        origin=Origin(row[f"{prefix}origin"]),
        payload=js(row[f"{prefix}payload"]),
    )


# Columns of an events row joined to a handler call, as `event_from_row(prefix="e_")` reads them.
EVENT_COLUMNS_FOR_CALL = (
    "e.delivery_id AS e_delivery_id, e.provider AS e_provider, "
    "e.application AS e_application, e.run_id AS e_run_id, e.status AS e_status, "
    "e.occurred_at AS e_occurred_at, e.origin AS e_origin, e.payload AS e_payload"
)

CALL_COLUMNS = (
    "c.id, c.handler, c.run_id, c.status, c.state, c.attempts, c.next_attempt_at, "
    "c.last_error, c.lease_owner, c.lease_expires_at, c.replays, c.created_at, c.updated_at"
)


def call_from_row(row: Row, ts: TimeDecoder, js: JsonDecoder) -> HandlerCall:
    return HandlerCall(
        id=int(row["id"]),
        handler=row["handler"],
        run_id=row["run_id"],
        status=RunStatus(row["status"]),
        event=event_from_row(row, ts, js, prefix="e_"),
        state=CallState(row["state"]),
        attempts=int(row["attempts"]),
        next_attempt_at=ts(row["next_attempt_at"]),
        last_error=row["last_error"],
        lease_owner=row["lease_owner"],
        lease_expires_at=_opt(ts, row["lease_expires_at"]),
        replays=int(row["replays"]),
        created_at=ts(row["created_at"]),
        updated_at=ts(row["updated_at"]),
    )


def unroutable_from_row(row: Row, ts: TimeDecoder, js: JsonDecoder) -> UnroutableRecord:
    return UnroutableRecord(
        id=int(row["id"]),
        source=row["source"],
        delivery_id=row["delivery_id"],
        reason=row["reason"],
        body=bytes(row["body"]),
        headers=js(row["headers"]),
        received_at=ts(row["received_at"]),
    )


def make_counts(
    runs: Iterable[tuple[str, int]], calls: Iterable[tuple[str, int]], events: int, unroutable: int
) -> StoreCounts:
    """Counts with every known status and state present, zero when there are none."""
    by_status = {s.value: 0 for s in RunStatus}
    by_status.update({k: int(v) for k, v in runs})
    by_state = {s.value: 0 for s in CallState}
    by_state.update({k: int(v) for k, v in calls})
    return StoreCounts(
        runs_by_status=by_status, calls_by_state=by_state, events=events, unroutable=unroutable
    )


# -- schema ----------------------------------------------------------------------------


def check_schema_version(found: int, known: int, where: str) -> None:
    if found > known:
        raise SchemaTooNew(
            f"{where} has schema version {found}, but this listener only knows versions up "
            f"to {known}; upgrade the listener (or point it at another database)"
        )


# -- operations as statement plans -----------------------------------------------------
#
# Each store operation is written once, here, as a generator that yields the statements to
# run (SQL with `?` placeholders, and parameters) and is sent back each statement's rows.
# A backend only drives plans inside its own transactions; what the SQL does and how a
# result is built is shared, so the two backends cannot drift apart.

Stmt = tuple[str, list[Any]]
Plan = Generator[Stmt, list[Row], T]


@dataclass(frozen=True, slots=True)
class Dialect:
    """How a backend keeps times and JSON, and how it locks rows it claims."""

    time_param: Callable[[datetime], Any]  # a UTC datetime as a query parameter
    time_value: TimeDecoder  # a time column's value as a UTC datetime
    json_param: Callable[[Mapping[str, Any]], Any]  # a mapping as a query parameter
    json_value: JsonDecoder  # a JSON column's value as Python data
    key_to_cursor: Callable[[Any], CursorValue]  # a time column's value, for a cursor
    cursor_to_key: Callable[[Any], Any]  # back from a cursor, as a query parameter
    cursor_time_type: type
    for_update: str  # appended to a SELECT of the row a write is about to change
    skip_locked: str  # appended to the SELECT that picks rows to claim
    # After `handler_calls c` in the SELECTs that pick calls to claim: the partial index
    # to walk (SQLite, without statistics, would rather read every call in the state).
    due_calls_index: str = ""
    leased_calls_index: str = ""

    def t(self, value: datetime) -> Any:
        return self.time_param(as_utc(value))

    def opt_t(self, value: datetime | None) -> Any:
        return None if value is None else self.time_param(as_utc(value))


class Query:
    """A SELECT with its filters and parameters gathered as they are added."""

    def __init__(self, head: str) -> None:
        self.head = head
        self.clauses: list[str] = []
        self.params: list[Any] = []

    def where(self, clause: str, *params: Any) -> None:
        self.clauses.append(clause)
        self.params.extend(params)

    def where_in(self, column: str, values: Sequence[Any]) -> None:
        if not values:
            self.clauses.append("1 = 0")
            return
        self.clauses.append(f"{column} IN ({', '.join('?' * len(values))})")
        self.params.extend(values)

    def run_filters(
        self,
        status: Sequence[RunStatus] | None,
        provider: str | None,
        application: str | None,
    ) -> None:
        """The filters runs and events share: status, provider, application."""
        if status is not None:
            self.where_in("status", [RunStatus(s).value for s in status])
        if provider is not None:
            self.where("provider = ?", provider)
        if application is not None:
            self.where("application = ?", application)

    def window(self, column: str, since: Any, until: Any) -> None:
        """`since <= column < until`, either bound optional (values already converted)."""
        if since is not None:
            self.where(f"{column} >= ?", since)
        if until is not None:
            self.where(f"{column} < ?", until)

    def stmt(self, tail: str, limit: int) -> Stmt:
        where = f" WHERE {' AND '.join(self.clauses)}" if self.clauses else ""
        return f"{self.head}{where} {tail} LIMIT ?", [*self.params, limit + 1]


def _marks(values: Sequence[Any]) -> str:
    return ", ".join("?" * len(values))


CALL_SELECT = (
    f"SELECT {CALL_COLUMNS}, {EVENT_COLUMNS_FOR_CALL} "
    "FROM handler_calls c JOIN events e ON e.delivery_id = c.delivery_id"
)

OPEN_STATUSES = tuple(s.value for s in RunStatus if not s.is_terminal)
_OPEN = ", ".join(f"'{s}'" for s in OPEN_STATUSES)
TERMINAL_STATUSES = tuple(s.value for s in RunStatus if s.is_terminal)
_TERMINAL = ", ".join(f"'{s}'" for s in TERMINAL_STATUSES)

# When a run is due for a poll: its next poll time or its deadline, whichever is sooner.
_RUN_DUE = (
    "CASE WHEN next_poll_at IS NULL THEN deadline"
    " WHEN deadline IS NULL OR next_poll_at <= deadline THEN next_poll_at"
    " ELSE deadline END"
)


# -- runs --


def register_run_plan(d: Dialect, run: NewRun) -> Plan[bool]:
    now = utcnow()
    submitted = as_utc(run.submitted_at) if run.submitted_at is not None else now
    status = RunStatus(run.status)
    grace = float(run.grace_seconds)
    first_poll = grace if run.first_poll_seconds is None else float(run.first_poll_seconds)
    rows = yield (
        "INSERT INTO runs (run_id, provider, application, status, submitted_at,"
        " grace_seconds, deadline, next_poll_at, poll_attempts, callback, metadata,"
        " registered, updated_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, 0, ?, ?, 1, ?)"
        " ON CONFLICT (run_id) DO NOTHING RETURNING run_id",
        [
            run.run_id,
            run.provider,
            run.application,
            status.value,
            d.t(submitted),
            grace,
            d.opt_t(run.deadline),
            d.opt_t(next_poll_at(status, submitted, first_poll)),
            d.json_param(run.callback),
            d.json_param(run.metadata),
            d.t(now),
        ],
    )
    if rows:
        return True
    # Known already. When its own event created it (the webhook beat the registration), the
    # run takes the registration's details; a registered run is left as it is.
    rows = yield (
        f"SELECT status, last_event_at, registered FROM runs WHERE run_id = ?{d.for_update}",
        [run.run_id],
    )
    if not rows or rows[0]["registered"]:
        return False
    current = RunStatus(rows[0]["status"])
    last = rows[0]["last_event_at"]
    base = d.time_value(last) if last is not None else submitted
    yield (
        "UPDATE runs SET submitted_at = ?, grace_seconds = ?, deadline = ?, next_poll_at = ?,"
        " callback = ?, metadata = ?, registered = 1, updated_at = ? WHERE run_id = ?",
        [
            d.t(submitted),
            grace,
            d.opt_t(run.deadline),
            d.opt_t(next_poll_at(current, base, grace)),
            d.json_param(run.callback),
            d.json_param(run.metadata),
            d.t(now),
            run.run_id,
        ],
    )
    return False


def get_run_plan(d: Dialect, run_id: str) -> Plan[RunRecord | None]:
    rows = yield ("SELECT * FROM runs WHERE run_id = ?", [run_id])
    return run_from_row(rows[0], d.time_value, d.json_value) if rows else None


def list_runs_plan(
    d: Dialect,
    *,
    status: Sequence[RunStatus] | None,
    provider: str | None,
    application: str | None,
    since: datetime | None,
    until: datetime | None,
    limit: int,
    cursor: str | None,
) -> Plan[Page[RunRecord]]:
    check_limit(limit)
    q = Query("SELECT * FROM runs")
    q.run_filters(status, provider, application)
    q.window("submitted_at", d.opt_t(since), d.opt_t(until))
    if cursor is not None:
        key, run_id = decode_cursor("runs", cursor, (d.cursor_time_type, str))
        q.where("(submitted_at, run_id) < (?, ?)", d.cursor_to_key(key), run_id)
    rows = yield q.stmt("ORDER BY submitted_at DESC, run_id DESC", limit)
    items = [run_from_row(r, d.time_value, d.json_value) for r in rows[:limit]]
    next_cursor = None
    if len(rows) > limit:
        last = rows[limit - 1]
        next_cursor = encode_cursor("runs", d.key_to_cursor(last["submitted_at"]), last["run_id"])
    return Page(items=items, next_cursor=next_cursor)


# -- events --


def record_plan(
    d: Dialect, event: RunEvent, handlers: Sequence[str], default_grace_seconds: float
) -> Plan[RecordResult]:
    now = utcnow()
    at = d.t(now)
    reported = RunStatus(event.status)
    occurred = as_utc(event.occurred_at)
    stored = yield (
        "INSERT INTO events (delivery_id, provider, application, run_id, status, occurred_at,"
        " received_at, origin, payload) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
        " ON CONFLICT (delivery_id) DO NOTHING RETURNING id",
        [
            event.delivery_id,
            event.provider,
            event.application,
            event.run_id,
            reported.value,
            d.t(occurred),
            at,
            Origin(event.origin).value,
            d.json_param(event.payload),
        ],
    )
    select_run = (
        f"SELECT status, grace_seconds FROM runs WHERE run_id = ?{d.for_update}",
        [event.run_id],
    )
    if not stored:
        rows = yield select_run
        status = RunStatus(rows[0]["status"]) if rows else reported
        return RecordResult(duplicate=True, run_created=False, transition=None, status=status)

    grace = float(default_grace_seconds)
    current: RunStatus | None = None
    created = False
    rows = yield select_run
    if not rows:
        created_rows = yield (
            "INSERT INTO runs (run_id, provider, application, status, submitted_at,"
            " last_event_at, grace_seconds, deadline, next_poll_at, poll_attempts, callback,"
            " metadata, registered, updated_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, NULL, ?, 0, ?, ?, 0, ?)"
            " ON CONFLICT (run_id) DO NOTHING RETURNING run_id",
            [
                event.run_id,
                event.provider,
                event.application,
                reported.value,
                d.t(min(occurred, now)),
                at,
                grace,
                d.opt_t(next_poll_at(reported, now, grace)),
                d.json_param({}),
                d.json_param({}),
                at,
            ],
        )
        created = bool(created_rows)
        if not created:
            # Another writer created the run between our look and our insert.
            rows = yield select_run
    if not created:
        current = RunStatus(rows[0]["status"])
        grace = float(rows[0]["grace_seconds"])

    moved: RunStatus | None = None
    target = next_status(current, reported)
    if target is not None:
        inserted = yield (
            "INSERT INTO transitions (run_id, status, delivery_id, created_at)"
            " VALUES (?, ?, ?, ?) ON CONFLICT (run_id, status) DO NOTHING RETURNING run_id",
            [event.run_id, target.value, event.delivery_id, at],
        )
        # A transition already stored is old news: handlers saw it once already.
        moved = target if inserted else None
    status = moved if moved is not None else (current if current is not None else reported)

    if not created:
        if status.is_terminal:
            # Terminal: never polled again, and any poll lease on it is moot.
            yield (
                "UPDATE runs SET status = ?, last_event_at = ?, next_poll_at = NULL,"
                " poll_attempts = 0, lease_owner = NULL, lease_expires_at = NULL,"
                " updated_at = ? WHERE run_id = ?",
                [status.value, at, at, event.run_id],
            )
        else:
            yield (
                "UPDATE runs SET status = ?, last_event_at = ?, next_poll_at = ?,"
                " poll_attempts = 0, updated_at = ? WHERE run_id = ?",
                [
                    status.value,
                    at,
                    d.opt_t(next_poll_at(status, now, grace)),
                    at,
                    event.run_id,
                ],
            )

    call_ids: list[int] = []
    names = unique_handlers(handlers) if moved is not None else []
    if moved is not None and names:
        # One statement for all handlers; names are unique, so they map rows back to ids.
        values = ", ".join(["(?, ?, ?, ?, 'pending', 0, ?, 0, ?, ?)"] * len(names))
        params: list[Any] = []
        for name in names:
            params.extend([name, event.run_id, moved.value, event.delivery_id, at, at, at])
        call_rows = yield (
            "INSERT INTO handler_calls (handler, run_id, status, delivery_id, state,"
            f" attempts, next_attempt_at, replays, created_at, updated_at) VALUES {values}"
            " RETURNING id, handler",
            params,
        )
        ids = {row["handler"]: int(row["id"]) for row in call_rows}
        call_ids = [ids[name] for name in names]
    return RecordResult(
        duplicate=False,
        run_created=created,
        transition=Transition(event.run_id, moved) if moved is not None else None,
        status=status,
        call_ids=tuple(call_ids),
    )


def record_unroutable_plan(
    d: Dialect,
    *,
    source: str,
    delivery_id: str | None,
    reason: str,
    body: bytes,
    headers: Mapping[str, str],
) -> Plan[bool]:
    rows = yield (
        "INSERT INTO unroutable (source, delivery_id, reason, body, headers, received_at)"
        " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (delivery_id) DO NOTHING RETURNING id",
        [source, delivery_id, reason, bytes(body), d.json_param(headers), d.t(utcnow())],
    )
    return bool(rows)


def get_event_plan(d: Dialect, delivery_id: str) -> Plan[RunEvent | None]:
    rows = yield ("SELECT * FROM events WHERE delivery_id = ?", [delivery_id])
    return event_from_row(rows[0], d.time_value, d.json_value) if rows else None


def list_events_plan(
    d: Dialect,
    *,
    run_id: str | None,
    status: Sequence[RunStatus] | None,
    provider: str | None,
    application: str | None,
    origin: Origin | None,
    since: datetime | None,
    until: datetime | None,
    limit: int,
    cursor: str | None,
) -> Plan[Page[RunEvent]]:
    check_limit(limit)
    q = Query("SELECT * FROM events")
    if run_id is not None:
        q.where("run_id = ?", run_id)
    q.run_filters(status, provider, application)
    if origin is not None:
        q.where("origin = ?", Origin(origin).value)
    q.window("received_at", d.opt_t(since), d.opt_t(until))
    if cursor is not None:
        key, event_id = decode_cursor("events", cursor, (d.cursor_time_type, int))
        q.where("(received_at, id) < (?, ?)", d.cursor_to_key(key), event_id)
    rows = yield q.stmt("ORDER BY received_at DESC, id DESC", limit)
    items = [event_from_row(r, d.time_value, d.json_value) for r in rows[:limit]]
    next_cursor = None
    if len(rows) > limit:
        last = rows[limit - 1]
        next_cursor = encode_cursor("events", d.key_to_cursor(last["received_at"]), int(last["id"]))
    return Page(items=items, next_cursor=next_cursor)


def list_unroutable_plan(
    d: Dialect, *, limit: int, cursor: str | None
) -> Plan[Page[UnroutableRecord]]:
    check_limit(limit)
    q = Query("SELECT * FROM unroutable")
    if cursor is not None:
        (row_id,) = decode_cursor("unroutable", cursor, (int,))
        q.where("id < ?", row_id)
    rows = yield q.stmt("ORDER BY id DESC", limit)
    items = [unroutable_from_row(r, d.time_value, d.json_value) for r in rows[:limit]]
    next_cursor = encode_cursor("unroutable", items[-1].id) if len(rows) > limit else None
    return Page(items=items, next_cursor=next_cursor)


# -- handler calls --


# Claimable calls, in the order they are claimed: running under a lease that ran out (a
# crashed claimer), then pending and due; never a call whose run and handler still has an
# earlier call pending or running, so one handler sees one run's transitions in order.
# (state, the time column that says when, the Dialect field naming its partial index)
CLAIMABLE = (
    ("running", "lease_expires_at", "leased_calls_index"),
    ("pending", "next_attempt_at", "due_calls_index"),
)
# The claim itself, given the owner, the lease's end and now.
CLAIM_SET = (
    "UPDATE handler_calls SET state = 'running', attempts = attempts + 1,"
    " lease_owner = ?, lease_expires_at = ?, updated_at = ?"
)


def claimable_calls(d: Dialect, state: str, column: str, index: str) -> str:
    """A SELECT of `c.id` and `c.<column> AS due` for the calls in `state` that may be
    claimed, soonest first; its parameters are now and a limit. It walks the partial index
    in order and stops at the limit: one query with an OR between the two states would read
    and sort every pending call, however long the backlog."""
    return (
        f"SELECT c.id, c.{column} AS due FROM handler_calls c{getattr(d, index)}"
        f" WHERE c.state = '{state}' AND c.{column} <= ?"
        " AND NOT EXISTS (SELECT 1 FROM handler_calls p"
        " WHERE p.run_id = c.run_id AND p.handler = c.handler AND p.id < c.id"
        " AND p.state IN ('pending', 'running'))"
        f" ORDER BY c.{column}, c.id LIMIT ?{d.skip_locked}"
    )


def claim_calls_plan(
    d: Dialect, owner: str, *, limit: int, lease_seconds: float, now: datetime | None
) -> Plan[list[HandlerCall]]:
    check_limit(limit)
    at = as_utc(now) if now is not None else utcnow()
    lease = [owner, d.t(after(at, lease_seconds)), d.t(at)]
    ids: list[int] = []
    for state, column, index in CLAIMABLE:
        rows = yield (
            f"{CLAIM_SET} WHERE id IN (SELECT id FROM ({claimable_calls(d, state, column, index)})"
            " AS picked) RETURNING id",
            [*lease, d.t(at), limit - len(ids)],
        )
        ids.extend(int(r["id"]) for r in rows)
        if len(ids) >= limit:
            break
    if not ids:
        return []
    rows = yield (
        f"{CALL_SELECT} WHERE c.id IN ({_marks(ids)}) ORDER BY c.next_attempt_at, c.id",
        ids,
    )
    return [call_from_row(r, d.time_value, d.json_value) for r in rows]


def complete_call_plan(d: Dialect, call_id: int, owner: str) -> Plan[bool]:
    rows = yield (
        "UPDATE handler_calls SET state = 'done', lease_owner = NULL, lease_expires_at = NULL,"
        " updated_at = ? WHERE id = ? AND state = 'running' AND lease_owner = ? RETURNING id",
        [d.t(utcnow()), call_id, owner],
    )
    return bool(rows)


def fail_call_plan(
    d: Dialect, call_id: int, owner: str, *, error: str, retry_at: datetime | None
) -> Plan[bool]:
    now = d.t(utcnow())
    if retry_at is None:
        stmt: Stmt = (
            "UPDATE handler_calls SET state = 'dead', last_error = ?, lease_owner = NULL,"
            " lease_expires_at = NULL, updated_at = ?"
            " WHERE id = ? AND state = 'running' AND lease_owner = ? RETURNING id",
            [error, now, call_id, owner],
        )
    else:
        stmt = (
            "UPDATE handler_calls SET state = 'pending', next_attempt_at = ?, last_error = ?,"
            " lease_owner = NULL, lease_expires_at = NULL, updated_at = ?"
            " WHERE id = ? AND state = 'running' AND lease_owner = ? RETURNING id",
            [d.t(retry_at), error, now, call_id, owner],
        )
    rows = yield stmt
    return bool(rows)


def release_call_plan(d: Dialect, call_id: int, owner: str) -> Plan[bool]:
    now = d.t(utcnow())
    rows = yield (
        "UPDATE handler_calls SET state = 'pending', next_attempt_at = ?,"
        " attempts = CASE WHEN attempts > 0 THEN attempts - 1 ELSE 0 END,"
        " lease_owner = NULL, lease_expires_at = NULL, updated_at = ?"
        " WHERE id = ? AND state = 'running' AND lease_owner = ? RETURNING id",
        [now, now, call_id, owner],
    )
    return bool(rows)


def replay_call_plan(d: Dialect, call_id: int) -> Plan[bool]:
    now = d.t(utcnow())
    rows = yield (
        "UPDATE handler_calls SET state = 'pending', attempts = 0, replays = replays + 1,"
        " next_attempt_at = ?, lease_owner = NULL, lease_expires_at = NULL, updated_at = ?"
        " WHERE id = ? AND state IN ('dead', 'done') RETURNING id",
        [now, now, call_id],
    )
    return bool(rows)


def get_call_plan(d: Dialect, call_id: int) -> Plan[HandlerCall | None]:
    rows = yield (f"{CALL_SELECT} WHERE c.id = ?", [call_id])
    return call_from_row(rows[0], d.time_value, d.json_value) if rows else None


def list_calls_plan(
    d: Dialect,
    *,
    state: CallState | None,
    run_id: str | None,
    handler: str | None,
    limit: int,
    cursor: str | None,
) -> Plan[Page[HandlerCall]]:
    check_limit(limit)
    q = Query(CALL_SELECT)
    if state is not None:
        q.where("c.state = ?", CallState(state).value)
    if run_id is not None:
        q.where("c.run_id = ?", run_id)
    if handler is not None:
        q.where("c.handler = ?", handler)
    if cursor is not None:
        (call_id,) = decode_cursor("calls", cursor, (int,))
        q.where("c.id < ?", call_id)
    rows = yield q.stmt("ORDER BY c.id DESC", limit)
    items = [call_from_row(r, d.time_value, d.json_value) for r in rows[:limit]]
    next_cursor = encode_cursor("calls", items[-1].id) if len(rows) > limit else None
    return Page(items=items, next_cursor=next_cursor)


# -- polling --


def claim_overdue_runs_plan(
    d: Dialect,
    owner: str,
    *,
    limit: int,
    lease_seconds: float,
    provider: str | None,
    now: datetime | None,
    due_by: datetime | None = None,
) -> Plan[list[RunRecord]]:
    check_limit(limit)
    moment = as_utc(now) if now is not None else utcnow()
    at, expires = d.t(moment), d.t(after(moment, lease_seconds))
    # Runs due a little later may be claimed early; leases still expire by the real clock.
    due = d.t(as_utc(due_by)) if due_by is not None else at
    by_provider = " AND provider = ?" if provider is not None else ""
    rows = yield (
        "UPDATE runs SET lease_owner = ?, lease_expires_at = ?, updated_at = ?"
        " WHERE run_id IN (SELECT run_id FROM runs"
        f" WHERE status IN ({_OPEN}) AND (next_poll_at <= ? OR deadline <= ?)"
        f" AND (lease_owner IS NULL OR lease_expires_at <= ?){by_provider}"
        f" ORDER BY {_RUN_DUE}, run_id LIMIT ?{d.skip_locked})"
        " RETURNING run_id",
        [owner, expires, at, due, due, at, *([provider] if provider is not None else []), limit],
    )
    if not rows:
        return []
    ids = [r["run_id"] for r in rows]
    rows = yield (
        f"SELECT * FROM runs WHERE run_id IN ({_marks(ids)}) ORDER BY {_RUN_DUE}, run_id",
        ids,
    )
    return [run_from_row(r, d.time_value, d.json_value) for r in rows]


def reschedule_poll_plan(
    d: Dialect, run_id: str, owner: str, *, next_poll_at: datetime, attempts: int
) -> Plan[bool]:
    rows = yield (
        "UPDATE runs SET next_poll_at = ?, poll_attempts = ?, lease_owner = NULL,"
        " lease_expires_at = NULL, updated_at = ? WHERE run_id = ? AND lease_owner = ?"
        " RETURNING run_id",
        [d.t(next_poll_at), int(attempts), d.t(utcnow()), run_id, owner],
    )
    return bool(rows)


def release_run_plan(d: Dialect, run_id: str, owner: str) -> Plan[bool]:
    rows = yield (
        "UPDATE runs SET lease_owner = NULL, lease_expires_at = NULL, updated_at = ?"
        " WHERE run_id = ? AND lease_owner = ? RETURNING run_id",
        [d.t(utcnow()), run_id, owner],
    )
    return bool(rows)


# -- reporting --


def counts_plan() -> Plan[StoreCounts]:
    runs = yield ("SELECT status AS k, count(*) AS n FROM runs GROUP BY status", [])
    calls = yield ("SELECT state AS k, count(*) AS n FROM handler_calls GROUP BY state", [])
    events = yield ("SELECT count(*) AS n FROM events", [])
    unroutable = yield ("SELECT count(*) AS n FROM unroutable", [])
    return make_counts(
        [(r["k"], r["n"]) for r in runs],
        [(r["k"], r["n"]) for r in calls],
        int(events[0]["n"]),
        int(unroutable[0]["n"]),
    )


# -- retention --

# Keys per DELETE ... IN (...): well inside both databases' limits on parameters.
PRUNE_IN_CHUNK = 500

# What `prune_plan` may delete, each as the condition on its table and its parameters
# (all of them the cutoff). Done calls of terminal runs: calls_by_state walks the done
# ones in id order.
_PRUNE_CALLS = (
    "state = 'done' AND updated_at < ? AND EXISTS (SELECT 1 FROM runs r"
    f" WHERE r.run_id = handler_calls.run_id AND r.status IN ({_TERMINAL}))"
)
# Terminal runs with no call left: runs_by_submitted narrows the scan, the NOT EXISTS reads
# calls_by_run_handler.
_PRUNE_RUNS = (
    f"status IN ({_TERMINAL}) AND submitted_at < ? AND updated_at < ?"
    " AND NOT EXISTS (SELECT 1 FROM handler_calls h WHERE h.run_id = runs.run_id)"
)
_PRUNE_UNROUTABLE = "received_at < ?"


def _delete_keys(
    table: str, key: str, keys: Sequence[Any], where: str = "", params: Sequence[Any] = ()
) -> Generator[Stmt, list[Row], list[Any]]:
    """Delete the rows of `table` whose `key` is one of `keys` (and that still meet
    `where`, when given); the keys of the rows deleted."""
    gone: list[Any] = []
    also = f" AND {where}" if where else ""
    for at in range(0, len(keys), PRUNE_IN_CHUNK):
        chunk = list(keys[at : at + PRUNE_IN_CHUNK])
        rows = yield (
            f"DELETE FROM {table} WHERE {key} IN ({_marks(chunk)}){also} RETURNING {key}",
            [*chunk, *params],
        )
        gone.extend(row[key] for row in rows)
    return gone


def prune_plan(d: Dialect, *, before: datetime, limit: int) -> Plan[PruneCounts]:
    """One chunk of retention, in the caller's transaction: done calls of terminal runs,
    then terminal runs left without any call (with their events and transitions), then
    unroutable deliveries; at most `limit` of each, oldest first.

    Each kind is picked first (with `skip_locked`: on PostgreSQL, rows that another
    transaction is changing are left for a later call, never waited for), then deleted
    by key with its condition checked again, so a row that changed in between (a call
    replayed, a run that heard news) is kept. Picking in a subquery of the DELETE itself
    could take more than `limit`: PostgreSQL may run such a subquery again, and it then
    skips the rows the statement has just deleted and picks the next ones.
    """
    check_limit(limit)
    cutoff = d.t(before)

    rows = yield (
        f"SELECT id FROM handler_calls WHERE {_PRUNE_CALLS} ORDER BY id LIMIT ?{d.skip_locked}",
        [cutoff, limit],
    )
    picked_calls = [row["id"] for row in rows]
    calls = yield from _delete_keys("handler_calls", "id", picked_calls, _PRUNE_CALLS, [cutoff])

    rows = yield (
        f"SELECT run_id FROM runs WHERE {_PRUNE_RUNS}"
        f" ORDER BY submitted_at, run_id LIMIT ?{d.skip_locked}",
        [cutoff, cutoff, limit],
    )
    picked_runs = [row["run_id"] for row in rows]
    runs = yield from _delete_keys("runs", "run_id", picked_runs, _PRUNE_RUNS, [cutoff, cutoff])
    # Everything the deleted runs owned: events_by_run and the transitions' primary key.
    events = yield from _delete_keys("events", "run_id", runs)
    transitions = yield from _delete_keys("transitions", "run_id", runs)

    # Ids grow with the time received: the oldest come first.
    rows = yield (
        f"SELECT id FROM unroutable WHERE {_PRUNE_UNROUTABLE} ORDER BY id LIMIT ?{d.skip_locked}",
        [cutoff, limit],
    )
    picked_unroutable = [row["id"] for row in rows]
    unroutable = yield from _delete_keys(
        "unroutable", "id", picked_unroutable, _PRUNE_UNROUTABLE, [cutoff]
    )
    return PruneCounts(
        runs=len(runs),
        events=len(events),
        transitions=len(transitions),
        calls=len(calls),
        unroutable=len(unroutable),
        more=max(len(picked_calls), len(picked_runs), len(picked_unroutable)) >= limit,
    )


def ping_plan() -> Plan[None]:
    yield ("SELECT 1 AS one", [])


def schema_version_plan() -> Plan[int]:
    rows = yield ("SELECT coalesce(max(version), 0) AS v FROM schema_version", [])
    return int(rows[0]["v"])


def drive(plan: Plan[T], run: Callable[[str, list[Any]], list[Row]]) -> T:
    """Run a plan to its end with `run` executing each statement (synchronous backends)."""
    try:
        stmt = next(plan)
        while True:
            stmt = plan.send(run(*stmt))
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]


# -- group commit ----------------------------------------------------------------------


@dataclass(slots=True)
class Job:
    """One queued write: what to run on the writer's connection, and who waits for it.

    `args` lets a backend recognise writes it knows how to apply several at a time (the
    arguments of a `record` call, say); `fn` alone must still do the whole write, since a
    batch falls back to running its jobs one by one.
    """

    fn: Callable[[Any], Any]
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Any]
    args: Any = None


Outcome = tuple[bool, Any]  # (True, result) or (False, the exception to raise)
# Commits a batch on the writer's connection and returns one outcome per job, or raises
# when the whole batch failed (every caller then gets that exception).
ApplyBatch = Callable[[list[Job]], list[Outcome]]


def _settle_all(settled: list[tuple[asyncio.Future[Any], bool, Any]]) -> None:
    for future, ok, value in settled:
        if future.done():  # the caller gave up waiting (cancelled); the write still stands
            continue
        if ok:
            future.set_result(value)
        else:
            future.set_exception(value)


class GroupWriter:
    """A dedicated thread that commits queued writes together.

    Writes submitted on an event loop during one pass of that loop are handed to the
    thread together, as one queue item, at the end of the pass: one thread hand-off per
    pass rather than one per write. The thread takes whatever is queued (up to
    `max_batch` writes), hands the batch to `apply`, which commits it in one transaction,
    then wakes every caller of the batch with one hop to its event loop. It never waits
    for company: a lone write is committed at once, and a crowd that queued while the
    previous commit was in progress shares the next one.
    """

    def __init__(
        self,
        apply: ApplyBatch,
        *,
        max_batch: int,
        name: str,
        idle: Callable[[], None] | None = None,
    ) -> None:
        self._apply = apply
        # Housekeeping the backend does on this thread when nothing is queued.
        self._idle = idle
        self.max_batch = max(1, max_batch)
        self.name = name
        # Statistics: transactions committed, and writes they carried.
        self.commits = 0
        self.writes = 0
        self.largest_batch = 0
        self._queue: queue.SimpleQueue[list[Job] | None] = queue.SimpleQueue()
        # Writes submitted during the current pass of each event loop, not yet queued.
        self._gathering: dict[asyncio.AbstractEventLoop, list[Job]] = {}
        # Orders queueing against stop(): nothing is queued after the stop marker.
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stopping = False

    @property
    def running(self) -> bool:
        return self._thread is not None and not self._stopping

    def start(self) -> None:
        self._stopping = False
        self._thread = threading.Thread(target=self._main, name=self.name, daemon=True)
        self._thread.start()

    async def submit(self, fn: Callable[[Any], T], args: Any = None) -> T:
        if self._thread is None or self._stopping:
            raise StoreUnavailable("the store is not open")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        job = Job(fn, loop, future, args)
        gathering = self._gathering.get(loop)
        if gathering is not None:
            gathering.append(job)
        elif self.max_batch == 1:
            self._enqueue([job])
        else:
            self._gathering[loop] = [job]
            # Runs once the callbacks already scheduled for this pass have run, so the
            # writes they submit join this one.
            loop.call_soon(self._hand_over, loop)
        return cast(T, await future)

    def _hand_over(self, loop: asyncio.AbstractEventLoop) -> None:
        jobs = self._gathering.pop(loop, None)
        if jobs:
            self._enqueue(jobs)

    def _enqueue(self, jobs: list[Job]) -> None:
        with self._lock:
            if not self._stopping:
                self._queue.put(jobs)
                return
        closed = StoreUnavailable("the store is closed")
        for job in jobs:
            if not job.future.done():
                job.future.set_exception(closed)

    async def stop(self) -> None:
        """Finish what is queued (its callers are waiting), then end the thread."""
        thread = self._thread
        if thread is None:
            return
        # Writes this loop gathered but has not handed over yet go in before the marker.
        self._hand_over(asyncio.get_running_loop())
        with self._lock:
            self._stopping = True
            self._queue.put(None)
        await asyncio.to_thread(thread.join)
        self._thread = None

    def _main(self) -> None:
        stopping = False
        try:
            while not stopping:
                if self._idle is not None and self._queue.empty():
                    # Housekeeping only: whatever goes wrong, the writes must go on.
                    with contextlib.suppress(Exception):
                        self._idle()
                item = self._queue.get()
                if item is None:
                    break
                batch = item
                while len(batch) < self.max_batch:
                    try:
                        more = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if more is None:
                        stopping = True
                        break
                    batch.extend(more)
                for at in range(0, len(batch), self.max_batch):
                    self._commit(batch[at : at + self.max_batch])
        finally:
            while True:
                try:
                    left = self._queue.get_nowait()
                except queue.Empty:
                    break
                if left is not None:
                    closed = StoreUnavailable("the store is closed")
                    self._wake(left, [(False, closed)] * len(left))

    def _commit(self, batch: list[Job]) -> None:
        try:
            outcomes = self._apply(batch)
        except Exception as exc:
            self._wake(batch, [(False, exc)] * len(batch))
            return
        except BaseException:
            # The thread is going down: whether the batch committed is unknown, so no
            # caller may be told it did.
            lost = StoreUnavailable("the store writer stopped")
            self._wake(batch, [(False, lost)] * len(batch))
            raise
        self.commits += 1
        self.writes += len(batch)
        self.largest_batch = max(self.largest_batch, len(batch))
        # No sleep(0) to hand the GIL over here: getting it back would cost this thread a
        # wait of up to the interpreter's switch interval while the event loop is busy.
        self._wake(batch, outcomes)

    @staticmethod
    def _wake(batch: list[Job], outcomes: list[Outcome]) -> None:
        """One hop to each event loop for the whole batch."""
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Any], bool, Any]]]
        by_loop = {}
        for job, (ok, value) in zip(batch, outcomes, strict=True):
            by_loop.setdefault(job.loop, []).append((job.future, ok, value))
        for loop, settled in by_loop.items():
            # A RuntimeError means that event loop is gone: nobody is waiting any more.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_settle_all, settled)
