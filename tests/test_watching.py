"""Webhook health notices from a real store (`listener/watching.py`): the window read back,
each notice delivered once per episode to the handlers that asked for it."""

from __future__ import annotations

import asyncio
import itertools
from datetime import UTC, datetime, timedelta
from pathlib import Path

from helpers import WAIT_LIMIT, serve, wait_for
from test_reconcile import DISPATCH, POLL

from listener import Handlers, Listener, Origin, RunEvent, RunStatus, Source
from listener.notices import DEGRADED, RECOVERED, Notice, NoticeSettings
from listener.overdue import OverdueNotice, OverdueSettings
from listener.poller import PollSettings
from listener.run_durations import LearnSettings
from listener.signatures import NextmvSignature
from listener.store import NewRun, Store, open_store
from listener.testing import FakePlatform, RunPlan
from listener.watching import NoticeWatcher, tell_overdue

SETTINGS = NoticeSettings(window=3600, threshold=0.5, recover_share=0.8, min_ends=10)
_runs = itertools.count()


async def end_runs(store: Store, origin: Origin, count: int, provider: str = "nextmv") -> None:
    for _ in range(count):
        run = f"r{next(_runs)}"
        event = RunEvent(f"{run}-end", provider, "app", run, RunStatus.SUCCEEDED, origin=origin)
        await store.record(event)


async def test_a_degraded_episode_is_noticed_once_and_its_recovery_once(store: Store) -> None:
    handlers = Handlers()
    seen: list[Notice] = []
    other: list[Notice] = []

    @handlers.on_notice(DEGRADED, RECOVERED)
    async def watch(notice: Notice) -> None:
        seen.append(notice)

    @handlers.on_notice(DEGRADED, provider="local")
    def elsewhere(notice: Notice) -> None:
        other.append(notice)

    watcher = NoticeWatcher(store, handlers, ["nextmv"], SETTINGS)
    await end_runs(store, Origin.WEBHOOK, 5)
    assert await watcher.evaluate() == []  # five ends: too few to judge
    await end_runs(store, Origin.POLL, 6)
    (degraded,) = await watcher.evaluate()
    assert (degraded.kind, degraded.ends, degraded.counts) == (
        DEGRADED, 11, {"webhook": 5, "poll": 6},
    )  # fmt: skip
    assert await watcher.evaluate() == []
    await end_runs(store, Origin.WEBHOOK, 15)  # 20 of 26: above the threshold, not recovered
    assert await watcher.evaluate() == []
    await end_runs(store, Origin.WEBHOOK, 20)  # 40 of 46
    (recovered,) = await watcher.evaluate()
    assert recovered.kind == RECOVERED
    assert recovered.episode_start == degraded.episode_start
    assert await watcher.evaluate() == []
    assert [n.kind for n in seen] == [DEGRADED, RECOVERED]
    assert other == []


async def test_replicas_on_one_store_tell_an_episode_once(store: Store) -> None:
    handlers = Handlers()
    seen: list[str] = []

    @handlers.on_notice(DEGRADED, RECOVERED)
    async def watch(notice: Notice) -> None:
        seen.append(notice.kind)

    replicas = [NoticeWatcher(store, handlers, ["nextmv"], SETTINGS) for _ in range(3)]
    await end_runs(store, Origin.POLL, 10)
    decided = await asyncio.gather(*(replica.evaluate() for replica in replicas))
    assert sorted(len(notices) for notices in decided) == [0, 0, 1]
    # Every replica now sees the episode, and a replica started later continues it.
    late = NoticeWatcher(store, handlers, ["nextmv"], SETTINGS)
    assert [await r.evaluate() for r in [*replicas, late]] == [[], [], [], []]
    await end_runs(store, Origin.WEBHOOK, 60)
    decided = await asyncio.gather(*(r.evaluate() for r in [late, *replicas]))
    assert sorted(len(notices) for notices in decided) == [0, 0, 0, 1]
    assert seen == [DEGRADED, RECOVERED]
    [recovered] = [n for notices in decided for n in notices]
    [episode] = await store.list_webhook_episodes()
    assert not episode.degraded
    assert recovered.kind == RECOVERED


async def test_a_failing_notice_handler_is_tried_again_then_given_up(store: Store) -> None:
    handlers = Handlers()
    calls: list[str] = []

    @handlers.on_notice(DEGRADED)
    def flaky(notice: Notice) -> None:
        calls.append(notice.key)
        if len(calls) < 2:
            raise RuntimeError("not now")

    @handlers.on_notice(DEGRADED)
    def broken(notice: Notice) -> None:
        calls.append("broken")
        raise RuntimeError("never")

    watcher = NoticeWatcher(store, handlers, ["nextmv"], SETTINGS, attempts=2)
    await end_runs(store, Origin.POLL, 10)
    (notice,) = await watcher.evaluate()
    await watcher.evaluate()
    await watcher.evaluate()
    assert calls == [notice.key, "broken", notice.key, "broken"]


