"""The fallback poller against the fake platform over loopback, with a real SQLite store."""

from __future__ import annotations

import asyncio
import dataclasses
import random
import re
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from helpers import wait_for

from listener import poller as poller_module
from listener.budget import SharedRateLimiter
from listener.events import Origin, RunEvent, RunStatus
from listener.overdue import OverdueNotice, OverdueSettings
from listener.poller import Poller, PollSchedule, PollSettings
from listener.providers.base import Provider, Submission
from listener.providers.nextmv import NextmvProvider
from listener.run_durations import LearnSettings
from listener.store import NewRun, Store, open_store
from listener.store.base import RecordResult, RunRecord
from listener.testing import FakePlatform, RunPlan

S = RunStatus
APP = "routing"


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    store = await open_store(f"sqlite:///{tmp_path / 'listener.db'}")
    yield store
    await store.close()


@pytest.fixture
async def platform() -> AsyncIterator[FakePlatform]:
    # Runs stay running until the test finishes them, so each test sets the scene exactly.
    async with FakePlatform(plan=RunPlan(runs_for=None), seed=3) as platform:
        yield platform


@pytest.fixture
async def nextmv(platform: FakePlatform) -> AsyncIterator[NextmvProvider]:
    async with platform.nextmv_provider(sleep=_no_sleep) as provider:
        yield provider


async def _no_sleep(seconds: float) -> None:
    await asyncio.sleep(0)


class Recorder:
    """The listener's record path, reduced to what the poller needs: one handler."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.events: list[RunEvent] = []

    async def __call__(self, event: RunEvent) -> RecordResult:
        self.events.append(event)
        return await self.store.record(event, ["on_final"])


SETTINGS = frozenset(field.name for field in dataclasses.fields(PollSettings))


def make_poller(
    store: Store, providers: dict[str, Provider], recorder: Recorder, **options: object
) -> Poller:
    """A poller on a fixed schedule without jitter; `options` are `PollSettings` fields or
    the poller's own keywords."""
    options.setdefault("rng", random.Random(5))
    options.setdefault("schedule", PollSchedule(interval=2.0, cap=30.0, jitter=0.0))
    settings = {name: options.pop(name) for name in list(options) if name in SETTINGS}
    return Poller(
        store,
        providers,
        recorder,
        PollSettings(**settings),  # type: ignore[arg-type]
        **options,  # type: ignore[arg-type]
    )


async def submit(
    provider: NextmvProvider, store: Store, *, grace: float = 0.0, **run: object
) -> str:
    run_id = await provider.submit(Submission(APP, {"stops": 3}))
    await store.register_run(
        NewRun(run_id, "nextmv", APP, grace_seconds=grace, **run)  # type: ignore[arg-type]
    )
    return run_id


async def test_runs_within_grace_are_not_polled(
    store: Store, platform: FakePlatform, nextmv: NextmvProvider
) -> None:
    await submit(nextmv, store, grace=3600)
    poller = make_poller(store, {"nextmv": nextmv}, Recorder(store))
    report = await poller.poll_once()
    assert report.claimed == 0
    assert report.status_calls == 0
    assert sum(platform.status_calls.values()) == 0


async def test_a_finished_run_is_recorded_through_the_same_path(
    store: Store, platform: FakePlatform, nextmv: NextmvProvider
) -> None:
    run_id = await submit(nextmv, store)
    platform.finish(run_id, "succeeded")
    recorder = Recorder(store)
    poller = make_poller(store, {"nextmv": nextmv}, recorder)
    report = await poller.poll_once()
    assert (report.claimed, report.status_calls, report.learned) == (1, 1, 1)
    (event,) = recorder.events
    assert event.origin is Origin.POLL
    assert event.status is S.SUCCEEDED
    run = await store.get_run(run_id)
    assert run is not None
    assert run.status is S.SUCCEEDED
    assert run.next_poll_at is None
    calls = await store.list_calls(run_id=run_id)
    assert [(c.handler, c.status) for c in calls.items] == [("on_final", S.SUCCEEDED)]
    # A terminal run is never polled again.
    later = datetime.now(UTC) + timedelta(days=1)
    assert (await poller.poll_once(now=later)).status_calls == 0


