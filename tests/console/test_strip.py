"""The health strip from the process's counters, the store's counts and recent ends."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from listener.console.strip import delivery_outcomes, health_strip
from listener.events import Origin, RunStatus
from listener.metrics import Metrics
from listener.store.base import RunEnd, StoreCounts


def end(origin: Origin, status: RunStatus = RunStatus.SUCCEEDED) -> RunEnd:
    now = datetime.now(UTC)
    return RunEnd("nextmv", "routing", status, origin, now - timedelta(seconds=3), now)


def test_the_strip_adds_up_deliveries_rejections_ends_backlog_and_dead_letters() -> None:
    metrics = Metrics()
    for outcome in ("recorded", "recorded", "duplicate", "unroutable"):
        metrics.delivery("std", outcome)
    metrics.verification_failure("std", "bad signature")
    metrics.verification_failure("other", "expired")
    counts = StoreCounts(
        runs_by_status={"succeeded": 3},
        calls_by_state={"pending": 2, "running": 1, "dead": 4, "done": 9},
        events=10,
        unroutable=1,
    )
    ends = [end(Origin.WEBHOOK), end(Origin.WEBHOOK), end(Origin.POLL)]
    ends.append(end(Origin.POLL, RunStatus.EXPIRED))
    strip = health_strip(metrics, counts, ends, 24)
    assert strip.deliveries == {"duplicate": 1, "recorded": 2, "unroutable": 1}
    assert strip.rejections == 2
    assert strip.ends == 4
    assert dict(strip.ends_by) == {"webhook": 2, "poll": 1, "expiry": 1}
    assert strip.backlog == 3
    assert strip.dead == 4
    assert strip.unroutable == 1


def test_a_fresh_process_has_counted_nothing() -> None:
    assert delivery_outcomes(Metrics()) == ({}, 0)
