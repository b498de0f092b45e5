"""The dispatcher against a real SQLite store."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import re
import threading
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from helpers import event, wait_for

from listener.dispatch import LEASE_MARGIN_SECONDS, Dispatcher, DispatchSettings, describe_error
from listener.errors import HandlerFailed
from listener.events import Origin, RunEvent
from listener.metrics import Metrics
from listener.registry import Handlers
from listener.store import CallState, HandlerCall, Store, StoreUnavailable, open_store


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    opened = await open_store(f"sqlite:///{tmp_path / 'listener.db'}")
    yield opened
    await opened.close()


SETTINGS = frozenset(field.name for field in dataclasses.fields(DispatchSettings))


def make(store: Store, handlers: Handlers, **options: object) -> Dispatcher:
    """A dispatcher with quick sweeps and retries; `options` are `DispatchSettings` fields
    or the dispatcher's own keywords."""
    settings: dict[str, object] = {
        "sweep_interval": 0.02,
        "backoff_base": 0.001,
        "backoff_cap": 0.01,
        "max_attempts": 3,
        "shutdown_timeout": 5.0,
    }
    settings.update({name: options.pop(name) for name in list(options) if name in SETTINGS})
    return Dispatcher(
        store,
        handlers,
        DispatchSettings(**settings),  # type: ignore[arg-type]
        **options,  # type: ignore[arg-type]
    )


async def call_in(store: Store, call_id: int, *states: CallState) -> HandlerCall:
    found: list[HandlerCall] = []

    async def reached() -> bool:
        call = await store.get_call(call_id)
        assert call is not None
        found[:] = [call]
        return call.state in states

    await wait_for(reached, f"call {call_id} in {states}")
    return found[0]


async def dispatch_until(
    store: Store, handlers: Handlers, call_id: int, state: CallState, **options: object
) -> HandlerCall:
    """Run a dispatcher made with `options` until call `call_id` is in `state`; return
    the call as then read."""
    dispatcher = make(store, handlers, **options)
    await dispatcher.start()
    try:
        return await call_in(store, call_id, state)
    finally:
        await dispatcher.stop()


async def run_until_done(dispatcher: Dispatcher, store: Store, call_ids: list[int]) -> None:
    """Run `dispatcher` until every call of `call_ids` is done."""
    await dispatcher.start()
    try:
        for call_id in call_ids:
            await call_in(store, call_id, CallState.DONE)
    finally:
        await dispatcher.stop()


async def enqueue(store: Store, handlers: Handlers, *args: object, **kw: str) -> list[int]:
    ev = event(*args, **kw)  # type: ignore[arg-type]
    result = await store.record(ev, handlers=handlers.match(ev))
    return list(result.call_ids)


async def test_runs_a_call_and_completes_it(store: Store) -> None:
    handlers = Handlers()
    seen: list[RunEvent] = []

    @handlers.on("succeeded", name="h")
    async def handler(event: RunEvent) -> None:
        seen.append(event)

    [call_id] = await enqueue(store, handlers)
    call = await dispatch_until(store, handlers, call_id, CallState.DONE)
    assert call.attempts == 1
    assert [e.run_id for e in seen] == ["run-1"]
    assert seen[0].origin is Origin.WEBHOOK


async def test_wake_claims_new_calls_without_waiting_for_a_sweep(store: Store) -> None:
    handlers = Handlers()
    done = asyncio.Event()

    @handlers.on_any(name="h")
    async def handler(event: RunEvent) -> None:
        done.set()

    # A sweep interval far beyond the test's life: only wake() can trigger the claim.
    dispatcher = make(store, handlers, sweep_interval=3600)
    await dispatcher.start()
    try:
        await asyncio.sleep(0)  # let the first (empty) claim pass
        await wait_for(lambda: dispatcher.running, "the dispatcher loop")
        await enqueue(store, handlers)
        dispatcher.wake()
        async with asyncio.timeout(30):
            await done.wait()
    finally:
        await dispatcher.stop()


