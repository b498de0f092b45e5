"""Plans for handler calls: claim, complete, fail, release, replay, read and list."""

from __future__ import annotations

from datetime import datetime

from listener.store._common import (
    after,
    as_utc,
    check_limit,
    decode_cursor,
    encode_cursor,
    utcnow,
)
from listener.store._plans.core import (
    CALL_SELECT,
    Dialect,
    Plan,
    Query,
    Stmt,
    _marks,
)
from listener.store._rows import (
    call_from_row,
)
from listener.store.base import (
    CallState,
    HandlerCall,
    Page,
)

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
    " lease_owner = ?, lease_expires_at = ?, updated_at = ?, started_at = ?"
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
    lease = [owner, d.t(after(at, lease_seconds)), d.t(at), d.t(at)]
    ids: list[int] = []
    for state, column, index in CLAIMABLE:
        picked = f"SELECT id FROM ({claimable_calls(d, state, column, index)}) AS picked"
        rows = yield (
            f"{CLAIM_SET} WHERE {d.pick('id', picked)} RETURNING id",
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
        " lease_owner = NULL, lease_expires_at = NULL, updated_at = ?, started_at = NULL"
        " WHERE id = ? AND state = 'running' AND lease_owner = ? RETURNING id",
        [now, now, call_id, owner],
    )
    return bool(rows)


# What makes a dead or done call pending again, due now, with its attempts forgotten and
# one more replay counted; its parameters are the time, twice. One call's replay and a
# bulk replay (`_plans.recovery`) share it.
REPLAY_SET = (
    "UPDATE handler_calls SET state = 'pending', attempts = 0, replays = replays + 1,"
    " next_attempt_at = ?, lease_owner = NULL, lease_expires_at = NULL, updated_at = ?"
)


def replay_call_plan(d: Dialect, call_id: int) -> Plan[bool]:
    now = d.t(utcnow())
    rows = yield (
        f"{REPLAY_SET} WHERE id = ? AND state IN ('dead', 'done') RETURNING id",
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
