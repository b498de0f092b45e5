"""The poller's pure parts: the poll schedule and the rate limiter."""

from __future__ import annotations

import random

import pytest

from listener.poller import PollSchedule


def test_schedule_grows_exponentially_to_the_cap() -> None:
    schedule = PollSchedule(interval=2.0, factor=2.0, cap=30.0, jitter=0.0)
    assert [schedule.ceiling(a) for a in range(1, 7)] == [2.0, 4.0, 8.0, 16.0, 30.0, 30.0]
    rng = random.Random(1)
    assert [schedule.delay(a, rng) for a in range(1, 7)] == [2.0, 4.0, 8.0, 16.0, 30.0, 30.0]


def test_schedule_jitter_stays_within_its_band() -> None:
    schedule = PollSchedule(interval=1.0, factor=3.0, cap=50.0, jitter=0.25)
    rng = random.Random(7)
    for attempt in range(1, 12):
        ceiling = schedule.ceiling(attempt)
        delays = [schedule.delay(attempt, rng) for _ in range(200)]
        assert all(0.75 * ceiling <= d <= 1.25 * ceiling for d in delays)
        # Jitter really spreads the polls of runs that became overdue together.
        assert len({round(d, 6) for d in delays}) > 150


def test_schedule_is_reproducible_with_a_seed() -> None:
    schedule = PollSchedule()
    first = [schedule.delay(a, random.Random(3)) for a in range(1, 5)]
    again = [schedule.delay(a, random.Random(3)) for a in range(1, 5)]
    assert first == again


def test_schedule_survives_huge_attempt_counts() -> None:
    schedule = PollSchedule(interval=1.0, factor=10.0, cap=60.0, jitter=0.0)
    assert schedule.ceiling(10_000) == 60.0


@pytest.mark.parametrize(
    "kwargs",
    [
        {"interval": 0},
        {"cap": -1},
        {"factor": 0.5},
        {"jitter": 1.0},
        {"jitter": -0.1},
    ],
)
def test_schedule_rejects_nonsense(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="must"):
        PollSchedule(**kwargs)


def test_schedule_attempts_count_from_one() -> None:
    with pytest.raises(ValueError, match="from 1"):
        PollSchedule().ceiling(0)