async def test_fails_twice_then_succeeds_is_called_three_times(store: Store) -> None:
    handlers = Handlers()
    attempts: list[int] = []

    @handlers.on("succeeded", name="flaky")
    def flaky(event: RunEvent) -> None:
        attempts.append(1)
        if len(attempts) < 3:
            raise ConnectionError(f"downstream down (try {len(attempts)})")

    metrics = Metrics()
    [call_id] = await enqueue(store, handlers)
    call = await dispatch_until(
        store, handlers, call_id, CallState.DONE, max_attempts=5, metrics=metrics
    )
    assert len(attempts) == 3
    assert call.attempts == 3
    text = metrics.render().decode()
    assert 'listener_handler_calls_total{handler="flaky",outcome="error"} 2.0' in text
    assert 'listener_handler_calls_total{handler="flaky",outcome="ok"} 1.0' in text


async def test_retries_keep_their_schedule_between_sweeps(store: Store) -> None:
    """With a sweep far beyond the test's life, only the retry's own due time can bring a
    failed call back: a schedule of 0.1-0.2 s is kept, not rounded up to the sweep."""
    handlers = Handlers()
    attempts: list[float] = []

    @handlers.on("succeeded", name="flaky")
    async def flaky(event: RunEvent) -> None:
        attempts.append(1)
        if len(attempts) < 3:
            raise ConnectionError("downstream down")

    [call_id] = await enqueue(store, handlers)
    call = await dispatch_until(
        store,
        handlers,
        call_id,
        CallState.DONE,
        sweep_interval=3600,
        backoff_base=0.1,
        backoff_cap=0.2,
    )
    assert call.attempts == 3


async def test_a_failure_that_is_not_retryable_dead_letters_at_once(store: Store) -> None:
    handlers = Handlers()
    attempts: list[int] = []

    @handlers.on("succeeded", name="hopeless")
    async def hopeless(event: RunEvent) -> None:
        attempts.append(1)
        raise HandlerFailed("this event can never be handled", retryable=False)

    [call_id] = await enqueue(store, handlers)
    call = await dispatch_until(store, handlers, call_id, CallState.DEAD, max_attempts=5)
    assert attempts == [1]
    assert call.attempts == 1
    assert call.last_error == "listener.errors.HandlerFailed: this event can never be handled"


async def test_always_failing_goes_to_dead_letters_and_can_be_replayed(store: Store) -> None:
    handlers = Handlers()
    origins: list[Origin] = []
    broken = True

    @handlers.on("succeeded", name="broken")
    async def handler(event: RunEvent) -> None:
        origins.append(event.origin)
        if broken:
            raise ValueError("cannot " + "x" * 5000)

    metrics = Metrics()
    [call_id] = await enqueue(store, handlers)
    dispatcher = make(store, handlers, max_attempts=3, metrics=metrics)
    await dispatcher.start()
    try:
        call = await call_in(store, call_id, CallState.DEAD)
        assert origins == [Origin.WEBHOOK] * 3
        assert call.last_error is not None
        assert call.last_error.startswith("ValueError: cannot xxx")
        assert len(call.last_error) <= 2000
        dead = await store.list_calls(state=CallState.DEAD)
        assert [c.id for c in dead.items] == [call_id]
        assert 'listener_handler_dead_letters_total{handler="broken"} 1.0' in (
            metrics.render().decode()
        )

        broken = False
        assert await store.replay_call(call_id)
        dispatcher.wake()
        call = await call_in(store, call_id, CallState.DONE)
    finally:
        await dispatcher.stop()
    assert origins[-1] is Origin.REPLAY
    assert call.replays == 1


async def test_async_timeout_counts_as_failure(store: Store) -> None:
    handlers = Handlers()
    never = asyncio.Event()
    cancelled = asyncio.Event()

    @handlers.on_any(name="stuck", timeout=0.01)
    async def stuck(event: RunEvent) -> None:
        try:
            await never.wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    [call_id] = await enqueue(store, handlers)
    call = await dispatch_until(store, handlers, call_id, CallState.DEAD, max_attempts=1)
    assert cancelled.is_set()
    assert call.last_error is not None
    assert call.last_error.startswith("TimeoutError: the handler did not finish")


