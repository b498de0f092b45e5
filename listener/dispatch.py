"""The dispatcher: claims pending handler calls from the store and runs them.

Calls are claimed with a lease, run on a bounded pool (async handlers as tasks, sync ones
on a bounded thread pool), then completed, retried with backoff, or dead-lettered. While
calls take no longer than a claim's round trip, a few calls per slot are claimed ahead
of a free slot, so a slot that frees starts its next call without waiting for a claim to
come back from the store (under load that wait, not the handlers, set the pace). A
call is at-least-once: a crash between a handler's return and `complete_call` runs it
again once the lease expires, so handlers should be idempotent on `event.key`. Finished
calls are marked done together with the next claim, in one store transaction.

Sync handlers cannot be interrupted: when one overruns its timeout the call counts as
failed and is retried, but its thread keeps running (and holds a pool thread) until the
function returns by itself; Python also waits for it before the process exits. Give sync
handlers their own timeouts on whatever they block on.

A stored call naming a handler this process does not have (a plugin removed, or replicas
with different plugins) fails like an error and ends in the dead-letter list, from where
it can be replayed once the handler is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import inspect
import logging
import os
import random
import socket
import uuid
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

from listener import backoff, run_end, tracing
from listener._checks import at_least, flag, positive, whole
from listener.errors import HandlerFailed, UnknownHandler
from listener.events import Origin, RunEvent
from listener.metrics import Metrics
from listener.redaction import log_text
from listener.registry import Handler, Handlers
from listener.store.base import ON_END_HANDLER_PREFIX, HandlerCall, Store

__all__ = [
    "LEASE_MARGIN_SECONDS",
    "DispatchSettings",
    "Dispatcher",
    "UnknownHandler",
    "default_owner",
    "describe_error",
]

log = logging.getLogger("listener.dispatch")
# A handler's error in a log line: enough to read, never a wall of text.
_ERROR_LOG_LIMIT = 500
_RETRY_WAKE_MARGIN = 0.005

MAX_ERROR_CHARS = 2000
# Calls claimed ahead of a free slot, per slot (see the module docstring): a claim then
# serves this many rounds of quick calls.
CLAIM_AHEAD_PER_SLOT = 3
# Calls are quick, and claimed ahead, while an average call takes no longer than an
# average claim's round trip (a slot would otherwise wait longer for its next call than
# it runs one; with longer calls, claiming ahead gains little and would keep calls from
# other replicas' free slots), and while a waiting call's expected wait (one average call
# per call ahead of it in its slot) is at most this share of the time it may wait and
# still start with its whole timeout inside its lease.
CLAIM_AHEAD_WAIT_SHARE = 0.25
# Weight of the latest sample in the running averages of call and claim durations.
_DURATION_WEIGHT = 0.2
# Added to the longest handler timeout to get the lease, so a lease never ends while its
# call may still be running here (the default of `DispatchSettings.lease_margin`).
LEASE_MARGIN_SECONDS = 30.0


@dataclass(frozen=True, slots=True)
class DispatchSettings:
    """How a listener runs handler calls; the defaults are the service's defaults.

    `enabled` runs handlers in this process (False: a receiver only, another replica
    dispatches). At most `concurrency` calls run at once, each limited to
    `handler_timeout` seconds (per handler with `on(..., timeout=)`); a failed call is
    retried with jittered exponential backoff from `backoff_base` up to `backoff_cap`
    seconds and dead-lettered after `max_attempts`. A sweep every `sweep_interval`
    seconds picks up retries coming due and calls left by other processes. A claimed call
    is leased for the longest handler timeout plus `lease_margin` seconds: a call in
    flight when its process dies runs again elsewhere once that has passed. On stop,
    running calls get `shutdown_timeout` seconds to finish before they are handed back.
    `default_grace_seconds` is the grace of a run first heard of by webhook (one no
    submission registered here).
    """

    enabled: bool = True
    concurrency: int = 16
    handler_timeout: float = 60.0
    max_attempts: int = 5
    sweep_interval: float = 1.0
    backoff_base: float = 1.0
    backoff_cap: float = 300.0
    shutdown_timeout: float = 10.0
    lease_margin: float = LEASE_MARGIN_SECONDS
    default_grace_seconds: float = 60.0

    def __post_init__(self) -> None:
        flag("enabled", self.enabled)
        whole("concurrency", self.concurrency)
        positive("handler_timeout", self.handler_timeout)
        whole("max_attempts", self.max_attempts)
        positive("sweep_interval", self.sweep_interval)
        positive("backoff_base", self.backoff_base)
        positive("backoff_cap", self.backoff_cap)
        if self.backoff_cap < self.backoff_base:
            raise ValueError(
                f"backoff_cap must be at least backoff_base ({self.backoff_base:g}), "
                f"got {self.backoff_cap!r}"
            )
        at_least("shutdown_timeout", self.shutdown_timeout, 0)
        at_least("lease_margin", self.lease_margin, 0)
        at_least("default_grace_seconds", self.default_grace_seconds, 0)


def _averaged(average: float, sample: float) -> float:
    """The running average `average` moved toward `sample` by _DURATION_WEIGHT."""
    return average + (sample - average) * _DURATION_WEIGHT


def default_owner() -> str:
    """A claimer id unique to this process: host, pid and a random suffix."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def describe_error(exc: BaseException, limit: int = MAX_ERROR_CHARS) -> str:
    """`Type: message`, truncated, as kept in the store's `last_error`."""
    kind = type(exc)
    name = (
        kind.__qualname__
        if kind.__module__ == "builtins"
        else f"{kind.__module__}.{kind.__qualname__}"
    )
    text = f"{name}: {exc}" if str(exc) else name
    return text if len(text) <= limit else text[: limit - 3] + "..."


