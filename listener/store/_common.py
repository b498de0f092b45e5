"""What every part of the stores shares: time and JSON conversion, page cursors,
limits and the schema version check. Pure functions; nothing here opens a database."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from listener.events import RunStatus
from listener.store.base import (
    ON_END_HANDLER_PREFIX,
    SchemaTooNew,
)

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
    seconds = float(value)
    try:
        return datetime.fromtimestamp(seconds, UTC)
    except (OverflowError, ValueError, OSError):
        # A row written before times were checked on the way in: read it as the nearest
        # time a datetime holds, so one bad row cannot stop every read that meets it.
        return datetime.max.replace(tzinfo=UTC) if seconds > 0 else datetime.min.replace(tzinfo=UTC)


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


def calls_for_move(handlers: Sequence[str], moved: RunStatus, on_end: str | None) -> list[str]:
    """The handler calls a transition to `moved` enqueues: one per matched handler, and
    the run's own `on_end` call when the run ends."""
    names = list(handlers)
    if on_end is not None and moved.is_terminal:
        names.append(ON_END_HANDLER_PREFIX + on_end)
    return unique_handlers(names)


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


# -- schema ----------------------------------------------------------------------------


def check_schema_version(found: int, known: int, where: str) -> None:
    if found > known:
        raise SchemaTooNew(
            f"{where} has schema version {found}, but this listener only knows versions up "
            f"to {known}; upgrade the listener (or point it at another database)"
        )