async def test_a_handler_raising_timeout_error_itself_is_an_error(store: Store) -> None:
    handlers = Handlers()

    @handlers.on_any(name="own-timeout")
    async def own(event: RunEvent) -> None:
        raise TimeoutError("upstream took too long")

    metrics = Metrics()
    [call_id] = await enqueue(store, handlers)
    call = await dispatch_until(
        store, handlers, call_id, CallState.DEAD, max_attempts=1, metrics=metrics
    )
    assert call.last_error == "TimeoutError: upstream took too long"
    assert 'handler="own-timeout",outcome="error"' in metrics.render().decode()


async def test_sync_timeout_fails_the_call_while_the_thread_runs_on(store: Store) -> None:
    handlers = Handlers()
    release = threading.Event()
    finished = threading.Event()

    @handlers.on_any(name="sync-stuck", timeout=0.01)
    def stuck(event: RunEvent) -> None:
        release.wait(30)
        finished.set()

    [call_id] = await enqueue(store, handlers)
    dispatcher = make(store, handlers, max_attempts=1)
    await dispatcher.start()
    try:
        call = await call_in(store, call_id, CallState.DEAD)
        assert not finished.is_set()
    finally:
        release.set()
        await dispatcher.stop()
    assert call.last_error is not None
    assert "did not finish" in call.last_error


async def test_sync_handlers_run_in_worker_threads(store: Store) -> None:
    handlers = Handlers()
    threads: list[str] = []

    @handlers.on_any(name="where")
    def where(event: RunEvent) -> None:
        threads.append(threading.current_thread().name)

    [call_id] = await enqueue(store, handlers)
    await dispatch_until(store, handlers, call_id, CallState.DONE)
    assert threads[0].startswith("listener-handler")


async def test_sync_function_returning_an_awaitable_is_awaited(store: Store) -> None:
    handlers = Handlers()
    ran = asyncio.Event()

    async def body(event: RunEvent) -> None:
        ran.set()

    handlers.add(lambda e: body(e), name="lambda")
    [call_id] = await enqueue(store, handlers)
    await dispatch_until(store, handlers, call_id, CallState.DONE)
    assert ran.is_set()


async def test_system_exit_in_a_handler_is_only_a_failure(store: Store) -> None:
    handlers = Handlers()

    @handlers.on_any(name="exits")
    def exits(event: RunEvent) -> None:
        raise SystemExit(3)

    @handlers.on_any(name="fine")
    async def fine(event: RunEvent) -> None:
        pass

    exits_id, fine_id = await enqueue(store, handlers)
    dispatcher = make(store, handlers, max_attempts=1)
    await dispatcher.start()
    try:
        dead = await call_in(store, exits_id, CallState.DEAD)
        await call_in(store, fine_id, CallState.DONE)
        assert dispatcher.running
    finally:
        await dispatcher.stop()
    assert dead.last_error == "SystemExit: 3"


async def test_one_stuck_handler_does_not_hold_back_others(store: Store) -> None:
    handlers = Handlers()
    gate = asyncio.Event()
    other_runs: list[str] = []

    @handlers.on("succeeded", name="slow")
    async def slow(event: RunEvent) -> None:
        await gate.wait()

    @handlers.on_any(name="quick")
    async def quick(event: RunEvent) -> None:
        other_runs.append(event.run_id)

    slow_id, quick_id = await enqueue(store, handlers, "run-1")
    [second_run] = await enqueue(store, handlers, "run-2", "running", delivery_id="d-2")
    dispatcher = make(store, handlers, concurrency=4)
    await dispatcher.start()
    try:
        await call_in(store, quick_id, CallState.DONE)
        await call_in(store, second_run, CallState.DONE)
        slow_call = await store.get_call(slow_id)
        assert slow_call is not None
        assert slow_call.state is CallState.RUNNING
        gate.set()
        await call_in(store, slow_id, CallState.DONE)
    finally:
        await dispatcher.stop()
    assert sorted(other_runs) == ["run-1", "run-2"]


