"""Run event streams against the fake Noxus engine: a run's end learned by stream.

Each test starts a real `Listener` (SQLite in tmp_path) with the `noxus` provider pointed
at a `FakeNoxusEngine` on loopback. Runs stay running until the test ends them
(`engine.finish`), so what the poller does while their streams are open is checked by
calling its pass directly, at a moment the test chooses.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

from helpers import WAIT_LIMIT, wait_for

from listener import DispatchSettings, Listener, Origin, PollSettings, RunEvent, RunStatus, Source
from listener.providers.base import RunStream
from listener.providers.kinds import provider_kind
from listener.providers.nextmv import NextmvProvider
from listener.providers.noxus import NoxusProvider
from listener.streaming import StreamSettings
from listener.testing import FakeNoxusEngine, LoopbackServer, NoxusPlan

S = RunStatus
# Runs stay running until the test finishes them.
UNTIL_FINISHED = NoxusPlan(queued_for=0.0, runs_for=None)
# No poll comes by itself within a test: the tests run the poller's pass themselves.
POLL = PollSettings(first_poll=3600.0, grace=3600.0, interval=3600.0)
DISPATCH = DispatchSettings(sweep_interval=0.02, shutdown_timeout=5.0)
STREAMS = StreamSettings(interval=0.05, backoff=0.01, backoff_cap=0.01)
LATER = timedelta(days=1)


class Ends:
    """The handler under test: counts each run's transitions it is called with."""

    def __init__(self) -> None:
        self.events: list[RunEvent] = []

    async def __call__(self, event: RunEvent) -> None:
        self.events.append(event)

    def count(self, run_id: str) -> Counter[RunStatus]:
        return Counter(event.status for event in self.events if event.run_id == run_id)


@contextlib.asynccontextmanager
async def stack(
    tmp_path: Path,
    engine: FakeNoxusEngine,
    *,
    streams: StreamSettings = STREAMS,
    callbacks: bool = False,
    provider: NoxusProvider | None = None,
) -> AsyncIterator[tuple[Listener, Ends]]:
    """A started listener for `engine` (through `provider`, by default one with the
    provider's defaults); with `callbacks`, a token source and a public URL, so every run
    is submitted with a callback URL (which the engine may drop)."""
    provider = provider or engine.noxus_provider()
    listener = Listener(
        store_url=f"sqlite:///{tmp_path / 'listener.db'}",
        providers=[provider],
        sources=[Source("noxus", "noxus")] if callbacks else [],
        callback_secret="a-callback-secret-for-the-tests" if callbacks else None,
        public_url="http://127.0.0.1:9" if callbacks else None,
        dispatch=DISPATCH,
        poll=POLL,
        streams=streams,
    )
    ends = Ends()
    listener.on_any(name="ends")(ends)
    try:
        async with listener:
            yield listener, ends
    finally:
        await provider.aclose()


async def running(listener: Listener, engine: FakeNoxusEngine, run_id: str) -> None:
    """Until the stream has told the listener the run is running."""

    async def seen() -> bool:
        run = await listener.store.get_run(run_id)
        return run is not None and run.status is S.RUNNING

    await wait_for(seen, f"{run_id} running, learned by stream")


async def test_with_every_callback_dropped_runs_end_once_by_stream_and_are_not_polled(
    tmp_path: Path,
) -> None:
    async with FakeNoxusEngine(plan=UNTIL_FINISHED, drop_rate=1.0) as engine:
        on = StreamSettings(enabled="on", interval=0.05)
        async with stack(tmp_path, engine, streams=on, callbacks=True) as (listener, ends):
            handles = [
                await listener.submit("noxus", engine.workflow_id, {"n": n}) for n in range(4)
            ]
            assert all(handle.callback_url for handle in handles)
            for handle in handles:
                await running(listener, engine, handle.run_id)
            # Every run is due: the poller claims them all and asks about none.
            assert listener.poller is not None
            report = await listener.poller.poll_once(datetime.now(UTC) + LATER)
            assert (report.claimed, report.put_off, report.status_calls) == (4, 4, 0)
            assert listener.store is not None
            for handle in handles:
                run = await listener.store.get_run(handle.run_id)
                assert run is not None
                assert run.status_calls == 0  # put off, not asked: no call counted
            for handle in handles:
                engine.finish(handle.run_id, "completed" if handle is not handles[-1] else "failed")
            finals = [await listener.wait(h.run_id, timeout=WAIT_LIMIT) for h in handles]
            await wait_for(lambda: len(ends.events) == 8, "two transitions of each run handled")
            report = await listener.poller.poll_once(datetime.now(UTC) + LATER)
            assert report.claimed == 0
        assert [final.origin for final in finals] == [Origin.STREAM] * 4
        assert [final.status for final in finals] == [S.SUCCEEDED] * 3 + [S.FAILED]
        for handle, final in zip(handles, finals, strict=True):
            assert ends.count(handle.run_id) == Counter({S.RUNNING: 1, final.status: 1})
        assert engine.stats.dropped == 4
        assert engine.status_calls == Counter()
        assert all(engine.stream_connections[h.run_id] == 1 for h in handles)