async def test_serve_tells_a_handler_once_when_webhooks_stop_and_once_when_they_return(
    tmp_path: Path,
) -> None:
    # Every webhook lost: four ends learned by poll make a degraded episode; then webhooks
    # come back, and sixteen ends by webhook (16 of 20) end it.
    health = NoticeSettings(
        window=3600, threshold=0.5, recover_share=0.8, min_ends=4, interval=0.02
    )
    async with FakePlatform(plan=RunPlan(runs_for=0.01), drop_rate=1.0, seed=4) as platform:
        provider = platform.nextmv_provider()
        listener = Listener(
            store_url=f"sqlite:///{tmp_path / 'listener.db'}",
            providers=[provider],
            dispatch=DISPATCH,
            poll=POLL,
            health=health,
        )
        seen: list[Notice] = []

        @listener.on_notice(DEGRADED, RECOVERED)
        async def watch(notice: Notice) -> None:
            seen.append(notice)

        try:
            async with serve(listener.asgi()) as url:
                secret = platform.register_webhook(url + "/hooks/nextmv")
                listener.add_source(Source("nextmv", "nextmv", NextmvSignature([secret])))
                for _ in range(4):
                    handle = await listener.submit("nextmv", "app", {})
                    await listener.wait(handle.run_id, timeout=WAIT_LIMIT)
                await wait_for(lambda: len(seen) == 1, "the degraded notice")
                platform.drop_rate = 0.0
                for _ in range(16):
                    handle = await listener.submit("nextmv", "app", {})
                    event = await listener.wait(handle.run_id, timeout=WAIT_LIMIT)
                    assert event.origin is Origin.WEBHOOK
                await wait_for(lambda: len(seen) == 2, "the recovered notice")
                # Evaluations go on; nothing more is said about the same episode.
                await asyncio.sleep(health.interval * 5)
        finally:
            await provider.aclose()
    assert [(n.kind, n.provider) for n in seen] == [(DEGRADED, "nextmv"), (RECOVERED, "nextmv")]
    assert seen[0].counts == {"poll": 4}
    assert seen[1].counts == {"poll": 4, "webhook": 16}


async def test_overdue_notices_reach_the_handlers_that_ask_for_them() -> None:
    handlers = Handlers()
    told: list[tuple[str, str]] = []

    @handlers.on_notice("run_overdue", provider="nextmv")
    async def overdue(notice: OverdueNotice) -> None:
        told.append(("async", notice.key))

    @handlers.on_notice("run_overdue")
    def also(notice: OverdueNotice) -> None:
        told.append(("sync", notice.key))
        raise RuntimeError("logged, not retried")

    @handlers.on_notice("webhooks_degraded")
    def unrelated(notice: Notice) -> None:
        told.append(("degraded", notice.key))

    at = datetime(2026, 1, 1, tzinfo=UTC)
    notice = OverdueNotice("nextmv", "routing", "r1", "running", 900.0, 100.0, 200.0, 600.0, at, at)
    await tell_overdue(handlers, notice)
    assert told == [("async", "run_overdue:nextmv:r1"), ("sync", "run_overdue:nextmv:r1")]
    other = OverdueNotice("local", "app", "r2", "queued", 900.0, 100.0, 200.0, 600.0, at, at)
    await tell_overdue(handlers, other)
    assert told[2:] == [("sync", "run_overdue:local:r2")]


async def test_a_listener_tells_run_overdue_handlers_of_a_run_open_too_long(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'listener.db'}"
    long_ago = datetime.now(UTC) - timedelta(hours=2)
    store = await open_store(url)
    try:
        for i in range(20):  # the application's runs take a minute
            await store.register_run(NewRun(f"r{i}", "local", "app", submitted_at=long_ago))
            done = RunEvent(
                f"r{i}-end", "local", "app", f"r{i}", RunStatus.SUCCEEDED,
                occurred_at=long_ago + timedelta(seconds=60),
            )  # fmt: skip
            await store.record(done)
        await store.register_run(
            NewRun("stuck", "local", "app", submitted_at=long_ago, grace_seconds=86400)
        )
        await store.record(RunEvent("stuck-running", "local", "app", "stuck", RunStatus.RUNNING))
    finally:
        await store.close()
    poll = PollSettings(
        interval=0.05,
        learn=LearnSettings(refresh=0.05),
        overdue=OverdueSettings(factor=3.0, minimum=600.0),
    )
    listener = Listener(store_url=url, dispatch=DISPATCH, poll=poll)
    told: list[OverdueNotice] = []

    @listener.on_notice("run_overdue")
    async def overdue(notice: OverdueNotice) -> None:
        told.append(notice)

    async with listener:
        await wait_for(lambda: bool(told), "the run_overdue notice")
        await asyncio.sleep(0.3)  # further refreshes tell nothing new
    (notice,) = told
    assert (notice.run_id, notice.p50, notice.limit) == ("stuck", 60.0, 600.0)
    assert notice.running_for >= 7200
