"""The vocabulary every part of the listener speaks: run statuses, events, transitions.

Pure data and pure functions only; this module imports nothing else of the project.
"""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

from listener.errors import UnknownStatus

__all__ = [
    "LISTENER_WORDS",
    "TERMINAL_STATUSES",
    "Origin",
    "RunEvent",
    "RunStatus",
    "Transition",
    "UnknownStatus",
    "check_time",
    "next_status",
    "status_from_words",
]


class RunStatus(enum.StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELED = "canceled"
    # Declared by the listener itself when a run's deadline passes with no terminal answer.
    EXPIRED = "expired"

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL_STATUSES


TERMINAL_STATUSES = frozenset(
    {RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELED, RunStatus.EXPIRED}
)


class Origin(enum.StrEnum):
    """How the listener learned of an event."""

    WEBHOOK = "webhook"
    POLL = "poll"
    STREAM = "stream"
    REPLAY = "replay"
    TRACK = "track"


# The listener's own words: the statuses themselves.
LISTENER_WORDS: Mapping[str, RunStatus] = {s.value: s for s in RunStatus}


def status_from_words(platform: str, words: Mapping[str, RunStatus], word: object) -> RunStatus:
    """Map `word` through a platform's vocabulary (lower-case keys); `UnknownStatus` if absent.

    Each provider kind declares its platform's words (`listener.providers.kinds`).
    """
    if not isinstance(word, str):
        raise UnknownStatus(platform, word)
    status = words.get(word.strip().lower())
    if status is None:
        raise UnknownStatus(platform, word)
    return status


_PROGRESS = {RunStatus.QUEUED: 0, RunStatus.RUNNING: 1}


def next_status(current: RunStatus | None, reported: RunStatus) -> RunStatus | None:
    """The status a run moves to when `reported` arrives, or None when it does not move.

    Runs only move forward: queued, running, then a terminal status. A terminal status is
    sticky, so a late or reordered `running` never moves a finished run back. The one
    exception is `expired`: the listener declares it without hearing from the platform,
    so a real terminal answer that arrives later still wins.
    """
    if current is None:
        return reported
    if current == reported:
        return None
    if current.is_terminal:
        if current is RunStatus.EXPIRED and reported.is_terminal:
            return reported
        return None
    if reported.is_terminal:
        return reported
    return reported if _PROGRESS[reported] > _PROGRESS[current] else None


@dataclass(frozen=True, slots=True)
class Transition:
    """A run reaching a status: handlers are called once per transition per handler."""

    run_id: str
    status: RunStatus

    @property
    def key(self) -> str:
        return transition_key(self.run_id, self.status)


def transition_key(run_id: str, status: RunStatus | str) -> str:
    """A stable, opaque idempotency key for one run reaching one status."""
    digest = hashlib.sha256(f"{run_id}\x00{status}".encode()).hexdigest()
    return f"tr_{digest[:32]}"


def _utcnow() -> datetime:
    return datetime.now(UTC)


# The times every store can write and read back: a day inside Python's datetime range,
# since a time stored as seconds can round up by a microsecond (9999-12-31T23:59:59.999999
# would read back as year 10000, which no datetime holds).
EARLIEST_TIME: Final = datetime(1, 1, 2, tzinfo=UTC)
LATEST_TIME: Final = datetime(9999, 12, 30, tzinfo=UTC)


def check_time(value: datetime, name: str = "time") -> datetime:
    """`value` if every store can hold it; `ValueError` naming `name` otherwise (naive
    datetimes pass: the store refuses them with its own message)."""
    if value.tzinfo is None:
        return value
    try:
        in_utc = value.astimezone(UTC)
    except OverflowError:
        raise ValueError(f"{name} {value.isoformat()} is out of range") from None
    if not EARLIEST_TIME <= in_utc <= LATEST_TIME:
        raise ValueError(f"{name} {value.isoformat()} is out of range")
    return value


ResultFetcher = Callable[["RunEvent"], Awaitable[Any]]


@dataclass(frozen=True, slots=True)
class RunEvent:
    """One piece of news about a run, whichever way it arrived.

    `delivery_id` is unique per delivery (a webhook's id, or one made up for a poll);
    `key` is the same for every report of the same transition, so handlers can use it
    to be idempotent.
    """

    delivery_id: str
    provider: str
    application: str
    run_id: str
    status: RunStatus
    occurred_at: datetime = field(default_factory=_utcnow)
    origin: Origin = Origin.WEBHOOK
    payload: Mapping[str, Any] = field(default_factory=dict)
    # Set by the listener when the run's provider can fetch results; not part of equality.
    result_fetcher: ResultFetcher | None = field(default=None, compare=False, repr=False)

    # -- the events the listener makes itself ------------------------------------------
    # Their delivery ids are derived, not random: two replicas (or a poller and a cancel)
    # learning the same thing make the same id, and the store keeps it once.

    @classmethod
    def from_poll(
        cls,
        provider: str,
        application: str,
        run_id: str,
        status: RunStatus,
        *,
        occurred_at: datetime | None = None,
        payload: Mapping[str, Any] | None = None,
    ) -> RunEvent:
        """What asking the platform about a run learned (a poll, a cancel's answer)."""
        return cls.learned(Origin.POLL, provider, application, run_id, status, occurred_at, payload)

    @classmethod
    def expired(
        cls,
        provider: str,
        application: str,
        run_id: str,
        *,
        deadline: datetime | None,
        occurred_at: datetime | None = None,
    ) -> RunEvent:
        """The listener's own verdict on a run whose deadline passed with no final status."""
        return cls(
            delivery_id=f"expire:{provider}:{run_id}",
            provider=provider,
            application=application,
            run_id=run_id,
            status=RunStatus.EXPIRED,
            occurred_at=occurred_at or _utcnow(),
            origin=Origin.POLL,
            payload={
                "reason": "deadline passed with no final status",
                "deadline": deadline.isoformat() if deadline else None,
            },
        )

    @classmethod
    def tracked(
        cls,
        provider: str,
        application: str,
        run_id: str,
        status: RunStatus,
        *,
        occurred_at: datetime | None = None,
        payload: Mapping[str, Any] | None = None,
    ) -> RunEvent:
        """A run that happened elsewhere, reported to the listener by `track`."""
        return cls.learned(
            Origin.TRACK, provider, application, run_id, status, occurred_at, payload
        )

    @classmethod
    def learned(
        cls,
        origin: Origin,
        provider: str,
        application: str,
        run_id: str,
        status: RunStatus,
        occurred_at: datetime | None = None,
        payload: Mapping[str, Any] | None = None,
    ) -> RunEvent:
        """What the listener learned about a run by asking or following its platform
        (`origin` poll, stream, track). The id is derived from the origin, run and status,
        and the store keeps one transition per run and status, so two paths reporting
        the same end (a stream and a poll, or a webhook) make one transition."""
        # The origin names the id's prefix ("poll", "track"), so ids stay as they were.
        return cls(
            delivery_id=f"{origin.value}:{provider}:{run_id}:{status.value}",
            provider=provider,
            application=application,
            run_id=run_id,
            status=status,
            occurred_at=occurred_at or _utcnow(),
            origin=origin,
            payload=dict(payload or {}),
        )

    @property
    def key(self) -> str:
        return transition_key(self.run_id, self.status)

    @property
    def transition(self) -> Transition:
        return Transition(self.run_id, self.status)

    async def fetch_result(self) -> Any:
        """The run's output, fetched through its provider."""
        if self.result_fetcher is None:
            raise LookupError(f"provider {self.provider!r} cannot fetch results for this event")
        return await self.result_fetcher(self)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form, as handed to commands and forwarded to other services."""
        return {
            "key": self.key,
            "delivery_id": self.delivery_id,
            "provider": self.provider,
            "application": self.application,
            "run_id": self.run_id,
            "status": self.status.value,
            "occurred_at": self.occurred_at.isoformat(),
            "origin": self.origin.value,
            "payload": dict(self.payload),
        }
