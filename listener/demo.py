"""`listener demo`: the whole path on one machine, with webhooks lost on purpose.

A fake Nextmv-compatible platform runs on loopback and drops a quarter of its webhooks
and sends a tenth twice. The listener receives the rest on its own loopback receiver
(embedded SQLite store in a temporary directory), calls two example handlers, and its
fallback poller recovers the runs whose final webhook never came. At the end a summary
shows how each run's end was learned, and the demo checks what it promises: every run
reached its true final status and every transition's handlers ran exactly once.

Timing is laid out so one seed gives one outcome: every status change the platform makes
has its own time slot (so webhooks go out, and are dropped or not, in a fixed order),
and the poller's grace period outlasts the last slot (so its status calls, which also
draw from the platform's random generator, all come after the last webhook).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
import tempfile
import textwrap
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from listener.app import Listener
from listener.client import WaitTimeout
from listener.dispatch import DispatchSettings
from listener.events import Origin, RunEvent, RunStatus
from listener.poller import PollSchedule, PollSettings
from listener.redaction import redact_url
from listener.registry import Handlers
from listener.signatures import NextmvSignature
from listener.sources import Source
from listener.store.base import CallState, HandlerCall, Store
from listener.testing import DeliveryRecord, FakePlatform, FakeRun, LoopbackServer, RunPlan

__all__ = [
    "DemoResult",
    "PlannedRun",
    "RunReport",
    "check",
    "demo",
    "main",
    "plan_runs",
    "run_demo",
]

APPLICATION = "routing"
SOURCE = "nextmv"
DROP_RATE = 0.25
DUPLICATE_RATE = 0.10
# One platform second lasts this long here: runs of a few seconds to two minutes of
# platform time play out in well under ten seconds.
TIME_SCALE = 0.05
# Wall-clock layout, in seconds from the first submission. LEAD leaves time to submit
# every run before the first one starts; GAP keeps status changes apart so their order,
# and hence which webhooks the seeded platform drops, never depends on scheduling noise.
LEAD = 0.8
GAP = 0.15
MAX_WINDOW = 12.0
# How long after the last status change the poller may first ask about a run.
MARGIN = 1.0
PROGRESS_EVERY = 2.5
SETTLE_TIMEOUT = 20.0
WIDTH = 78

COUNT_HANDLER = "demo.count_calls"
LOG_HANDLER = "demo.log_transition"

# Shares of runs the platform ends failed and canceled; the rest succeed.
FAILED_SHARE = 0.2
CANCELED_SHARE = 0.05


@dataclass(frozen=True, slots=True)
class PlannedRun:
    """When a run starts and ends (seconds after the first submission) and how it ends."""

    start: float
    end: float
    status: RunStatus


def plan_runs(runs: int, seed: int) -> list[PlannedRun]:
    """Give each run two distinct time slots (start, end) and a final status.

    The 2 * `runs` slots are `gap` apart and shuffled among the runs, so durations and
    queue times vary widely while no two status changes share a moment. Fixed shares of
    the runs fail or are canceled, which runs is up to the seed.
    """
    if runs < 1:
        raise ValueError("the demo needs at least one run")
    rng = random.Random(seed)
    gap = min(GAP, MAX_WINDOW / (2 * runs))
    slots = [LEAD + i * gap for i in range(2 * runs)]
    rng.shuffle(slots)
    failed, canceled = round(runs * FAILED_SHARE), round(runs * CANCELED_SHARE)
    statuses = [RunStatus.FAILED] * failed + [RunStatus.CANCELED] * canceled
    statuses += [RunStatus.SUCCEEDED] * (runs - len(statuses))
    rng.shuffle(statuses)
    plans = []
    for k in range(runs):
        start, end = sorted(slots[2 * k : 2 * k + 2])
        plans.append(PlannedRun(start, end, statuses[k]))
    return plans


def last_change(plans: Sequence[PlannedRun]) -> float:
    return max(plan.end for plan in plans)


@dataclass(slots=True)
class RunReport:
    """What became of one run, from the platform's records and the listener's store."""

    run_id: str
    true_status: RunStatus
    stored_status: RunStatus | None
    waited_status: RunStatus | None
    learned_by: Origin | None
    running_webhook: str
    final_webhook: str
    calls: list[HandlerCall] = field(default_factory=list)
    counted: Mapping[RunStatus, int] = field(default_factory=dict)

    @property
    def calls_done(self) -> int:
        return sum(1 for call in self.calls if call.state is CallState.DONE)


@dataclass(slots=True)
class DemoResult:
    """The outcome the demo reports; `problems` is empty when every promise held."""

    reports: list[RunReport]
    problems: list[str]

    @property
    def exit_code(self) -> int:
        return 0 if not self.problems else 1


def check(reports: Sequence[RunReport], handler_names: Mapping[str, bool]) -> list[str]:
    """Everything that went wrong, as sentences; empty when the demo kept its promises.

    `handler_names` maps each registered handler to whether it takes terminal statuses
    (all the demo's handlers do). A run must end in its true status, in the store and as
    `wait` saw it; its terminal transition must have one call per such handler; and every
    call must be done after exactly one attempt, which the counting handler confirms.
    """
    problems: list[str] = []
    for report in reports:
        run, true = report.run_id, report.true_status
        if report.stored_status is not true:
            problems.append(f"{run} is {_word(report.stored_status)} in the store, not {true}")
        if report.waited_status is not true:
            problems.append(f"waiting for {run} gave {_word(report.waited_status)}, not {true}")
        if report.learned_by is None:
            problems.append(f"{run}: no stored event says how its end was learned")
        final_calls = [call for call in report.calls if call.status is true]
        for name, terminal in handler_names.items():
            if not terminal:
                continue
            count = sum(1 for call in final_calls if call.handler == name)
            if count != 1:
                problems.append(f"{run} {true}: {count} calls of {name} were enqueued, not 1")
        for call in report.calls:
            where = f"{call.handler} for {run} {call.status}"
            if call.state is not CallState.DONE:
                error = call.last_error or ""
                detail = (
                    f" ({error[:77]}...)" if len(error) > 80 else f" ({error})" if error else ""
                )
                problems.append(
                    f"{where} ended {call.state} after {call.attempts} attempts{detail}"
                )
            elif call.attempts != 1:
                problems.append(f"{where} was called {call.attempts} times, not once")
            if call.handler == COUNT_HANDLER:
                seen = report.counted.get(call.status, 0)
                if seen != 1:
                    problems.append(f"{where} counted {seen} calls, not 1")
    return problems


def _word(status: RunStatus | None) -> str:
    return "unknown" if status is None else status.value


# -- the example handlers ------------------------------------------------------------------


class CallCounter:
    """A sync handler (the dispatcher runs it on a thread) counting calls per transition."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.calls: Counter[tuple[str, RunStatus]] = Counter()

    def __call__(self, event: RunEvent) -> None:
        with self._lock:
            self.calls[(event.run_id, event.status)] += 1

    def for_run(self, run_id: str) -> dict[RunStatus, int]:
        with self._lock:
            return {status: n for (run, status), n in self.calls.items() if run == run_id}

    @property
    def total(self) -> int:
        with self._lock:
            return sum(self.calls.values())


def demo_handlers(
    counter: CallCounter, log: list[str], echo: Callable[[str], None] | None
) -> Handlers:
    """The demo's router: a sync counter and an async `handlers.log`-style line writer."""
    router = Handlers()
    router.add(counter, name=COUNT_HANDLER)

    async def log_transition(event: RunEvent) -> None:
        line = (
            f"run {event.run_id} {event.status.value} provider={event.provider} "
            f"application={event.application} origin={event.origin.value}"
        )
        log.append(line)
        if echo is not None:
            echo(line)

    router.add(log_transition, name=LOG_HANDLER)
    return router


# -- running it ----------------------------------------------------------------------------


class _Clock:
    def __init__(self) -> None:
        self.started = time.monotonic()

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def stamp(self) -> str:
        return f"{self.elapsed():5.1f}s"


async def run_demo(
    *,
    runs: int = 20,
    seed: int = 0,
    out: Callable[[str], None] = print,
    store_url: str | None = None,
    extra_handlers: Sequence[Handlers] = (),
    verbose: bool = False,
) -> int:
    """Run the demo; 0 when every run ended right and every handler ran once, else 1.

    `extra_handlers` are included next to the demo's own, and their calls are checked
    the same way; `verbose` also prints each handler log line as it is written.
    """
    result = await demo(
        runs=runs,
        seed=seed,
        out=out,
        store_url=store_url,
        extra_handlers=extra_handlers,
        verbose=verbose,
    )
    return result.exit_code


async def demo(
    *,
    runs: int = 20,
    seed: int = 0,
    out: Callable[[str], None] = print,
    store_url: str | None = None,
    extra_handlers: Sequence[Handlers] = (),
    verbose: bool = False,
) -> DemoResult:
    """`run_demo`, returning what it found rather than an exit code."""
    if runs < 1:
        raise ValueError("the demo needs at least one run")
    if store_url is not None:
        return await _run(runs, seed, out, store_url, extra_handlers, verbose)
    with tempfile.TemporaryDirectory(prefix="listener-demo-") as directory:
        store_url = f"sqlite:///{Path(directory) / 'listener.db'}"
        return await _run(runs, seed, out, store_url, extra_handlers, verbose)


async def _run(
    runs: int,
    seed: int,
    out: Callable[[str], None],
    store_url: str,
    extra_handlers: Sequence[Handlers],
    verbose: bool,
) -> DemoResult:
    plans = plan_runs(runs, seed)
    last = last_change(plans)
    # Longer than any run lasts from submission, so the poller only ever asks about runs
    # whose final webhook was lost, and only after the last webhook went out.
    grace = last + MARGIN
    clock = _Clock()
    numbering = itertools.count()

    def plan(run: FakeRun) -> RunPlan:
        planned = plans[next(numbering) % len(plans)]
        # Times are laid out from the first submission; this run was created a little later.
        queued_for = max(0.0, planned.start - clock.elapsed())
        return RunPlan(
            status=planned.status.value,
            queued_for=queued_for / TIME_SCALE,
            runs_for=(planned.end - planned.start) / TIME_SCALE,
            error="no feasible route for the given time windows",
        )

    counter = CallCounter()
    log_lines: list[str] = []
    listener = Listener(
        store_url=store_url,
        handlers=[demo_handlers(counter, log_lines, out if verbose else None), *extra_handlers],
        # Short retries so a failing handler reaches the dead-letter list within the demo.
        dispatch=DispatchSettings(
            max_attempts=3,
            backoff_base=0.05,
            backoff_cap=0.2,
            sweep_interval=0.1,
            handler_timeout=10.0,
            shutdown_timeout=5.0,
        ),
        poll=PollSettings(
            grace=grace,
            first_poll=grace,
            interval=0.25,
            schedule=PollSchedule(interval=1.0, cap=2.0),
            rate_limit=50.0,
        ),
    )
    terminal_handlers = {
        handler.name: bool(handler.statuses is None or handler.statuses & _TERMINAL)
        for handler in listener.handlers
    }
    platform = FakePlatform(
        plan=plan,
        time_scale=TIME_SCALE,
        seed=seed,
        notify_running=True,
        drop_rate=DROP_RATE,
        duplicate_rate=DUPLICATE_RATE,
    )
    out(f"listener demo: {runs} runs, seed {seed}")
    shown_store = redact_url(store_url)
    async with (
        platform,
        listener,
        LoopbackServer(listener.asgi()) as server,
        platform.nextmv_provider(backoff_base=0.05) as provider,
    ):
        listener.add_provider(provider)
        # The receiver's URL is known only once it serves: register it now, as a Nextmv
        # account would, and verify with the secret the platform hands back.
        secret = platform.register_webhook(f"{server.base_url}/hooks/{SOURCE}")
        listener.add_source(Source(SOURCE, "nextmv", NextmvSignature([secret])))
        leftover = await _runs_in(listener.store)
        if leftover:
            # The fake's run ids repeat with the seed: old runs would answer for new ones.
            held = _n(leftover, "run")
            problem = f"the store at {shown_store} already holds {held}; give an empty one"
            result = DemoResult([], [problem])
            for line in _verdict(result):
                out(line)
            return result
        out(f"  fake platform   {platform.base_url}  (drops {DROP_RATE:.0%} of webhooks,")
        out(f"                  sends {DUPLICATE_RATE:.0%} twice, 1 platform s = {TIME_SCALE} s)")
        out(f"  receiver        {server.base_url}/hooks/{SOURCE}  (Nextmv signatures)")
        out(f"  store           {shown_store}")
        out(f"  poller          asks about a run after {grace:.1f} s without news")
        out("")
        return await _drive(
            listener, platform, plans, clock, counter, log_lines, terminal_handlers, out
        )


_TERMINAL = frozenset(status for status in RunStatus if status.is_terminal)


async def _runs_in(store: Store) -> int:
    counts = await store.counts()
    return sum(counts.runs_by_status.values())


async def _drive(
    listener: Listener,
    platform: FakePlatform,
    plans: Sequence[PlannedRun],
    clock: _Clock,
    counter: CallCounter,
    log_lines: list[str],
    terminal_handlers: Mapping[str, bool],
    out: Callable[[str], None],
) -> DemoResult:
    clock.started = time.monotonic()
    run_ids: list[str] = []
    for k in range(len(plans)):
        handle = await listener.submit("nextmv", APPLICATION, {"stops": 3 + k, "vehicles": 2})
        run_ids.append(handle.run_id)
    out(f"{clock.stamp()}  submitted {len(run_ids)} runs to {APPLICATION!r}")

    waited: dict[str, RunEvent] = {}
    failures: list[str] = []
    timeout = 2 * (last_change(plans) + MARGIN) + SETTLE_TIMEOUT

    async def watch(run_id: str) -> None:
        try:
            event = await listener.wait(run_id, timeout=timeout)
        except WaitTimeout:
            failures.append(f"{run_id} did not finish within {timeout:.0f} s")
            out(f"{clock.stamp()}  {run_id}  gave up waiting")
            return
        waited[run_id] = event
        out(f"{clock.stamp()}  {run_id}  {event.status.value:<9}  by {event.origin.value}")

    async def progress() -> None:
        while True:
            await asyncio.sleep(PROGRESS_EVERY)
            by_poll = sum(1 for e in waited.values() if e.origin is Origin.POLL)
            stats = platform.stats
            out(
                f"{clock.stamp()}  -- {len(waited)}/{len(run_ids)} done "
                f"({len(waited) - by_poll} by webhook, {by_poll} by poll), "
                f"{_n(stats.dropped, 'webhook')} dropped, {_n(_polls(platform), 'poll')}"
            )

    ticker = asyncio.create_task(progress())
    try:
        await asyncio.gather(*(watch(run_id) for run_id in run_ids))
    finally:
        ticker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await ticker
    # Every run is over on the platform; let its last deliveries (duplicates) land and the
    # dispatcher finish, so the summary counts settled numbers.
    try:
        async with asyncio.timeout(SETTLE_TIMEOUT):
            await platform.drain()
            await _settle(listener.store)
    except TimeoutError:
        failures.append(f"handler calls still pending after {SETTLE_TIMEOUT:.0f} s")

    reports = [
        await _report(listener.store, platform, run_id, waited.get(run_id), counter)
        for run_id in run_ids
    ]
    problems = failures + check(reports, terminal_handlers)
    result = DemoResult(reports, problems)
    for line in summary(result, platform, listener, len(log_lines), clock.elapsed()):
        out(line)
    return result


async def _settle(store: Store) -> None:
    """Until no handler call is pending or running (dead ones stay dead)."""
    while True:
        counts = await store.counts()
        busy = counts.calls_by_state.get(CallState.PENDING.value, 0) + counts.calls_by_state.get(
            CallState.RUNNING.value, 0
        )
        if not busy:
            return
        await asyncio.sleep(0.05)


def _fate(deliveries: Sequence[DeliveryRecord], status: str) -> str:
    """What the platform did with a run's webhook for `status`."""
    records = [d for d in deliveries if d.status == status]
    if not records:
        return "-"
    record = records[0]
    if record.dropped:
        return "dropped"
    if not record.delivered:
        return "failed"
    return "sent x2" if record.duplicated else "sent"


async def _report(
    store: Store,
    platform: FakePlatform,
    run_id: str,
    waited: RunEvent | None,
    counter: CallCounter,
) -> RunReport:
    fake = platform.runs[run_id]
    true = RunStatus(fake.status)
    record = await store.get_run(run_id)
    calls = (await store.list_calls(run_id=run_id, limit=1000)).items
    calls.sort(key=lambda call: call.id)
    learned: Origin | None = None
    # A call carries the event that made its transition: that one taught the listener.
    final_calls = [call for call in calls if call.status is true]
    if final_calls:
        learned = final_calls[0].event.origin
    else:
        events = (await store.list_events(run_id=run_id, status=[true], limit=1000)).items
        if events:
            learned = events[-1].origin  # newest first: the last is the first received
    deliveries = [d for d in platform.deliveries if d.run_id == run_id]
    return RunReport(
        run_id=run_id,
        true_status=true,
        stored_status=record.status if record is not None else None,
        waited_status=waited.status if waited is not None else None,
        learned_by=learned,
        running_webhook=_fate(deliveries, "running"),
        final_webhook=_fate(deliveries, fake.status),
        calls=calls,
        counted=counter.for_run(run_id),
    )


def _n(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def _polls(platform: FakePlatform) -> int:
    # Status calls the poller made: one run at a time, or many in one run listing.
    return platform.api_calls["runs.metadata"] + platform.api_calls["runs.list"]


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


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m listener.demo [--runs N] [--seed S] [--store URL] [--verbose]`."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m listener.demo", description=__doc__)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--store", default=None, help="a store URL (default: a temporary one)")
    parser.add_argument("--verbose", action="store_true", help="print every handler log line")
    args = parser.parse_args(argv)
    return asyncio.run(
        run_demo(runs=args.runs, seed=args.seed, store_url=args.store, verbose=args.verbose)
    )


if __name__ == "__main__":
    raise SystemExit(main())
