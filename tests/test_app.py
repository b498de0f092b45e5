"""The `Listener` end to end: real uvicorn, real SQLite, handlers run by the dispatcher."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import threading
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest
from helpers import Recorder, age_sqlite_store, payload, serve, signed, wait_for
from helpers import event as event_of
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Mount, Route

from listener import (
    DispatchSettings,
    Listener,
    Origin,
    PollSchedule,
    PollSettings,
    ReceiverSettings,
    RunEvent,
    RunStatus,
    Source,
)
from listener.dispatch import Dispatcher
from listener.poller import Poller
from listener.providers.base import RunResult, RunState, Submission
from listener.retention import Pruner
from listener.signatures import NextmvSignature, StandardWebhooks, generate_hmac_secret
from listener.store import CallState, Store, open_store
from listener.store.sqlite import SQLiteStore
from listener.testing import FakePlatform, RunPlan

SECRET = generate_hmac_secret()
SCHEME = StandardWebhooks([SECRET])


# Quick sweeps and retries, so tests of the dispatch path take milliseconds.
FAST = DispatchSettings(
    sweep_interval=0.02, backoff_base=0.001, backoff_cap=0.01, shutdown_timeout=5.0
)


def fast(**changes: Any) -> DispatchSettings:
    return replace(FAST, **changes)


def new_listener(db: Path, **options: Any) -> Listener:
    options.setdefault("dispatch", FAST)
    return Listener(
        store_url=f"sqlite:///{db}", sources=[Source("std", "local", SCHEME)], **options
    )


async def deliver(
    client: httpx.AsyncClient, msg_id: str, run_id: str = "run-1", status: str = "succeeded"
) -> httpx.Response:
    body = payload(run_id, status)
    return await client.post("/hooks/std", content=body, headers=signed(SCHEME, body, msg_id))


@contextlib.asynccontextmanager
async def running(listener: Listener) -> AsyncIterator[httpx.AsyncClient]:
    async with serve(listener.asgi()) as url, httpx.AsyncClient(base_url=url) as client:
        yield client


async def call_state(store: Store, handler: str, *states: CallState) -> None:
    async def reached() -> bool:
        calls = (await store.list_calls(handler=handler)).items
        return bool(calls) and all(c.state in states for c in calls)

    await wait_for(reached, f"calls of {handler} in {states}")


# -- lifecycle ---------------------------------------------------------------------------


async def test_async_with_opens_and_closes_the_store(tmp_path: Path) -> None:
    listener = new_listener(tmp_path / "a.db")
    assert not listener.started
    with pytest.raises(RuntimeError, match="not started"):
        _ = listener.store
    async with listener:
        assert listener.started
        assert listener.dispatcher is not None
        assert listener.dispatcher.running
        await listener.store.ping()
        with pytest.raises(RuntimeError, match="already started"):
            await listener.start()
        assert "started" in repr(listener)
    assert not listener.started
    assert listener.dispatcher is None
    await listener.stop()  # stopping twice is harmless


async def test_a_given_store_is_not_closed(tmp_path: Path) -> None:
    store = await open_store(f"sqlite:///{tmp_path / 'given.db'}")
    try:
        listener = Listener(store=store, dispatch=DispatchSettings(enabled=False))
        assert listener.store_url == store.url
        async with listener:
            assert listener.dispatcher is None
        await store.ping()
    finally:
        await store.close()
    with pytest.raises(ValueError, match="not both"):
        Listener(store=store, store_url="sqlite://:memory:")


# -- start and stop: the parts, in order -------------------------------------------------

PARTS: dict[str, type[Any]] = {
    "dispatcher": Dispatcher,
    "poller": Poller,
    "pruner": Pruner,
    "store": SQLiteStore,
}


class PartLog:
    """Records each part's start and stop (the store's open and close) as it happens, and
    can make one of them fail."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.events: list[str] = []
        self.failing: set[str] = set()
        for name, cls in PARTS.items():
            for method in ("open", "close") if name == "store" else ("start", "stop"):
                self._wrap(monkeypatch, name, cls, method)

    def _wrap(
        self, monkeypatch: pytest.MonkeyPatch, name: str, cls: type[Any], method: str
    ) -> None:
        original = getattr(cls, method)
        step = f"{name} {method}"

        async def wrapped(part: object) -> None:
            self.events.append(step)
            if step in self.failing:
                raise RuntimeError(f"{step} failed")
            await original(part)

        monkeypatch.setattr(cls, method, wrapped)


