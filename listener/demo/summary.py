"""The closing table, totals and verdict the demo prints."""

from __future__ import annotations

import textwrap
from collections import Counter
from collections.abc import Iterator

from listener.app import Listener
from listener.demo.constants import SOURCE, WIDTH
from listener.demo.results import DemoResult
from listener.events import Origin
from listener.store.base import CallState
from listener.testing import FakePlatform


def _n(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def _deliveries(listener: Listener, outcome: str) -> int:
    value = listener.metrics.registry.get_sample_value(
        "listener_deliveries_total", {"source": SOURCE, "outcome": outcome}
    )
    return int(value or 0)


def summary(
    result: DemoResult,
    platform: FakePlatform,
    listener: Listener,
    log_lines: int,
    elapsed: float,
) -> Iterator[str]:
    """The closing table and totals, each line under 80 columns."""
    reports = result.reports
    yield ""
    yield f"{'':<41}{'webhook':<9}{'webhook':<9}handler"
    yield f"{'run':<21}{'final':<11}{'learned':<9}{'running':<9}{'final':<9}calls"
    yield "-" * WIDTH
    for r in reports:
        learned = r.learned_by.value if r.learned_by is not None else "?"
        yield (
            f"{r.run_id:<21}{r.true_status.value:<11}{learned:<9}"
            f"{r.running_webhook:<9}{r.final_webhook:<9}{r.calls_done:>7}"
        )
    yield "-" * WIDTH
    finals = Counter(r.true_status.value for r in reports)
    by_poll = sum(1 for r in reports if r.learned_by is Origin.POLL)
    by_webhook = sum(1 for r in reports if r.learned_by is Origin.WEBHOOK)
    stats = platform.stats
    new = _deliveries(listener, "accepted")
    suppressed = _deliveries(listener, "duplicate") + _deliveries(listener, "known")
    calls = [call for r in reports for call in r.calls]
    states = Counter(call.state for call in calls)
    retried = sum(1 for call in calls if call.attempts > 1)
    finished = ", ".join(f"{n} {status}" for status, n in sorted(finals.items()))
    yield f"runs       {len(reports)}: {finished}"
    yield f"learned    {by_webhook} by webhook, {by_poll} by the poller"
    yield (
        f"webhooks   {stats.scheduled} due: {stats.dropped} dropped, "
        f"{stats.scheduled - stats.dropped} sent ({stats.duplicated} of them twice)"
    )
    yield f"receiver   {new} new deliveries stored, {_n(suppressed, 'duplicate')} suppressed"
    single, listings = platform.api_calls["runs.metadata"], platform.api_calls["runs.list"]
    yield (
        f"poller     {_n(single + listings, 'status call')}: "
        f"{_n(single, 'single-run lookup')}, {_n(listings, 'run listing')}"
    )
    yield (
        f"handlers   {_n(len(calls), 'call')}: {states[CallState.DONE]} done, {retried} retried, "
        f"{states[CallState.DEAD]} dead; {_n(log_lines, 'log line')}"
    )
    yield f"time       {elapsed:.1f} s"
    yield ""
    yield from _verdict(result)


def _verdict(result: DemoResult) -> Iterator[str]:
    if result.problems:
        shown = result.problems[:6]
        if len(result.problems) > len(shown):
            shown.append(f"and {len(result.problems) - len(shown)} more")
        for index, problem in enumerate(shown):
            lead = "FAILED: " if index == 0 else "        "
            yield from textwrap.wrap(
                problem,
                WIDTH,
                initial_indent=lead,
                subsequent_indent=" " * 10,
                break_long_words=False,
                break_on_hyphens=False,
            )
    else:
        yield "OK: every run reached its true final status, and every transition's"
        yield "    handlers ran exactly once."
