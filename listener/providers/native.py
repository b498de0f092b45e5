"""The listener's own event payload: what the local provider and forwarding handlers send.

{"type": "run.status",
 "data": {"run_id": "...", "provider": "local", "application": "...",
          "status": "succeeded", "occurred_at": "2026-01-01T00:00:00+00:00"}}
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Final

from listener.events import (
    LISTENER_WORDS,
    Origin,
    RunEvent,
    RunStatus,
    UnknownStatus,
    check_time,
    status_from_words,
)
from listener.providers.base import PayloadNotUnderstood

EVENT_TYPE = "run.status"


def build_payload(event: RunEvent) -> dict[str, Any]:
    """The payload that `parse_event` reads back into the same run, status and time."""
    return {
        "type": EVENT_TYPE,
        "data": {
            "run_id": event.run_id,
            "provider": event.provider,
            "application": event.application,
            "status": event.status.value,
            "occurred_at": event.occurred_at.isoformat(),
            "key": event.key,
        },
    }


# The provider name that reads this format: a source of another listener's forwards.
NATIVE_PROVIDER: Final = "listener"


def parse_event(payload: Any, *, delivery_id: str, provider: str = NATIVE_PROVIDER) -> RunEvent:
    if not isinstance(payload, Mapping):
        raise PayloadNotUnderstood("payload is not a JSON object")
    data = payload.get("data", payload)
    if not isinstance(data, Mapping):
        raise PayloadNotUnderstood("'data' is not a JSON object")
    run_id = data.get("run_id")
    if not isinstance(run_id, str) or not run_id:
        raise PayloadNotUnderstood("no run_id")
    try:
        status = status_from_words("listener", LISTENER_WORDS, data.get("status"))
    except UnknownStatus as exc:
        raise PayloadNotUnderstood(str(exc)) from None
    application = data.get("application")
    return RunEvent(
        delivery_id=delivery_id,
        provider=str(data.get("provider") or provider),
        application=application if isinstance(application, str) else "",
        run_id=run_id,
        status=RunStatus(status),
        occurred_at=parse_time(data.get("occurred_at")),
        origin=Origin.WEBHOOK,
        payload=payload,
    )


def parse_time(value: Any) -> datetime:
    """An ISO 8601 or Unix-seconds time; now when missing, unreadable or outside what a
    store can hold (it is advisory)."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        try:
            return check_time(datetime.fromtimestamp(value, UTC))
        except (OverflowError, OSError, ValueError):
            return datetime.now(UTC)
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
            return check_time(parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC))
        except ValueError:
            return datetime.now(UTC)
    return datetime.now(UTC)