async def test_calls_for_one_run_and_handler_run_in_transition_order(store: Store) -> None:
    handlers = Handlers()
    order: list[str] = []

    @handlers.on_any(name="ordered")
    async def ordered(event: RunEvent) -> None:
        # Yield so a concurrent claim would have a chance to overtake.
        await asyncio.sleep(0)
        order.append(event.status.value)

    ids: list[int] = []
    for n, status in enumerate(["queued", "running", "succeeded"]):
        ids += await enqueue(store, handlers, "run-1", status, delivery_id=f"d-{n}")
    await run_until_done(make(store, handlers, concurrency=8), store, ids)
    assert order == ["queued", "running", "succeeded"]


# -- claiming ahead of free slots ---------------------------------------------------------


class CountingStore:
    """The real store, counting the dispatcher's claims and noting the calls it hands back."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self.claims = 0
        self.released: list[int] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    async def claim_calls(self, owner: str, **options: Any) -> list[HandlerCall]:
        self.claims += 1
        return await self._store.claim_calls(owner, **options)

    async def release_call(self, call_id: int, owner: str) -> bool:
        self.released.append(call_id)
        return await self._store.release_call(call_id, owner)


async def enqueue_runs(store: Store, handlers: Handlers, count: int) -> list[int]:
    ids: list[int] = []
    for n in range(count):
        ids += await enqueue(store, handlers, f"run-{n}", delivery_id=f"d-{n}")
    return ids


async def test_quick_calls_are_claimed_ahead_yet_no_more_than_the_concurrency_run(
    store: Store,
) -> None:
    handlers = Handlers()
    gate = asyncio.Event()
    running, most = 0, 0

    @handlers.on_any(name="gated")
    async def gated(event: RunEvent) -> None:
        nonlocal running, most
        running += 1
        most = max(most, running)
        await gate.wait()
        running -= 1

    ids = await enqueue_runs(store, handlers, 8)
    dispatcher = make(store, handlers, concurrency=2)
    await dispatcher.start()
    try:
        # Two slots, three calls ahead per slot: six claimed, two running.
        await wait_for(lambda: dispatcher.waiting == 6, "six calls claimed ahead")
        states = [(await store.get_call(call_id)).state for call_id in ids]  # type: ignore[union-attr]
        assert states == [CallState.RUNNING] * 8
        assert (dispatcher.in_flight, running) == (2, 2)
        gate.set()
        for call_id in ids:
            await call_in(store, call_id, CallState.DONE)
    finally:
        await dispatcher.stop()
    assert most == 2
    for call_id in ids:
        call = await store.get_call(call_id)
        assert call is not None
        assert call.attempts == 1


async def test_no_call_is_claimed_ahead_when_a_lease_leaves_no_time_to_wait(
    store: Store,
) -> None:
    handlers = Handlers()
    gate = asyncio.Event()

    @handlers.on_any(name="gated")
    async def gated(event: RunEvent) -> None:
        if event.run_id != "run-0":
            await gate.wait()

    ids = await enqueue_runs(store, handlers, 5)
    # The lease is the handler timeout: a call that waited could not finish inside it.
    dispatcher = make(store, handlers, concurrency=2, handler_timeout=5.0, lease_seconds=5.0)
    await dispatcher.start()
    try:
        await call_in(store, ids[0], CallState.DONE)
        # The slot run-0 left is refilled by a claim of one call, and only one.
        await call_in(store, ids[2], CallState.RUNNING)
        await wait_for(lambda: dispatcher.in_flight == 2, "both slots running again")
        states = [(await store.get_call(call_id)).state for call_id in ids[3:]]  # type: ignore[union-attr]
        assert states == [CallState.PENDING, CallState.PENDING]
        assert dispatcher.waiting == 0
        gate.set()
        for call_id in ids:
            await call_in(store, call_id, CallState.DONE)
    finally:
        await dispatcher.stop()


async def test_calls_longer_than_a_claim_are_not_claimed_ahead(store: Store) -> None:
    handlers = Handlers()
    dispatcher: Dispatcher | None = None
    waiting_at_start: list[int] = []

    @handlers.on_any(name="steady")
    async def steady(event: RunEvent) -> None:
        assert dispatcher is not None
        waiting_at_start.append(dispatcher.waiting)
        # Far longer than a claim's round trip through a local SQLite store.
        await asyncio.sleep(0.2)

    ids = await enqueue_runs(store, handlers, 6)
    dispatcher = make(store, handlers, concurrency=1)
    await run_until_done(dispatcher, store, ids)
    # Before any call had run, the first claim took three ahead; once calls were seen to
    # be slow, each claim took only the free slot.
    assert waiting_at_start == [3, 2, 1, 0, 0, 0]


async def test_a_call_that_waited_too_long_for_a_slot_is_handed_back_and_runs_once(
    store: Store,
) -> None:
    handlers = Handlers()
    ran: list[str] = []

    @handlers.on_any(name="h")
    async def handler(event: RunEvent) -> None:
        ran.append(event.run_id)
        if event.run_id == "run-0":
            # Longer than the 0.3 s a claimed call may wait (lease 1.3 s, timeout 1 s).
            await asyncio.sleep(0.5)

    _, second = await enqueue_runs(store, handlers, 2)
    counting = CountingStore(store)
    dispatcher = make(
        counting,
        handlers,
        concurrency=1,
        handler_timeout=1.0,
        lease_seconds=1.3,
    )
    await dispatcher.start()
    try:
        await wait_for(lambda: dispatcher.waiting == 1, "the second call claimed ahead")
        await call_in(store, second, CallState.DONE)
    finally:
        await dispatcher.stop()
    assert ran == ["run-0", "run-1"]
    assert counting.released == [second]
    call = await store.get_call(second)
    assert call is not None
    # Handed back without counting its first claim as an attempt.
    assert call.attempts == 1


async def test_stop_hands_back_the_calls_waiting_for_a_slot(store: Store) -> None:
    handlers = Handlers()
    ran: list[str] = []

    @handlers.on_any(name="stuck")
    async def stuck(event: RunEvent) -> None:
        ran.append(event.run_id)
        await asyncio.Event().wait()

    ids = await enqueue_runs(store, handlers, 3)
    dispatcher = make(store, handlers, concurrency=1, shutdown_timeout=0.01)
    await dispatcher.start()
    try:
        await wait_for(lambda: dispatcher.waiting == 2, "two calls claimed ahead")
    finally:
        await dispatcher.stop()
    assert ran == ["run-0"]
    for call_id in ids:
        call = await store.get_call(call_id)
        assert call is not None
        assert (call.state, call.lease_owner, call.attempts) == (CallState.PENDING, None, 0)


async def test_unknown_handler_name_fails_and_dead_letters(store: Store) -> None:
    result = await store.record(event(), handlers=["gone.plugin"])
    [call_id] = result.call_ids
    call = await dispatch_until(store, Handlers(), call_id, CallState.DEAD, max_attempts=2)
    assert call.last_error is not None
    assert "UnknownHandler" in call.last_error
    assert "gone.plugin" in call.last_error


async def test_a_crash_looping_call_is_dead_lettered_without_running(store: Store) -> None:
    handlers = Handlers()
    ran: list[str] = []

    @handlers.on_any(name="crashy")
    async def crashy(event: RunEvent) -> None:
        ran.append(event.run_id)

    [call_id] = await enqueue(store, handlers)
    # Three claims by processes that "died" holding a lease that is already over.
    for _ in range(3):
        [claimed] = await store.claim_calls("dead-process", limit=1, lease_seconds=0)
        assert claimed.id == call_id
    call = await dispatch_until(store, handlers, call_id, CallState.DEAD, max_attempts=3)
    assert ran == []
    assert call.last_error is not None
    assert "kept being claimed" in call.last_error


async def test_sweep_picks_up_calls_left_by_a_crashed_claimer(store: Store) -> None:
    handlers = Handlers()
    ran: list[str] = []

    @handlers.on_any(name="recovered")
    async def recovered(event: RunEvent) -> None:
        ran.append(event.run_id)

    [call_id] = await enqueue(store, handlers)
    await store.claim_calls("crashed", limit=1, lease_seconds=0)
    dispatcher = make(store, handlers)
    await dispatcher.start()
    try:
        call = await call_in(store, call_id, CallState.DONE)
    finally:
        await dispatcher.stop()
    assert ran == ["run-1"]
    assert call.lease_owner in (None, dispatcher.owner)


async def test_stop_releases_unfinished_calls_and_a_restart_runs_them(store: Store) -> None:
    handlers = Handlers()
    started = asyncio.Event()
    cancelled = asyncio.Event()
    block = True
    completed: list[str] = []

    @handlers.on_any(name="blocking")
    async def blocking(event: RunEvent) -> None:
        if block:
            started.set()
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                cancelled.set()
                raise
        completed.append(event.run_id)

    [call_id] = await enqueue(store, handlers)
    first = make(store, handlers, shutdown_timeout=0.01)
    await first.start()
    async with asyncio.timeout(30):
        await started.wait()
    await first.stop()
    assert cancelled.is_set()
    call = await store.get_call(call_id)
    assert call is not None
    assert call.state is CallState.PENDING
    assert call.attempts == 0  # the interrupted attempt does not count

    block = False
    second = make(store, handlers)
    await second.start()
    try:
        await call_in(store, call_id, CallState.DONE)
    finally:
        await second.stop()
    assert completed == ["run-1"]


@pytest.mark.parametrize(
    ("margin", "handler_timeout", "lease"),
    [
        (None, None, 5.0 + 30.0),  # the default margin
        (0.0, None, 5.0),
        (90.0, None, 95.0),
        (90.0, 200.0, 290.0),  # the longest timeout, a handler's own here
    ],
)
async def test_a_claimed_call_is_leased_for_the_longest_timeout_plus_the_margin(
    store: Store, margin: float | None, handler_timeout: float | None, lease: float
) -> None:
    handlers = Handlers()
    started = asyncio.Event()
    release = asyncio.Event()

    @handlers.on_any(name="held", timeout=handler_timeout)
    async def held(event: RunEvent) -> None:
        started.set()
        await release.wait()

    [call_id] = await enqueue(store, handlers)
    options: dict[str, object] = {"handler_timeout": 5.0}
    if margin is not None:
        options["lease_margin"] = margin
    dispatcher = make(store, handlers, **options)
    before = datetime.now(UTC)
    await dispatcher.start()
    try:
        async with asyncio.timeout(30):
            await started.wait()
        after = datetime.now(UTC)
        call = await store.get_call(call_id)
    finally:
        release.set()
        await dispatcher.stop()
    assert call is not None
    assert call.state is CallState.RUNNING
    assert call.lease_expires_at is not None
    # Claimed between `before` and `after`; the store keeps times to about a microsecond.
    slack = timedelta(milliseconds=1)
    expected = timedelta(seconds=lease)
    assert before + expected - slack <= call.lease_expires_at <= after + expected + slack


async def test_store_failures_do_not_kill_the_loop(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="listener.dispatch")
    store = await open_store(f"sqlite:///{tmp_path / 'gone.db'}")
    dispatcher = make(store, Handlers())
    await dispatcher.start()
    await store.close()  # every claim now raises StoreUnavailable

    def failed_twice() -> bool:
        return sum("claiming handler calls failed" in r.message for r in caplog.records) >= 2

    await wait_for(failed_twice, "two failed claims")
    assert dispatcher.running
    await dispatcher.stop()
    assert not dispatcher.running


class StoreInFront:
    """A real store, with the methods a subclass defines put in front of it."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def __getattr__(self, name: str) -> object:
        return getattr(self._store, name)