@dataclass(frozen=True, slots=True)
class _Ended:
    """How one attempt of a call ended, for its trace: the outcome as the metrics count
    it, the error kept in the store and the exception raised, and whether it was
    dead-lettered."""

    outcome: str
    error: str | None = None
    exception: BaseException | None = None
    dead: bool = False


class Dispatcher:
    """Runs handler calls from `store` with the functions registered in `handlers`.

    `wake()` makes it claim within `claim_delay` seconds (the receiver calls it after a
    delivery enqueued calls; the short delay turns the wakes of a burst into one claim);
    a sweep every `settings.sweep_interval` seconds picks up the rest: retries coming
    due, calls left by a crashed process or enqueued by another replica. At most
    `settings.concurrency` calls run at once; sync handlers share `thread_workers`
    threads (default: as many). A call is leased for `lease_seconds` (default: the
    longest handler timeout plus `settings.lease_margin`), so no other claimer takes it
    while it may still be running here; a call in flight when this process dies waits
    that long before another claimer runs it again. While calls are quick (see
    CLAIM_AHEAD_WAIT_SHARE), up to CLAIM_AHEAD_PER_SLOT x `concurrency` more are
    claimed ahead and wait here for a slot (the store shows them running, from their
    claim); one that waited so long that its handler's timeout no longer fits in its
    lease is handed back instead of run, and stop() hands back every waiting call.
    `settings.enabled` is the owning
    listener's business: a dispatcher made is a dispatcher that runs.
    """

    def __init__(
        self,
        store: Store,
        handlers: Handlers,
        settings: DispatchSettings = DispatchSettings(),
        *,
        owner: str | None = None,
        thread_workers: int | None = None,
        lease_seconds: float | None = None,
        claim_delay: float = 0.005,
        metrics: Metrics | None = None,
        prepare: Callable[[RunEvent], RunEvent] | None = None,
        rng: random.Random | None = None,
        traces: tracing.RunTraces | None = None,
    ) -> None:
        self.store = store
        self.handlers = handlers
        self.settings = settings
        self.owner = owner or default_owner()
        self.thread_workers = thread_workers or settings.concurrency
        self.lease_seconds = lease_seconds
        self.claim_delay = claim_delay
        self.metrics = metrics
        self.prepare = prepare
        # The runs' trace contexts, for tracing each call in its run's trace.
        self.traces = traces if traces is not None else tracing.RunTraces()
        self._rng = rng or random.Random()
        self._wake = asyncio.Event()
        self._stopping = False
        self._loop_task: asyncio.Task[None] | None = None
        self._inflight: dict[asyncio.Task[None], HandlerCall] = {}
        # Calls claimed ahead of a free slot, oldest first, with when each was claimed
        # (event loop time); and those to hand back with the next write-back.
        self._waiting: deque[tuple[HandlerCall, float]] = deque()
        self._handing_back: list[HandlerCall] = []
        # Running averages of how long a call and a claim take, in seconds (see
        # CLAIM_AHEAD_WAIT_SHARE).
        self._call_seconds = 0.0
        self._claim_seconds = 0.0
        # Calls whose handler returned, to be marked done with the next claim.
        self._completing: list[HandlerCall] = []
        # Ids of the calls whose handler returned here and that are not yet marked done
        # (queued, being written, or failed to write), with the number of failed writes:
        # such a call claimed again is not run again.
        self._unrecorded: dict[int, int] = {}
        self._executor: ThreadPoolExecutor | None = None
        # Wakes at each retry's due time, so retries keep their schedule between sweeps.
        self._retry_timers: set[asyncio.TimerHandle] = set()

    @property
    def running(self) -> bool:
        return self._loop_task is not None and not self._loop_task.done()

    @property
    def in_flight(self) -> int:
        return len(self._inflight)

    @property
    def waiting(self) -> int:
        """Calls claimed ahead, waiting here for a slot."""
        return len(self._waiting)

    def wake(self) -> None:
        """Claim soon rather than at the next sweep. Safe to call at any rate."""
        self._wake.set()

    async def start(self) -> None:
        if self._loop_task is not None:
            raise RuntimeError("the dispatcher is already started")
        self._stopping = False
        self._executor = ThreadPoolExecutor(
            max_workers=self.thread_workers, thread_name_prefix="listener-handler"
        )
        self._loop_task = asyncio.create_task(self._loop(), name="listener-dispatcher")

    async def stop(self) -> None:
        """Stop claiming, wait up to `shutdown_timeout` for running calls, release the rest."""
        if self._loop_task is None:
            return
        self._stopping = True
        self._wake.set()
        await self._loop_task
        self._loop_task = None
        if self._inflight:
            _, pending = await asyncio.wait(
                list(self._inflight), timeout=self.settings.shutdown_timeout
            )
            for task in pending:
                task.cancel()
            # Each cancelled call releases itself back to the store before finishing.
            await asyncio.gather(*pending, return_exceptions=True)
        self._handing_back.extend(call for call, _ in self._waiting)
        self._waiting.clear()
        await self._write_back(0)
        for timer in self._retry_timers:
            timer.cancel()
        self._retry_timers.clear()
        if self._executor is not None:
            # Threads still inside a sync handler cannot be stopped; do not wait for them.
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None

    # -- the claim loop ------------------------------------------------------------------

    def _longest_timeout(self) -> float:
        return max([self.settings.handler_timeout, *(h.timeout or 0.0 for h in self.handlers)])

    def _lease(self) -> float:
        if self.lease_seconds is not None:
            return self.lease_seconds
        return self._longest_timeout() + self.settings.lease_margin

    def _timeout_of(self, call: HandlerCall) -> float:
        handler = self.handlers.get(call.handler)
        return (handler.timeout if handler else None) or self.settings.handler_timeout

    def _claimable(self) -> int:
        """How many calls the next claim may take: the free slots, plus those claimed
        ahead while calls are quick."""
        slots = self.settings.concurrency
        # The longest a claimed call may wait and still run its longest timeout in lease.
        may_wait = self._lease() - self._longest_timeout()
        expected_wait = self._call_seconds * CLAIM_AHEAD_PER_SLOT
        quick = self._call_seconds <= self._claim_seconds
        if quick and may_wait > 0 and expected_wait <= may_wait * CLAIM_AHEAD_WAIT_SHARE:
            slots += self.settings.concurrency * CLAIM_AHEAD_PER_SLOT
        return slots - len(self._inflight) - len(self._waiting)

    async def _loop(self) -> None:
        while not self._stopping:
            self._wake.clear()
            await self._write_back(self._claimable())
            if self._stopping:
                break
            # Woken by a new delivery, a finished call (a slot is free, and the next call
            # of that run and handler may now be due) or stop(); else sweep on a timer.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.settings.sweep_interval):
                    await self._wake.wait()
            if self._wake.is_set() and self.claim_delay > 0 and not self._stopping:
                # Let the wakes of a burst gather into one claim: every claim is a write
                # the receiver's commits would otherwise queue behind.
                await asyncio.sleep(self.claim_delay)

    async def _write_back(self, free: int) -> None:
        """Mark done the calls that finished since the last pass, and claim up to `free`
        more. Both are handed to the store in the same pass of the event loop, so a store
        that commits writes in groups (SQLite) makes them one transaction; the completions
        come first, so a run's next call for the same handler is claimable at once."""
        finished, self._completing = self._completing, []
        writes = [self._complete(call) for call in finished]
        handing_back, self._handing_back = self._handing_back, []
        writes += [self._release(call) for call in handing_back]
        if free > 0:
            writes.append(self._claim(free))
        if len(writes) == 1:
            await writes[0]
        elif writes:
            await asyncio.gather(*writes)

    async def _complete(self, call: HandlerCall) -> None:
        try:
            await self.store.complete_call(call.id, self.owner)
        except Exception as exc:
            if self._stopping:
                # Its lease expires and some claimer runs it again: at-least-once.
                self._unrecorded.pop(call.id, None)
                log.warning("completing call %d failed: %s", call.id, type(exc).__name__)
                return
            # Keep trying, past the lease too: the store accepts the completion while
            # this owner still holds the call, and this dispatcher does not run it again
            # when its own claim returns it (see _claim). Only another claimer can.
            failures = self._unrecorded.get(call.id, 0) + 1
            self._unrecorded[call.id] = failures
            self._completing.append(call)
            if failures == 1:
                log.warning(
                    "completing call %d failed (%s); trying again", call.id, type(exc).__name__
                )
            return
        # Done, or (False) taken over by another claimer after the lease: either way
        # nothing more to do here.
        self._unrecorded.pop(call.id, None)

    async def _claim(self, limit: int) -> None:
        # Before the claim is sent: its leases run from about then, not from its answer.
        asked_at = asyncio.get_running_loop().time()
        try:
            calls = await self.store.claim_calls(
                self.owner, limit=limit, lease_seconds=self._lease()
            )
        except Exception as exc:
            # The store may be down for a while; the next sweep tries again.
            log.warning("claiming handler calls failed: %s", type(exc).__name__)
            return
        taken = asyncio.get_running_loop().time() - asked_at
        self._claim_seconds = _averaged(self._claim_seconds, taken)
        running = {held.id for held in self._inflight.values()} if calls else set()
        waiting = {held.id for held, _ in self._waiting} if calls else set()
        for call in calls:
            if call.id in self._unrecorded:
                # It ran here already and its completion is not written yet: the claim came
                # after its lease ran out while the store was slow or away. Mark it done
                # (this owner holds it again) instead of running it twice.
                if all(pending.id != call.id for pending in self._completing):
                    self._completing.append(call)
                continue
            if call.id in running:
                # Still running here past its lease (its outcome waits for the store):
                # the run under way writes it, as this owner still holds the call.
                continue
            if call.id in waiting:
                # Waited here past its lease and claimed again: wait on the new lease.
                self._waiting = deque(
                    (call, asked_at) if held.id == call.id else (held, at)
                    for held, at in self._waiting
                )
                continue
            if self._stopping:
                await self._release(call)
                continue
            self._waiting.append((call, asked_at))
        self._start_waiting(fresh=asked_at)

    def _start_waiting(self, fresh: float | None = None) -> None:
        """Start waiting calls while there are free slots; hand back, unrun, a call that
        waited so long that its timeout no longer fits inside its lease. Calls of the
        claim asked at `fresh` have not waited for a slot: they start as claimed."""
        if self._stopping:
            return
        now = asyncio.get_running_loop().time()
        lease = self._lease()
        while self._waiting and len(self._inflight) < self.settings.concurrency:
            call, claimed_at = self._waiting.popleft()
            if claimed_at != fresh and claimed_at + lease - now < self._timeout_of(call):
                self._handing_back.append(call)
                self._wake.set()
                continue
            task = asyncio.create_task(self._run(call), name=f"listener-call-{call.id}")
            self._inflight[task] = call
            task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._inflight.pop(task, None)
        if not task.cancelled() and task.exception() is not None:
            log.error("handler call task crashed: %r", task.exception())
        self._start_waiting()
        self._wake.set()

    # -- one call ------------------------------------------------------------------------

    def _event_for(self, call: HandlerCall) -> RunEvent:
        event = call.event
        if call.replays > 0 and event.origin is not Origin.REPLAY:
            event = replace(event, origin=Origin.REPLAY)
        if self.prepare is not None:
            event = self.prepare(event)
        return event

    async def _invoke(self, handler: Handler, event: RunEvent) -> None:
        if handler.is_async:
            await handler.func(event)
            return
        loop = asyncio.get_running_loop()
        context = contextvars.copy_context()
        result = await loop.run_in_executor(self._executor, context.run, handler.func, event)
        # A plain function may still hand back an awaitable (a lambda around a coroutine).
        if inspect.isawaitable(result):
            await result

    async def _run_end_handler(self, call: HandlerCall) -> Handler:
        """The handler of a run's own `on_end` call, with the context stored with the run."""
        if not call.handler.startswith(ON_END_HANDLER_PREFIX):
            raise UnknownHandler(f"no handler named {call.handler!r} is registered")
        run = await self.store.get_run(call.run_id)
        return run_end.handler_for(call.handler, run.on_end_context if run else {})

    async def _run(self, call: HandlerCall) -> None:
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            await self._traced_attempt(call)
        finally:
            self._call_seconds = _averaged(self._call_seconds, loop.time() - started)

    async def _traced_attempt(self, call: HandlerCall) -> None:
        tracer = tracing.tracer()
        if tracer is None:
            await self._attempt(call)
            return
        parent = await self.traces.context(self.store, call.run_id)
        with tracing.call_span(tracer, parent, call) as span:
            try:
                ended = await self._attempt(call)
            except asyncio.CancelledError:
                tracing.ended_call(span, "released")
                raise
            tracing.ended_call(
                span, ended.outcome, error=ended.error, exception=ended.exception, dead=ended.dead
            )

    async def _attempt(self, call: HandlerCall) -> _Ended:
        if call.attempts > self.settings.max_attempts:
            # Claimed more often than allowed without ever finishing: the process running
            # it keeps dying. Stop the loop here rather than run it again.
            error = (
                f"gave up after {call.attempts - 1} attempts: the call kept being claimed "
                "without finishing (did the process crash while running it?)"
            )
            await self._fail(call, error, outcome="abandoned", seconds=None, dead=True)
            return _Ended("abandoned", error, dead=True)
        handler = self.handlers.get(call.handler)
        timeout = self._timeout_of(call)
        loop = asyncio.get_running_loop()
        started = loop.time()
        deadline = asyncio.timeout(timeout)
        try:
            if handler is None:
                handler = await self._run_end_handler(call)
            event = self._event_for(call)
            async with deadline:
                await self._invoke(handler, event)
        except asyncio.CancelledError:
            # Only stop() cancels calls: hand this one back without counting the attempt.
            await self._release(call)
            raise
        except TimeoutError as exc:
            seconds = loop.time() - started
            if deadline.expired():
                error = f"TimeoutError: the handler did not finish within {timeout:g} s"
                dead = await self._fail(call, error, outcome="timeout", seconds=seconds)
                return _Ended("timeout", error, exc, dead)
            # The handler itself raised TimeoutError (its own downstream timed out).
            error = describe_error(exc)
            dead = await self._fail(call, error, outcome="error", seconds=seconds)
            return _Ended("error", error, exc, dead)
        except (Exception, SystemExit) as exc:
            # SystemExit too: a handler calling sys.exit() must not stop the service.
            hopeless = isinstance(exc, HandlerFailed) and not exc.retryable
            error = describe_error(exc)
            dead = await self._fail(
                call, error, outcome="error", seconds=loop.time() - started, dead=hopeless
            )
            log.debug("handler %s raised", call.handler, exc_info=exc)
            return _Ended("error", error, exc, dead)
        else:
            seconds = loop.time() - started
            if self.metrics is not None:
                self.metrics.handler_call(call.handler, "ok", seconds)
            # Marked done by the loop, with the next claim; the slot is free already. A
            # crash before that runs the call again once its lease expires.
            self._unrecorded[call.id] = 0
            self._completing.append(call)
            return _Ended("ok")

    def _wake_at_retry(self, wait: float) -> None:
        timers = self._retry_timers

        def due() -> None:
            timers.discard(timer)
            self.wake()

        # A moment past the due time, so the claim's clock finds the call due.
        timer = asyncio.get_running_loop().call_later(wait + _RETRY_WAKE_MARGIN, due)
        timers.add(timer)

    async def _fail(
        self,
        call: HandlerCall,
        error: str,
        *,
        outcome: str,
        seconds: float | None,
        dead: bool = False,
    ) -> bool:
        """Record a failed attempt: retried later, or dead-lettered (then True)."""
        dead = dead or call.attempts >= self.settings.max_attempts
        retry_at: datetime | None = None
        if not dead:
            wait = backoff.delay(
                call.attempts, self.settings.backoff_base, self.settings.backoff_cap, self._rng
            )
            retry_at = datetime.now(UTC) + timedelta(seconds=wait)
            if wait < self.settings.sweep_interval:
                self._wake_at_retry(wait)
        if self.metrics is not None:
            self.metrics.handler_call(call.handler, outcome, seconds)
            if dead:
                self.metrics.dead_letter(call.handler)
        if dead:
            log.warning(
                "handler %s failed on run %s (attempt %d of %d); dead-lettered: %s",
                call.handler,
                log_text(call.run_id),
                call.attempts,
                self.settings.max_attempts,
                log_text(error, _ERROR_LOG_LIMIT),
            )
        else:
            log.info(
                "handler %s failed on run %s (attempt %d of %d); retrying: %s",
                call.handler,
                log_text(call.run_id),
                call.attempts,
                self.settings.max_attempts,
                log_text(error, _ERROR_LOG_LIMIT),
            )
        try:
            await self.store.fail_call(call.id, self.owner, error=error, retry_at=retry_at)
        except Exception as exc:
            log.warning("recording failure of call %d failed: %s", call.id, type(exc).__name__)
        return dead

    async def _release(self, call: HandlerCall) -> None:
        try:
            await self.store.release_call(call.id, self.owner)
        except Exception as exc:
            log.warning("releasing call %d failed: %s", call.id, type(exc).__name__)
