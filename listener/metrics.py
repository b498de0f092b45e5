"""Prometheus metrics, kept in a registry of their own per listener.

Counters and the histogram are updated as things happen; the run and call gauges are
read from the store when `/metrics` is scraped, so they are right across replicas and
restarts.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from listener.events import RunStatus
from listener.store.base import CallState, StoreCounts

__all__ = ["CONTENT_TYPE", "UNKNOWN_SOURCE", "Metrics"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# Label for requests to sources that are not configured: the path is attacker-chosen, and
# using it as a label value would let anyone grow the metric without bound.
UNKNOWN_SOURCE = "(unknown)"

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)
# From seconds (a webhook) to the better part of an hour (a poll backing off).
_END_LAG_BUCKETS = (0.1, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)
_RECEIVE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1)


class _StoreGauges(Collector):
    """Gauges from the last `StoreCounts` read; absent until the first successful read."""

    def __init__(self) -> None:
        self.counts: StoreCounts | None = None
        self.up = 0

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("listener_store_up", "1 if the last store read worked.")
        up.add_metric([], self.up)
        yield up
        counts = self.counts
        if counts is None:
            return
        runs = GaugeMetricFamily("listener_runs", "Runs by current status.", labels=["status"])
        for status in RunStatus:
            runs.add_metric([status.value], counts.runs_by_status.get(status.value, 0))
        yield runs
        calls = GaugeMetricFamily(
            "listener_handler_calls_in_state", "Handler calls by state.", labels=["state"]
        )
        for state in CallState:
            calls.add_metric([state.value], counts.calls_by_state.get(state.value, 0))
        yield calls
        pending = GaugeMetricFamily("listener_handler_calls_pending", "Calls waiting to run.")
        pending.add_metric([], counts.calls_by_state.get(CallState.PENDING.value, 0))
        yield pending
        dead = GaugeMetricFamily("listener_handler_calls_dead", "Calls in the dead-letter list.")
        dead.add_metric([], counts.calls_by_state.get(CallState.DEAD.value, 0))
        yield dead
        unroutable = GaugeMetricFamily(
            "listener_unroutable_deliveries", "Verified deliveries that were not understood."
        )
        unroutable.add_metric([], counts.unroutable)
        yield unroutable


class Metrics:
    """The listener's metrics. `registry` is private to this object, never the global one."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.deliveries = Counter(
            "listener_deliveries",
            "Webhook deliveries by source and outcome.",
            ["source", "outcome"],
            registry=self.registry,
        )
        self.verification_failures = Counter(
            "listener_verification_failures",
            "Deliveries rejected by signature or token checks, by reason.",
            ["source", "reason"],
            registry=self.registry,
        )
        self.receive_seconds = Histogram(
            "listener_receive_seconds",
            "Time from the start of a delivery to its answer.",
            buckets=_RECEIVE_BUCKETS,
            registry=self.registry,
        )
        self.handler_calls = Counter(
            "listener_handler_calls",
            "Handler call attempts by handler and outcome.",
            ["handler", "outcome"],
            registry=self.registry,
        )
        self.handler_seconds = Histogram(
            "listener_handler_duration_seconds",
            "Handler call duration.",
            ["handler"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.dead_letters = Counter(
            "listener_handler_dead_letters",
            "Handler calls moved to the dead-letter list, by handler.",
            ["handler"],
            registry=self.registry,
        )
        self.run_ends = Counter(
            "listener_run_ends",
            "Runs that reached a final status, by provider and how the end was learned"
            " (webhook, stream, poll, expiry, track, replay).",
            ["provider", "learned_by"],
            registry=self.registry,
        )
        self.run_end_lag = Histogram(
            "listener_run_end_lag_seconds",
            "Time from the platform's end of a run to its record, by provider and how the"
            " end was learned.",
            ["provider", "learned_by"],
            buckets=_END_LAG_BUCKETS,
            registry=self.registry,
        )
        # Labelled children by label values: looking one up takes a lock and builds tuples,
        # and these run for every request and every handler call.
        self._delivery_children: dict[tuple[str, str], Any] = {}
        self._handler_children: dict[tuple[str, str], Any] = {}
        self._latency_children: dict[str, Any] = {}
        self._store = _StoreGauges()
        self.registry.register(self._store)

    def delivery(self, source: str, outcome: str) -> None:
        child = self._delivery_children.get((source, outcome))
        if child is None:
            child = self._delivery_children[(source, outcome)] = self.deliveries.labels(
                source, outcome
            )
        child.inc()

    def verification_failure(self, source: str, reason: str) -> None:
        self.verification_failures.labels(source, reason).inc()

    def handler_call(self, handler: str, outcome: str, seconds: float | None = None) -> None:
        child = self._handler_children.get((handler, outcome))
        if child is None:
            child = self._handler_children[(handler, outcome)] = self.handler_calls.labels(
                handler, outcome
            )
        child.inc()
        if seconds is not None:
            timer = self._latency_children.get(handler)
            if timer is None:
                timer = self._latency_children[handler] = self.handler_seconds.labels(handler)
            timer.observe(seconds)

    def run_end(self, provider: str, learned_by: str, lag: float | None) -> None:
        """A run's end recorded, learned `learned_by`, `lag` seconds after the platform's
        end time (None: no platform end, as for an expiry)."""
        self.run_ends.labels(provider, learned_by).inc()
        if lag is not None:
            self.run_end_lag.labels(provider, learned_by).observe(lag)

    def dead_letter(self, handler: str) -> None:
        self.dead_letters.labels(handler).inc()

    def store_counts(self, counts: StoreCounts | None) -> None:
        """The latest store snapshot, or None when the store could not be read."""
        # Stale gauges would look like a healthy, idle system; export none instead.
        self._store.counts = counts
        self._store.up = 0 if counts is None else 1

    def render(self) -> bytes:
        return generate_latest(self.registry)
