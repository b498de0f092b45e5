"""Submitting, waiting, cancelling and tracking runs, against the fake platform."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from listener.client import CallbackPlan, RunClient, RunNotFound, WaitTimeout
from listener.events import Origin, RunEvent, RunStatus
from listener.providers.nextmv import NextmvProvider
from listener.store import Store, open_store
from listener.store.base import RecordResult
from listener.testing import FakePlatform, RunPlan

S = RunStatus
APP = "routing"


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'listener.db'}"


@pytest.fixture
async def store(db_url: str) -> AsyncIterator[Store]:
    store = await open_store(db_url)
    yield store
    await store.close()


@pytest.fixture
async def platform() -> AsyncIterator[FakePlatform]:
    async with FakePlatform(plan=RunPlan(runs_for=None), seed=9) as platform:
        yield platform


@pytest.fixture
async def nextmv(platform: FakePlatform) -> AsyncIterator[NextmvProvider]:
    async with platform.nextmv_provider() as provider:
        yield provider


def make_client(store: Store, nextmv: NextmvProvider, **options: object) -> RunClient:
    client: RunClient

    async def record(event: RunEvent) -> RecordResult:
        result = await store.record(event, ["h"])
        client.notify(event, result)
        return result

    client = RunClient(lambda: store, {"nextmv": nextmv}, record, **options)  # type: ignore[arg-type]
    return client


async def test_submit_records_the_run_with_its_watch_settings(
    store: Store, platform: FakePlatform, nextmv: NextmvProvider
) -> None:
    def callbacks(provider: str, nonce: str) -> CallbackPlan:
        return CallbackPlan(f"https://hooks.example/{provider}/{nonce}", {"nonce": nonce})

    client = make_client(store, nextmv, callbacks=callbacks, grace=600, first_poll=5)
    handle = await client.submit("nextmv", APP, {"stops": 2}, deadline=3600)
    assert handle.run_id in platform.runs
    assert platform.runs[handle.run_id].input == {"stops": 2}
    assert handle.callback_url is not None
    assert handle.callback_url.startswith("https://hooks.example/nextmv/")
    run = await store.get_run(handle.run_id)
    assert run is not None
    assert (run.provider, run.application, run.status) == ("nextmv", APP, S.QUEUED)
    assert run.grace_seconds == 600
    assert run.next_poll_at == handle.submitted_at + timedelta(seconds=5)
    assert run.deadline == handle.submitted_at + timedelta(seconds=3600)
    assert run.callback["nonce"] == handle.callback_url.rsplit("/", 1)[1]


async def test_a_plan_for_an_unheard_run_brings_the_first_poll_forward(
    store: Store, nextmv: NextmvProvider
) -> None:
    def unheard(provider: str, nonce: str) -> CallbackPlan:
        return CallbackPlan(None, {}, first_poll=2)

    async def next_poll_after_submission(
        client: RunClient, *, grace: float | None = None, first_poll: float | None = None
    ) -> timedelta:
        handle = await client.submit("nextmv", APP, {}, grace=grace, first_poll=first_poll)
        run = await store.get_run(handle.run_id)
        assert run is not None
        assert run.next_poll_at is not None
        return run.next_poll_at - handle.submitted_at

    client = make_client(store, nextmv, callbacks=unheard, grace=600, first_poll=30)
    assert await next_poll_after_submission(client) == timedelta(seconds=2)
    # An explicit first_poll still wins, even a later one.
    assert await next_poll_after_submission(client, first_poll=45) == timedelta(seconds=45)
    # The plan only brings the first poll forward, never back.
    sooner = make_client(store, nextmv, callbacks=unheard, grace=600, first_poll=1)
    assert await next_poll_after_submission(sooner) == timedelta(seconds=1)
    # With no first_poll the client's default is the grace, per submission too.
    by_grace = make_client(store, nextmv, callbacks=unheard, grace=600)
    assert await next_poll_after_submission(by_grace) == timedelta(seconds=2)
    assert await next_poll_after_submission(by_grace, grace=0.5) == timedelta(seconds=0.5)


async def test_submit_to_an_unknown_provider_names_the_configured_ones(
    store: Store, nextmv: NextmvProvider
) -> None:
    client = make_client(store, nextmv)
    with pytest.raises(LookupError, match=r"no provider 'flows' configured; configured: nextmv"):
        await client.submit("flows", APP, {})


async def test_wait_resolves_the_moment_the_end_is_recorded(
    store: Store, platform: FakePlatform, nextmv: NextmvProvider
) -> None:
    client = make_client(store, nextmv, poll_interval=3600)
    handle = await client.submit("nextmv", APP, {})
    waiting = asyncio.create_task(client.wait(handle.run_id, timeout=60))
    await asyncio.sleep(0.05)
    assert not waiting.done()
    webhook = RunEvent("hook:1", "nextmv", APP, handle.run_id, S.SUCCEEDED, payload={"a": 1})
    await client._record(webhook)
    # With an hour between store reads, only the in-process notification can wake it.
    event = await asyncio.wait_for(waiting, timeout=10)
    assert (event.delivery_id, event.status, event.origin) == (
        "hook:1",
        S.SUCCEEDED,
        Origin.WEBHOOK,
    )
    assert event.payload == {"a": 1}
    # Waiting on a finished run answers at once.
    assert (await client.wait(handle.run_id)).delivery_id == "hook:1"


async def test_wait_gives_up_after_its_timeout(store: Store, nextmv: NextmvProvider) -> None:
    client = make_client(store, nextmv, poll_interval=0.01)
    handle = await client.submit("nextmv", APP, {})
    with pytest.raises(WaitTimeout, match=handle.run_id):
        await client.wait(handle.run_id, timeout=0.05)
    assert client._waiters == {}


async def test_wait_sees_an_end_recorded_by_another_process(
    db_url: str, store: Store, nextmv: NextmvProvider
) -> None:
    client = make_client(store, nextmv, poll_interval=0.02)
    handle = await client.submit("nextmv", APP, {})
    waiting = asyncio.create_task(client.wait(handle.run_id, timeout=60))
    script = textwrap.dedent(
        f"""
        import asyncio
        from listener.events import RunEvent, RunStatus
        from listener.store import open_store

        async def main():
            store = await open_store({db_url!r})
            event = RunEvent("other:1", "nextmv", "routing", {handle.run_id!r}, RunStatus.FAILED)
            await store.record(event, ["h"])
            await store.close()

        asyncio.run(main())
        """
    )
    done = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-c", script], capture_output=True, timeout=60
    )
    assert done.returncode == 0, done.stderr.decode()
    event = await asyncio.wait_for(waiting, timeout=30)
    assert (event.delivery_id, event.status) == ("other:1", S.FAILED)


async def test_run_submits_and_waits(
    store: Store, platform: FakePlatform, nextmv: NextmvProvider
) -> None:
    client = make_client(store, nextmv, poll_interval=0.01)

    async def platform_finishes_and_webhook_lands() -> None:
        while not platform.runs:
            await asyncio.sleep(0.01)
        (run_id,) = platform.runs
        platform.finish(run_id, "succeeded")
        await client._record(RunEvent("hook:9", "nextmv", APP, run_id, S.SUCCEEDED))

    finisher = asyncio.create_task(platform_finishes_and_webhook_lands())
    event = await client.run("nextmv", APP, {"x": 1}, timeout=30)
    await finisher
    assert event.status is S.SUCCEEDED
    assert event.delivery_id == "hook:9"


async def test_cancel_asks_the_platform_and_records_its_answer(
    store: Store, platform: FakePlatform, nextmv: NextmvProvider
) -> None:
    client = make_client(store, nextmv)
    handle = await client.submit("nextmv", APP, {})
    assert await client.cancel(handle.run_id) is S.CANCELED
    assert platform.runs[handle.run_id].status == "canceled"
    run = await store.get_run(handle.run_id)
    assert run is not None
    assert run.status is S.CANCELED
    calls = await store.list_calls(run_id=handle.run_id)
    assert [c.status for c in calls.items] == [S.CANCELED]
    # Cancelling a finished run changes nothing and asks nothing.
    before = dict(platform.api_calls)
    assert await client.cancel(handle.run_id) is S.CANCELED
    assert dict(platform.api_calls) == before
    with pytest.raises(RunNotFound, match="nope"):
        await client.cancel("nope")


async def test_track_records_a_run_from_elsewhere_and_routes_it(
    store: Store, nextmv: NextmvProvider
) -> None:
    client = make_client(store, nextmv)
    at = datetime(2026, 5, 1, tzinfo=UTC)
    result = await client.track(
        "batch", "nightly", "run-77", "succeeded", output={"ok": True}, duration=1.5, occurred_at=at
    )
    assert result.transition is not None
    assert result.status is S.SUCCEEDED
    assert len(result.call_ids) == 1
    event = await store.get_event("track:batch:run-77:succeeded")
    assert event is not None
    assert event.origin is Origin.TRACK
    assert event.payload == {"status": "succeeded", "output": {"ok": True}, "duration_ms": 1500}
    # Tracking the same thing again is a duplicate: handlers are not called twice.
    again = await client.track("batch", "nightly", "run-77", "succeeded")
    assert again.duplicate
    with pytest.raises(ValueError, match="'done'"):
        await client.track("batch", "nightly", "run-78", "done")
