"""Plans for events: record one (the one record path), unroutable deliveries, reads and
listings."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from listener.events import Origin, RunEvent, RunStatus, Transition, next_status
from listener.store._common import (
    as_utc,
    calls_for_move,
    check_limit,
    decode_cursor,
    encode_cursor,
    next_poll_at,
    utcnow,
)
from listener.store._plans.core import (
    Dialect,
    Plan,
    Query,
    newest_first_page,
    resume_newest_first,
)
from listener.store._rows import (
    event_from_row,
    unroutable_from_row,
)
from listener.store.base import (
    Page,
    RecordResult,
    UnroutableRecord,
)

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
        f"SELECT status, grace_seconds, provider, on_end FROM runs WHERE run_id = ?{d.for_update}",
        [event.run_id],
    )
    if not stored:
        rows = yield select_run
        status = RunStatus(rows[0]["status"]) if rows else reported
        return RecordResult(duplicate=True, run_created=False, transition=None, status=status)

    grace = float(default_grace_seconds)
    current: RunStatus | None = None
    on_end: str | None = None
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
        on_end = rows[0]["on_end"]
        if rows[0]["provider"] != event.provider:
            yield ("DELETE FROM events WHERE delivery_id = ?", [event.delivery_id])
            return RecordResult(
                duplicate=False, run_created=False, transition=None, status=current, foreign=True
            )

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
        # A poll's news was learned by a status call: it counts with the run's others.
        polled = int(Origin(event.origin) is Origin.POLL)
        if status.is_terminal:
            # Terminal: never polled again, and any poll lease on it is moot.
            yield (
                "UPDATE runs SET status = ?, last_event_at = ?, next_poll_at = NULL,"
                " poll_attempts = 0, status_calls = status_calls + ?, lease_owner = NULL,"
                " lease_expires_at = NULL, updated_at = ? WHERE run_id = ?",
                [status.value, at, polled, at, event.run_id],
            )
        else:
            yield (
                "UPDATE runs SET status = ?, last_event_at = ?, next_poll_at = ?,"
                " poll_attempts = 0, status_calls = status_calls + ?, updated_at = ?"
                " WHERE run_id = ?",
                [
                    status.value,
                    at,
                    d.opt_t(next_poll_at(status, now, grace)),
                    polled,
                    at,
                    event.run_id,
                ],
            )

    call_ids: list[int] = []
    names = calls_for_move(handlers, moved, on_end) if moved is not None else []
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
    order = {"kind": "events", "time_column": "received_at", "id_column": "id"}
    resume_newest_first(d, q, cursor, id_type=int, **order)
    rows = yield q.stmt("ORDER BY received_at DESC, id DESC", limit)
    return newest_first_page(
        d, rows, limit, item=lambda row: event_from_row(row, d.time_value, d.json_value), **order
    )


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
