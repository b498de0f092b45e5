"""Running the demo: platform, listener and receiver up, runs submitted, waited for."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from listener.app import Listener
from listener.client import WaitTimeout
from listener.demo.constants import (
    APPLICATION,
    DROP_RATE,
    DUPLICATE_RATE,
    MARGIN,
    PROGRESS_EVERY,
    SETTLE_TIMEOUT,
    SOURCE,
    TIME_SCALE,
)
from listener.demo.handlers import CallCounter, demo_handlers
from listener.demo.plan import PlannedRun, last_change, plan_runs
from listener.demo.results import DemoResult, _report, check
from listener.demo.summary import _n, _verdict, summary
from listener.dispatch import DispatchSettings
from listener.events import Origin, RunEvent, RunStatus
from listener.poller import PollSchedule, PollSettings
from listener.redaction import redact_url
from listener.registry import Handlers
from listener.signatures import NextmvSignature
from listener.sources import Source
from listener.store.base import CallState, Store
from listener.testing import FakePlatform, FakeRun, LoopbackServer, RunPlan


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


def _polls(platform: FakePlatform) -> int:
    # Status calls the poller made: one run at a time, or many in one run listing.
    return platform.api_calls["runs.metadata"] + platform.api_calls["runs.list"]
