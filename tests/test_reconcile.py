"""End to end: webhooks and the fallback poller together, as a deployment runs them.

Every test serves a real `Listener` (SQLite in tmp_path) on loopback, registers its
receiver with the fake platform (real signed HTTP deliveries), points a provider at the
platform's API over loopback, and records what the handler is called with. Orderings
that matter (a poll before a webhook) are forced with the platform's knobs, never left
to a race: a delivery held back for reordering waits until `drain()` releases it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import textwrap
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from helpers import WAIT_LIMIT, serve, wait_for

from listener import (
    DispatchSettings,
    Listener,
    Origin,
    PollSchedule,
    PollSettings,
    RunEvent,
    RunStatus,
    Source,
)
from listener.providers.base import Provider
from listener.providers.local import LocalProvider
from listener.providers.nextmv import NextmvProvider
from listener.signatures import NextmvSignature, StandardWebhooks, generate_hmac_secret
from listener.store import CallState
from listener.testing import FakePlatform, FakeRun, RunPlan

S = RunStatus
APP = "routing"

# Short poll settings so reconciliation happens within a test: the first poll comes soon
# after submission, silence after news of a run is trusted longer.
POLL = PollSettings(
    first_poll=0.2, grace=5.0, interval=0.05, schedule=PollSchedule(interval=0.05, cap=0.5)
)
# For tests where a poll must not happen at all.
NO_POLL_SOON = replace(POLL, first_poll=3600.0, grace=3600.0)
# Quick sweeps and retries of handler calls.
DISPATCH = DispatchSettings(
    sweep_interval=0.02, backoff_base=0.001, backoff_cap=0.01, shutdown_timeout=5.0
)


class Handled:
    """The handler under test: records every call it gets."""

    def __init__(self) -> None:
        self.events: list[RunEvent] = []

    async def __call__(self, event: RunEvent) -> None:
        self.events.append(event)

    def of(self, run_id: str) -> list[RunEvent]:
        return [event for event in self.events if event.run_id == run_id]

    def count(self, run_id: str) -> Counter[RunStatus]:
        return Counter(event.status for event in self.of(run_id))

    def final(self, run_id: str) -> RunEvent:
        (event,) = [e for e in self.of(run_id) if e.status.is_terminal]
        return event


@dataclass
class Stack:
    listener: Listener
    handled: Handled
    url: str

    async def settled(self) -> None:
        """Every handler call enqueued so far has run."""

        async def all_done() -> bool:
            calls = (await self.listener.store.list_calls(limit=1000)).items
            return all(call.state is CallState.DONE for call in calls)

        await wait_for(all_done, "every handler call done")

    async def handled_end(self, run_id: str) -> RunEvent:
        await wait_for(
            lambda: any(e.status.is_terminal for e in self.handled.of(run_id)),
            f"the end of {run_id} handled",
        )
        return self.handled.final(run_id)


def new_listener(tmp_path: Path, provider: Provider, poll: PollSettings = POLL) -> Listener:
    return Listener(
        store_url=f"sqlite:///{tmp_path / 'listener.db'}",
        providers=[provider],
        dispatch=DISPATCH,
        poll=poll,
    )


@contextlib.asynccontextmanager
async def nextmv_stack(
    tmp_path: Path,
    platform: FakePlatform,
    provider_options: dict[str, Any] | None = None,
    poll: PollSettings = POLL,
) -> AsyncIterator[Stack]:
    """A listener whose receiver is registered with `platform` as its webhook endpoint."""
    provider: NextmvProvider = platform.nextmv_provider(**(provider_options or {}))
    listener = new_listener(tmp_path, provider, poll)
    handled = Handled()
    listener.on_any(name="record")(handled)
    try:
        async with serve(listener.asgi()) as url:
            secret = platform.register_webhook(url + "/hooks/nextmv")
            listener.add_source(Source("nextmv", "nextmv", NextmvSignature([secret])))
            yield Stack(listener, handled, url)
    finally:
        await provider.aclose()


def status_calls(platform: FakePlatform) -> int:
    """API calls that ask about runs' statuses: metadata reads and run listings."""
    return platform.api_calls["runs.metadata"] + platform.api_calls["runs.list"]


