"""`Listener`: one store, its webhook sources, handler routers and the dispatcher.

    listener = Listener(store_url="sqlite:///listener.db", sources=[...])
    listener.include(my_handlers)
    app = listener.asgi()          # serve with uvicorn; its lifespan starts the listener

Mounted inside another Starlette app, the host's lifespan must start it (Starlette does
not run a mounted app's lifespan); `listener.lifespan` is a ready one:

    host = Starlette(routes=[Mount("/listener", app=listener.asgi())],
                     lifespan=listener.lifespan)

or, from a host lifespan of its own, `async with listener: yield`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import replace
from types import TracebackType
from typing import Any, Protocol, Self, TypeVar

from starlette.applications import Starlette

from listener.client import CallbackPlan, RunClient, RunHandle
from listener.dispatch import Dispatcher, DispatchSettings
from listener.endpoint_keeper import NOTICE_HANDLER_NAME, EndpointKeeper, WebhookSettings
from listener.events import RunEvent, RunStatus
from listener.following import ChangeFollower
from listener.health import end_of, lag_seconds, learned_by
from listener.metrics import Metrics
from listener.notices import Notice, NoticeSettings
from listener.overdue import OverdueNotice
from listener.poller import Poller, PollSettings
from listener.providers.base import Provider, RunResult
from listener.receiver import Receiver, ReceiverSettings, create_app
from listener.recording import EventRecorder
from listener.registry import (
    ENTRY_POINT_GROUP,
    Handlers,
    load_entry_points,
    load_plugin,
)
from listener.retention import DEFAULT_INTERVAL, Pruner, check_age, cutoff, prune_store
from listener.sources import Source, callback_url
from listener.store import (
    DEFAULT_STORE_URL,
    Change,
    PruneCounts,
    RecordResult,
    Store,
    open_store,
)
from listener.streaming import Streamer, StreamSettings
from listener.watching import NoticeWatcher, tell_overdue

__all__ = ["Listener"]


class _Part(Protocol):
    """A background part of a started listener: the dispatcher, the poller, the streamer,
    the pruner."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


_P = TypeVar("_P", bound=_Part)


