"""Plans for runs: register one, read one, list them."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from listener.events import RunStatus
from listener.store._common import (
    as_utc,
    check_limit,
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
    run_from_row,
)
from listener.store.base import (
    ON_END_HANDLER_PREFIX,
    NewRun,
    Page,
    RunRecord,
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
        " on_end, on_end_context, registered, updated_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, 0, ?, ?, ?, ?, 1, ?)"
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
            run.on_end,
            d.json_param(run.on_end_context),
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
        " callback = ?, metadata = ?, on_end = ?, on_end_context = ?, registered = 1,"
        " updated_at = ? WHERE run_id = ?",
        [
            d.t(submitted),
            grace,
            d.opt_t(run.deadline),
            d.opt_t(next_poll_at(current, base, grace)),
            d.json_param(run.callback),
            d.json_param(run.metadata),
            run.on_end,
            d.json_param(run.on_end_context),
            d.t(now),
            run.run_id,
        ],
    )
    if run.on_end is not None and current.is_terminal:
        # Its end was recorded before it had an `on_end`: enqueue that call now, once
        # (only an unregistered run gets here, and this registers it).
        at = d.t(now)
        yield (
            "INSERT INTO handler_calls (handler, run_id, status, delivery_id, state,"
            " attempts, next_attempt_at, replays, created_at, updated_at)"
            " SELECT ?, run_id, status, delivery_id, 'pending', 0, ?, 0, ?, ?"
            " FROM transitions WHERE run_id = ? AND status = ?",
            [ON_END_HANDLER_PREFIX + run.on_end, at, at, at, run.run_id, current.value],
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
    order = {"kind": "runs", "time_column": "submitted_at", "id_column": "run_id"}
    resume_newest_first(d, q, cursor, id_type=str, **order)
    rows = yield q.stmt("ORDER BY submitted_at DESC, run_id DESC", limit)
    return newest_first_page(
        d, rows, limit, item=lambda row: run_from_row(row, d.time_value, d.json_value), **order
    )
