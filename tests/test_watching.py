"""Webhook health notices from a real store (`listener/watching.py`): the window read back,
each notice delivered once per episode to the handlers that asked for it."""

from __future__ import annotations

import itertools

from listener import Handlers, Origin, RunEvent, RunStatus
from listener.notices import DEGRADED, RECOVERED, Notice, NoticeSettings
from listener.store import Store
from listener.watching import NoticeWatcher

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