async def test_a_callback_after_the_stream_reported_the_end_changes_nothing(
    tmp_path: Path,
) -> None:
    # The run's callback is held back until `drain` (reordered, with nothing after it to
    # release it) and then sent twice: the stream always reports the end first.
    async with FakeNoxusEngine(
        plan=UNTIL_FINISHED, reorder_rate=1.0, reorder_hold=3600.0, duplicate_rate=1.0
    ) as engine:
        on = StreamSettings(enabled="on", interval=0.05)
        async with stack(tmp_path, engine, streams=on, callbacks=True) as (listener, ends):
            async with LoopbackServer(listener.asgi()) as server:
                listener.public_url = server.base_url  # where the callbacks reach it
                handle = await listener.submit("noxus", engine.workflow_id, {"n": 1})
                assert handle.callback_url is not None
                assert handle.callback_url.startswith(server.base_url)
                await running(listener, engine, handle.run_id)
                engine.finish(handle.run_id)
                final = await listener.wait(handle.run_id, timeout=WAIT_LIMIT)
                await engine.drain()
            await wait_for(lambda: len(ends.events) == 2, "both transitions handled")
            assert listener.store is not None
            events = await listener.store.list_events(run_id=handle.run_id)
        [delivery] = engine.deliveries
        # Both copies of the callback were taken (200: a known transition), too late.
        assert (delivery.reordered, delivery.duplicated, delivery.status_codes) == (
            True,
            True,
            [200, 200],
        )
        assert (final.origin, final.status) == (Origin.STREAM, S.SUCCEEDED)
        assert ends.count(handle.run_id) == Counter({S.RUNNING: 1, S.SUCCEEDED: 1})
        # The late callback is kept as an event (once: both copies share a delivery id),
        # but the transition it reports was the stream's.
        assert sorted((e.status, e.origin) for e in events.items) == [
            (S.RUNNING, Origin.STREAM),
            (S.SUCCEEDED, Origin.STREAM),
            (S.SUCCEEDED, Origin.WEBHOOK),
        ]
        assert engine.status_calls == Counter()


async def test_with_no_callback_possible_streams_are_followed_unasked(tmp_path: Path) -> None:
    async with FakeNoxusEngine(plan=UNTIL_FINISHED) as engine:
        async with stack(tmp_path, engine) as (listener, _):
            assert listener.streamer is not None
            assert listener.streamer.streams("noxus")
            handle = await listener.submit("noxus", engine.workflow_id, {"n": 1})
            await running(listener, engine, handle.run_id)
            engine.finish(handle.run_id, "stopped")
            final = await listener.wait(handle.run_id, timeout=WAIT_LIMIT)
        assert (final.origin, final.status) == (Origin.STREAM, S.CANCELED)
        assert final.delivery_id == f"stream:noxus:{handle.run_id}:canceled"
        assert engine.status_calls == Counter()


async def test_auto_leaves_runs_to_their_callbacks(tmp_path: Path) -> None:
    async with FakeNoxusEngine(plan=UNTIL_FINISHED) as engine:
        async with stack(tmp_path, engine, callbacks=True) as (listener, _):
            assert listener.streamer is not None
            assert not listener.streamer.streams("noxus")
            handle = await listener.submit("noxus", engine.workflow_id, {"n": 1})
            assert not listener.streamer.streaming(handle.run_id)
        assert engine.stream_connections == Counter()


async def test_runs_open_before_start_are_found_and_resumed_after_a_dropped_connection(
    tmp_path: Path,
) -> None:
    async with FakeNoxusEngine(plan=UNTIL_FINISHED, stream_event_limit=1) as engine:
        off = StreamSettings(enabled="off")
        async with stack(tmp_path, engine, streams=off) as (listener, _):
            assert listener.streamer is None
            handle = await listener.submit("noxus", engine.workflow_id, {"n": 1})
        async with stack(tmp_path, engine) as (listener, _):
            await running(listener, engine, handle.run_id)
            engine.finish(handle.run_id)
            final = await listener.wait(handle.run_id, timeout=WAIT_LIMIT)
        assert final.origin is Origin.STREAM
        # One message per connection: each one resumed after the message before it.
        assert engine.stream_connections[handle.run_id] == 3
        assert engine.status_calls == Counter()


async def test_runs_open_at_start_are_followed_before_the_poller_starts(tmp_path: Path) -> None:
    async with FakeNoxusEngine(plan=UNTIL_FINISHED) as engine:
        off = StreamSettings(enabled="off")
        async with stack(tmp_path, engine, streams=off) as (listener, _):
            handle = await listener.submit("noxus", engine.workflow_id, {"n": 1})
        async with stack(tmp_path, engine) as (listener, _):
            # Started: the run's stream is followed already, so the poller's first pass,
            # whenever it comes, puts the run off rather than asking about it.
            assert listener.streamer is not None
            assert listener.streamer.streaming(handle.run_id)
            assert listener.poller is not None
            report = await listener.poller.poll_once(datetime.now(UTC) + LATER)
            assert (report.claimed, report.put_off, report.status_calls) == (1, 1, 0)
        assert engine.status_calls == Counter()