def planned(run: FakeRun) -> RunPlan:
    """Each run ends as its input says, after as long as its input says."""
    return RunPlan(status=run.input["ends"], runs_for=run.input["for"])


# -- webhooks and polls ----------------------------------------------------------------


async def test_a_webhook_alone_reports_the_end_and_nothing_is_polled(tmp_path: Path) -> None:
    async with (
        FakePlatform(plan=RunPlan(runs_for=0.05), seed=1) as platform,
        nextmv_stack(tmp_path, platform, poll=NO_POLL_SOON) as stack,
    ):
        handle = await stack.listener.submit("nextmv", APP, {"stops": 3})
        event = await stack.listener.wait(handle.run_id, timeout=WAIT_LIMIT)
        assert (event.status, event.origin) == (S.SUCCEEDED, Origin.WEBHOOK)
        await platform.drain()
        await stack.settled()
        assert stack.handled.count(handle.run_id) == {S.SUCCEEDED: 1}
        assert stack.handled.final(handle.run_id).origin is Origin.WEBHOOK
    assert status_calls(platform) == 0
    assert platform.stats.sent == 1


async def test_dropped_webhooks_are_reconciled_by_the_poller(tmp_path: Path) -> None:
    ends = ["succeeded", "failed", "succeeded", "canceled"]
    async with (
        FakePlatform(plan=planned, drop_rate=1.0, seed=2) as platform,
        nextmv_stack(tmp_path, platform) as stack,
    ):
        handles = [
            await stack.listener.submit("nextmv", APP, {"ends": end, "for": 0.05 * i})
            for i, end in enumerate(ends)
        ]
        for handle, end in zip(handles, ends, strict=True):
            event = await stack.handled_end(handle.run_id)
            assert (event.status, event.origin) == (S(end), Origin.POLL)
        await stack.settled()
        for handle, end in zip(handles, ends, strict=True):
            assert stack.handled.count(handle.run_id)[S(end)] == 1
    assert platform.stats.dropped == len(ends)
    assert platform.stats.sent == 0
    assert status_calls(platform) > 0


async def test_a_duplicated_webhook_after_a_poll_calls_the_handler_once(tmp_path: Path) -> None:
    # The end's webhook is held back (and will be sent twice) until drain() lets it go, so
    # the poller learns the end first, then both copies of the webhook land.
    async with (
        FakePlatform(
            plan=RunPlan(runs_for=None),
            duplicate_rate=1.0,
            reorder_rate=1.0,
            reorder_hold=3600,
            seed=3,
        ) as platform,
        nextmv_stack(tmp_path, platform) as stack,
    ):
        handle = await stack.listener.submit("nextmv", APP, {})
        platform.finish(handle.run_id, "succeeded")
        event = await stack.handled_end(handle.run_id)
        assert (event.status, event.origin) == (S.SUCCEEDED, Origin.POLL)
        await platform.drain()
        (delivery,) = platform.deliveries
        assert delivery.duplicated
        assert delivery.status_codes == [200, 200]
        await stack.settled()
        assert stack.handled.count(handle.run_id)[S.SUCCEEDED] == 1
        events = await stack.listener.store.list_events(run_id=handle.run_id)
        assert {e.origin for e in events.items if e.status is S.SUCCEEDED} == {
            Origin.POLL,
            Origin.WEBHOOK,
        }


async def test_a_webhook_landing_after_the_poll_is_answered_200_and_not_routed_again(
    tmp_path: Path,
) -> None:
    # Delayed far beyond the first poll (0.2 s after submission), the webhook comes late.
    async with (
        FakePlatform(plan=RunPlan(runs_for=0.05), delay=(2.0, 2.0), seed=4) as platform,
        nextmv_stack(tmp_path, platform) as stack,
    ):
        handle = await stack.listener.submit("nextmv", APP, {})
        event = await stack.handled_end(handle.run_id)
        assert (event.status, event.origin) == (S.SUCCEEDED, Origin.POLL)
        await platform.drain()  # sleeps out the delay and delivers
        (delivery,) = platform.deliveries
        assert delivery.delay > 0
        assert delivery.status_codes == [200]
        await stack.settled()
        assert stack.handled.count(handle.run_id)[S.SUCCEEDED] == 1
        assert stack.handled.final(handle.run_id).origin is Origin.POLL


