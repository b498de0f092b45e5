"""Plans for bulk recovery: finding handler calls to replay and replaying them, walking
past transitions and enqueueing a handler's calls for them, and working through the
unroutable deliveries.

Every walk is keyset-paged in ascending order (never OFFSET), so a chunk costs the same
however far along it is; every write takes one chunk in one short transaction and checks
its condition again, so a rerun or a concurrent change does no harm.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime

from listener.events import RunStatus, Transition
from listener.store._common import check_limit, decode_cursor, encode_cursor, utcnow
from listener.store._plans.calls import REPLAY_SET
from listener.store._plans.core import Dialect, Plan, Query, _marks
from listener.store._rows import EVENT_COLUMNS_FOR_CALL, event_from_row, unroutable_from_row
from listener.store.base import (
    REPLAYABLE_STATES,
    CallState,
    Page,
    PastTransition,
    UnroutableRecord,
)


def _replayable(states: Sequence[CallState]) -> list[str]:
    values = [CallState(state).value for state in states]
    if not values or any(CallState(value) not in REPLAYABLE_STATES for value in values):
        raise ValueError("only dead or done handler calls can be replayed")
    return values


def find_calls_plan(
    d: Dialect,
    *,
    states: Sequence[CallState],
    handlers: Sequence[str] | None,
    provider: str | None,
    application: str | None,
    since: datetime | None,
    until: datetime | None,
    after_id: int,
    limit: int,
) -> Plan[list[int]]:
    check_limit(limit)
    joined = provider is not None or application is not None
    head = "SELECT c.id FROM handler_calls c"
    if joined:
        head += " JOIN events e ON e.delivery_id = c.delivery_id"
    q = Query(head)
    q.where_in("c.state", _replayable(states))
    if handlers is not None:
        q.where_in("c.handler", list(handlers))
    if provider is not None:
        q.where("e.provider = ?", provider)
    if application is not None:
        q.where("e.application = ?", application)
    q.window("c.updated_at", d.opt_t(since), d.opt_t(until))
    q.where("c.id > ?", int(after_id))
    rows = yield q.exact("ORDER BY c.id", limit)
    return [int(row["id"]) for row in rows]


def replay_calls_plan(
    d: Dialect, call_ids: Sequence[int], *, states: Sequence[CallState]
) -> Plan[list[int]]:
    """Replay the calls of `call_ids` that are still in one of `states`: one that is
    pending or running meanwhile (replayed by someone else, say) is left alone."""
    values = _replayable(states)
    ids = [int(call_id) for call_id in call_ids]
    if not ids:
        return []
    now = d.t(utcnow())
    rows = yield (
        f"{REPLAY_SET} WHERE id IN ({_marks(ids)}) AND state IN ({_marks(values)}) RETURNING id",
        [now, now, *ids, *values],
    )
    return sorted(int(row["id"]) for row in rows)


_TRANSITION_SELECT = (
    "SELECT t.run_id AS t_run_id, t.status AS t_status, t.created_at AS t_created_at,"
    f" {EVENT_COLUMNS_FOR_CALL}"
    " FROM transitions t JOIN events e ON e.delivery_id = t.delivery_id"
)


def list_transitions_plan(
    d: Dialect,
    *,
    since: datetime,
    until: datetime | None,
    limit: int,
    cursor: str | None,
) -> Plan[Page[PastTransition]]:
    """Transitions made in `[since, until)`, oldest first, each with the event that made
    it; resumed after `cursor` (transitions_by_created narrows the scan)."""
    check_limit(limit)
    q = Query(_TRANSITION_SELECT)
    q.window("t.created_at", d.t(since), d.opt_t(until))
    if cursor is not None:
        key, run_id, status = decode_cursor("transitions", cursor, (d.cursor_time_type, str, str))
        q.where(
            "(t.created_at, t.run_id, t.status) > (?, ?, ?)", d.cursor_to_key(key), run_id, status
        )
    rows = yield q.exact("ORDER BY t.created_at, t.run_id, t.status", limit + 1)
    next_cursor = None
    if len(rows) > limit:
        last = rows[limit - 1]
        next_cursor = encode_cursor(
            "transitions", d.key_to_cursor(last["t_created_at"]), last["t_run_id"], last["t_status"]
        )
    items = [
        PastTransition(
            run_id=row["t_run_id"],
            status=RunStatus(row["t_status"]),
            created_at=d.time_value(row["t_created_at"]),
            event=event_from_row(row, d.time_value, d.json_value, prefix="e_"),
        )
        for row in rows[:limit]
    ]
    return Page(items=items, next_cursor=next_cursor)


def enqueue_calls_plan(
    d: Dialect, handler: str, transitions: Sequence[Transition], *, known_as: Sequence[str]
) -> Plan[list[int]]:
    """One pending call of `handler` for each of `transitions` that has no call of it yet
    (under its name or any of `known_as`): rerunning enqueues nothing twice. The
    transitions' rows are locked first, all in one statement and in key order, so two
    backfills of one handler at once (on PostgreSQL) take turns without deadlocking, and
    the second sees the first's calls."""
    names = list(dict.fromkeys([handler, *known_as]))
    wanted = list(dict.fromkeys((t.run_id, RunStatus(t.status).value) for t in transitions))
    if not wanted:
        return []
    rows = yield (
        "SELECT run_id, status, delivery_id FROM transitions WHERE (run_id, status) IN"
        f" (VALUES {', '.join(['(?, ?)'] * len(wanted))}) ORDER BY run_id, status"
        f"{d.for_update}",
        [value for key in wanted for value in key],
    )
    # A transition pruned meanwhile is gone: nothing to call the handler with.
    found = {(row["run_id"], row["status"]): row["delivery_id"] for row in rows}
    at = d.t(utcnow())
    ids: list[int] = []
    for run_id, status in wanted:
        if (run_id, status) not in found:
            continue
        made = yield (
            "INSERT INTO handler_calls (handler, run_id, status, delivery_id, state, attempts,"
            " next_attempt_at, replays, created_at, updated_at)"
            " SELECT ?, ?, ?, ?, 'pending', 0, ?, 0, ?, ?"
            " WHERE NOT EXISTS (SELECT 1 FROM handler_calls"
            f" WHERE run_id = ? AND status = ? AND handler IN ({_marks(names)}))"
            " RETURNING id",
            [handler, run_id, status, found[run_id, status], at, at, at, run_id, status, *names],
        )
        ids.extend(int(row["id"]) for row in made)
    return ids


def scan_unroutable_plan(d: Dialect, *, after_id: int, limit: int) -> Plan[list[UnroutableRecord]]:
    check_limit(limit)
    rows = yield (
        "SELECT * FROM unroutable WHERE id > ? ORDER BY id LIMIT ?",
        [int(after_id), limit],
    )
    return [unroutable_from_row(row, d.time_value, d.json_value) for row in rows]


def settle_unroutable_plan(
    d: Dialect, *, remove: Sequence[int], reasons: Mapping[int, str]
) -> Plan[int]:
    """Delete the deliveries of `remove` (now recorded) and give others a new reason, in
    one transaction; how many were deleted."""
    removed = 0
    ids = [int(row_id) for row_id in remove]
    if ids:
        rows = yield (f"DELETE FROM unroutable WHERE id IN ({_marks(ids)}) RETURNING id", ids)
        removed = len(rows)
    for row_id, reason in reasons.items():
        yield (
            "UPDATE unroutable SET reason = ? WHERE id = ? AND reason <> ?",
            [reason, int(row_id), reason],
        )
    return removed