async def test_a_failing_stream_leaves_the_run_to_the_poller(tmp_path: Path) -> None:
    async with FakeNoxusEngine(plan=UNTIL_FINISHED) as engine:
        engine.fail_next(503, route="runs.events", times=3)
        streams = StreamSettings(interval=0.05, reconnects=2, backoff=0.01, backoff_cap=0.01)
        async with stack(tmp_path, engine, streams=streams) as (listener, _):
            streamer, poller = listener.streamer, listener.poller
            assert streamer is not None
            assert poller is not None
            handle = await listener.submit("noxus", engine.workflow_id, {"n": 1})
            await wait_for(lambda: streamer.open_streams == 0, "the stream given up")
            assert not streamer.streaming(handle.run_id)
            engine.finish(handle.run_id)
            report = await poller.poll_once(datetime.now(UTC) + LATER)
            assert (report.put_off, report.status_calls, report.learned) == (0, 1, 1)
            final = await listener.wait(handle.run_id, timeout=WAIT_LIMIT)
            # Left to the poller for good: not followed again when open runs are looked for.
            assert await streamer.discover() == 0
        assert final.origin is Origin.POLL
        assert engine.injected[503] == 3
        assert engine.status_calls[handle.run_id] == 1


async def test_an_engine_without_streams_is_polled(tmp_path: Path) -> None:
    async with FakeNoxusEngine(plan=UNTIL_FINISHED, streams=False) as engine:
        async with stack(tmp_path, engine) as (listener, _):
            streamer, poller = listener.streamer, listener.poller
            assert streamer is not None
            assert poller is not None
            handle = await listener.submit("noxus", engine.workflow_id, {"n": 1})
            await wait_for(lambda: streamer.open_streams == 0, "no stream to follow")
            assert streamer.failures == 0  # a 404 is not retried
            engine.finish(handle.run_id)
            report = await poller.poll_once(datetime.now(UTC) + LATER)
            assert report.learned == 1
        assert engine.stream_connections == Counter()


async def test_streams_open_at_once_are_bounded(tmp_path: Path) -> None:
    async with FakeNoxusEngine(plan=UNTIL_FINISHED) as engine:
        two = StreamSettings(max_streams=2, interval=0.05)
        async with stack(tmp_path, engine, streams=two) as (listener, _):
            assert listener.streamer is not None
            handles = [
                await listener.submit("noxus", engine.workflow_id, {"n": n}) for n in range(3)
            ]
            followed = [listener.streamer.streaming(h.run_id) for h in handles]
            assert followed == [True, True, False]
            engine.finish(handles[0].run_id)
            await listener.wait(handles[0].run_id, timeout=WAIT_LIMIT)
            # A stream is free again: the waiting run is found in the store and followed.
            await running(listener, engine, handles[2].run_id)
            assert listener.streamer.open_streams == 2
        assert engine.status_calls == Counter()


async def test_the_kinds_say_which_providers_stream() -> None:
    assert provider_kind("noxus").streams
    assert provider_kind("workflow").streams
    assert not provider_kind("nextmv").streams
    async with NoxusProvider("k") as noxus, NextmvProvider("k") as nextmv:
        assert isinstance(noxus, RunStream)
        assert not isinstance(nextmv, RunStream)


async def test_a_quiet_stream_stays_followed_and_learns_the_end(tmp_path: Path) -> None:
    # The engine sends nothing while a run keeps running: each idle limit passes with
    # the stream answered and quiet, which is a long run, not a failing stream.
    async with FakeNoxusEngine(plan=UNTIL_FINISHED) as engine:
        quiet = engine.noxus_provider(stream_idle=0.05)
        streams = StreamSettings(interval=0.05, reconnects=1, backoff=0.01, backoff_cap=0.01)
        async with stack(tmp_path, engine, streams=streams, provider=quiet) as (listener, _):
            streamer, poller = listener.streamer, listener.poller
            assert streamer is not None
            assert poller is not None
            handle = await listener.submit("noxus", engine.workflow_id, {"n": 1})
            await wait_for(lambda: streamer.idle >= 4, "several quiet spells")
            assert streamer.failures == 0
            assert streamer.streaming(handle.run_id)
            report = await poller.poll_once(datetime.now(UTC) + LATER)
            assert (report.put_off, report.status_calls) == (1, 0)
            engine.finish(handle.run_id)
            final = await listener.wait(handle.run_id, timeout=WAIT_LIMIT)
    assert final.origin is Origin.STREAM
    assert engine.stream_connections[handle.run_id] >= 5
    assert engine.status_calls == Counter()
