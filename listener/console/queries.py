"""What the pages ask of the store, read from the query string, and what they show, built
from what the store returns. Pure: no I/O, so every rule is tested directly."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import TypeVar

from listener.durations import parse_moment
from listener.events import Origin, RunStatus
from listener.health import lag_seconds, learned_by
from listener.store.base import (
    CallState,
    HandlerCall,
    RunEnd,
    RunHistory,
    RunRecord,
)

__all__ = [
    "CallQuery",
    "RunQuery",
    "Timeline",
    "TimelineEntry",
    "build_timeline",
]


class _FilterError(ValueError):
    """A filter the operator wrote that cannot be read; the page says which."""


def _text(params: Mapping[str, str], name: str) -> str | None:
    value = params.get(name, "").strip()
    return value or None


def _moment(params: Mapping[str, str], name: str, now: datetime) -> datetime | None:
    text = _text(params, name)
    if text is None:
        return None
    try:
        return parse_moment(text, now=now)
    except ValueError as exc:
        raise _FilterError(f"{name}: {exc}") from None


E = TypeVar("E", bound=StrEnum)


def _member(kind: type[E], name: str, word: str) -> E:
    """The member of the string enum `kind` written `word`, or a `_FilterError` naming
    the filter and the words it takes."""
    try:
        return kind(word)
    except ValueError:
        known = ", ".join(member.value for member in kind)
        raise _FilterError(f"{name}: {word!r} is not one of {known}") from None


@dataclass(frozen=True, slots=True)
class RunQuery:
    """The runs page's filters; `run_id` finds one run instead."""

    status: tuple[RunStatus, ...] = ()
    provider: str | None = None
    application: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    run_id: str | None = None
    cursor: str | None = None
    # The words as written, to fill the form again and to build the next page's link.
    given: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, params: Mapping[str, str], now: datetime) -> RunQuery:
        words = (_text(params, "status") or "").split(",")
        status = [_member(RunStatus, "status", w.strip()) for w in words if w.strip()]
        since = _moment(params, "since", now)
        until = _moment(params, "until", now)
        if since is not None and until is not None and since >= until:
            raise _FilterError("since must be before until")
        names = ("status", "provider", "application", "since", "until", "run_id")
        return cls(
            status=tuple(status),
            provider=_text(params, "provider"),
            application=_text(params, "application"),
            since=since,
            until=until,
            run_id=_text(params, "run_id"),
            cursor=_text(params, "cursor"),
            given={name: params[name] for name in names if _text(params, name)},
        )


@dataclass(frozen=True, slots=True)
class CallQuery:
    state: CallState | None = None
    handler: str | None = None
    run_id: str | None = None
    cursor: str | None = None
    given: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, params: Mapping[str, str]) -> CallQuery:
        word = _text(params, "state")
        state = _member(CallState, "state", word) if word is not None else None
        names = ("state", "handler", "run_id")
        return cls(
            state=state,
            handler=_text(params, "handler"),
            run_id=_text(params, "run_id"),
            cursor=_text(params, "cursor"),
            given={name: params[name] for name in names if _text(params, name)},
        )


@dataclass(frozen=True, slots=True)
class TimelineEntry:
    """One line of a run's story."""

    at: datetime
    kind: str  # submitted, event, call
    title: str
    origin: str | None = None
    status: str | None = None
    moved: bool = False  # the event moved the run (a transition)
    detail: Mapping[str, object] = field(default_factory=dict)
    error: str | None = None
    payload: object = None


@dataclass(frozen=True, slots=True)
class Timeline:
    run: RunRecord | None
    entries: list[TimelineEntry]
    # How the end was learned (webhook, poll, stream, expiry, ...) and how long after the
    # platform's own end time; None while the run is open.
    learned_by: str | None = None
    lag_seconds: float | None = None


def build_timeline(
    run: RunRecord | None, history: RunHistory, calls: Sequence[HandlerCall]
) -> Timeline:
    """The run's story oldest first: its submission, each event (marking those that moved
    it), each handler call; and, once it ended, how the end was learned and how late, as
    `listener.health` counts it."""
    entries: list[TimelineEntry] = []
    if run is not None:
        entries.append(
            TimelineEntry(
                at=run.submitted_at,
                kind="submitted",
                title=f"submitted to {run.provider} ({run.application})",
                status=RunStatus.QUEUED.value,
                detail={"grace_seconds": run.grace_seconds, "deadline": run.deadline},
            )
        )
    moved = {t.event.delivery_id: t for t in history.transitions}
    for stored in history.events:
        event = stored.event
        transition = moved.get(event.delivery_id)
        entries.append(
            TimelineEntry(
                at=stored.received_at,
                kind="event",
                title=(
                    f"moved to {event.status.value}"
                    if transition is not None
                    else f"{event.status.value} (no change)"
                ),
                origin=Origin(event.origin).value,
                status=event.status.value,
                moved=transition is not None,
                detail={"delivery_id": event.delivery_id, "occurred_at": event.occurred_at},
                payload=event.payload,
            )
        )
    for call in calls:
        entries.append(
            TimelineEntry(
                at=call.created_at,
                kind="call",
                title=f"handler {call.handler}: {call.state.value}",
                status=call.status.value,
                detail={
                    "call_id": call.id,
                    "state": call.state.value,
                    "attempts": call.attempts,
                    "replays": call.replays,
                    "took": call.last_duration,
                    "updated_at": call.updated_at,
                    "next_attempt_at": call.next_attempt_at,
                },
                error=call.last_error,
            )
        )
    entries.sort(key=lambda entry: (entry.at, _KIND_ORDER[entry.kind]))
    end = next((t for t in reversed(history.transitions) if t.status.is_terminal), None)
    if end is None:
        return Timeline(run=run, entries=entries)
    received = next(
        (s.received_at for s in history.events if s.event.delivery_id == end.event.delivery_id),
        end.created_at,
    )
    run_end = RunEnd(
        provider=end.event.provider,
        application=end.event.application,
        status=end.status,
        origin=Origin(end.event.origin),
        occurred_at=end.event.occurred_at,
        received_at=received,
    )
    way = learned_by(run_end)
    return Timeline(
        run=run,
        entries=entries,
        learned_by=way,
        lag_seconds=None if way == "expiry" else lag_seconds(run_end),
    )


_KIND_ORDER = {"submitted": 0, "event": 1, "call": 2}
