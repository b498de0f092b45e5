"""The pages' filters and a run's timeline, as pure functions."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from listener.console.queries import CallQuery, RunQuery, _FilterError, build_timeline
from listener.events import Origin, RunEvent, RunStatus
from listener.store.base import (
    CallState,
    HandlerCall,
    PastTransition,
    RunHistory,
    RunRecord,
    StoredEvent,
)

NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return NOW + timedelta(seconds=seconds)


def event(delivery: str, status: RunStatus, origin: Origin, occurred: float) -> RunEvent:
    return RunEvent(
        delivery_id=delivery,
        provider="nextmv",
        application="routing",
        run_id="r1",
        status=status,
        origin=origin,
        occurred_at=at(occurred),
        payload={"d": delivery},
    )


def run_record() -> RunRecord:
    return RunRecord(
        run_id="r1",
        provider="nextmv",
        application="routing",
        status=RunStatus.SUCCEEDED,
        submitted_at=at(0),
        last_event_at=at(30),
        grace_seconds=60,
        deadline=None,
        next_poll_at=None,
        poll_attempts=0,
        lease_owner=None,
        lease_expires_at=None,
        callback={},
        metadata={},
        updated_at=at(30),
    )


def call(call_id: int, state: CallState, created: float, error: str | None = None) -> HandlerCall:
    return HandlerCall(
        id=call_id,
        handler="notify",
        run_id="r1",
        status=RunStatus.SUCCEEDED,
        event=event("d3", RunStatus.SUCCEEDED, Origin.POLL, 20),
        state=state,
        attempts=2,
        next_attempt_at=at(created),
        last_error=error,
        lease_owner=None,
        lease_expires_at=None,
        replays=1,
        created_at=at(created),
        updated_at=at(created + 1),
    )


def history() -> RunHistory:
    running = event("d1", RunStatus.RUNNING, Origin.WEBHOOK, 5)
    again = event("d2", RunStatus.RUNNING, Origin.POLL, 6)
    end = event("d3", RunStatus.SUCCEEDED, Origin.POLL, 20)
    return RunHistory(
        events=[
            StoredEvent(running, at(5.5)),
            StoredEvent(again, at(10)),
            StoredEvent(end, at(30)),
        ],
        transitions=[
            PastTransition("r1", RunStatus.RUNNING, at(5.5), running),
            PastTransition("r1", RunStatus.SUCCEEDED, at(30), end),
        ],
    )


def test_the_timeline_tells_the_story_in_order_and_how_the_end_was_learned() -> None:
    timeline = build_timeline(
        run_record(), history(), [call(7, CallState.DEAD, 30, error="RuntimeError: no")]
    )
    assert [(e.kind, e.title, e.origin) for e in timeline.entries] == [
        ("submitted", "submitted to nextmv (routing)", None),
        ("event", "moved to running", "webhook"),
        ("event", "running (no change)", "poll"),
        ("event", "moved to succeeded", "poll"),
        ("call", "handler notify: dead", None),
    ]
    assert [e.moved for e in timeline.entries] == [False, True, False, True, False]
    assert timeline.entries[-1].error == "RuntimeError: no"
    assert timeline.entries[-1].detail["attempts"] == 2
    assert timeline.learned_by == "poll"
    assert timeline.lag_seconds == 10.0


def test_an_open_run_has_no_end_yet() -> None:
    whole = history()
    opened = RunHistory(events=whole.events[:2], transitions=whole.transitions[:1])
    timeline = build_timeline(None, opened, [])
    assert timeline.learned_by is None
    assert timeline.lag_seconds is None
    assert [e.kind for e in timeline.entries] == ["event", "event"]


def test_an_expired_run_is_learned_by_expiry_with_no_lag() -> None:
    end = event("x", RunStatus.EXPIRED, Origin.POLL, 50)
    timeline = build_timeline(
        None,
        RunHistory(
            events=[StoredEvent(end, at(50))],
            transitions=[PastTransition("r1", RunStatus.EXPIRED, at(50), end)],
        ),
        [],
    )
    assert timeline.learned_by == "expiry"
    assert timeline.lag_seconds is None


def test_run_filters_are_read_from_the_words_written() -> None:
    query = RunQuery.parse(
        {"status": "failed, succeeded", "provider": " nextmv ", "since": "2h", "cursor": ""},
        NOW,
    )
    assert query.status == (RunStatus.FAILED, RunStatus.SUCCEEDED)
    assert query.provider == "nextmv"
    assert query.since == NOW - timedelta(hours=2)
    assert query.cursor is None
    assert query.given == {"status": "failed, succeeded", "provider": " nextmv ", "since": "2h"}


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"status": "done"}, "status: 'done' is not one of"),
        ({"since": "yesterday"}, "since:"),
        ({"since": "1h", "until": "2h"}, "since must be before until"),
    ],
)
def test_bad_run_filters_say_which(params: dict[str, str], message: str) -> None:
    with pytest.raises(_FilterError, match=message):
        RunQuery.parse(params, NOW)


def test_call_filters() -> None:
    assert CallQuery.parse({"state": "dead"}).state is CallState.DEAD
    assert CallQuery.parse({}).state is None
    with pytest.raises(_FilterError, match="state: 'gone'"):
        CallQuery.parse({"state": "gone"})
