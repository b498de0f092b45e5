"""Log every run transition, one line each.

Settings (`configure({...})` or environment):

- `level` / `LISTENER_HANDLER_LOG_LEVEL`: a logging level name, default `INFO`;
- `logger` / `LISTENER_HANDLER_LOG_LOGGER`: the logger name, default `listener.handlers.log`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from handlers._settings import Settings
from listener.events import RunEvent
from listener.redaction import log_text
from listener.registry import Handlers

__all__ = ["configure", "handlers", "log_transition"]

handlers = Handlers()
settings = Settings("log")


def configure(values: Mapping[str, Any]) -> None:
    settings.configure(values)


def _level() -> int:
    name = str(settings.get("level", "INFO")).upper()
    level = logging.getLevelName(name)
    if not isinstance(level, int):
        raise ValueError(f"unknown log level {name!r}")
    return level


@handlers.on_any
async def log_transition(event: RunEvent) -> None:
    logger = logging.getLogger(settings.text("logger") or "listener.handlers.log")
    logger.log(
        _level(),
        "run %s %s provider=%s application=%s origin=%s key=%s",
        log_text(event.run_id),
        event.status.value,
        log_text(event.provider),
        log_text(event.application or None),
        event.origin.value,
        log_text(event.key),
        extra={"run_id": event.run_id, "status": event.status.value, "event_key": event.key},
    )
