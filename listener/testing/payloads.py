"""Webhook bodies as the fake platform sends them, for receiver tests without a platform."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

__all__ = ["iso", "nextmv_run_status_payload"]


def iso(moment: datetime) -> str:
    """A time as the platform writes it: ISO 8601, ``Z`` for UTC."""
    return moment.isoformat().replace("+00:00", "Z")


def nextmv_run_status_payload(
    run_id: str,
    application: str,
    status: str,
    *,
    created_at: datetime | None = None,
    updated_at: datetime | None = None,
    instance_id: str | None = None,
) -> dict[str, Any]:
    """A ``run.status`` webhook body as the fake platform sends it (``status`` a status_v2 word)."""
    now = datetime.now(UTC)
    return {
        "type": "run.status",
        "data": {
            "run_id": run_id,
            "application_id": application,
            "application_instance_id": instance_id or "",
            "status_v2": status,
            "created_at": iso(created_at or now),
            "updated_at": iso(updated_at or now),
        },
    }