async def test_api_storms_still_end_every_run_once(tmp_path: Path) -> None:
    ends = ["succeeded", "failed"] * 4
    async with (
        FakePlatform(plan=planned, drop_rate=1.0, retry_after="1", seed=5) as platform,
        nextmv_stack(
            tmp_path,
            platform,
            # Few retries inside the provider, so failures reach the poller's own backoff.
            provider_options={
                "max_attempts": 2,
                "backoff_base": 0.01,
                "backoff_cap": 0.05,
                "retry_after_cap": 0.05,
            },
        ) as stack,
    ):
        handles = [
            await stack.listener.submit("nextmv", APP, {"ends": end, "for": 0.1 * i})
            for i, end in enumerate(ends)
        ]
        # Submitted in calm weather. Then a 429 the provider gives up on (the poller must
        # pause for its Retry-After), and a storm failing about half of all calls.
        platform.fail_next(429, route="runs.list", times=2, retry_after="1")
        platform.api_error_rate = 0.3
        platform.rate_limit_rate = 0.3
        for handle, end in zip(handles, ends, strict=True):
            event = await stack.handled_end(handle.run_id)
            assert (event.status, event.origin) == (S(end), Origin.POLL)
        await stack.settled()
        for handle, end in zip(handles, ends, strict=True):
            assert stack.handled.count(handle.run_id)[S(end)] == 1
            run = await stack.listener.store.get_run(handle.run_id)
            assert run is not None
            assert run.status is S(end)
    assert platform.injected[429] >= 2


async def test_a_run_that_never_ends_expires_at_its_deadline(tmp_path: Path) -> None:
    async with (
        FakePlatform(plan=RunPlan(runs_for=None), notify_running=True, seed=6) as platform,
        nextmv_stack(tmp_path, platform, poll=replace(POLL, deadline=0.5)) as stack,
    ):
        handle = await stack.listener.submit("nextmv", APP, {})
        event = await stack.listener.wait(handle.run_id, timeout=WAIT_LIMIT)
        assert event.status is S.EXPIRED
        await stack.settled()
        assert stack.handled.count(handle.run_id) == {S.RUNNING: 1, S.EXPIRED: 1}
        assert stack.handled.final(handle.run_id).origin is Origin.POLL
        assert platform.runs[handle.run_id].status == "running"


async def test_cancel_ends_the_run_and_calls_the_handler(tmp_path: Path) -> None:
    async with (
        FakePlatform(plan=RunPlan(runs_for=None), seed=7) as platform,
        nextmv_stack(tmp_path, platform, poll=NO_POLL_SOON) as stack,
    ):
        handle = await stack.listener.submit("nextmv", APP, {})
        assert await stack.listener.cancel(handle.run_id) is S.CANCELED
        assert platform.runs[handle.run_id].status == "canceled"
        await platform.drain()  # the platform's own canceled webhook lands too
        await stack.handled_end(handle.run_id)
        await stack.settled()
        assert stack.handled.count(handle.run_id) == {S.CANCELED: 1}
        # 200 or 202, as the cancel's own record or the webhook came first.
        assert platform.deliveries[-1].delivered


async def test_track_routes_a_run_from_elsewhere(tmp_path: Path) -> None:
    async with (
        FakePlatform(seed=8) as platform,
        nextmv_stack(tmp_path, platform, poll=NO_POLL_SOON) as stack,
    ):
        result = await stack.listener.track("nextmv", APP, "batch-17", "failed", error="boom")
        assert result.transition is not None
        event = await stack.handled_end("batch-17")
        assert (event.status, event.origin) == (S.FAILED, Origin.TRACK)
        assert event.payload["error"] == "boom"
        await stack.settled()
        assert stack.handled.count("batch-17") == {S.FAILED: 1}
    assert status_calls(platform) == 0