async def test_a_poll_and_a_webhook_of_the_same_end_call_handlers_once(
    store: Store, platform: FakePlatform, nextmv: NextmvProvider
) -> None:
    run_id = await submit(nextmv, store)
    platform.finish(run_id, "failed")
    await make_poller(store, {"nextmv": nextmv}, Recorder(store)).poll_once()
    late_webhook = RunEvent("hook:1", "nextmv", APP, run_id, S.FAILED)
    result = await store.record(late_webhook, ["on_final"])
    assert result.transition is None
    assert len((await store.list_calls(run_id=run_id)).items) == 1


async def test_a_running_run_is_rescheduled_with_backoff(
    store: Store, platform: FakePlatform, nextmv: NextmvProvider
) -> None:
    run_id = await submit(nextmv, store)
    platform.start_run(run_id)
    poller = make_poller(store, {"nextmv": nextmv}, Recorder(store))
    t0 = datetime.now(UTC) + timedelta(seconds=1)
    first = await poller.poll_once(now=t0)
    assert (first.learned, first.rescheduled) == (1, 1)  # queued -> running was news
    run = await store.get_run(run_id)
    assert run is not None
    assert run.status is S.RUNNING
    assert run.poll_attempts == 1
    assert run.lease_owner is None
    assert run.next_poll_at == t0 + timedelta(seconds=2)
    # Nothing is due before then; at then, the next wait doubles.
    assert (await poller.poll_once(now=t0 + timedelta(seconds=1))).claimed == 0
    t1 = t0 + timedelta(seconds=2)
    second = await poller.poll_once(now=t1)
    assert (second.claimed, second.learned) == (1, 0)
    run = await store.get_run(run_id)
    assert run is not None
    assert run.poll_attempts == 2
    assert run.next_poll_at == t1 + timedelta(seconds=4)
    assert platform.status_calls[run_id] == 2


async def test_a_run_past_its_deadline_expires(
    store: Store, platform: FakePlatform, nextmv: NextmvProvider
) -> None:
    deadline = datetime.now(UTC) + timedelta(seconds=30)
    run_id = await submit(nextmv, store, grace=3600, deadline=deadline)
    recorder = Recorder(store)
    poller = make_poller(store, {"nextmv": nextmv}, recorder)
    report = await poller.poll_once(now=deadline + timedelta(seconds=1))
    assert report.expired == 1
    assert platform.status_calls[run_id] == 1  # asked once more before giving up
    run = await store.get_run(run_id)
    assert run is not None
    assert run.status is S.EXPIRED
    assert recorder.events[-1].status is S.EXPIRED
    # It was running when last asked, then expired: one call for each transition.
    calls = (await store.list_calls(run_id=run_id)).items
    assert [c.status for c in calls] == [S.EXPIRED, S.RUNNING]
    # The platform's real answer, arriving later, still wins over the listener's guess.
    platform.finish(run_id, "succeeded")
    moved = await store.record(RunEvent("hook:late", "nextmv", APP, run_id, S.SUCCEEDED))
    assert moved.status is S.SUCCEEDED


async def test_the_next_poll_never_skips_past_the_deadline(
    store: Store, platform: FakePlatform, nextmv: NextmvProvider
) -> None:
    deadline = datetime.now(UTC) + timedelta(seconds=1)
    run_id = await submit(nextmv, store, deadline=deadline)
    now = datetime.now(UTC)
    poller = make_poller(store, {"nextmv": nextmv}, Recorder(store))
    await poller.poll_once(now=now)
    run = await store.get_run(run_id)
    assert run is not None
    assert run.next_poll_at == deadline


async def test_rate_limited_provider_is_paused(
    store: Store, platform: FakePlatform, platform_no_retry: NextmvProvider
) -> None:
    run_id = await submit(platform_no_retry, store)
    platform.fail_next(429, route="runs.metadata", times=10, retry_after="120")
    poller = make_poller(store, {"nextmv": platform_no_retry}, Recorder(store))
    now = datetime.now(UTC)
    report = await poller.poll_once(now=now)
    assert report.errors == 1
    run = await store.get_run(run_id)
    assert run is not None
    assert run.status is S.QUEUED
    # The run waits at least until the platform's Retry-After has passed...
    assert run.next_poll_at is not None
    assert run.next_poll_at >= now + timedelta(seconds=100)
    # ...and so does every other run of that provider, without a call being made.
    other = await submit(platform_no_retry, store)
    second = await poller.poll_once(now=datetime.now(UTC) + timedelta(seconds=1))
    assert (second.claimed, second.status_calls) == (1, 0)
    assert "nextmv" in second.providers_paused
    waiting = await store.get_run(other)
    assert waiting is not None
    assert waiting.next_poll_at is not None
    assert waiting.next_poll_at >= now + timedelta(seconds=100)
    assert platform.status_calls[other] == 0