class FlakyCompletions(StoreInFront):
    """A real store whose first `complete_call`s fail as if the database were away."""

    def __init__(self, store: Store, failures: int) -> None:
        super().__init__(store)
        self.failures = failures

    async def complete_call(self, call_id: int, owner: str) -> bool:
        if self.failures > 0:
            self.failures -= 1
            raise StoreUnavailable("the store is away")
        return await self._store.complete_call(call_id, owner)


async def test_a_failed_completion_is_retried_while_the_lease_holds(store: Store) -> None:
    handlers = Handlers()
    runs: list[str] = []

    @handlers.on("succeeded", name="h")
    async def handler(event: RunEvent) -> None:
        runs.append(event.run_id)

    [call_id] = await enqueue(store, handlers)
    flaky = FlakyCompletions(store, failures=2)
    dispatcher = make(flaky, handlers)  # type: ignore[arg-type]
    await dispatcher.start()
    try:
        call = await call_in(store, call_id, CallState.DONE)
    finally:
        await dispatcher.stop()
    assert flaky.failures == 0
    # Completed on a later pass by the same claim: the handler ran only once.
    assert runs == ["run-1"]
    assert call.attempts == 1


class AwayUntilReclaimed(StoreInFront):
    """A real store that cannot mark calls done until it has handed one out a second
    time: the completion of a finished call outlives its lease, as in a long outage."""

    def __init__(self, store: Store) -> None:
        super().__init__(store)
        self.claims: Counter[int] = Counter()
        self.refused = 0

    async def claim_calls(
        self, owner: str, *, limit: int, lease_seconds: float
    ) -> list[HandlerCall]:
        calls = await self._store.claim_calls(owner, limit=limit, lease_seconds=lease_seconds)
        self.claims.update(call.id for call in calls)
        return calls

    async def complete_call(self, call_id: int, owner: str) -> bool:
        if self.claims[call_id] < 2:
            self.refused += 1
            raise StoreUnavailable("the store is away")
        return await self._store.complete_call(call_id, owner)


