"""Run event streams: a third way to learn a run's end, beside webhooks and polls.

For a provider that offers run streams (`RunStream`), the `Streamer` follows the streams
of open runs: when no callback can reach this listener for that provider (no public URL,
or no source reading its payloads: poll-only mode, a laptop), or always when configured
to. At most `max_streams` streams are open at once; the others stay with the poller.
What a stream reports goes through the listener's one record path as an event of origin
`stream`, whose delivery id is derived from the run and status as a poll's is, so a run
ends exactly once whichever of webhook, stream and poll reports it first.

A stream that ends without the run's end (a dropped connection), or that the platform
answered and then left quiet past the provider's idle limit, is resumed after its last
message at once, still healthy; one that fails (no answer, an error status) is tried
again after a backoff, `reconnects` times in a row, then the run is left
to the poller. Nothing is lost either way: the run stays open in the store, and the
poller asks about it when it is due.

The poller and the streamer share one rule, in this process: while a run's stream is
healthy (connecting or reading, not waiting to reconnect after a failure), `streaming`
says so, and the poller puts the run off when it claims it, without a status call. A
stream that fails makes the run the poller's again at once. Streams are per process:
another replica sharing the store polls the runs this one streams as it would anyway.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Literal

from listener import backoff
from listener._checks import positive, whole
from listener.errors import StreamIdle
from listener.events import Origin, RunEvent, RunStatus, next_status
from listener.providers.base import Provider, ProviderError, RunStream
from listener.store.base import RecordResult, Store, StoreUnavailable

__all__ = ["StreamMode", "StreamSettings", "Streamer"]

logger = logging.getLogger("listener.streaming")

Recorder = Callable[[RunEvent], Awaitable[RecordResult]]
StreamMode = Literal["auto", "on", "off"]
_MODES: tuple[StreamMode, ...] = ("auto", "on", "off")
_OPEN = (RunStatus.QUEUED, RunStatus.RUNNING)


@dataclass(frozen=True, slots=True)
class StreamSettings:
    """When a listener follows run streams; the defaults are the service's defaults.

    `enabled`: "auto" follows the runs of a streaming provider when no callback can reach
    this listener for it, "on" follows them always, "off" never. `max_streams` bounds the
    streams open at once; open runs are looked for in the store every `interval` seconds
    (and at once when this listener submits one). A failed stream is tried again
    `reconnects` times in a row, after `backoff` seconds doubling up to `backoff_cap`,
    before its run is left to the poller.
    """

    enabled: StreamMode = "auto"
    max_streams: int = 100
    interval: float = 5.0
    reconnects: int = 3
    backoff: float = 1.0
    backoff_cap: float = 30.0

    def __post_init__(self) -> None:
        if self.enabled not in _MODES:
            raise ValueError(f"enabled must be one of {', '.join(_MODES)}, not {self.enabled!r}")
        whole("max_streams", self.max_streams)
        positive("interval", self.interval)
        whole("reconnects", self.reconnects, 0)
        positive("backoff", self.backoff)
        positive("backoff_cap", self.backoff_cap)


@dataclass(frozen=True, slots=True)
class _Watch:
    run_id: str
    provider: str
    application: str
    status: RunStatus


class Streamer:
    """Follows the streams of open runs of the providers `wanted` names.

    `wanted(provider_name)` says whether that provider's runs are to be streamed (the
    listener decides from `StreamSettings.enabled` and its callbacks); providers that do
    not implement `RunStream` never are. `record` is the listener's one path for events.
    """

    def __init__(
        self,
        store: Store,
        providers: Mapping[str, Provider],
        record: Recorder,
        settings: StreamSettings = StreamSettings(),
        *,
        wanted: Callable[[str], bool] = lambda name: True,
        sleep: Callable[[float], Awaitable[None]] | None = None,
    ) -> None:
        self.store = store
        self.providers = providers
        self.record = record
        self.settings = settings
        self.wanted = wanted
        self._sleep = sleep
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._healthy: set[str] = set()
        # Runs whose stream failed for good here: the poller's until they end.
        self._left: set[str] = set()
        self._loop_task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._wakeup = asyncio.Event()
        # Counts for logs, metrics and benchmarks.
        self.connections = 0
        self.failures = 0
        self.idle = 0  # answered streams resumed after a quiet spell
        self.learned = 0

    # -- what the poller and the listener ask --------------------------------------------

    def streaming(self, run_id: str) -> bool:
        """True while `run_id`'s stream is healthy here: the poller leaves it alone."""
        return run_id in self._healthy

    @property
    def open_streams(self) -> int:
        return len(self._tasks)

    def streams(self, provider_name: str) -> bool:
        """Whether runs of `provider_name` are followed by stream here."""
        provider = self.providers.get(provider_name)
        return isinstance(provider, RunStream) and self.wanted(provider_name)

    def watch(self, run_id: str, provider: str, application: str) -> bool:
        """Follow a run just submitted, at once if a stream is free (True if followed)."""
        return self._follow(_Watch(run_id, provider, application, RunStatus.QUEUED))

    # -- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        """Follow the open runs found now, then keep looking in the background.

        The first look is made before this returns, so a poller started after the
        streamer finds the runs open at start already followed, and asks nothing of them.
        """
        if self._loop_task is not None:
            raise RuntimeError("the streamer is already started")
        self._stopping.clear()
        try:
            await self._pass()
        except BaseException:
            await self._end_followers()
            raise
        self._loop_task = asyncio.create_task(self._loop(), name="listener-streamer")

    async def stop(self) -> None:
        task, self._loop_task = self._loop_task, None
        if task is None:
            return
        self._stopping.set()
        self._wakeup.set()
        await task
        await self._end_followers()

    async def _end_followers(self) -> None:
        followers = list(self._tasks.values())
        for follower in followers:
            follower.cancel()
        await asyncio.gather(*followers, return_exceptions=True)

    async def _loop(self) -> None:
        # `start` made the first pass.
        while not self._stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), timeout=self.settings.interval)
            self._wakeup.clear()
            if self._stopping.is_set():
                return
            await self._pass()

    async def _pass(self) -> None:
        try:
            await self.discover()
        except StoreUnavailable as exc:
            logger.warning("stream pass skipped: store unavailable (%s)", type(exc).__name__)

    async def discover(self) -> int:
        """Start following open runs of the streamed providers while streams are free;
        the number started."""
        started = 0
        for name in sorted(self.providers):
            free = self.settings.max_streams - len(self._tasks)
            if free <= 0:
                break
            if not self.streams(name):
                continue
            page = await self.store.list_runs(
                status=_OPEN, provider=name, limit=min(1000, free + len(self._tasks))
            )
            for run in page.items:
                watch = _Watch(run.run_id, run.provider, run.application, run.status)
                started += self._follow(watch)
        return started

    # -- one run -------------------------------------------------------------------------

    def _follow(self, watch: _Watch) -> bool:
        if (
            watch.run_id in self._tasks
            or watch.run_id in self._left
            or len(self._tasks) >= self.settings.max_streams
            or self._stopping.is_set()
            or not self.streams(watch.provider)
        ):
            return False
        self._healthy.add(watch.run_id)
        task = asyncio.create_task(self._run(watch), name=f"listener-stream-{watch.run_id}")
        self._tasks[watch.run_id] = task
        return True

    async def _run(self, watch: _Watch) -> None:
        try:
            ended = await self._read(watch)
            if not ended:
                self._left.add(watch.run_id)
                logger.warning("stream of run %s failed; the poller has it", watch.run_id)
        finally:
            self._healthy.discard(watch.run_id)
            self._tasks.pop(watch.run_id, None)
            # A stream is free: look for runs waiting for one.
            self._wakeup.set()

    async def _read(self, watch: _Watch) -> bool:
        """Follow the run until its end is recorded (True) or its stream fails for good."""
        provider = self.providers[watch.provider]
        assert isinstance(provider, RunStream)
        status, after, failures = watch.status, None, 0
        while True:
            messages = 0
            self.connections += 1
            try:
                async for message in provider.follow(watch.application, watch.run_id, after=after):
                    messages += 1
                    failures = 0
                    self._healthy.add(watch.run_id)
                    after = message.resume_after or after
                    reported = message.state.status
                    if next_status(status, reported) is None:
                        continue
                    result = await self.record(
                        RunEvent.learned(
                            Origin.STREAM,
                            watch.provider,
                            watch.application,
                            watch.run_id,
                            reported,
                            payload=message.state.raw,
                        )
                    )
                    self.learned += 1
                    status = result.status
                    if status.is_terminal:
                        return True
                if messages:
                    continue  # the connection closed before the end: resume after `after`
                reason = "the stream closed with no message"
            except StreamIdle:
                # Answered, then quiet: a long run may say nothing for hours. Resume at
                # once; a connection that cannot be made again counts as failing.
                self.idle += 1
                continue
            except ProviderError as exc:
                code = exc.status_code
                if code is not None and 400 <= code < 500 and code not in (408, 429):
                    return False  # no stream for this run: nothing to retry
                reason = str(exc)
            except StoreUnavailable as exc:
                reason = f"store unavailable ({type(exc).__name__})"
            failures += 1
            self.failures += 1
            self._healthy.discard(watch.run_id)
            if failures > self.settings.reconnects:
                return False
            delay = backoff.ceiling(failures, self.settings.backoff, self.settings.backoff_cap)
            logger.info("stream of run %s: %s; again in %.1f s", watch.run_id, reason, delay)
            await self._pause(delay)

    async def _pause(self, seconds: float) -> None:
        if self._sleep is not None:
            await self._sleep(seconds)
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), timeout=seconds)