@pytest.fixture
async def platform_no_retry(platform: FakePlatform) -> AsyncIterator[NextmvProvider]:
    async with platform.nextmv_provider(sleep=_no_sleep, max_attempts=1) as provider:
        yield provider


async def test_server_errors_back_off_and_recover(
    store: Store, platform: FakePlatform, platform_no_retry: NextmvProvider
) -> None:
    run_id = await submit(platform_no_retry, store)
    platform.finish(run_id, "succeeded")
    platform.fail_next(503, route="runs.metadata")
    poller = make_poller(store, {"nextmv": platform_no_retry}, Recorder(store))
    now = datetime.now(UTC)
    assert (await poller.poll_once(now=now)).errors == 1
    run = await store.get_run(run_id)
    assert run is not None
    assert run.status is S.QUEUED
    assert run.next_poll_at is not None
    report = await poller.poll_once(now=run.next_poll_at)
    assert report.learned == 1
    done = await store.get_run(run_id)
    assert done is not None
    assert done.status is S.SUCCEEDED


async def test_many_runs_of_one_application_are_checked_in_one_listing(
    store: Store, platform: FakePlatform, nextmv: NextmvProvider
) -> None:
    run_ids = [await submit(nextmv, store) for _ in range(12)]
    for run_id in run_ids[:8]:
        platform.finish(run_id, "succeeded")
    poller = make_poller(store, {"nextmv": nextmv}, Recorder(store))
    report = await poller.poll_once()
    assert report.claimed == 12
    assert report.status_calls == 1  # one page of the run listing covered them all
    assert sum(platform.status_calls.values()) == 0
    statuses = {r: (await store.get_run(r)).status for r in run_ids}  # type: ignore[union-attr]
    assert [statuses[r] for r in run_ids] == [S.SUCCEEDED] * 8 + [S.RUNNING] * 4


async def test_runs_the_listing_misses_are_asked_one_by_one(
    store: Store, platform: FakePlatform
) -> None:
    platform.page_size = 2
    async with platform.nextmv_provider(sleep=_no_sleep) as provider:
        old = [await submit(provider, store) for _ in range(2)]
        # Newer runs push the old ones beyond the pages a batch check reads.
        for _ in range(12):
            await provider.submit(Submission(APP, {}))
        for run_id in old:
            platform.finish(run_id, "succeeded")
        report = await make_poller(store, {"nextmv": provider}, Recorder(store)).poll_once()
    assert report.learned == 2
    assert [platform.status_calls[r] for r in old] == [1, 1]


class CountingLimiter(SharedRateLimiter):
    """The real shared budget, counting the tokens taken; `on_acquire` runs after each."""

    def __init__(
        self,
        store: Store,
        name: str,
        rate: float,
        *,
        burst: int,
        on_acquire: Callable[[int], None] | None,
    ) -> None:
        super().__init__(store, name, rate, burst=burst)
        self.acquired = 0
        self.on_acquire = on_acquire

    async def acquire(self) -> None:
        await super().acquire()
        self.acquired += 1
        if self.on_acquire is not None:
            self.on_acquire(self.acquired)


class Limiters:
    """Stands in for `SharedRateLimiter` where the poller builds one per provider."""

    def __init__(self) -> None:
        self.built: list[CountingLimiter] = []
        self.on_acquire: Callable[[int], None] | None = None

    def __call__(self, store: Store, name: str, rate: float, *, burst: int = 1) -> CountingLimiter:
        limiter = CountingLimiter(store, name, rate, burst=burst, on_acquire=self.on_acquire)
        self.built.append(limiter)
        return limiter


@pytest.fixture
def limiters(monkeypatch: pytest.MonkeyPatch) -> Limiters:
    limiters = Limiters()
    monkeypatch.setattr(poller_module, "SharedRateLimiter", limiters)
    return limiters


