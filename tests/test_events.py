from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from listener.events import (
    EARLIEST_TIME,
    LATEST_TIME,
    LISTENER_WORDS,
    TERMINAL_STATUSES,
    Origin,
    RunEvent,
    RunStatus,
    Transition,
    UnknownStatus,
    check_time,
    next_status,
    status_from_words,
    transition_key,
)

S = RunStatus


def test_terminal_statuses() -> None:
    assert {s for s in S if s.is_terminal} == {S.SUCCEEDED, S.FAILED, S.CANCELED, S.EXPIRED}
    assert TERMINAL_STATUSES == {S.SUCCEEDED, S.FAILED, S.CANCELED, S.EXPIRED}
    assert not S.QUEUED.is_terminal
    assert not S.RUNNING.is_terminal


def test_status_from_words_reads_lower_cased_trimmed_words() -> None:
    words = {"done": S.SUCCEEDED}
    assert status_from_words("acme", words, " Done ") is S.SUCCEEDED
    for word in ("finished", None, 3):
        with pytest.raises(UnknownStatus) as info:
            status_from_words("acme", words, word)
        assert info.value.platform == "acme"
        assert info.value.word == word


def test_listener_words_are_the_statuses_themselves() -> None:
    assert LISTENER_WORDS == {status.value: status for status in RunStatus}


@pytest.mark.parametrize(
    ("current", "reported", "expected"),
    [
        (None, S.RUNNING, S.RUNNING),
        (None, S.SUCCEEDED, S.SUCCEEDED),
        (S.QUEUED, S.RUNNING, S.RUNNING),
        (S.QUEUED, S.SUCCEEDED, S.SUCCEEDED),
        (S.RUNNING, S.FAILED, S.FAILED),
        (S.RUNNING, S.QUEUED, None),  # reordered: never back to queued
        (S.RUNNING, S.RUNNING, None),
        (S.SUCCEEDED, S.RUNNING, None),  # a late running never reopens a finished run
        (S.SUCCEEDED, S.FAILED, None),  # the first terminal answer sticks
        (S.CANCELED, S.SUCCEEDED, None),
        (S.FAILED, S.EXPIRED, None),
        (S.RUNNING, S.EXPIRED, S.EXPIRED),
        (S.EXPIRED, S.SUCCEEDED, S.SUCCEEDED),  # the platform's real answer beats our guess
        (S.EXPIRED, S.RUNNING, None),
        (S.EXPIRED, S.EXPIRED, None),
    ],
)
def test_next_status(
    current: RunStatus | None, reported: RunStatus, expected: RunStatus | None
) -> None:
    assert next_status(current, reported) == expected


@given(st.lists(st.sampled_from(list(S)), min_size=1, max_size=12))
def test_terminal_is_sticky_for_any_sequence(reports: list[RunStatus]) -> None:
    current: RunStatus | None = None
    seen_platform_terminal = False
    for reported in reports:
        moved = next_status(current, reported)
        if seen_platform_terminal:
            assert moved is None
        if moved is not None:
            assert moved is reported
            current = moved
        if current is not None and current.is_terminal and current is not S.EXPIRED:
            seen_platform_terminal = True
    # Once any terminal status was reported, the run ends terminal.
    if any(r.is_terminal for r in reports):
        assert current is not None
        assert current.is_terminal


def test_transition_key_is_stable_and_distinct() -> None:
    a = transition_key("run-1", S.SUCCEEDED)
    assert a == transition_key("run-1", "succeeded")
    assert a.startswith("tr_")
    assert a != transition_key("run-1", S.FAILED)
    assert a != transition_key("run-2", S.SUCCEEDED)
    # The separator keeps ids that share a prefix apart.
    assert transition_key("ab", S.FAILED) != transition_key("a", S.FAILED)
    assert Transition("run-1", S.SUCCEEDED).key == a


def make_event(**changes: object) -> RunEvent:
    event = RunEvent(
        delivery_id="d-1",
        provider="nextmv",
        application="routing",
        run_id="run-1",
        status=S.SUCCEEDED,
        occurred_at=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
        origin=Origin.WEBHOOK,
        payload={"a": 1},
    )
    return dataclasses.replace(event, **changes)  # type: ignore[arg-type]


def test_run_event_is_frozen_and_keyed_by_transition() -> None:
    event = make_event()
    with pytest.raises(dataclasses.FrozenInstanceError):
        event.status = S.FAILED  # type: ignore[misc]
    # Another delivery of the same transition, by another path, has the same key.
    assert make_event(delivery_id="poll-9", origin=Origin.POLL).key == event.key
    assert make_event(status=S.FAILED).key != event.key
    assert event.transition == Transition("run-1", S.SUCCEEDED)


def test_run_event_to_dict_is_json_ready() -> None:
    data = make_event().to_dict()
    assert json.loads(json.dumps(data)) == data
    assert data["status"] == "succeeded"
    assert data["origin"] == "webhook"
    assert data["occurred_at"] == "2026-01-02T03:04:05+00:00"
    assert data["key"] == make_event().key


async def test_fetch_result_uses_the_fetcher() -> None:
    with pytest.raises(LookupError, match="nextmv"):
        await make_event().fetch_result()

    async def fetch(event: RunEvent) -> dict[str, str]:
        return {"run": event.run_id}

    event = make_event(result_fetcher=fetch)
    assert await event.fetch_result() == {"run": "run-1"}
    # The fetcher is not part of the event's identity.
    assert event == make_event()


def test_the_events_the_listener_makes_have_derived_ids() -> None:
    at = datetime(2026, 3, 4, 5, 6, tzinfo=UTC)
    polled = RunEvent.from_poll("nx", "app", "r-1", RunStatus.FAILED, payload={"s": "failed"})
    assert (polled.delivery_id, polled.origin, dict(polled.payload)) == (
        "poll:nx:r-1:failed",
        Origin.POLL,
        {"s": "failed"},
    )
    # A cancel's answer and a poll learning the same status are one delivery.
    assert RunEvent.from_poll("nx", "app", "r-1", RunStatus.FAILED).delivery_id == (
        polled.delivery_id
    )
    late = RunEvent.expired("nx", "app", "r-1", deadline=at, occurred_at=at)
    assert (late.delivery_id, late.status, late.occurred_at) == (
        "expire:nx:r-1",
        RunStatus.EXPIRED,
        at,
    )
    assert late.payload == {
        "reason": "deadline passed with no final status",
        "deadline": at.isoformat(),
    }
    tracked = RunEvent.tracked("nx", "app", "r-1", RunStatus.SUCCEEDED, occurred_at=at)
    assert (tracked.delivery_id, tracked.origin) == ("track:nx:r-1:succeeded", Origin.TRACK)


@pytest.mark.parametrize(
    "value",
    [
        datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
        datetime(1, 1, 1, tzinfo=UTC),
        datetime.fromisoformat("9999-12-31T23:59:59-23:59"),
        datetime.fromisoformat("0001-01-01T00:00:00+23:59"),
    ],
)
def test_times_a_store_cannot_round_trip_are_refused(value: datetime) -> None:
    with pytest.raises(ValueError, match=r"occurred_at .* is out of range"):
        check_time(value, "occurred_at")


def test_times_a_store_can_hold_pass_unchanged() -> None:
    for value in (EARLIEST_TIME, LATEST_TIME, datetime(2026, 12, 6, tzinfo=UTC)):
        assert check_time(value) is value