class Listener:
    """The service: receives webhooks into `store` and calls handlers for new transitions.

    Give either `store_url` (the listener opens and closes the store) or an open `store`
    (the caller owns it). `plugins` are loaded at once (see `registry.load_plugin`), so a
    broken plugin fails construction with a `PluginError` naming it; `entry_points=True`
    also loads the `listener.handlers` entry-point group.

    `dispatch` says how handler calls run (`DispatchSettings(enabled=False)` runs a
    receiver only: another replica dispatches), `poll` how overdue runs are checked
    (`PollSettings`: a submitted run the platform says nothing about is checked
    `first_poll` seconds after submission, or from the poll schedule's first step if
    sooner and no source here reads its provider's payloads, since no webhook can reach
    this listener; a script submitting for a service that shares its store and receives
    the webhooks passes `first_poll=` to `submit`), `streams` when the event streams of
    open runs are followed (`StreamSettings`: by default, for a provider offering them,
    when no callback can reach this listener; the poller leaves a run alone while its
    stream is healthy), and `receiver` how the webhook endpoints answer
    (`ReceiverSettings`), and `health` when handlers registered with `on_notice` hear
    that a source's provider's webhooks are degraded or recovered (`NoticeSettings`; the
    window is evaluated where handlers are dispatched), and `webhooks` whether the account
    webhook endpoint of each source is checked and repaired at start and on a degraded
    notice (`WebhookSettings`; see `listener.endpoint_keeper`). Each is checked when it is
    made, so a bad value is a `ValueError` naming it.

    Retention: with `retention` seconds (at least one day; None or 0 keeps everything),
    the started listener deletes what is finished and older than that (see
    `listener.retention`) a minute after start (or after `retention_interval`, if that
    is shorter), then every `retention_interval` seconds. `prune()` does the same once,
    on demand.
    """

    def __init__(
        self,
        *,
        store_url: str | None = None,
        store: Store | None = None,
        sources: Sequence[Source] = (),
        handlers: Sequence[Handlers] = (),
        plugins: Sequence[str] = (),
        entry_points: bool = False,
        providers: Sequence[Provider] = (),
        callback_secret: str | bytes | None = None,
        public_url: str | None = None,
        owner: str | None = None,
        dispatch: DispatchSettings = DispatchSettings(),
        poll: PollSettings = PollSettings(),
        streams: StreamSettings = StreamSettings(),
        receiver: ReceiverSettings = ReceiverSettings(),
        health: NoticeSettings = NoticeSettings(),
        webhooks: WebhookSettings = WebhookSettings(),
        retention: float | None = None,
        retention_interval: float = DEFAULT_INTERVAL,
    ) -> None:
        if store is not None and store_url is not None:
            raise ValueError("give store_url or store, not both")
        _check_settings("dispatch", dispatch, DispatchSettings)
        _check_settings("poll", poll, PollSettings)
        _check_settings("streams", streams, StreamSettings)
        _check_settings("receiver", receiver, ReceiverSettings)
        _check_settings("health", health, NoticeSettings)
        _check_settings("webhooks", webhooks, WebhookSettings)
        if retention:
            check_age(retention, "retention")
        if not retention_interval > 0:
            raise ValueError("retention_interval must be positive")
        self.store_url = store.url if store is not None else (store_url or DEFAULT_STORE_URL)
        self._given_store = store
        self._store: Store | None = None
        self.callback_secret = callback_secret
        self.public_url = public_url
        self.owner = owner
        self.dispatch = dispatch
        self.poll = poll
        self._poller: Poller | None = None
        self.streams = streams
        self._streamer: Streamer | None = None
        self.retention = retention or None
        self.retention_interval = retention_interval
        self._pruner: Pruner | None = None
        self.health = health
        self._watcher: NoticeWatcher | None = None
        # What start() started, closed by stop() in reverse order.
        self._parts: contextlib.AsyncExitStack | None = None
        self.handlers = Handlers()
        # `@listener.on(...)` and `@listener.on_any` register on the listener's own router.
        self.on = self.handlers.on
        self.on_any = self.handlers.on_any
        self.on_notice = self.handlers.on_notice
        self.metrics = Metrics()
        self.recorder = EventRecorder(self.handlers, self._on_recorded)
        self.receiver = Receiver(
            sources=(),
            recorder=self.recorder,
            metrics=self.metrics,
            callback_secret=callback_secret,
            settings=receiver,
        )
        self.providers: dict[str, Provider] = {}
        self.client = RunClient(
            lambda: self.store,
            self.providers,
            self.record,
            callbacks=self._callback_plan,
            grace=poll.grace,
            first_poll=poll.first_poll,
            deadline=poll.deadline,
            submitted=self._on_submitted,
            # One memory of the runs' trace contexts for every part (`listener.tracing`).
            traces=self.recorder.traces,
        )
        self._dispatcher: Dispatcher | None = None
        self._app: Starlette | None = None
        self.webhooks = webhooks
        self._keeper: EndpointKeeper | None = None
        if webhooks.ensure == "degraded":
            self.handlers.on_notice("webhooks_degraded", name=NOTICE_HANDLER_NAME)(
                self._ensure_endpoints
            )
        for source in sources:
            self.add_source(source)
        for provider in providers:
            self.add_provider(provider)
        self.include(*handlers)
        self.load_plugins(*plugins)
        if entry_points:
            self.load_entry_points()

    def __repr__(self) -> str:
        state = "started" if self.started else "stopped"
        return f"<Listener {state} sources={sorted(self.sources)} handlers={len(self.handlers)}>"

    # -- configuration -------------------------------------------------------------------

    @property
    def sources(self) -> dict[str, Source]:
        return self.receiver.sources

    async def _tell_overdue(self, notice: OverdueNotice) -> None:
        await tell_overdue(self.handlers, notice)

    def _webhook_providers(self) -> set[str]:
        return {source.provider for source in self.sources.values()}

    def add_source(self, source: Source) -> None:
        if source.uses_token and not self.callback_secret:
            raise ValueError(
                f"source {source.name!r} takes unsigned callbacks, which need callback_secret"
            )
        self.receiver.add_source(source)

    def add_provider(self, provider: Provider) -> None:
        """Let handlers of this provider's runs call `event.fetch_result()`."""
        self.providers[provider.name] = provider

    def include(self, *routers: Handlers) -> None:
        for router in routers:
            self.handlers.include(router)

    def load_plugins(self, *plugins: str) -> None:
        """Include the routers of each plugin spec (module, module:attr, file, directory)."""
        for plugin in plugins:
            self.include(*load_plugin(plugin))

    def load_entry_points(self, group: str = ENTRY_POINT_GROUP) -> None:
        self.include(*load_entry_points(group))

    def callback_url(self, source: str, nonce: str, *, base_url: str | None = None) -> str:
        """The per-run URL a token source's platform should call (see `sources`)."""
        base = base_url or self.public_url
        if base is None:
            raise ValueError("no base_url given and no public_url configured")
        if self.callback_secret is None:
            raise ValueError("callback URLs need callback_secret")
        if source not in self.sources or not self.sources[source].uses_token:
            raise ValueError(f"{source!r} is not a configured token source")
        return callback_url(base, source, nonce, secret=self.callback_secret)

    def _callback_plan(self, provider: str, nonce: str) -> CallbackPlan:
        """Where `provider`'s platform should report a new run: the first source that reads
        that provider's payloads; none without a public URL (then an account-level webhook
        or the poller finds out). With no such source no webhook can arrive, so the run is
        checked from the poll schedule's first step if that is sooner than `first_poll`."""
        sources = [s for s in self.sources.values() if s.provider == provider]
        if not sources:
            return CallbackPlan(None, {}, first_poll=self.poll.schedule.interval)
        if self.public_url is None:
            return CallbackPlan(None, {})
        for source in sources:
            if source.uses_token:
                if self.callback_secret is None:
                    continue
                url = self.callback_url(source.name, nonce)
                return CallbackPlan(url, {"source": source.name, "nonce": nonce})
            url = f"{self.public_url.rstrip('/')}/hooks/{source.name}"
            return CallbackPlan(url, {"source": source.name})
        return CallbackPlan(None, {})

    # -- runs ----------------------------------------------------------------------------

    async def record(self, event: RunEvent) -> RecordResult:
        """Store an event from any path (poll, track, replay) exactly as a webhook is:
        deduplicated, routed to the matching handlers, waking the dispatcher."""
        return await self.recorder.record(self.store, event)

    async def submit(
        self, provider: str, application: str, input: Any, **options: Any
    ) -> RunHandle:
        """Start a run and watch it; see `RunClient.submit` for the options."""
        return await self.client.submit(provider, application, input, **options)

    async def wait(self, run_id: str, *, timeout: float | None = None) -> RunEvent:
        """The event that ended the run, the moment it is recorded (by any replica)."""
        return await self.client.wait(run_id, timeout=timeout)

    async def wait_all(
        self, run_ids: Iterable[str], *, timeout: float | None = None
    ) -> list[RunEvent]:
        """The final events of all `run_ids`, in their order, once all have ended."""
        return await self.client.wait_all(run_ids, timeout=timeout)

    def as_completed(
        self, run_ids: Iterable[str], *, timeout: float | None = None
    ) -> AsyncIterator[RunEvent]:
        """The final event of each of `run_ids` as it ends (`async for`)."""
        return self.client.as_completed(run_ids, timeout=timeout)

    async def run(
        self,
        provider: str,
        application: str,
        input: Any,
        *,
        timeout: float | None = None,
        **options: Any,
    ) -> RunEvent:
        """Submit and wait for the end."""
        return await self.client.run(provider, application, input, timeout=timeout, **options)

    async def cancel(self, run_id: str) -> RunStatus:
        return await self.client.cancel(run_id)

    async def track(
        self,
        provider: str,
        application: str,
        run_id: str,
        status: RunStatus | str | None = None,
        **details: Any,
    ) -> RecordResult:
        """Record a run that happened elsewhere and route it to handlers; with no `status`,
        its provider is asked (see `RunClient.track`)."""
        return await self.client.track(provider, application, run_id, status, **details)

    def run_sync(
        self,
        provider: str,
        application: str,
        input: Any,
        *,
        timeout: float | None = None,
        **options: Any,
    ) -> RunEvent:
        """`run` for scripts without an event loop: starts the listener, runs, stops it."""

        async def main() -> RunEvent:
            async with self:
                return await self.run(provider, application, input, timeout=timeout, **options)

        return asyncio.run(main())

    # -- lifecycle -----------------------------------------------------------------------

    @property
    def started(self) -> bool:
        return self._store is not None

    @property
    def store(self) -> Store:
        if self._store is None:
            raise RuntimeError("the listener is not started")
        return self._store

    @property
    def dispatcher(self) -> Dispatcher | None:
        return self._dispatcher

    @property
    def endpoint_keeper(self) -> EndpointKeeper | None:
        """The part keeping account webhook endpoints right (`webhooks.ensure`), started."""
        return self._keeper

    async def start(self) -> None:
        """Open the store, start the dispatcher, the fallback poller and (with `retention`)
        the pruner. If one of them fails to start, those already started are stopped (and
        the store closed) before the error propagates."""
        if self._store is not None:
            raise RuntimeError("the listener is already started")
        self.handlers.check()
        async with contextlib.AsyncExitStack() as parts:
            # Runs last, on stop or on a failed start: the parts are gone by then.
            parts.callback(self._forget_parts)
            store = self._given_store
            if store is None:
                store = await open_store(
                    self.store_url, default_grace_seconds=self.dispatch.default_grace_seconds
                )
                parts.push_async_callback(store.close)
            if self.dispatch.enabled:
                self._dispatcher = await _start(
                    parts,
                    Dispatcher(
                        store,
                        self.handlers,
                        self.dispatch,
                        owner=self.owner,
                        metrics=self.metrics,
                        prepare=self._prepare,
                        traces=self.recorder.traces,
                    ),
                )
            if self.streams.enabled != "off":
                self._streamer = await _start(
                    parts,
                    Streamer(
                        store, self.providers, self.record, self.streams, wanted=self._streamed
                    ),
                )
            if self.poll.enabled:
                streaming = self._streamer.streaming if self._streamer is not None else None
                self._poller = await _start(
                    parts,
                    Poller(
                        store,
                        self.providers,
                        self.record,
                        self.poll,
                        owner=self.owner,
                        streaming=streaming,
                        on_overdue=self._tell_overdue,
                    ),
                )
            if self.health.enabled and self.dispatch.enabled:
                self._watcher = await _start(
                    parts,
                    NoticeWatcher(store, self.handlers, self._webhook_providers, self.health),
                )
            if self.webhooks.ensure != "off":
                self._keeper = await _start(
                    parts,
                    EndpointKeeper(self.sources, self.providers, self.public_url, self.webhooks),
                )
            # Other replicas' commits, where the store announces them: claims and waits
            # at once rather than at the next sweep or read.
            await _start(parts, ChangeFollower(store, self._on_change))
            if self.retention is not None:
                self._pruner = await _start(
                    parts, Pruner(store, self.retention, interval=self.retention_interval)
                )
            self._parts = parts.pop_all()
        self._store = store
        self.receiver.store = store

    async def stop(self) -> None:
        """Refuse new deliveries (503), stop pruning and polling, finish or release handler
        calls, close the store: the reverse of the order `start` went in. Every part is
        stopped even if one fails to; the first failure propagates."""
        parts = self._parts
        if self._store is None or parts is None:
            return
        self.receiver.store = None
        self._store = None
        self._parts = None
        await parts.aclose()

    def _forget_parts(self) -> None:
        self._pruner = None
        self._watcher = None
        self._poller = None
        self._streamer = None
        self._dispatcher = None
        self._keeper = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    @contextlib.asynccontextmanager
    async def lifespan(self, app: object = None) -> AsyncIterator[None]:
        """A Starlette lifespan that runs this listener for the app's lifetime."""
        async with self:
            yield

    def asgi(self) -> Starlette:
        """The Starlette app; its own lifespan starts and stops the listener."""
        if self._app is None:
            self._app = create_app(self.receiver, lifespan=self.lifespan)
        return self._app

    # -- retention -----------------------------------------------------------------------

    async def prune(self, older_than: float, *, limit: int = 1000) -> PruneCounts:
        """Delete what is finished and older than `older_than` seconds, now: done handler
        calls; terminal runs with no handler call left, with their events and transitions;
        unroutable deliveries. Runs in progress, and finished runs with a pending, running
        or dead call, are kept.

        The store deletes at most `limit` rows of each kind per transaction, each sized to
        take about `retention.CHUNK_SECONDS`; this calls it until nothing old is left and
        returns the sums. `older_than` under one day is a `ValueError`: a delivery that a
        sender retries after its event was pruned is taken as new, so keep more than the
        senders' retry window (days, for most platforms).
        """
        before = cutoff(older_than)
        return await prune_store(self.store, before=before, limit=limit)

    # -- internals -----------------------------------------------------------------------

    @property
    def poller(self) -> Poller | None:
        return self._poller

    @property
    def streamer(self) -> Streamer | None:
        """The part following run streams, in a started listener with streams not off."""
        return self._streamer

    @property
    def pruner(self) -> Pruner | None:
        """The background pruner of a started listener with `retention`."""
        return self._pruner

    def _on_recorded(self, event: RunEvent, result: RecordResult) -> None:
        if result.call_ids and self._dispatcher is not None:
            self._dispatcher.wake()
        self.client.notify(event, result)
        if result.transition is not None and result.transition.status.is_terminal:
            end = end_of(event, result.transition.status)
            way = learned_by(end)
            self.metrics.run_end(event.provider, way, None if way == "expiry" else lag_seconds(end))

    def _streamed(self, provider: str) -> bool:
        """Whether `provider`'s runs are followed by stream: always with streams "on"; with
        "auto", when no callback can reach this listener for it (see `_callback_plan`)."""
        if self.streams.enabled == "on":
            return True
        return self._callback_plan(provider, "probe").url is None

    def _on_submitted(self, handle: RunHandle) -> None:
        if self._streamer is not None:
            self._streamer.watch(handle.run_id, handle.provider, handle.application)

    def _on_change(self, change: Change) -> None:
        if change.calls and self._dispatcher is not None:
            self._dispatcher.wake()
        for run_id in change.ended:
            self.client.notify_ended(run_id)

    async def _ensure_endpoints(self, notice: Notice) -> None:
        # The `webhooks_degraded` notice handler of `[webhooks] ensure = "degraded"`.
        if self._keeper is not None:
            await self._keeper.on_degraded(notice)

    def _prepare(self, event: RunEvent) -> RunEvent:
        provider = self.providers.get(event.provider)
        if provider is None or event.result_fetcher is not None:
            return event

        async def fetch(event: RunEvent) -> RunResult:
            return await provider.result(event.application, event.run_id)

        return replace(event, result_fetcher=fetch)


async def _start(parts: contextlib.AsyncExitStack, part: _P) -> _P:
    """Start `part` and have `parts` stop it when it unwinds."""
    await part.start()
    parts.push_async_callback(part.stop)
    return part


def _check_settings(name: str, value: object, kind: type) -> None:
    # A keyword from before the settings objects (`dispatch=False`, `poll=True`) would
    # otherwise fail much later, far from its cause.
    if not isinstance(value, kind):
        raise TypeError(f"{name} must be a {kind.__name__}, got {value!r}")