async def test_each_listing_page_of_a_batch_check_takes_a_token(
    store: Store, platform: FakePlatform, limiters: Limiters
) -> None:
    platform.page_size = 2
    async with platform.nextmv_provider(sleep=_no_sleep) as provider:
        run_ids = [await submit(provider, store) for _ in range(8)]
        report = await make_poller(store, {"nextmv": provider}, Recorder(store)).poll_once()
    # Two due runs a page: the one batch check read four pages and found them all.
    assert platform.api_calls["runs.list"] == 4
    assert sum(platform.status_calls[r] for r in run_ids) == 0
    (limiter,) = limiters.built
    assert limiter.acquired == 4  # one token per request, not one per check
    assert report.status_calls == 4
    assert report.learned == 8


async def test_a_429_on_a_later_page_pauses_the_provider(
    store: Store,
    platform: FakePlatform,
    platform_no_retry: NextmvProvider,
    limiters: Limiters,
) -> None:
    platform.page_size = 2
    run_ids = [await submit(platform_no_retry, store) for _ in range(8)]
    poller = make_poller(store, {"nextmv": platform_no_retry}, Recorder(store))

    def limit_second_page(tokens: int) -> None:
        if tokens == 2:
            platform.fail_next(429, route="runs.list", retry_after="120")

    limiters.on_acquire = limit_second_page
    now = datetime.now(UTC)
    report = await poller.poll_once(now=now)
    assert platform.api_calls["runs.list"] == 2
    (limiter,) = limiters.built
    assert (limiter.acquired, report.status_calls, report.errors) == (2, 2, 1)
    assert sum(platform.status_calls[r] for r in run_ids) == 0
    for run_id in run_ids:
        run = await store.get_run(run_id)
        assert run is not None
        assert run.next_poll_at is not None
        assert run.next_poll_at >= now + timedelta(seconds=100)
    later = await poller.poll_once(now=datetime.now(UTC) + timedelta(seconds=1))
    assert (later.claimed, later.status_calls) == (0, 0)


async def test_runs_due_soon_ride_along_on_a_listing_read(
    store: Store, platform: FakePlatform, nextmv: NextmvProvider
) -> None:
    now = datetime.now(UTC)
    due = await submit(nextmv, store, grace=0, submitted_at=now)
    # Due within the ride window (the 30 s cap, at most a quarter of the lease): one
    # ends, one keeps going.
    ends = await submit(nextmv, store, grace=600, first_poll_seconds=5, submitted_at=now)
    keeps = await submit(nextmv, store, grace=600, first_poll_seconds=5, submitted_at=now)
    # Due long after the window: not touched.
    later = await submit(nextmv, store, grace=600, first_poll_seconds=60, submitted_at=now)
    platform.finish(ends, "succeeded")
    recorder = Recorder(store)
    report = await make_poller(store, {"nextmv": nextmv}, recorder).poll_once(now=now)
    assert (report.claimed, report.status_calls) == (1, 1)  # one listing page, no more
    assert sum(platform.status_calls.values()) == 0
    assert {(e.run_id, e.status) for e in recorder.events} == {
        (due, S.RUNNING),
        (ends, S.SUCCEEDED),
        (keeps, S.RUNNING),
    }
    ended = await store.get_run(ends)
    assert ended is not None
    assert ended.status is S.SUCCEEDED
    # A rider counts as polled, but its next poll never comes earlier than planned.
    rode = await store.get_run(keeps)
    assert rode is not None
    assert (rode.poll_attempts, rode.lease_owner) == (1, None)
    assert rode.next_poll_at == now + timedelta(seconds=5)
    untouched = await store.get_run(later)
    assert untouched is not None
    assert (untouched.poll_attempts, untouched.status) == (0, S.QUEUED)
    assert untouched.next_poll_at == now + timedelta(seconds=60)


async def test_a_rider_the_pages_read_do_not_show_keeps_its_turn(
    store: Store, platform: FakePlatform
) -> None:
    platform.page_size = 2
    now = datetime.now(UTC)
    async with platform.nextmv_provider(sleep=_no_sleep) as provider:
        rider = await submit(provider, store, grace=600, first_poll_seconds=5, submitted_at=now)
        for _ in range(4):  # pushes the rider off the first page
            await provider.submit(Submission(APP, {}))
        due = await submit(provider, store, grace=0, submitted_at=now)
        poller = make_poller(store, {"nextmv": provider}, Recorder(store))
        report = await poller.poll_once(now=now)
    assert (report.claimed, report.status_calls) == (1, 1)
    assert platform.api_calls["runs.list"] == 1
    run = await store.get_run(rider)
    assert run is not None
    assert (run.poll_attempts, run.lease_owner, run.status) == (0, None, S.QUEUED)
    assert run.next_poll_at == now + timedelta(seconds=5)
    assert platform.status_calls[due] == 0


