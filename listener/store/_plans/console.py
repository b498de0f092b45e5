"""Plans for the operator console: one run's history, and the audit of operator actions."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from listener.events import RunStatus
from listener.store._common import check_limit, utcnow
from listener.store._plans.core import (
    Dialect,
    Plan,
    Query,
    newest_first_page,
    resume_newest_first,
)
from listener.store._rows import event_from_row
from listener.store.base import AuditRecord, Page, PastTransition, RunHistory, StoredEvent


def run_history_plan(d: Dialect, run_id: str, *, limit: int) -> Plan[RunHistory]:
    """The run's events by the time received (events_by_run) and its transitions by
    their primary key: two index reads, however many runs the store holds."""
    check_limit(limit)
    rows = yield (
        "SELECT * FROM events WHERE run_id = ? ORDER BY received_at, id LIMIT ?",
        [run_id, limit],
    )
    events = [
        StoredEvent(
            event=event_from_row(row, d.time_value, d.json_value),
            received_at=d.time_value(row["received_at"]),
        )
        for row in rows
    ]
    made = {stored.event.delivery_id: stored.event for stored in events}
    rows = yield (
        "SELECT status, delivery_id, created_at FROM transitions WHERE run_id = ?"
        " ORDER BY created_at LIMIT ?",
        [run_id, limit],
    )
    transitions: list[PastTransition] = []
    missing = [row["delivery_id"] for row in rows if row["delivery_id"] not in made]
    if missing:
        # Past the `limit` events read above: fetch the few events that made transitions.
        extra = yield (
            f"SELECT * FROM events WHERE delivery_id IN ({', '.join('?' * len(missing))})",
            missing,
        )
        for row in extra:
            event = event_from_row(row, d.time_value, d.json_value)
            made[event.delivery_id] = event
    for row in rows:
        if row["delivery_id"] not in made:
            continue
        transitions.append(
            PastTransition(
                run_id=run_id,
                status=RunStatus(row["status"]),
                created_at=d.time_value(row["created_at"]),
                event=made[row["delivery_id"]],
            )
        )
    return RunHistory(events=events, transitions=transitions)


def record_audit_plan(
    d: Dialect, *, actor: str, action: str, count: int, detail: Mapping[str, Any]
) -> Plan[int]:
    rows = yield (
        "INSERT INTO audit (at, actor, action, count, detail) VALUES (?, ?, ?, ?, ?) RETURNING id",
        [d.t(utcnow()), actor, action, int(count), d.json_param(detail)],
    )
    return int(rows[0]["id"])


def list_audit_plan(d: Dialect, *, limit: int, cursor: str | None) -> Plan[Page[AuditRecord]]:
    check_limit(limit)
    q = Query("SELECT * FROM audit")
    order = {"kind": "audit", "time_column": "at", "id_column": "id"}
    resume_newest_first(d, q, cursor, id_type=int, **order)
    rows = yield q.stmt("ORDER BY at DESC, id DESC", limit)
    return newest_first_page(
        d,
        rows,
        limit,
        item=lambda row: AuditRecord(
            id=int(row["id"]),
            at=d.time_value(row["at"]),
            actor=row["actor"],
            action=row["action"],
            count=int(row["count"]),
            detail=d.json_value(row["detail"]),
        ),
        **order,
    )
