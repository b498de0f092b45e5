"""Overdue runs: the limit and the notices, pure."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from listener.events import RunStatus
from listener.overdue import OverdueSettings, find_overdue, overdue_after
from listener.run_durations import Expected
from listener.store.base import RunRecord

NOW = datetime(2026, 1, 1, 12, tzinfo=UTC)
EXPECTED = Expected(
    start=60.0, silent=50.0, p50=100.0, p95=150.0, p99=200.0, samples=50, webhook_share=1.0
)


def run(run_id: str, age: float, status: RunStatus = RunStatus.RUNNING) -> RunRecord:
    submitted = NOW - timedelta(seconds=age)
    return RunRecord(
        run_id, "nextmv", "routing", status, submitted, None, 60.0, None, None, 0, None, None,
        {}, {}, submitted,
    )  # fmt: skip


def test_the_limit_is_the_p99_times_the_factor_and_at_least_the_minimum() -> None:
    assert overdue_after(EXPECTED, OverdueSettings(factor=3.0, minimum=60.0)) == 600.0
    assert overdue_after(EXPECTED, OverdueSettings(factor=1.0, minimum=900.0)) == 900.0


def test_only_open_runs_past_the_limit_not_noticed_before_get_a_notice() -> None:
    settings = OverdueSettings(factor=2.0, minimum=0.0)
    runs = [
        run("young", 399.0),
        run("late", 401.0),
        run("done", 900.0, RunStatus.SUCCEEDED),
        run("told", 900.0),
    ]
    (notice,) = find_overdue(runs, EXPECTED, settings, NOW, noticed={"told"})
    assert (notice.run_id, notice.running_for, notice.limit) == ("late", 401.0, 400.0)
    assert notice.key == "run_overdue:nextmv:late"
    as_dict = notice.as_dict()
    assert as_dict["kind"] == "run_overdue"
    assert (as_dict["typical_p50_seconds"], as_dict["typical_p99_seconds"]) == (100.0, 200.0)
    assert as_dict["status"] == "running"


@pytest.mark.parametrize(
    ("changes", "message"),
    [({"factor": 0.5}, "overdue_factor must be at least 1"), ({"minimum": -1}, "overdue_minimum")],
)
def test_settings_are_checked(changes: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        OverdueSettings(**changes)