async def test_a_listing_read_records_the_end_of_runs_that_were_not_due(
    store: Store, platform: FakePlatform, nextmv: NextmvProvider
) -> None:
    # A run trusted to report by webhook (long grace) whose end was lost: the next
    # listing read made for another run shows it finished, and that is recorded.
    trusted = await submit(nextmv, store, grace=3600)
    other = await submit(nextmv, store, grace=3600)
    due = await submit(nextmv, store, grace=0)
    platform.finish(trusted, "failed")
    # Not ours: seen finished in the listing, but never recorded.
    stranger = await nextmv.submit(Submission(APP, {}))
    platform.finish(stranger, "succeeded")
    recorder = Recorder(store)
    poller = make_poller(store, {"nextmv": nextmv}, recorder, ride_window=0)
    # Two due runs, so the batch listing is used.
    second_due = await submit(nextmv, store, grace=0)
    report = await poller.poll_once()
    assert report.status_calls == 1
    finals = {(e.run_id, e.status, e.origin) for e in recorder.events if e.status.is_terminal}
    assert finals == {(trusted, S.FAILED, Origin.POLL)}
    assert await store.get_run(stranger) is None
    still = await store.get_run(other)
    assert still is not None
    assert still.status is S.QUEUED  # what the listing said of it changed nothing
    assert {due, second_due} <= {e.run_id for e in recorder.events}
    # The next read records nothing again.
    again = await poller.poll_once(now=datetime.now(UTC) + timedelta(seconds=10))
    assert again.learned == 0


async def test_two_pollers_never_poll_the_same_run(
    tmp_path: Path, platform: FakePlatform, nextmv: NextmvProvider
) -> None:
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    one, two = await open_store(url), await open_store(url)
    try:
        run_ids = [await submit(nextmv, one) for _ in range(30)]
        for run_id in run_ids:
            platform.finish(run_id, "succeeded")
        # No batch listing here, so every claimed run is one status call.
        providers: dict[str, Provider] = {"nextmv": _OneByOne(nextmv)}
        first = make_poller(one, providers, Recorder(one), batch_size=7)
        second = make_poller(two, providers, Recorder(two), batch_size=7)
        for _ in range(5):
            await asyncio.gather(first.poll_once(), second.poll_once())
        assert sorted(platform.status_calls) == sorted(run_ids)
        assert set(platform.status_calls.values()) == {1}
        for run_id in run_ids:
            run = await one.get_run(run_id)
            assert run is not None
            assert run.status is S.SUCCEEDED
    finally:
        await one.close()
        await two.close()


class _OneByOne:
    """A provider without the batch capability, to count one call per run."""

    def __init__(self, inner: NextmvProvider) -> None:
        self.inner = inner
        self.name = inner.name
        self.parse_event = inner.parse_event
        self.submit = inner.submit
        self.status = inner.status
        self.result = inner.result
        self.cancel = inner.cancel
        self.aclose = inner.aclose


async def test_a_run_of_an_unknown_provider_waits_and_expires(store: Store) -> None:
    deadline = datetime.now(UTC) + timedelta(seconds=10)
    await store.register_run(NewRun("r-1", "elsewhere", APP, grace_seconds=0, deadline=deadline))
    poller = make_poller(store, {}, Recorder(store))
    report = await poller.poll_once()
    assert (report.status_calls, report.rescheduled) == (0, 1)
    expired = await poller.poll_once(now=deadline)
    assert expired.expired == 1


async def test_poll_only_mode_runs_in_the_background(
    store: Store, platform: FakePlatform, nextmv: NextmvProvider
) -> None:
    run_ids = [await submit(nextmv, store) for _ in range(3)]
    recorder = Recorder(store)
    poller = make_poller(
        store,
        {"nextmv": nextmv},
        recorder,
        interval=0.02,
        schedule=PollSchedule(interval=0.02, cap=0.05),
    )
    await poller.start()
    try:
        for run_id in run_ids:
            platform.finish(run_id, "succeeded")
        for _ in range(500):
            runs = [await store.get_run(r) for r in run_ids]
            if all(r is not None and r.status is S.SUCCEEDED for r in runs):
                break
            await asyncio.sleep(0.01)
    finally:
        await poller.stop()
    assert {e.run_id for e in recorder.events if e.status is S.SUCCEEDED} == set(run_ids)
    await poller.start()
    with pytest.raises(RuntimeError, match="already started"):
        await poller.start()
    await poller.stop()