async def test_another_process_sharing_the_store_waits_for_the_end(tmp_path: Path) -> None:
    async with (
        FakePlatform(plan=RunPlan(runs_for=None), seed=9) as platform,
        nextmv_stack(tmp_path, platform, poll=NO_POLL_SOON) as stack,
    ):
        handle = await stack.listener.submit("nextmv", APP, {})
        # A second process: no receiver, no poller, no dispatcher; it only waits.
        script = textwrap.dedent(
            f"""
            import asyncio, json
            from listener import DispatchSettings, Listener, PollSettings

            async def main():
                listener = Listener(store_url={stack.listener.store_url!r},
                                    poll=PollSettings(enabled=False),
                                    dispatch=DispatchSettings(enabled=False))
                async with listener:
                    print("waiting", flush=True)
                    event = await listener.wait({handle.run_id!r}, timeout=60)
                    print(json.dumps({{"status": event.status.value,
                                       "origin": event.origin.value}}), flush=True)

            asyncio.run(main())
            """
        )
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            script,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            assert process.stdout is not None
            async with asyncio.timeout(WAIT_LIMIT):
                assert (await process.stdout.readline()).strip() == b"waiting"
                platform.finish(handle.run_id, "failed")
                line = await process.stdout.readline()
                _, stderr = await process.communicate()
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
        assert process.returncode == 0, stderr.decode()
        assert json.loads(line) == {"status": "failed", "origin": "webhook"}
        await stack.settled()
        assert stack.handled.count(handle.run_id) == {S.FAILED: 1}


# -- the local provider ----------------------------------------------------------------

SUM = [
    sys.executable,
    "-c",
    "import json, sys; print(json.dumps({'sum': sum(json.load(sys.stdin))}))",
]


@contextlib.asynccontextmanager
async def local_stack(
    tmp_path: Path, *, signing_secret: str, receiver_secret: str, poll: PollSettings = POLL
) -> AsyncIterator[tuple[Stack, LocalProvider]]:
    provider = LocalProvider(
        {"sum": SUM},
        signer=StandardWebhooks([signing_secret]),
        webhook_attempts=2,
        webhook_backoff=0.01,
    )
    listener = new_listener(tmp_path, provider, poll)
    listener.add_source(Source("local", "local", StandardWebhooks([receiver_secret])))
    handled = Handled()
    listener.on_any(name="record")(handled)
    try:
        async with serve(listener.asgi()) as url:
            listener.public_url = url  # where the provider's webhooks are sent
            yield Stack(listener, handled, url), provider
    finally:
        await provider.aclose()


async def test_a_local_command_reports_its_end_by_signed_webhook(tmp_path: Path) -> None:
    secret = generate_hmac_secret()
    async with local_stack(
        tmp_path, signing_secret=secret, receiver_secret=secret, poll=NO_POLL_SOON
    ) as (stack, provider):
        handle = await stack.listener.submit("local", "sum", [1, 2, 3])
        assert handle.callback_url == f"{stack.url}/hooks/local"
        event = await stack.handled_end(handle.run_id)
        assert (event.status, event.origin) == (S.SUCCEEDED, Origin.WEBHOOK)
        assert (await event.fetch_result()).output == {"sum": 6}
        await provider.wait(handle.run_id)
        assert provider.runs[handle.run_id].webhooks["succeeded"].status_code == 202
        await stack.settled()
        assert stack.handled.count(handle.run_id) == {S.SUCCEEDED: 1}


async def test_a_local_run_whose_webhooks_are_refused_is_reconciled_by_polling(
    tmp_path: Path,
) -> None:
    async with local_stack(
        tmp_path, signing_secret=generate_hmac_secret(), receiver_secret=generate_hmac_secret()
    ) as (stack, provider):
        handle = await stack.listener.submit("local", "sum", [4, 5])
        await provider.wait(handle.run_id)
        delivery = provider.runs[handle.run_id].webhooks["succeeded"]
        assert (delivery.delivered, delivery.status_code) == (False, 401)
        event = await stack.handled_end(handle.run_id)
        assert (event.status, event.origin) == (S.SUCCEEDED, Origin.POLL)
        assert (await event.fetch_result()).output == {"sum": 9}
        await stack.settled()
        assert stack.handled.count(handle.run_id) == {S.SUCCEEDED: 1}
