"""Learned run durations and the schedule built on them: pure, no store, no clock."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from listener.events import Origin, RunStatus
from listener.run_durations import DurationBook, Expected, LearnSettings, next_check, quantile
from listener.store.base import RunEnd

T0 = datetime(2026, 1, 1, tzinfo=UTC)
S = RunStatus
# The fixed schedule of these tests: 2 s doubling to a 15 s cap, no jitter.
FIXED = {"interval": 2.0, "factor": 2.0, "cap": 15.0, "jitter": 0.0}
EXPECTED = Expected(
    start=60.0, silent=40.0, p50=100.0, p95=150.0, p99=180.0, samples=50, webhook_share=1.0
)


def end(
    run_id: str | None,
    seconds: float,
    *,
    app: str = "routing",
    origin: Origin = Origin.WEBHOOK,
    status: RunStatus = S.SUCCEEDED,
) -> RunEnd:
    ended = T0 + timedelta(seconds=seconds)
    return RunEnd("nextmv", app, status, origin, ended, ended, run_id=run_id, submitted_at=T0)


def test_quantiles_interpolate_between_ranks() -> None:
    values = [10.0, 20.0, 30.0, 40.0, 50.0]
    assert [quantile(values, q) for q in (0.0, 0.5, 1.0)] == [10.0, 30.0, 50.0]
    assert quantile(values, 0.125) == 15.0
    assert quantile([7.0], 0.99) == 7.0
    with pytest.raises(ValueError, match="no values"):
        quantile([], 0.5)


def test_without_enough_samples_the_fixed_schedule_holds() -> None:
    rng = random.Random(1)
    delays = [next_check(5.0, attempt, None, **FIXED, rng=rng) for attempt in range(1, 7)]
    assert delays == [2.0, 4.0, 8.0, 15.0, 15.0, 15.0]


def test_a_young_run_is_first_checked_at_its_applications_start_quantile() -> None:
    rng = random.Random(1)
    # Checked 15 s after submission (a first poll found it running): next at 60 s, not 4 s.
    assert next_check(15.0, 1, EXPECTED, **FIXED, rng=rng) == 45.0
    assert next_check(15.0, 2, EXPECTED, **FIXED, rng=rng) == 45.0


def test_from_the_start_quantile_on_a_run_is_checked_every_cap() -> None:
    rng = random.Random(1)
    for age in (50.0, 60.0, 100.0, 150.0):
        assert next_check(age, 3, EXPECTED, **FIXED, rng=rng) == 15.0


def test_a_run_past_its_p99_is_never_left_silent() -> None:
    rng = random.Random(1)
    for age in (181.0, 1_000.0, 100_000.0):
        assert next_check(age, 40, EXPECTED, **FIXED, rng=rng) == 15.0


def test_jitter_spreads_checks_but_keeps_the_start() -> None:
    rng = random.Random(3)
    spread = {**FIXED, "jitter": 0.2}
    waits = [next_check(0.0, 1, EXPECTED, **spread, rng=rng) for _ in range(200)]
    assert all(60.0 - 3.0 <= w <= 60.0 + 3.0 for w in waits)
    assert len({round(w, 6) for w in waits}) > 150
    steps = [next_check(100.0, 5, EXPECTED, **spread, rng=rng) for _ in range(200)]
    assert all(12.0 <= w <= 18.0 for w in steps)


def test_the_book_needs_min_samples_per_application() -> None:
    book = DurationBook(LearnSettings(window=50, min_samples=5))
    book.add(end(f"r{i}", 100.0 + i) for i in range(4))
    assert book.expected("nextmv", "routing") is None
    book.add([end("r4", 104.0), end("t0", 9.0, app="training")])
    expected = book.expected("nextmv", "routing")
    assert expected is not None
    assert (expected.samples, expected.p50, expected.webhook_share) == (5, 102.0, 1.0)
    assert book.expected("nextmv", "training") is None
    assert book.applications() == [("nextmv", "routing"), ("nextmv", "training")]


def test_the_book_keeps_only_the_last_window_of_runs() -> None:
    book = DurationBook(LearnSettings(window=10, min_samples=10))
    book.add(end(f"slow{i}", 1_000.0) for i in range(10))
    book.add(end(f"fast{i}", 20.0) for i in range(10))
    expected = book.expected("nextmv", "routing")
    assert expected is not None
    assert (expected.samples, expected.start, expected.p99) == (10, 20.0, 20.0)


def test_an_end_read_twice_counts_once() -> None:
    book = DurationBook(LearnSettings(window=10, min_samples=2))
    assert book.add([end("r1", 10.0), end("r2", 30.0)]) == 2
    assert book.add([end("r2", 30.0), end("r3", 50.0)]) == 1
    expected = book.expected("nextmv", "routing")
    assert expected is not None
    assert (expected.samples, expected.p50) == (3, 30.0)


def test_cut_short_runs_teach_no_duration_but_count_how_ends_came() -> None:
    book = DurationBook(LearnSettings(window=10, min_samples=2, trust_share=0.75))
    book.add([end("r1", 100.0), end("r2", 100.0, origin=Origin.STREAM)])
    book.add([end("r3", 5.0, status=S.CANCELED, origin=Origin.POLL)])
    book.add([end("r4", 3_600.0, status=S.EXPIRED, origin=Origin.POLL)])
    expected = book.expected("nextmv", "routing")
    assert expected is not None
    assert (expected.samples, expected.p99) == (2, 100.0)
    assert expected.webhook_share == 0.5
    assert not book.trusted(expected)
    assert book.silent_check_after("nextmv", "routing") == expected.silent == 100.0
    book.add(end(f"w{i}", 100.0) for i in range(6))
    trusted = book.expected("nextmv", "routing")
    assert trusted is not None
    assert trusted.webhook_share == 0.8
    assert book.trusted(trusted)
    assert book.silent_check_after("nextmv", "routing") == 3.0 * trusted.p99


def test_a_silent_run_is_checked_from_the_shortest_duration_seen() -> None:
    book = DurationBook(LearnSettings(window=100, min_samples=10, trust_share=1.0))
    book.add(end(f"r{i}", 50.0 + i, origin=Origin.POLL) for i in range(100))
    expected = book.expected("nextmv", "routing")
    assert expected is not None
    assert (expected.silent, expected.p50) == (50.0, 99.5)
    assert expected.start == pytest.approx(53.96)  # the 4th percentile
    assert book.silent_check_after("nextmv", "routing") == 50.0


def test_while_webhooks_lose_ends_a_few_samples_bound_the_silence() -> None:
    book = DurationBook(LearnSettings(min_samples=20, silent_min_samples=3))
    book.add([end("r1", 80.0, origin=Origin.POLL), end("r2", 90.0)])
    assert book.silent_check_after("nextmv", "routing") is None
    book.add([end("r3", 70.0)])
    assert book.expected("nextmv", "routing") is None  # the schedule still waits
    assert book.silent_check_after("nextmv", "routing") == 70.0
    # Webhooks that deliver every end: silence is trusted until the full sample.
    healthy = DurationBook(LearnSettings(min_samples=20, silent_min_samples=3))
    healthy.add(end(f"w{i}", 70.0) for i in range(19))
    assert healthy.silent_check_after("nextmv", "routing") is None
    healthy.add([end("w19", 70.0)])
    assert healthy.silent_check_after("nextmv", "routing") == 210.0


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"window": 0}, "window must be at least 1"),
        ({"min_samples": 300}, "min_samples must not exceed window"),
        ({"silent_min_samples": 0}, "silent_min_samples must be at least 1"),
        ({"start_quantile": 0.5}, "start_quantile must be in"),
        ({"trust_share": 1.5}, "trust_share must be in"),
        ({"silent_quantile": -0.1}, "silent_quantile must be in"),
        ({"trusted_factor": 0.5}, "trusted_factor must be at least 1"),
        ({"refresh": 0}, "refresh must be positive"),
    ],
)
def test_settings_are_checked(changes: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        LearnSettings(**changes)  # type: ignore[arg-type]


def test_a_provider_losing_ends_names_its_applications_with_a_bound_of_their_own() -> None:
    book = DurationBook(LearnSettings(min_samples=20, silent_min_samples=3, trust_share=0.9))
    book.add(end(f"r{i}", 80.0, origin=Origin.POLL) for i in range(3))
    book.add([end("t1", 900.0, app="training")])
    assert book.losing_providers() == [("nextmv", ["routing"])]
    healthy = DurationBook(LearnSettings(silent_min_samples=3))
    healthy.add(end(f"w{i}", 80.0) for i in range(5))
    assert healthy.losing_providers() == []


def test_past_its_trusted_silence_a_long_run_is_checked_after_a_tenth_of_its_age() -> None:
    rng = random.Random(1)
    assert next_check(1_000.0, 1, EXPECTED, **FIXED, rng=rng, trusted_after=540.0) == 100.0
    assert next_check(200.0, 1, EXPECTED, **FIXED, rng=rng, trusted_after=100.0) == 20.0
    assert next_check(120.0, 1, EXPECTED, **FIXED, rng=rng, trusted_after=100.0) == 15.0  # cap
    # Younger than that: the learned schedule as without it.
    assert next_check(100.0, 1, EXPECTED, **FIXED, rng=rng, trusted_after=540.0) == 15.0