async def test_a_finished_call_claimed_again_after_its_lease_is_not_run_again(
    store: Store,
) -> None:
    handlers = Handlers()
    runs: list[str] = []

    @handlers.on("succeeded", name="h")
    async def handler(event: RunEvent) -> None:
        runs.append(event.run_id)

    [call_id] = await enqueue(store, handlers)
    away = AwayUntilReclaimed(store)
    dispatcher = make(away, handlers, lease_seconds=0.2)  # type: ignore[arg-type]
    await dispatcher.start()
    try:
        call = await call_in(store, call_id, CallState.DONE)
    finally:
        await dispatcher.stop()
    assert away.claims[call_id] == 2
    assert away.refused > 0
    # The second claim found the call finished here: marked done, not run again.
    assert runs == ["run-1"]
    assert call.attempts == 2


class SlowAfterTheFirstCall(StoreInFront):
    """A real store that turns slow once a handler has run: the claim that follows waits
    past the call's lease, and the completion longer still, as when both wait for a
    connection just after an outage."""

    def __init__(self, store: Store) -> None:
        super().__init__(store)
        self.slow = False
        self.claims: Counter[int] = Counter()

    async def claim_calls(
        self, owner: str, *, limit: int, lease_seconds: float
    ) -> list[HandlerCall]:
        if self.slow:
            await asyncio.sleep(0.3)
        calls = await self._store.claim_calls(owner, limit=limit, lease_seconds=lease_seconds)
        self.claims.update(call.id for call in calls)
        return calls

    async def complete_call(self, call_id: int, owner: str) -> bool:
        if self.slow:
            await asyncio.sleep(0.5)
            self.slow = False
        return await self._store.complete_call(call_id, owner)


