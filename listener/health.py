"""How runs' ends were learned: by webhook, stream, poll or expiry, and how late.

A listener whose webhooks quietly stop arriving still learns every end, by poll, only
later; the share of ends learned by webhook is what shows it. `summarize` is pure: it
turns the store's recent run ends (`Store.list_run_ends`) into one row per provider.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from listener.events import Origin, RunEvent, RunStatus
from listener.store.base import RunEnd

__all__ = ["ProviderHealth", "end_of", "lag_seconds", "learned_by", "summarize"]

# The ways an end is learned, in the order reports show them; `expiry` is the listener's
# own verdict at a run's deadline, whatever recorded it.
WAYS = ("webhook", "stream", "poll", "expiry", "track", "replay")


def end_of(event: RunEvent, status: RunStatus) -> RunEnd:
    """The end `event` just recorded (moving its run to `status`), received now."""
    return RunEnd(
        provider=event.provider,
        application=event.application,
        status=status,
        origin=Origin(event.origin),
        occurred_at=event.occurred_at,
        received_at=datetime.now(UTC),
    )


def learned_by(end: RunEnd) -> str:
    """How the listener learned of `end`: its event's origin, or `expiry`."""
    if end.status is RunStatus.EXPIRED:
        return "expiry"
    return end.origin.value


def lag_seconds(end: RunEnd) -> float:
    """From the platform's end time to the record (0 when the clocks disagree)."""
    return max(0.0, (end.received_at - end.occurred_at).total_seconds())


@dataclass(frozen=True, slots=True)
class ProviderHealth:
    """One provider's ends: how many, how each was learned, and the lag from the
    platform's end time to the record (expiries have no platform end, so no lag)."""

    provider: str
    ends: int
    by: Mapping[str, int]
    lag_p50: float | None
    lag_p95: float | None

    def share(self, way: str) -> float:
        return self.by.get(way, 0) / self.ends if self.ends else 0.0


def percentile(values: Sequence[float], fraction: float) -> float | None:
    """The nearest-rank percentile of `values`; None when there are none."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


def summarize(ends: Iterable[RunEnd]) -> list[ProviderHealth]:
    """One row per provider, by provider name."""
    counts: dict[str, Counter[str]] = {}
    lags: dict[str, list[float]] = {}
    for end in ends:
        way = learned_by(end)
        counts.setdefault(end.provider, Counter())[way] += 1
        if way != "expiry":
            lags.setdefault(end.provider, []).append(lag_seconds(end))
    rows = []
    for provider in sorted(counts):
        found = lags.get(provider, [])
        rows.append(
            ProviderHealth(
                provider=provider,
                ends=sum(counts[provider].values()),
                by=dict(counts[provider]),
                lag_p50=percentile(found, 0.50),
                lag_p95=percentile(found, 0.95),
            )
        )
    return rows