class BrokenOnce:
    """A real provider whose first status call fails with an error nobody expects."""

    def __init__(self, provider: NextmvProvider) -> None:
        self._provider = provider
        self.broken = True

    def __getattr__(self, name: str) -> Any:
        return getattr(self._provider, name)

    async def status(self, application: str, run_id: str) -> Any:
        if self.broken:
            self.broken = False
            raise RuntimeError("not expected")
        return await self._provider.status(application, run_id)


async def test_a_pass_that_fails_unexpectedly_does_not_end_polling(
    store: Store, platform: FakePlatform, nextmv: NextmvProvider, caplog: pytest.LogCaptureFixture
) -> None:
    run_id = await submit(nextmv, store)
    platform.finish(run_id, "succeeded")
    broken = BrokenOnce(nextmv)
    poller = make_poller(
        store,
        {"nextmv": broken},
        Recorder(store),
        interval=0.02,
        lease=0.2,
        schedule=PollSchedule(interval=0.02, cap=0.05),
    )
    await poller.start()
    try:

        async def ended() -> bool:
            run = await store.get_run(run_id)
            return run is not None and run.status is S.SUCCEEDED

        await wait_for(ended, "the run learned after the failed pass")
    finally:
        await poller.stop()
    assert not broken.broken
    assert "poll pass failed: RuntimeError" in caplog.text


# -- settings ----------------------------------------------------------------------------