async def test_a_claim_racing_a_slow_completion_does_not_run_the_call_again(
    store: Store,
) -> None:
    handlers = Handlers()
    runs: list[str] = []
    slow = SlowAfterTheFirstCall(store)

    @handlers.on("succeeded", name="h")
    async def handler(event: RunEvent) -> None:
        runs.append(event.run_id)
        slow.slow = True

    [call_id] = await enqueue(store, handlers)
    dispatcher = make(slow, handlers, lease_seconds=0.2)  # type: ignore[arg-type]
    await dispatcher.start()
    try:
        call = await call_in(store, call_id, CallState.DONE)
        await wait_for(lambda: not slow.slow, "the slow completion")
    finally:
        await dispatcher.stop()
    # Claimed again while its completion was being written, and not run twice.
    assert slow.claims[call_id] == 2
    assert runs == ["run-1"]
    assert call.state is CallState.DONE


async def test_prepare_hook_sees_every_event(store: Store) -> None:
    handlers = Handlers()
    results: list[object] = []

    async def fetcher(event: RunEvent) -> str:
        return f"result of {event.run_id}"

    @handlers.on_any(name="fetching")
    async def fetching(event: RunEvent) -> None:
        results.append(await event.fetch_result())

    def prepare(event: RunEvent) -> RunEvent:
        from dataclasses import replace

        return replace(event, result_fetcher=fetcher)

    [call_id] = await enqueue(store, handlers)
    await dispatch_until(store, handlers, call_id, CallState.DONE, prepare=prepare)
    assert results == ["result of run-1"]


