"""The health strip: deliveries and rejections this process served, how recent run ends
were learned (`listener.health`'s accounting), the handler backlog and dead letters."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from listener.health import WAYS, summarize
from listener.metrics import Metrics
from listener.store.base import RunEnd, StoreCounts

__all__ = ["HealthStrip", "delivery_outcomes", "health_strip"]


@dataclass(frozen=True, slots=True)
class HealthStrip:
    deliveries: Mapping[str, int]  # by outcome, since this process started
    rejections: int  # signature or token checks failed, since start
    ends_by: Mapping[str, int]  # run ends in the window by how they were learned
    ends: int
    backlog: int  # handler calls pending or running
    dead: int
    unroutable: int
    window_hours: float


def _sum_by(samples: Iterable[tuple[str, Mapping[str, str], float]], label: str) -> Counter[str]:
    total: Counter[str] = Counter()
    for name, labels, value in samples:
        if name.endswith("_total"):
            total[labels.get(label, "")] += int(value)
    return total


def delivery_outcomes(metrics: Metrics) -> tuple[dict[str, int], int]:
    """This process's deliveries by outcome, and its rejected ones, from its counters."""
    deliveries = _sum_by(
        ((s.name, s.labels, s.value) for m in metrics.deliveries.collect() for s in m.samples),
        "outcome",
    )
    rejected = _sum_by(
        (
            (s.name, s.labels, s.value)
            for m in metrics.verification_failures.collect()
            for s in m.samples
        ),
        "reason",
    )
    return dict(sorted(deliveries.items())), sum(rejected.values())


def health_strip(
    metrics: Metrics, counts: StoreCounts, ends: Iterable[RunEnd], window_hours: float
) -> HealthStrip:
    deliveries, rejections = delivery_outcomes(metrics)
    by: Counter[str] = Counter()
    for row in summarize(ends):
        by.update(row.by)
    calls = counts.calls_by_state
    return HealthStrip(
        deliveries=deliveries,
        rejections=rejections,
        ends_by={way: by[way] for way in WAYS if by[way]},
        ends=sum(by.values()),
        backlog=int(calls.get("pending", 0)) + int(calls.get("running", 0)),
        dead=int(calls.get("dead", 0)),
        unroutable=counts.unroutable,
        window_hours=window_hours,
    )
