"""Rows to records: how a row of each table becomes the record the store hands out."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from listener.events import Origin, RunEvent, RunStatus
from listener.store._common import (
    JsonDecoder,
    Row,
    TimeDecoder,
)
from listener.store.base import (
    CallState,
    HandlerCall,
    RunRecord,
    StoreCounts,
    UnroutableRecord,
)

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
        status_calls=int(row["status_calls"]),
        on_end=row["on_end"],
        on_end_context=js(row["on_end_context"]),
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
    "c.last_error, c.lease_owner, c.lease_expires_at, c.replays, c.created_at, c.updated_at, "
    "c.started_at"
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
        started_at=_opt(ts, row["started_at"]),
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