async def test_start_twice_and_bad_settings(store: Store) -> None:
    dispatcher = make(store, Handlers())
    await dispatcher.start()
    with pytest.raises(RuntimeError):
        await dispatcher.start()
    await dispatcher.stop()
    await dispatcher.stop()  # idempotent
    for bad in (
        {"concurrency": 0},
        {"handler_timeout": 0},
        {"max_attempts": 0},
        {"lease_margin": -1},
    ):
        with pytest.raises(ValueError):  # noqa: PT011
            make(store, Handlers(), **bad)


def test_describe_error_names_the_type_and_truncates() -> None:
    assert describe_error(KeyError("k")) == "KeyError: 'k'"
    assert describe_error(RuntimeError()) == "RuntimeError"
    assert (
        describe_error(asyncio.InvalidStateError("x")) == "asyncio.exceptions.InvalidStateError: x"
    )
    assert len(describe_error(ValueError("y" * 10_000), limit=100)) == 100


# -- settings ----------------------------------------------------------------------------


def test_settings_defaults_are_the_services() -> None:
    settings = DispatchSettings()
    assert settings.enabled is True
    assert (settings.concurrency, settings.handler_timeout, settings.max_attempts) == (16, 60.0, 5)
    assert (settings.backoff_base, settings.backoff_cap, settings.sweep_interval) == (
        1.0,
        300.0,
        1.0,
    )
    assert settings.shutdown_timeout == 10.0
    assert settings.lease_margin == LEASE_MARGIN_SECONDS == 30.0
    assert settings.default_grace_seconds == 60.0
    # Zero is allowed where it means "none": no wait on stop, no lease margin, no grace.
    DispatchSettings(shutdown_timeout=0, lease_margin=0, default_grace_seconds=0)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"enabled": 1}, "enabled must be true or false, got 1"),
        ({"concurrency": 0}, "concurrency must be at least 1, got 0"),
        ({"concurrency": 2.0}, "concurrency must be a whole number, got 2.0"),
        ({"handler_timeout": 0}, "handler_timeout must be positive, got 0"),
        ({"handler_timeout": float("nan")}, "handler_timeout must be positive, got nan"),
        ({"handler_timeout": "60"}, "handler_timeout must be a number, got '60'"),
        ({"max_attempts": 0}, "max_attempts must be at least 1, got 0"),
        ({"max_attempts": True}, "max_attempts must be a whole number, got True"),
        ({"sweep_interval": -1}, "sweep_interval must be positive, got -1"),
        ({"backoff_base": 0}, "backoff_base must be positive, got 0"),
        ({"backoff_cap": 0}, "backoff_cap must be positive, got 0"),
        (
            {"backoff_base": 10, "backoff_cap": 5},
            "backoff_cap must be at least backoff_base (10), got 5",
        ),
        ({"shutdown_timeout": -0.1}, "shutdown_timeout must be at least 0, got -0.1"),
        ({"lease_margin": -1}, "lease_margin must be at least 0, got -1"),
        ({"default_grace_seconds": -1}, "default_grace_seconds must be at least 0, got -1"),
    ],
)
def test_settings_are_checked_when_made(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        DispatchSettings(**changes)


def test_settings_are_frozen_and_shared() -> None:
    settings = DispatchSettings(concurrency=2)
    with pytest.raises(AttributeError):
        settings.concurrency = 3  # type: ignore[misc]
    assert dataclasses.replace(settings, enabled=False) == DispatchSettings(
        enabled=False, concurrency=2
    )


async def test_the_dispatcher_runs_by_its_settings(store: Store) -> None:
    settings = DispatchSettings(concurrency=3, handler_timeout=7.0, lease_margin=1.5)
    dispatcher = Dispatcher(store, Handlers(), settings)
    assert dispatcher.settings is settings
    assert dispatcher.thread_workers == 3  # one thread per concurrent call by default
