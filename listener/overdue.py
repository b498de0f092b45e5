"""Overdue runs: a run still open past its application's p99 times a factor (and at
least a minimum) gets one `run_overdue` notice, with how long it has run and what is
typical. Pure: `overdue_after` and `find_overdue`; the poller reads the open runs and
delivers (`listener.poller`).
"""

from __future__ import annotations

from collections.abc import Container, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Final

from listener._checks import at_least
from listener.run_durations import Expected
from listener.store.base import RunRecord

__all__ = ["OVERDUE", "OverdueNotice", "OverdueSettings", "find_overdue", "overdue_after"]

OVERDUE: Final = "run_overdue"


@dataclass(frozen=True, slots=True)
class OverdueSettings:
    """A run is overdue once it has been open `factor` times its application's p99,
    and at least `minimum` seconds."""

    factor: float = 3.0
    minimum: float = 300.0

    def __post_init__(self) -> None:
        at_least("overdue_factor", self.factor, 1)
        at_least("overdue_minimum", self.minimum, 0)


@dataclass(frozen=True, slots=True)
class OverdueNotice:
    """One run open longer than its application's runs take: `running_for` seconds
    against a typical `p50` and `p99`, overdue from `limit` seconds on."""

    provider: str
    application: str
    run_id: str
    status: str
    running_for: float
    p50: float
    p99: float
    limit: float
    submitted_at: datetime
    at: datetime
    kind: str = OVERDUE

    @property
    def key(self) -> str:
        """Unique per run: a run is overdue once."""
        return f"{self.kind}:{self.provider}:{self.run_id}"

    def as_dict(self) -> dict[str, object]:
        return {
            "kind": self.kind,
            "key": self.key,
            "provider": self.provider,
            "application": self.application,
            "run_id": self.run_id,
            "status": self.status,
            "running_for_seconds": self.running_for,
            "typical_p50_seconds": self.p50,
            "typical_p99_seconds": self.p99,
            "limit_seconds": self.limit,
            "submitted_at": self.submitted_at.isoformat(),
            "at": self.at.isoformat(),
        }


def overdue_after(expected: Expected, settings: OverdueSettings) -> float:
    """Seconds after submission from which a run of that application is overdue."""
    return max(expected.p99 * settings.factor, settings.minimum)


def find_overdue(
    runs: Iterable[RunRecord],
    expected: Expected,
    settings: OverdueSettings,
    now: datetime,
    noticed: Container[str] = (),
) -> list[OverdueNotice]:
    """Notices for the open runs of `runs` past their limit not `noticed` before."""
    limit = overdue_after(expected, settings)
    notices = []
    for run in runs:
        running_for = (now - run.submitted_at).total_seconds()
        if run.status.is_terminal or running_for < limit or run.run_id in noticed:
            continue
        notices.append(
            OverdueNotice(
                provider=run.provider,
                application=run.application,
                run_id=run.run_id,
                status=run.status.value,
                running_for=running_for,
                p50=expected.p50,
                p99=expected.p99,
                limit=limit,
                submitted_at=run.submitted_at,
                at=now,
            )
        )
    return notices