def parts_of(listener: Listener) -> tuple[object, ...]:
    return (listener.dispatcher, listener.poller, listener.pruner)


def all_parts(db: Path) -> Listener:
    return new_listener(db, retention=DAY, retention_interval=3600.0)


async def test_start_and_stop_go_in_opposite_orders(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = PartLog(monkeypatch)
    listener = all_parts(tmp_path / "order.db")
    async with listener:
        assert log.events == ["store open", "dispatcher start", "poller start", "pruner start"]
        assert listener.dispatcher is not None
        assert listener.poller is not None
        assert listener.pruner is not None
        log.events.clear()
    assert log.events == ["pruner stop", "poller stop", "dispatcher stop", "store close"]
    assert parts_of(listener) == (None, None, None)


@pytest.mark.parametrize(
    ("failing", "unwound"),
    [
        ("dispatcher start", ["store close"]),
        ("poller start", ["dispatcher stop", "store close"]),
        ("pruner start", ["poller stop", "dispatcher stop", "store close"]),
    ],
)
async def test_a_part_failing_to_start_stops_the_parts_already_started(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failing: str, unwound: list[str]
) -> None:
    log = PartLog(monkeypatch)
    log.failing.add(failing)
    listener = all_parts(tmp_path / "unwind.db")
    with pytest.raises(RuntimeError, match=f"{failing} failed"):
        await listener.start()
    assert log.events[log.events.index(failing) + 1 :] == unwound
    assert not listener.started
    assert parts_of(listener) == (None, None, None)
    assert listener.receiver.store is None
    await listener.stop()  # nothing to stop: a no-op
    # Nothing was left behind: once the part starts, the listener does.
    log.failing.clear()
    async with listener:
        assert listener.started
        assert listener.pruner is not None


async def test_a_given_store_stays_open_when_start_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = await open_store(f"sqlite:///{tmp_path / 'given.db'}")
    try:
        log = PartLog(monkeypatch)
        log.failing.add("poller start")
        listener = Listener(store=store)
        with pytest.raises(RuntimeError, match="poller start failed"):
            await listener.start()
        assert log.events == ["dispatcher start", "poller start", "dispatcher stop"]
        await store.ping()  # the caller's store is the caller's to close
    finally:
        await store.close()


async def test_a_part_failing_to_stop_does_not_keep_the_others_running(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = PartLog(monkeypatch)
    log.failing.add("poller stop")
    listener = all_parts(tmp_path / "stop.db")
    await listener.start()
    dispatcher = listener.dispatcher
    assert dispatcher is not None
    log.events.clear()
    with pytest.raises(RuntimeError, match="poller stop failed"):
        await listener.stop()
    assert log.events == ["pruner stop", "poller stop", "dispatcher stop", "store close"]
    assert not dispatcher.running
    assert not listener.started
    assert parts_of(listener) == (None, None, None)
    await listener.stop()  # stopped already


async def test_mounted_under_a_prefix_with_the_listener_lifespan(tmp_path: Path) -> None:
    listener = new_listener(tmp_path / "m.db")
    recorder = Recorder()
    listener.on("succeeded", name="rec")(recorder)

    async def home(request: Request) -> PlainTextResponse:
        return PlainTextResponse("host")

    host = Starlette(
        routes=[Route("/", home), Mount("/listener", app=listener.asgi())],
        lifespan=listener.lifespan,
    )
    async with serve(host) as url, httpx.AsyncClient(base_url=url) as client:
        assert (await client.get("/")).text == "host"
        assert (await client.get("/listener/readyz")).status_code == 200
        body = payload("run-m")
        response = await client.post(
            "/listener/hooks/std", content=body, headers=signed(SCHEME, body, "m1")
        )
        assert response.status_code == 202
        assert (await recorder.next()).run_id == "run-m"
        assert (await client.post("/hooks/std", content=body)).status_code == 404
    assert not listener.started


async def test_mounted_with_the_hosts_own_lifespan(tmp_path: Path) -> None:
    listener = new_listener(tmp_path / "h.db")
    events: list[str] = []

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        events.append("host up")
        async with listener:
            yield
        events.append("host down")

    host = Starlette(routes=[Mount("/hooks-app", app=listener.asgi())], lifespan=lifespan)
    async with serve(host) as url, httpx.AsyncClient(base_url=url + "/hooks-app") as client:
        assert (await deliver(client, "x1")).status_code == 202
    assert events == ["host up", "host down"]


async def test_mounted_in_fastapi(tmp_path: Path) -> None:
    from fastapi import FastAPI

    listener = new_listener(tmp_path / "f.db")
    host = FastAPI(lifespan=listener.lifespan)
    host.mount("/listener", listener.asgi())
    async with serve(host) as url, httpx.AsyncClient(base_url=url + "/listener") as client:
        assert (await deliver(client, "f1")).status_code == 202


# -- handlers never hold up the answer ---------------------------------------------------


async def test_a_slow_handler_does_not_delay_the_answer(tmp_path: Path) -> None:
    listener = new_listener(tmp_path / "s.db")
    gate = asyncio.Event()
    thread_gate = threading.Event()
    started: list[str] = []
    finished: list[str] = []
    both_started = asyncio.Event()

    @listener.on("succeeded", name="slow-async")
    async def slow(event: RunEvent) -> None:
        started.append(f"async {event.run_id}")
        await gate.wait()
        finished.append(event.run_id)

    loop = asyncio.get_running_loop()

    @listener.on("succeeded", name="slow-sync")
    def slow_sync(event: RunEvent) -> None:
        loop.call_soon_threadsafe(both_started.set)
        thread_gate.wait(30)

    async with running(listener) as client:
        assert (await deliver(client, "s1", "run-1")).status_code == 202
        async with asyncio.timeout(30):
            await both_started.wait()
        await wait_for(lambda: started == ["async run-1"], "the async handler to start")
        # Both handlers for run-1 are blocked on gates only this test opens; the receiver
        # still answers, durably, for the next run.
        second = await deliver(client, "s2", "run-2")
        assert second.status_code == 202
        assert finished == []
        assert not gate.is_set()
        assert not thread_gate.is_set()
        assert await listener.store.get_event("std:s2") is not None
        gate.set()
        thread_gate.set()
        await call_state(listener.store, "slow-async", CallState.DONE)
        await call_state(listener.store, "slow-sync", CallState.DONE)
    assert sorted(finished) == ["run-1", "run-2"]


# -- retries, dead letters, replay -------------------------------------------------------


async def test_fails_twice_then_succeeds_over_http(tmp_path: Path) -> None:
    listener = new_listener(tmp_path / "r.db")
    attempts: list[Origin] = []

    @listener.on("succeeded", name="flaky")
    async def flaky(event: RunEvent) -> None:
        attempts.append(event.origin)
        if len(attempts) <= 2:
            raise RuntimeError("not yet")

    async with running(listener) as client:
        assert (await deliver(client, "f1")).status_code == 202
        await call_state(listener.store, "flaky", CallState.DONE)
        [call] = (await listener.store.list_calls(handler="flaky")).items
    assert len(attempts) == 3
    assert call.attempts == 3


async def test_always_failing_is_dead_lettered_then_replayed(tmp_path: Path) -> None:
    listener = new_listener(tmp_path / "d.db", dispatch=fast(max_attempts=3))
    seen: list[Origin] = []
    fixed = False

    @listener.on("succeeded", name="always-fails")
    async def always(event: RunEvent) -> None:
        seen.append(event.origin)
        if not fixed:
            raise LookupError("no such thing downstream")

    async with running(listener) as client:
        assert (await deliver(client, "d1")).status_code == 202
        await call_state(listener.store, "always-fails", CallState.DEAD)
        [dead] = (await listener.store.list_calls(state=CallState.DEAD)).items
        assert dead.last_error == "LookupError: no such thing downstream"
        assert seen == [Origin.WEBHOOK] * 3

        fixed = True
        assert await listener.store.replay_call(dead.id)
        await call_state(listener.store, "always-fails", CallState.DONE)
        metrics = (await client.get("/metrics")).text
    assert seen[-1] is Origin.REPLAY
    assert 'listener_handler_dead_letters_total{handler="always-fails"} 1.0' in metrics


# -- restarts ------------------------------------------------------------------------------


async def test_after_a_restart_pending_calls_are_run(tmp_path: Path) -> None:
    db = tmp_path / "restart.db"
    first = new_listener(db, dispatch=fast(shutdown_timeout=0.01))
    blocked = asyncio.Event()

    @first.on("succeeded", name="durable")
    async def stuck(event: RunEvent) -> None:
        blocked.set()
        await asyncio.Event().wait()

    async with running(first) as client:
        assert (await deliver(client, "r1", "run-1")).status_code == 202
        async with asyncio.timeout(30):
            await blocked.wait()
    # The interrupted call was given back; a receiver-only replica then stores more.
    receiver_only = new_listener(db, dispatch=fast(enabled=False))
    receiver_only.on("succeeded", name="durable")(stuck)
    async with running(receiver_only) as client:
        assert (await deliver(client, "r2", "run-2")).status_code == 202
        pending = (await receiver_only.store.list_calls(state=CallState.PENDING)).items
        assert sorted(c.run_id for c in pending) == ["run-1", "run-2"]

    second = new_listener(db)
    recorder = Recorder()
    second.on("succeeded", name="durable")(recorder)
    async with running(second):
        await call_state(second.store, "durable", CallState.DONE)
    assert sorted(e.run_id for e in recorder.events) == ["run-1", "run-2"]


# -- retention ----------------------------------------------------------------------------

DAY = 86400.0


async def finished_and_live_runs(db: Path) -> None:
    """run-old succeeded and its handler call is done; run-live is still running. Then all
    of it is aged two days."""
    listener = new_listener(db)
    listener.on("succeeded", name="note")(Recorder())
    async with running(listener) as client:
        assert (await deliver(client, "o1", "run-old", "running")).status_code == 202
        assert (await deliver(client, "o2", "run-old", "succeeded")).status_code == 202
        assert (await deliver(client, "l1", "run-live", "running")).status_code == 202
        await call_state(listener.store, "note", CallState.DONE)
    age_sqlite_store(db, 2 * DAY)


async def test_retention_prunes_a_finished_run_in_the_background(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    db = tmp_path / "retain.db"
    await finished_and_live_runs(db)
    caplog.set_level(logging.INFO, logger="listener.retention")
    listener = new_listener(db, retention=DAY, retention_interval=0.02)
    async with running(listener) as client:
        store = listener.store
        # A run that ended just now is younger than the retention: kept.
        assert (await deliver(client, "n1", "run-new", "succeeded")).status_code == 202

        async def old_run_gone() -> bool:
            return await store.get_run("run-old") is None

        await wait_for(old_run_gone, "the background pruner to remove run-old")
        pruner = listener.pruner
        assert pruner is not None
        passes = pruner.passes
        await wait_for(lambda: pruner.passes > passes + 2, "more passes, with nothing to prune")
        assert (await store.list_events(run_id="run-old")).items == []
        assert await store.get_run("run-live") is not None
        assert len((await store.list_events(run_id="run-live")).items) == 1
        assert await store.get_run("run-new") is not None
    lines = [r.getMessage() for r in caplog.records if r.name == "listener.retention"]
    # One line for the pass that removed something; the passes after it found nothing.
    assert lines == [
        "pruned 1 run, 2 events, 2 transitions, 1 handler call, 0 unroutable deliveries "
        "older than 1 day"
    ]
    assert listener.pruner is None
    assert not pruner.running  # stopped with the listener


async def test_a_failed_prune_is_a_warning_and_is_tried_again(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    db = tmp_path / "retry.db"
    await finished_and_live_runs(db)
    store = await open_store(f"sqlite:///{db}")
    caplog.set_level(logging.WARNING, logger="listener.retention")
    listener = Listener(
        store=store,
        dispatch=DispatchSettings(enabled=False),
        poll=PollSettings(enabled=False),
        retention=DAY,
        retention_interval=0.02,
    )
    try:
        await store.close()  # the store is down before the first pass
        async with listener:
            pruner = listener.pruner
            assert pruner is not None
            await wait_for(lambda: pruner.failures >= 2, "two failed passes")
            assert pruner.passes == 0
            await store.open()  # back up: the next pass prunes

            async def old_run_gone() -> bool:
                return await store.get_run("run-old") is None

            await wait_for(old_run_gone, "the pruner to remove run-old once the store is back")
            assert pruner.last is not None
    finally:
        await store.close()
    warnings = [r for r in caplog.records if r.name == "listener.retention"]
    assert len(warnings) >= 2
    for record in warnings:
        assert record.levelno == logging.WARNING
        # The exception type only: a store error may quote its URL or its data.
        assert record.getMessage() == (
            "pruning old records failed (StoreUnavailable); trying again in 0.02 s"
        )


async def test_prune_on_demand_sums_every_chunk(tmp_path: Path) -> None:
    db = tmp_path / "chunks.db"
    store = await open_store(f"sqlite:///{db}")
    try:
        for index in range(5):
            await store.record(event_of(f"run-{index}", delivery_id=f"d-{index}"))
        await store.record_unroutable(
            source="std", delivery_id="u-1", reason="no run id", body=b"{}", headers={}
        )
    finally:
        await store.close()
    age_sqlite_store(db, 3 * DAY)
    listener = new_listener(db)
    async with listener:
        # A young cutoff first: everything here is three days old, so nothing goes.
        kept = await listener.prune(4 * DAY, limit=2)
        assert (kept.runs, kept.events, kept.unroutable, kept.more) == (0, 0, 0, False)
        counts = await listener.prune(2 * DAY, limit=2)
        assert (counts.runs, counts.events, counts.transitions) == (5, 5, 5)
        assert (counts.calls, counts.unroutable, counts.more) == (0, 1, False)
        assert (await listener.store.list_runs()).items == []


async def test_prune_refuses_less_than_a_day(tmp_path: Path) -> None:
    listener = new_listener(tmp_path / "young.db")
    async with listener:
        await listener.track("local", "routing", "run-1", RunStatus.SUCCEEDED)
        with pytest.raises(ValueError, match="at least one day") as caught:
            await listener.prune(DAY - 1)
        assert "taken as new" in str(caught.value)
        assert await listener.store.get_run("run-1") is not None
    with pytest.raises(RuntimeError, match="not started"):
        await listener.prune(DAY)


@pytest.mark.parametrize("retention", [3600.0, -DAY, math.nan])
def test_retention_under_a_day_is_refused(tmp_path: Path, retention: float) -> None:
    with pytest.raises(ValueError, match="retention must be at least one day"):
        new_listener(tmp_path / "r.db", retention=retention)


async def test_without_retention_nothing_is_pruned(tmp_path: Path) -> None:
    db = tmp_path / "keep.db"
    await finished_and_live_runs(db)
    for retention in (None, 0):
        listener = new_listener(db, retention=retention, retention_interval=0.02)
        async with listener:
            assert listener.pruner is None
            assert await listener.store.get_run("run-old") is not None


# -- results through providers -----------------------------------------------------------


class FakeProvider:
    name = "local"

    def __init__(self) -> None:
        self.asked: list[tuple[str, str]] = []

    def parse_event(self, payload: Any, *, delivery_id: str) -> RunEvent:
        raise NotImplementedError

    async def submit(self, submission: Submission, *, callback_url: str | None) -> str:
        raise NotImplementedError

    async def status(self, application: str, run_id: str) -> RunState:
        raise NotImplementedError

    async def result(self, application: str, run_id: str) -> RunResult:
        self.asked.append((application, run_id))
        return RunResult(run_id=run_id, status=RunStatus.SUCCEEDED, output={"answer": 42})

    async def cancel(self, application: str, run_id: str) -> None:
        raise NotImplementedError

    async def aclose(self) -> None:
        pass


async def test_handlers_fetch_results_through_the_provider(tmp_path: Path) -> None:
    provider = FakeProvider()
    listener = new_listener(tmp_path / "p.db", providers=[provider])
    results: list[Any] = []

    @listener.on("succeeded", name="fetcher")
    async def fetch(event: RunEvent) -> None:
        results.append(await event.fetch_result())

    @listener.on("succeeded", name="nothing", provider="elsewhere")
    async def elsewhere(event: RunEvent) -> None:
        pass

    async with running(listener) as client:
        assert (await deliver(client, "p1", "run-p")).status_code == 202
        await call_state(listener.store, "fetcher", CallState.DONE)
    assert provider.asked == [("routing", "run-p")]
    assert results[0].output == {"answer": 42}


async def test_without_a_provider_fetch_result_is_a_lookup_error(tmp_path: Path) -> None:
    listener = new_listener(tmp_path / "np.db", dispatch=fast(max_attempts=1))
    errors: list[str] = []

    @listener.on("succeeded", name="fetcher")
    async def fetch(event: RunEvent) -> None:
        try:
            await event.fetch_result()
        except LookupError as exc:
            errors.append(str(exc))

    async with running(listener) as client:
        await deliver(client, "np1")
        await call_state(listener.store, "fetcher", CallState.DONE)
    assert "cannot fetch results" in errors[0]


# -- the first poll of a submitted run ----------------------------------------------------


@contextlib.asynccontextmanager
async def submitting(
    db: Path, sources: list[Source], *, public_url: str | None = None, **poll: Any
) -> AsyncIterator[Listener]:
    """A started listener that submits to a fake Nextmv whose runs never end by themselves.

    No poller (`poll` are further `PollSettings`), so the stored poll time is the one
    submission set."""
    settings = PollSettings(**{"enabled": False, "first_poll": 30.0, **poll})
    async with (
        FakePlatform(plan=RunPlan(runs_for=None)) as platform,
        platform.nextmv_provider() as nextmv,
    ):
        listener = Listener(
            store_url=f"sqlite:///{db}",
            sources=sources,
            providers=[nextmv],
            public_url=public_url,
            dispatch=DispatchSettings(enabled=False),
            poll=settings,
        )
        async with listener:
            yield listener


async def first_poll_after(listener: Listener, **options: Any) -> float:
    """Seconds from a new run's submission to its stored first poll."""
    handle = await listener.submit("nextmv", "routing", {"stops": 2}, **options)
    run = await listener.store.get_run(handle.run_id)
    assert run is not None
    assert run.next_poll_at is not None
    return (run.next_poll_at - handle.submitted_at).total_seconds()


async def test_a_run_no_source_can_hear_is_polled_from_the_schedules_first_step(
    tmp_path: Path,
) -> None:
    # The only source reads another provider's payloads: no Nextmv webhook can arrive.
    async with submitting(
        tmp_path / "other.db",
        [Source("std", "local", SCHEME)],
        public_url="https://hooks.example",
        schedule=PollSchedule(interval=3.0),
    ) as listener:
        assert await first_poll_after(listener) == 3.0
        # An explicit first_poll still wins.
        assert await first_poll_after(listener, first_poll=45.0) == 45.0
    # Plain poll-only mode, on the default schedule.
    async with submitting(tmp_path / "none.db", []) as listener:
        assert await first_poll_after(listener) == PollSchedule().interval == 2.0
    # A first_poll sooner than the schedule's first step is kept.
    async with submitting(tmp_path / "soon.db", [], first_poll=0.5) as listener:
        assert await first_poll_after(listener) == 0.5


@pytest.mark.parametrize("public_url", [None, "https://hooks.example"])
async def test_a_run_a_source_can_hear_keeps_the_configured_first_poll(
    tmp_path: Path, public_url: str | None
) -> None:
    # Without a public URL, an account-level webhook can still reach the source.
    source = Source("nextmv", "nextmv", NextmvSignature([generate_hmac_secret()]))
    async with submitting(tmp_path / "heard.db", [source], public_url=public_url) as listener:
        assert await first_poll_after(listener) == 30.0


async def test_plugins_load_by_module_path(tmp_path: Path) -> None:
    listener = new_listener(tmp_path / "pl.db", plugins=["handlers.log"])
    assert "handlers.log.log_transition" in listener.handlers


def test_bad_construction() -> None:
    with pytest.raises(ValueError, match="max_body_bytes"):
        Listener(store_url="sqlite://:memory:", receiver=ReceiverSettings(max_body_bytes=0))
    with pytest.raises(ValueError, match="lease_margin"):
        Listener(store_url="sqlite://:memory:", dispatch=DispatchSettings(lease_margin=-1))
    # The keywords from before the settings objects fail at once, naming the argument.
    with pytest.raises(TypeError, match="dispatch must be a DispatchSettings"):
        Listener(store_url="sqlite://:memory:", dispatch=False)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="poll must be a PollSettings"):
        Listener(store_url="sqlite://:memory:", poll=True)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="receiver must be a ReceiverSettings"):
        Listener(store_url="sqlite://:memory:", receiver={})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="retention_interval"):
        Listener(store_url="sqlite://:memory:", retention=DAY, retention_interval=0)
    listener = Listener(store_url="sqlite://:memory:", sources=[Source("a", "local", SCHEME)])
    with pytest.raises(ValueError, match="already configured"):
        listener.add_source(Source("a", "local", SCHEME))
    with pytest.raises(ValueError, match="source name"):
        Source("bad name", "local", SCHEME)
    with pytest.raises(ValueError, match="unknown provider"):
        Source("x", "no-such-provider", SCHEME)
    with pytest.raises(ValueError, match="public_url"):
        listener.callback_url("a", "run")
