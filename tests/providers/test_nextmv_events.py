"""The Nextmv `run.status` payload parser: tolerant of shape, strict about meaning."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from listener.events import Origin, RunStatus
from listener.providers import parser_for
from listener.providers.base import PayloadNotUnderstood
from listener.providers.nextmv import parse_event
from listener.testing import nextmv_run_status_payload


def parse(payload: Any) -> tuple[str, RunStatus, str]:
    event = parse_event(payload, delivery_id="d-1")
    assert event.delivery_id == "d-1"
    assert event.provider == "nextmv"
    assert event.origin is Origin.WEBHOOK
    return event.run_id, event.status, event.application


def test_registered_as_nextmv() -> None:
    payload = nextmv_run_status_payload("r1", "routing", "succeeded")
    event = parser_for("nextmv")(payload, delivery_id="d")
    assert (event.run_id, event.status, event.application) == ("r1", RunStatus.SUCCEEDED, "routing")


def test_reads_the_fake_platform_payload() -> None:
    when = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    payload = nextmv_run_status_payload("r1", "routing", "failed", updated_at=when)
    event = parse_event(payload, delivery_id="d")
    assert (event.run_id, event.status, event.application) == ("r1", RunStatus.FAILED, "routing")
    assert event.occurred_at == when
    assert event.payload == payload


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        # Flat, at the top.
        ({"run_id": "r", "status_v2": "succeeded"}, ("r", RunStatus.SUCCEEDED, "")),
        ({"id": "r", "status": "failed", "application_id": "a"}, ("r", RunStatus.FAILED, "a")),
        # Under data, data.run, payload, payload.run, run.
        ({"data": {"run_id": "r", "status_v2": "running"}}, ("r", RunStatus.RUNNING, "")),
        ({"data": {"id": "r", "status": "canceled"}}, ("r", RunStatus.CANCELED, "")),
        (
            {"data": {"run": {"id": "r", "status_v2": "succeeded", "application_id": "a"}}},
            ("r", RunStatus.SUCCEEDED, "a"),
        ),
        ({"payload": {"run_id": "r", "status_v2": "queued"}}, ("r", RunStatus.QUEUED, "")),
        ({"payload": {"run": {"id": "r", "status": "none"}}}, ("r", RunStatus.QUEUED, "")),
        ({"run": {"id": "r", "status": "succeeded"}}, ("r", RunStatus.SUCCEEDED, "")),
        # Status and application under metadata, as the run information nests them.
        (
            {"data": {"id": "r", "metadata": {"status_v2": "failed", "application_id": "a"}}},
            ("r", RunStatus.FAILED, "a"),
        ),
        (
            {"data": {"id": "r", "metadata": {"status": "succeeded"}}},
            ("r", RunStatus.SUCCEEDED, ""),
        ),
        # The event's own id beside the run object is not the run id.
        (
            {"id": "evt_1", "type": "run.status", "data": {"run_id": "r", "status_v2": "failed"}},
            ("r", RunStatus.FAILED, ""),
        ),
        # Pieces spread over levels.
        (
            {"application_id": "a", "data": {"run_id": "r"}, "status_v2": "succeeded"},
            ("r", RunStatus.SUCCEEDED, "a"),
        ),
        # Case and spaces in the status word.
        ({"run_id": "r", "status_v2": " Succeeded "}, ("r", RunStatus.SUCCEEDED, "")),
        # status_v2 wins over the legacy status.
        (
            {"run_id": "r", "status_v2": "failed", "status": "succeeded"},
            ("r", RunStatus.FAILED, ""),
        ),
    ],
)
def test_tolerated_shapes(payload: Any, expected: tuple[str, RunStatus, str]) -> None:
    assert parse(payload) == expected


@pytest.mark.parametrize(
    "payload",
    [
        None,
        [],
        "run.status",
        42,
        {},
        {"type": "run.status"},
        {"data": {"status_v2": "succeeded"}},
        {"id": "evt_1", "data": {"status_v2": "succeeded"}},  # only the event's id
        {"data": {"run_id": "r"}},
        {"run_id": "r", "status_v2": "exploded"},
        {"run_id": "", "status_v2": "succeeded"},
        {"run_id": 7, "status_v2": "succeeded"},
        {"run_id": "r", "status_v2": 3},
        {"data": "r"},
        {"data": [{"run_id": "r", "status_v2": "succeeded"}]},
    ],
)
def test_not_understood(payload: Any) -> None:
    with pytest.raises(PayloadNotUnderstood):
        parse_event(payload, delivery_id="d")


def test_unreadable_times_fall_back_to_now() -> None:
    before = datetime.now(UTC)
    for when in ("yesterday", 1e30, float("nan"), True, None, {"t": 1}):
        event = parse_event(
            {"run_id": "r", "status_v2": "succeeded", "updated_at": when}, delivery_id="d"
        )
        assert event.occurred_at >= before


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=12)
    | st.sampled_from(["succeeded", "failed", "none", "running", "r-1", ""]),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(
                [
                    "run_id",
                    "id",
                    "status",
                    "status_v2",
                    "data",
                    "payload",
                    "run",
                    "metadata",
                    "application_id",
                    "updated_at",
                    "occurred_at",
                    "timestamp",
                    "type",
                ]
            )
            | st.text(max_size=8),
            children,
            max_size=6,
        )
    ),
    max_leaves=30,
)


@settings(max_examples=200, deadline=None)
@given(json_values)
def test_any_json_value_is_an_event_or_not_understood(payload: Any) -> None:
    try:
        event = parse_event(payload, delivery_id="d")
    except PayloadNotUnderstood:
        return
    assert isinstance(event.run_id, str)
    assert event.run_id
    assert isinstance(event.status, RunStatus)
    assert isinstance(event.application, str)
