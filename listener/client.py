"""Submit runs, wait for them, cancel them, and track runs that happened elsewhere.

`RunClient` is what `Listener.submit`, `wait`, `run`, `cancel` and `track` delegate to.
Waiting is resolved the moment a terminal transition is recorded: at once for events
recorded in this process or announced by the store (PostgreSQL tells a started
`Listener` of other replicas' commits), and within `poll_interval` for those recorded by
another process otherwise. With tracing on (`listener.tracing`), a submission and a
track are spans whose context is kept with the run, for everything done for it later.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from listener import run_end, tracing
from listener.errors import RunNotFound, WaitTimeout
from listener.events import Origin, RunEvent, RunStatus, next_status
from listener.providers.base import Provider, RunLinks, Submission
from listener.run_end import OnEndFunc
from listener.store.base import NewRun, RecordResult, RunRecord, Store

__all__ = ["CallbackPlan", "RunClient", "RunHandle", "RunNotFound", "WaitTimeout"]

Recorder = Callable[[RunEvent], Awaitable[RecordResult]]


@dataclass(frozen=True, slots=True)
class RunHandle:
    run_id: str
    provider: str
    application: str
    submitted_at: datetime
    callback_url: str | None


@dataclass(frozen=True, slots=True)
class CallbackPlan:
    """Where a provider's platform should report a run, and what the store keeps of it.

    `first_poll` is how soon to check a run whose webhooks nothing here can receive, in
    seconds, where that is sooner than the client's own `first_poll`; None keeps the
    client's.
    """

    url: str | None
    details: Mapping[str, Any]
    first_poll: float | None = None


# Given a provider name and a fresh nonce, the callback to hand that provider's platform.
CallbackPlanner = Callable[[str, str], CallbackPlan]


def _no_callback(provider: str, nonce: str) -> CallbackPlan:
    return CallbackPlan(None, {})


class RunClient:
    """Run submission and waiting over one store and a set of providers.

    `grace` is how long silence is trusted once a run's webhooks are known to flow;
    `first_poll` is how soon after submission the poller checks a run the platform has
    said nothing about (by default the grace), unless the callback plan asks for sooner
    because no webhook can arrive. Both are seconds; `deadline` too, and a run still
    unfinished at its deadline is declared `expired`.
    """

    def __init__(
        self,
        store: Callable[[], Store],
        providers: Mapping[str, Provider],
        record: Recorder,
        *,
        callbacks: CallbackPlanner = _no_callback,
        grace: float = 60.0,
        first_poll: float | None = None,
        deadline: float | None = None,
        poll_interval: float = 0.25,
        submitted: Callable[[RunHandle], None] | None = None,
        traces: tracing.RunTraces | None = None,
    ) -> None:
        self._store = store
        # Where the trace context of each run recorded here is remembered.
        self.traces = traces if traces is not None else tracing.RunTraces()
        # Told of each run this client submits, once it is recorded.
        self._submitted = submitted
        self.providers = providers
        self._record = record
        self._callbacks = callbacks
        self.grace = grace
        self.first_poll = first_poll
        self.deadline = deadline
        self.poll_interval = poll_interval
        self._waiters: dict[str, list[asyncio.Event]] = defaultdict(list)

    def provider(self, name: str) -> Provider:
        try:
            return self.providers[name]
        except KeyError:
            known = ", ".join(sorted(self.providers)) or "none"
            raise LookupError(f"no provider {name!r} configured; configured: {known}") from None

    # -- notifications -------------------------------------------------------------------

    def notify(self, event: RunEvent, result: RecordResult) -> None:
        """Told of every event recorded in this process; wakes waiters on a final status."""
        if result.status.is_terminal:
            self.notify_ended(event.run_id)

    def notify_ended(self, run_id: str) -> None:
        """Told that `run_id` ended (here, or in another process sharing the store): its
        waiters read it again at once."""
        for waiter in self._waiters.pop(run_id, ()):
            waiter.set()

    # -- submit, wait, run ---------------------------------------------------------------

    async def submit(
        self,
        provider: str,
        application: str,
        input: Any,
        *,
        options: Mapping[str, str] | None = None,
        name: str | None = None,
        description: str | None = None,
        grace: float | None = None,
        first_poll: float | None = None,
        deadline: float | None = None,
        metadata: Mapping[str, Any] | None = None,
        extra: Mapping[str, Any] | None = None,
        on_end: str | OnEndFunc | None = None,
        context: Mapping[str, Any] | None = None,
    ) -> RunHandle:
        """Start a run on `provider` and record it, so its end is learned and routed.

        `on_end` ("package.module:function", or such a function) is called once when the
        run ends, with the final event and `context` (JSON), by whichever process runs
        the dispatcher on this store: see `listener.run_end`.
        """
        target = None if on_end is None else run_end.target_of(on_end)
        if context is not None and target is None:
            raise ValueError("context is only kept for an on_end function")
        traced = {"listener.provider": provider, "listener.application": application}
        with tracing.span("listener.submit", traced) as span:
            handle = await self._submit(
                provider,
                application,
                Submission(
                    application=application,
                    input=input,
                    options=dict(options or {}),
                    name=name,
                    description=description,
                    extra=dict(extra or {}),
                ),
                grace=grace,
                first_poll=first_poll,
                deadline=deadline,
                metadata=metadata,
                on_end=target,
                context=context,
                traced=span is not None,
            )
            if span is not None:
                span.set_attribute("listener.run_id", handle.run_id)
        return handle

    async def _submit(
        self,
        provider: str,
        application: str,
        submission: Submission,
        *,
        grace: float | None,
        first_poll: float | None,
        deadline: float | None,
        metadata: Mapping[str, Any] | None,
        on_end: str | None,
        context: Mapping[str, Any] | None,
        traced: bool,
    ) -> RunHandle:
        platform = self.provider(provider)
        plan = self._callbacks(provider, secrets.token_hex(8))
        run_id = await platform.submit(submission, callback_url=plan.url)
        if isinstance(platform, RunLinks):
            metadata = {**platform.run_links(submission, run_id), **(metadata or {})}
        submitted_at = datetime.now(UTC)
        grace = self.grace if grace is None else grace
        if first_poll is None:
            first_poll = self.first_poll
            if plan.first_poll is not None:
                # None means "the grace" (see NewRun), so compare against that.
                default = grace if first_poll is None else first_poll
                first_poll = min(plan.first_poll, default)
        deadline = deadline if deadline is not None else self.deadline
        await self._register(
            NewRun(
                run_id=run_id,
                provider=provider,
                application=application,
                submitted_at=submitted_at,
                grace_seconds=grace,
                first_poll_seconds=first_poll,
                deadline=None if deadline is None else submitted_at + timedelta(seconds=deadline),
                callback=plan.details,
                metadata=dict(metadata or {}),
                on_end=on_end,
                on_end_context=dict(context or {}),
            ),
            traced,
        )
        handle = RunHandle(run_id, provider, application, submitted_at, plan.url)
        if self._submitted is not None:
            self._submitted(handle)
        return handle

    async def wait(self, run_id: str, *, timeout: float | None = None) -> RunEvent:
        """The event that finished the run, as soon as one is recorded."""
        loop = asyncio.get_running_loop()
        give_up = None if timeout is None else loop.time() + timeout
        while True:
            waiter = asyncio.Event()
            # Registered before the read, so a transition recorded in between is not missed.
            self._waiters[run_id].append(waiter)
            try:
                run = await self._store().get_run(run_id)
                if run is not None and run.status.is_terminal:
                    return await self._final_event(run)
                pause = self.poll_interval
                if give_up is not None:
                    remaining = give_up - loop.time()
                    if remaining <= 0:
                        raise WaitTimeout(f"run {run_id!r} did not finish within {timeout} s")
                    pause = min(pause, remaining)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(waiter.wait(), timeout=pause)
            finally:
                waiters = self._waiters.get(run_id)
                if waiters is not None and waiter in waiters:
                    waiters.remove(waiter)
                    if not waiters:
                        del self._waiters[run_id]

    async def wait_all(
        self, run_ids: Iterable[str], *, timeout: float | None = None
    ) -> list[RunEvent]:
        """The final events of all `run_ids`, in their order, once every one has ended;
        `WaitTimeout` if any has not within `timeout` seconds in all."""
        return await asyncio.gather(*(self.wait(r, timeout=timeout) for r in run_ids))

    async def as_completed(
        self, run_ids: Iterable[str], *, timeout: float | None = None
    ) -> AsyncIterator[RunEvent]:
        """The final event of each of `run_ids` as it ends, first ended first; raises
        `WaitTimeout` for the first still going after `timeout` seconds in all."""
        waits = [asyncio.ensure_future(self.wait(r, timeout=timeout)) for r in run_ids]
        try:
            for next_done in asyncio.as_completed(waits):
                yield await next_done
        finally:
            # Stopped early (a break, an error): the remaining waits end with it.
            for wait in waits:
                wait.cancel()
            await asyncio.gather(*waits, return_exceptions=True)

    async def run(
        self,
        provider: str,
        application: str,
        input: Any,
        *,
        timeout: float | None = None,
        **submit_options: Any,
    ) -> RunEvent:
        """Submit and wait: the webhook-driven counterpart of "new run with result"."""
        handle = await self.submit(provider, application, input, **submit_options)
        return await self.wait(handle.run_id, timeout=timeout)

    async def _final_event(self, run: RunRecord) -> RunEvent:
        page = await self._store().list_events(run_id=run.run_id, status=[run.status], limit=1)
        if page.items:
            return page.items[0]
        # Terminal without an event of that status: only a store edited by hand does this.
        return RunEvent(
            delivery_id=f"state:{run.run_id}",
            provider=run.provider,
            application=run.application,
            run_id=run.run_id,
            status=run.status,
            occurred_at=run.updated_at,
            origin=Origin.POLL,
        )

    # -- cancel, track -------------------------------------------------------------------

    async def cancel(self, run_id: str) -> RunStatus:
        """Ask the platform to cancel; record what it then reports. Returns the status."""
        run = await self._get(run_id)
        if run.status.is_terminal:
            return run.status
        platform = self.provider(run.provider)
        await platform.cancel(run.application, run_id)
        state = await platform.status(run.application, run_id)
        if next_status(run.status, state.status) is None:
            return run.status
        result = await self._record(
            RunEvent.from_poll(
                run.provider, run.application, run_id, state.status, payload=state.raw
            )
        )
        return result.status

    async def track(
        self,
        provider: str,
        application: str,
        run_id: str,
        status: RunStatus | str | None = None,
        *,
        output: Any = None,
        error: str | None = None,
        duration: float | None = None,
        occurred_at: datetime | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> RecordResult:
        """Record a run that happened elsewhere and route it to handlers (origin `track`).

        With no `status`, the configured `provider` is asked for the run's state (and, for
        a finished run, its error): a run still going is recorded as it is and watched
        like a submitted one, so its handlers hear of its end.
        """
        traced = {
            "listener.provider": provider,
            "listener.application": application,
            "listener.run_id": run_id,
        }
        with tracing.span("listener.track", traced) as span:
            return await self._track(
                provider,
                application,
                run_id,
                status,
                output=output,
                error=error,
                duration=duration,
                occurred_at=occurred_at,
                metadata=metadata,
                traced=span is not None,
            )

    async def _track(
        self,
        provider: str,
        application: str,
        run_id: str,
        status: RunStatus | str | None,
        *,
        output: Any,
        error: str | None,
        duration: float | None,
        occurred_at: datetime | None,
        metadata: Mapping[str, Any] | None,
        traced: bool,
    ) -> RecordResult:
        if status is None:
            state = await self.provider(provider).status(application, run_id)
            status, application = state.status, application or state.application
            if error is None and isinstance(state.raw.get("error"), str):
                error = state.raw["error"]
        status = RunStatus(status)
        payload: dict[str, Any] = {"status": status.value}
        if output is not None:
            payload["output"] = output
        if error is not None:
            payload["error"] = error
        if duration is not None:
            payload["duration_ms"] = round(duration * 1000)
        await self._register(
            NewRun(
                run_id=run_id,
                provider=provider,
                application=application,
                status=RunStatus.QUEUED,
                grace_seconds=self.grace,
                metadata=dict(metadata or {}),
            ),
            traced,
        )
        return await self._record(
            RunEvent.tracked(
                provider, application, run_id, status, occurred_at=occurred_at, payload=payload
            )
        )

    async def _register(self, run: NewRun, traced: bool) -> None:
        """Register `run`; `traced`, with the current span's context kept in its callback
        details, so what is done for the run later continues this trace."""
        if not traced:
            await self._store().register_run(run)
            return
        headers = tracing.carrier()
        run = replace(run, callback={**run.callback, tracing.TRACE_KEY: headers})
        new = await self._store().register_run(run)
        context = tracing.context_from(headers)
        # A run registered before keeps the context it was first recorded in.
        if new and context is not None:
            self.traces.remember(run.run_id, context)

    async def _get(self, run_id: str) -> RunRecord:
        run = await self._store().get_run(run_id)
        if run is None:
            raise RunNotFound(f"no run {run_id!r} in the store")
        return run