def test_settings_defaults_are_the_services() -> None:
    settings = PollSettings()
    assert settings.enabled is True
    assert (settings.grace, settings.first_poll, settings.deadline) == (300.0, 30.0, None)
    assert (settings.interval, settings.rate_limit, settings.batch_size, settings.lease) == (
        1.0,
        10.0,
        100,
        60.0,
    )
    assert settings.schedule == PollSchedule()
    # Poll-only mode: no grace, first poll at once; and no first_poll means "after grace".
    PollSettings(grace=0, first_poll=0)
    assert PollSettings(first_poll=None).first_poll is None


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"enabled": "yes"}, "enabled must be true or false, got 'yes'"),
        ({"grace": -1}, "grace must be at least 0, got -1"),
        ({"first_poll": -0.5}, "first_poll must be at least 0, got -0.5"),
        ({"deadline": 0}, "deadline must be positive, got 0"),
        ({"interval": 0}, "interval must be positive, got 0"),
        ({"interval": float("nan")}, "interval must be positive, got nan"),
        ({"schedule": 2.0}, "schedule must be a PollSchedule, got 2.0"),
        ({"rate_limit": 0}, "rate_limit must be positive, got 0"),
        ({"batch_size": 0}, "batch_size must be at least 1, got 0"),
        ({"batch_size": 10.0}, "batch_size must be a whole number, got 10.0"),
        ({"lease": -5}, "lease must be positive, got -5"),
    ],
)
def test_settings_are_checked_when_made(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        PollSettings(**changes)


def test_settings_are_frozen() -> None:
    settings = PollSettings()
    with pytest.raises(AttributeError):
        settings.grace = 0  # type: ignore[misc]


async def test_the_poller_runs_by_its_settings(store: Store) -> None:
    schedule = PollSchedule(interval=1.0, cap=40.0)
    settings = PollSettings(interval=0.5, schedule=schedule, batch_size=9, lease=20.0)
    poller = Poller(store, {}, Recorder(store), settings)
    assert poller.settings is settings
    assert (poller.interval, poller.schedule, poller.batch_size) == (0.5, schedule, 9)
    assert poller.lease_seconds == 20.0
    # Riders are claimed within the cap, at most a quarter of the lease.
    assert poller.ride_window == 5.0
    short_cap = PollSettings(schedule=PollSchedule(cap=8.0), lease=60.0)
    assert Poller(store, {}, Recorder(store), short_cap).ride_window == 8.0


# -- learned durations -------------------------------------------------------------------


async def ended_runs(store: Store, count: int, seconds: float, origin: Origin) -> None:
    """`count` runs of APP that took `seconds` each, their ends learned by `origin`."""
    for i in range(count):
        submitted = datetime.now(UTC) - timedelta(hours=1)
        run_id = f"past-{origin.value}-{i}"
        await store.register_run(NewRun(run_id, "nextmv", APP, submitted_at=submitted))
        done = RunEvent(
            f"{run_id}-end", "nextmv", APP, run_id, S.SUCCEEDED, origin=origin,
            occurred_at=submitted + timedelta(seconds=seconds),
        )  # fmt: skip
        await store.record(done)


LEARN = LearnSettings(min_samples=20, refresh=1.0)


async def test_a_run_is_first_checked_near_its_applications_expected_end(
    store: Store, platform: FakePlatform, nextmv: NextmvProvider
) -> None:
    await ended_runs(store, 20, 100.0, Origin.POLL)
    run_id = await submit(nextmv, store)
    platform.start_run(run_id)
    poller = make_poller(store, {"nextmv": nextmv}, Recorder(store), learn=LEARN)
    t0 = datetime.now(UTC) + timedelta(seconds=1)
    assert (await poller.poll_once(now=t0)).learned == 1  # queued -> running
    run = await store.get_run(run_id)
    assert run is not None
    # Every run of the application took 100 s: the next check is then, not 2 s later.
    assert run.next_poll_at == run.submitted_at + timedelta(seconds=100)
    assert (await poller.poll_once(now=t0 + timedelta(seconds=60))).claimed == 0
    at = run.submitted_at + timedelta(seconds=100)
    assert (await poller.poll_once(now=at)).status_calls == 1
    after = await store.get_run(run_id)
    assert after is not None
    assert after.next_poll_at == at + timedelta(seconds=30)  # the cap from there on


async def test_without_learning_the_fixed_schedule_holds(
    store: Store, platform: FakePlatform, nextmv: NextmvProvider
) -> None:
    await ended_runs(store, 20, 100.0, Origin.POLL)
    run_id = await submit(nextmv, store)
    platform.start_run(run_id)
    poller = make_poller(store, {"nextmv": nextmv}, Recorder(store), learn=None)
    t0 = datetime.now(UTC) + timedelta(seconds=1)
    await poller.poll_once(now=t0)
    run = await store.get_run(run_id)
    assert run is not None
    assert run.next_poll_at == t0 + timedelta(seconds=2)


async def running_by_webhook(store: Store, nextmv: NextmvProvider, platform: FakePlatform) -> str:
    """A run whose `running` webhook came: its silence is trusted for an hour."""
    run_id = await submit(nextmv, store, grace=3600)
    platform.start_run(run_id)
    await store.record(RunEvent(f"{run_id}-running", "nextmv", APP, run_id, S.RUNNING))
    return run_id


async def running_run(
    store: Store, nextmv: NextmvProvider, platform: FakePlatform
) -> tuple[str, RunRecord]:
    """`running_by_webhook`, with the run as the store holds it."""
    run_id = await running_by_webhook(store, nextmv, platform)
    run = await store.get_run(run_id)
    assert run is not None
    return run_id, run


async def test_while_webhooks_lose_ends_a_silent_run_is_checked_past_its_start_quantile(
    store: Store, platform: FakePlatform, nextmv: NextmvProvider
) -> None:
    await ended_runs(store, 20, 100.0, Origin.POLL)
    run_id, run = await running_run(store, nextmv, platform)
    poller = make_poller(store, {"nextmv": nextmv}, Recorder(store), learn=LEARN)
    early = await poller.poll_once(now=run.submitted_at + timedelta(seconds=90))
    assert (early.brought_forward, early.status_calls) == (0, 0)
    at = run.submitted_at + timedelta(seconds=101)
    report = await poller.poll_once(now=at)
    assert (report.brought_forward, report.claimed, report.status_calls) == (1, 1, 1)
    after = await store.get_run(run_id)
    assert after is not None
    assert after.next_poll_at == at + timedelta(seconds=30)
    platform.finish(run_id, "succeeded")
    assert (await poller.poll_once(now=at + timedelta(seconds=30))).learned == 1


async def test_while_webhooks_deliver_silence_is_trusted_up_to_three_times_the_p99(
    store: Store, platform: FakePlatform, nextmv: NextmvProvider
) -> None:
    await ended_runs(store, 20, 100.0, Origin.WEBHOOK)
    run_id, run = await running_run(store, nextmv, platform)
    poller = make_poller(store, {"nextmv": nextmv}, Recorder(store), learn=LEARN)
    trusted = await poller.poll_once(now=run.submitted_at + timedelta(seconds=250))
    assert (trusted.brought_forward, trusted.status_calls) == (0, 0)
    # A refresh period (1 s) early: taken now rather than a refresh past that age.
    late = await poller.poll_once(now=run.submitted_at + timedelta(seconds=299.5))
    assert (late.brought_forward, late.status_calls) == (1, 1)
    assert platform.status_calls[run_id] == 1


async def test_a_run_open_past_its_overdue_limit_is_reported_once(
    store: Store, platform: FakePlatform, nextmv: NextmvProvider
) -> None:
    await ended_runs(store, 20, 100.0, Origin.WEBHOOK)
    run_id, run = await running_run(store, nextmv, platform)
    told: list[OverdueNotice] = []

    async def on_overdue(notice: OverdueNotice) -> None:
        told.append(notice)

    def overdue_poller() -> Poller:
        return make_poller(
            store,
            {"nextmv": nextmv},
            Recorder(store),
            learn=LEARN,
            overdue=OverdueSettings(factor=2.0, minimum=60.0),
            on_overdue=on_overdue,
        )

    poller = overdue_poller()
    await poller.poll_once(now=run.submitted_at + timedelta(seconds=199))
    assert told == []
    at = run.submitted_at + timedelta(seconds=201)
    await poller.poll_once(now=at)
    (notice,) = told
    assert (notice.run_id, notice.running_for, notice.p99, notice.limit) == (
        run_id,
        201.0,
        100.0,
        200.0,
    )
    await poller.poll_once(now=at + timedelta(seconds=60))
    assert len(told) == 1
    # Another replica, or this one restarted, finds it reported already.
    await overdue_poller().poll_once(now=at + timedelta(seconds=120))
    assert len(told) == 1
    assert not await store.mark_overdue(run_id)


async def test_a_silent_run_without_samples_is_polled_while_its_provider_loses_ends(
    store: Store, platform: FakePlatform, nextmv: NextmvProvider
) -> None:
    for i in range(5):  # another application's ends, all learned by poll
        submitted = datetime.now(UTC) - timedelta(hours=1)
        await store.register_run(NewRun(f"o{i}", "nextmv", "other", submitted_at=submitted))
        await store.record(
            RunEvent(f"o{i}-end", "nextmv", "other", f"o{i}", S.FAILED, origin=Origin.POLL)
        )
    run_id = await running_by_webhook(store, nextmv, platform)
    poller = make_poller(store, {"nextmv": nextmv}, Recorder(store), learn=LEARN)
    report = await poller.poll_once(now=datetime.now(UTC) + timedelta(seconds=1))
    assert (report.brought_forward, report.status_calls) == (1, 1)
    assert platform.status_calls[run_id] == 1


async def test_cancel_at_deadline_cancels_the_run_before_it_expires(
    store: Store, platform: FakePlatform, nextmv: NextmvProvider
) -> None:
    deadline = datetime.now(UTC) + timedelta(seconds=30)
    run_id = await submit(nextmv, store, grace=3600, deadline=deadline)
    platform.start_run(run_id)
    poller = make_poller(store, {"nextmv": nextmv}, Recorder(store), cancel_at_deadline=True)
    report = await poller.poll_once(now=deadline + timedelta(seconds=1))
    assert report.expired == 1
    assert platform.api_calls["runs.cancel"] == 1
    assert platform.runs[run_id].status == "canceled"
    run = await store.get_run(run_id)
    assert run is not None
    assert run.status is S.EXPIRED


async def test_without_cancel_at_deadline_an_expired_run_is_left_running(
    store: Store, platform: FakePlatform, nextmv: NextmvProvider
) -> None:
    deadline = datetime.now(UTC) + timedelta(seconds=30)
    run_id = await submit(nextmv, store, grace=3600, deadline=deadline)
    platform.start_run(run_id)
    poller = make_poller(store, {"nextmv": nextmv}, Recorder(store))
    assert (await poller.poll_once(now=deadline + timedelta(seconds=1))).expired == 1
    assert platform.api_calls.get("runs.cancel", 0) == 0
    assert platform.runs[run_id].status == "running"
