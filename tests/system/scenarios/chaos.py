"""Chaos: a platform that loses, repeats, delays and reorders webhooks and fails API calls.

Runs are submitted through `Listener.submit` to a `FakePlatform` whose webhooks reach a
real receiver on loopback; the fallback poller has to recover every run whose final
webhook was dropped. At the end every run must be in the store with the status the
platform really gave it, and every transition must have called each subscribed handler
exactly once.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import secrets
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import httpx

from listener.app import Listener
from listener.dispatch import DispatchSettings
from listener.events import Origin, RunStatus
from listener.poller import PollSchedule, PollSettings
from listener.providers.base import ProviderError
from listener.registry import Handlers
from listener.signatures import NextmvSignature
from listener.sources import Source
from listener.store.base import CallState, Store
from listener.testing import FakePlatform, FakeRun, LoopbackServer, RunPlan

from .common import (
    CallLog,
    Tally,
    all_calls,
    all_events,
    all_runs,
    settle_calls,
    wait_all_terminal,
)
from .witness import Witness

__all__ = ["ChaosSettings", "run_chaos"]

T = TypeVar("T")

APPLICATION = "routing"
SOURCE = "nextmv"
TERMINAL = "system.terminal"
EVERY = "system.every"
# Only the fake's injected failures are retried by the submitter: they are answered
# before the platform does anything, so no run was created (checked at the end).
_INJECTED = (429, 503)
_CALL_TRIES = 20


@dataclass(frozen=True, slots=True)
class ChaosSettings:
    """The platform's misbehaviour and the size of the run. Times are platform seconds,
    multiplied by `time_scale`; `limit` (wall seconds) is the safety net of the run."""

    runs: int = 300
    seed: int = 7
    drop_rate: float = 0.3
    duplicate_rate: float = 0.2
    reorder_rate: float = 0.2
    delay: tuple[float, float] = (0.0, 4.0)
    api_error_rate: float = 0.05
    rate_limit_rate: float = 0.05
    time_scale: float = 0.05
    # Shares of runs the platform fails, cancels by itself, or keeps running until the
    # listener cancels them; the rest succeed.
    failed_share: float = 0.25
    canceled_share: float = 0.1
    cancel_share: float = 0.05
    submit_concurrency: int = 8
    limit: float = 90.0


def _planner(settings: ChaosSettings) -> tuple[random.Random, Callable[[FakeRun], RunPlan]]:
    rng = random.Random(settings.seed)

    def plan(run: FakeRun) -> RunPlan:
        roll = rng.random()
        queued_for = rng.uniform(0.0, 4.0)
        runs_for = rng.uniform(0.0, 10.0)
        if roll < settings.cancel_share:
            # Runs until the listener cancels it.
            return RunPlan(status="succeeded", queued_for=queued_for, runs_for=None)
        roll -= settings.cancel_share
        if roll < settings.failed_share:
            status = "failed"
        elif roll < settings.failed_share + settings.canceled_share:
            status = "canceled"
        else:
            status = "succeeded"
        return RunPlan(status=status, queued_for=queued_for, runs_for=runs_for)

    return rng, plan


class _CountingTransport(httpx.AsyncBaseTransport):
    """The provider's HTTP transport, counting the platform's answers by status code."""

    def __init__(self) -> None:
        self._inner = httpx.AsyncHTTPTransport()
        self.statuses: Counter[int] = Counter()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self._inner.handle_async_request(request)
        self.statuses[response.status_code] += 1
        return response

    async def aclose(self) -> None:
        await self._inner.aclose()


async def _with_retries(what: str, call: Callable[[], Awaitable[T]]) -> T:
    """Await `call()` again while the platform answers an injected 429 or 503."""
    for _ in range(_CALL_TRIES):
        try:
            return await call()
        except ProviderError as exc:
            if exc.status_code not in _INJECTED:
                raise
            await asyncio.sleep(min(exc.retry_after or 0.02, 0.1))
    raise AssertionError(f"{what} kept failing after {_CALL_TRIES} tries")


async def run_chaos(
    store_url: str,
    settings: ChaosSettings | None = None,
    *,
    name: str = "chaos",
    witness: Witness | None = None,
) -> Tally:
    """Run the chaos scenario against a new store at `store_url`; see the module doc."""
    settings = settings or ChaosSettings()
    rng, plan = _planner(settings)
    calls = CallLog()
    router = Handlers()
    terminal = [s.value for s in RunStatus if s.is_terminal]
    router.add(calls.handler("terminal"), *terminal, name=TERMINAL)
    router.add(calls.handler("every"), name=EVERY)
    listener = Listener(
        store_url=store_url,
        handlers=[router],
        dispatch=DispatchSettings(
            sweep_interval=0.05,
            backoff_base=0.05,
            backoff_cap=0.2,
            handler_timeout=10.0,
            shutdown_timeout=5.0,
        ),
        # Long enough that most runs end before the first poll; short enough that a run
        # whose final webhook was dropped is recovered within seconds.
        poll=PollSettings(
            grace=1.0,
            first_poll=1.0,
            interval=0.05,
            schedule=PollSchedule(interval=0.05, cap=0.5),
            rate_limit=500.0,
        ),
    )
    api_key = f"nxk_{secrets.token_hex(16)}"
    platform = FakePlatform(
        api_key=api_key,
        plan=plan,
        time_scale=settings.time_scale,
        seed=settings.seed,
        notify_running=True,
        drop_rate=settings.drop_rate,
        duplicate_rate=settings.duplicate_rate,
        delay=settings.delay,
        reorder_rate=settings.reorder_rate,
        api_error_rate=settings.api_error_rate,
        rate_limit_rate=settings.rate_limit_rate,
        retry_after="1",
    )
    if witness is not None:
        witness.secret("platform API key", api_key)
    tally = Tally(name)
    async with contextlib.AsyncExitStack() as stack:
        await stack.enter_async_context(listener)
        app = listener.asgi()
        server = await stack.enter_async_context(
            LoopbackServer(witness.wrap(app) if witness is not None else app)
        )
        await stack.enter_async_context(platform)
        # Retry-After is honoured up to a tenth of a second: the fake's "1" would make
        # the scenario wait whole seconds for nothing.
        api = _CountingTransport()
        provider = await stack.enter_async_context(
            platform.nextmv_provider(
                max_attempts=4,
                backoff_base=0.01,
                backoff_cap=0.1,
                retry_after_cap=0.1,
                http_transport=api,
            )
        )
        listener.add_provider(provider)
        secret = platform.register_webhook(f"{server.base_url}/hooks/{SOURCE}")
        if witness is not None:
            witness.secret("Nextmv webhook secret", secret)
        listener.add_source(Source(SOURCE, "nextmv", NextmvSignature([secret])))

        async with asyncio.timeout(settings.limit):
            run_ids = await _submit_all(listener, settings)
            to_cancel = [r for r in run_ids if platform.runs[r].plan.runs_for is None]
            await asyncio.gather(
                *(_cancel_later(listener, r, rng.uniform(0, 0.3)) for r in to_cancel)
            )
            await wait_all_terminal(listener.store, len(run_ids))
            await platform.drain()
            await settle_calls(listener.store)
        await _audit(tally, listener.store, platform, calls, run_ids)
        tally.notes.update(
            {
                "runs": len(run_ids),
                "canceled by the listener": len(to_cancel),
                "webhooks dropped": platform.stats.dropped,
                "webhooks duplicated": platform.stats.duplicated,
                "webhooks reordered": platform.stats.reordered,
                "status calls": platform.api_calls["runs.metadata"]
                + platform.api_calls["runs.list"],
                "API calls": sum(api.statuses.values()),
                "API calls answered 503": api.statuses[503],
                "API calls answered 429": api.statuses[429],
            }
        )
        if witness is not None:
            async with httpx.AsyncClient(base_url=server.base_url) as client:
                witness.metrics_pages.append((await client.get("/metrics")).text)
    return tally


async def _submit_all(listener: Listener, settings: ChaosSettings) -> list[str]:
    gate = asyncio.Semaphore(settings.submit_concurrency)

    async def submit(k: int) -> str:
        async with gate:
            handle = await _with_retries(
                f"submitting run {k}",
                lambda: listener.submit("nextmv", APPLICATION, {"case": k}),
            )
            return handle.run_id

    return list(await asyncio.gather(*(submit(k) for k in range(settings.runs))))


async def _cancel_later(listener: Listener, run_id: str, after: float) -> None:
    await asyncio.sleep(after)
    await _with_retries(f"canceling {run_id}", lambda: listener.cancel(run_id))


async def _audit(
    tally: Tally, store: Store, platform: FakePlatform, calls: CallLog, run_ids: list[str]
) -> None:
    events = await all_events(store)
    stored_calls = await all_calls(store)
    runs = {run.run_id: run for run in await all_runs(store)}
    webhook_reports: dict[str, set[str]] = defaultdict(set)
    for event in events:
        if event.origin is Origin.WEBHOOK:
            webhook_reports[event.run_id].add(event.status.value)

    codes = [code for record in platform.deliveries for code in record.status_codes]
    tally.sent = len(codes)
    tally.acknowledged = sum(1 for code in codes if code is not None and 200 <= code < 300)
    tally.stored = len(events)
    tally.handler_calls = calls.total
    if len(platform.runs) != len(run_ids):
        tally.problem(f"the platform holds {len(platform.runs)} runs for {len(run_ids)} submitted")
    if any(code is not None and code >= 500 for code in codes):
        tally.problem(f"the receiver answered 5xx: {Counter(c for c in codes if c and c >= 500)}")

    # Every delivery answered 2xx is in the store (as that run and status, from a webhook).
    for record in platform.deliveries:
        if record.delivered and record.status not in webhook_reports[record.run_id]:
            tally.lost += 1
            tally.problem(f"{record.run_id} {record.status}: acknowledged but not stored")

    # Every run ends in its true status, and its terminal handler ran exactly once.
    for run_id in run_ids:
        truth = platform.runs[run_id].status
        stored = runs.get(run_id)
        if stored is None or stored.status.value != truth:
            tally.lost += 1
            found = stored.status.value if stored is not None else "missing"
            tally.problem(f"{run_id} is {found} in the store, truly {truth}")
        terminal_calls = sum(
            n
            for (label, run, _), n in calls.counts.items()
            if label == "terminal" and run == run_id
        )
        if terminal_calls == 0:
            tally.lost += 1
            tally.problem(f"{run_id}: the terminal handler was never called")
        if calls.count("terminal", run_id, truth) != 1 or terminal_calls != 1:
            tally.problem(f"{run_id}: terminal handler calls {terminal_calls}, not 1 for {truth}")

    # Each transition, each handler: one call, done on its first attempt.
    transitions = {(c.run_id, c.status.value) for c in stored_calls}
    for (label, run_id, status), n in calls.counts.items():
        if n > 1:
            tally.double_calls += n - 1
            tally.problem(f"{label} handler called {n} times for {run_id} {status}")
        if (run_id, status) not in transitions:
            tally.problem(f"{label} handler called for {run_id} {status}, never a transition")
    for run_id, status in transitions:
        if calls.count("every", run_id, status) != 1:
            tally.problem(f"{run_id} {status}: the every-status handler did not run once")
    for call in stored_calls:
        if call.state is not CallState.DONE or call.attempts != 1:
            tally.problem(
                f"call {call.id} ({call.handler}, {call.run_id} {call.status.value}) is "
                f"{call.state.value} after {call.attempts} attempts"
            )

    # A report that did not move its run called nothing: 200 answers to the webhooks, and
    # polls that only confirmed what was known.
    made_transition = {c.event.delivery_id for c in stored_calls}
    idle_polls = sum(
        1 for e in events if e.origin is Origin.POLL and e.delivery_id not in made_transition
    )
    tally.duplicates_suppressed = sum(1 for code in codes if code == 200) + idle_polls
    tally.notes["runs learned by poll"] = sum(
        1
        for e in events
        if e.origin is Origin.POLL and e.status.is_terminal and e.delivery_id in made_transition
    )
