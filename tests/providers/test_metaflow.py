"""The metaflow provider with real flows, offline: submit, learn the end (by the exit hook
or by polling), fail, cancel, track and resume."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from helpers import WAIT_LIMIT, Recorder, free_port, serve

from listener import Listener, Origin, PollSchedule, PollSettings, RunStatus
from listener.providers.base import ProviderError
from listener.providers.metaflow import MetaflowProvider
from listener.signatures import StandardWebhooks, generate_hmac_secret
from listener.sources import Source

pytestmark = pytest.mark.usefixtures("metaflow_home")

FLOWS = Path(__file__).resolve().parent.parent / "flows"
HELLO = str(FLOWS / "hello_flow.py")
TWICE = str(FLOWS / "twice_flow.py")

NO_POLL = PollSettings(enabled=False)
# Polling soon and often, for the cases learned by polling.
EAGER_POLL = PollSettings(
    grace=0.2,
    first_poll=0.2,
    interval=0.05,
    schedule=PollSchedule(interval=0.2, factor=1.0, cap=0.2, jitter=0.0),
)


@dataclass
class Setup:
    listener: Listener
    provider: MetaflowProvider
    calls: Recorder


@contextlib.asynccontextmanager
async def listening(
    tmp_path: Path,
    *,
    hook: str = "on",
    poll: PollSettings = NO_POLL,
    **provider_options: Any,
) -> AsyncIterator[Setup]:
    """A served listener with a metaflow provider whose runs report to it.

    `hook`: "on" (a Standard Webhooks source and the URL it is served at), "unreachable"
    (the source, but the runs are told a port nobody listens on), "silent" (a port that
    takes connections and never answers) or "off" (no source: the runs get no target and
    the poller learns their end).
    """
    secret = generate_hmac_secret()
    sources = [] if hook == "off" else [Source("metaflow", "metaflow", StandardWebhooks([secret]))]
    provider = MetaflowProvider(
        webhook_secret=None if hook == "off" else secret, **provider_options
    )
    listener = Listener(
        store_url=f"sqlite:///{tmp_path / 'listener.db'}",
        sources=sources,
        providers=[provider],
        poll=poll,
    )
    calls = Recorder()
    listener.on_any(calls)
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)
    async with serve(listener.asgi()) as base_url:
        listener.public_url = {
            "unreachable": f"http://127.0.0.1:{free_port()}",
            "silent": f"http://127.0.0.1:{silent.getsockname()[1]}",
        }.get(hook, base_url)
        try:
            yield Setup(listener, provider, calls)
        finally:
            silent.close()
            for run_id, run in provider.runs.items():
                if not run.ended.is_set():
                    await provider.cancel("", run_id)
            await provider.aclose()


async def test_a_run_ends_and_the_exit_hook_reports_it(tmp_path: Path) -> None:
    async with listening(tmp_path) as setup:
        handle = await setup.listener.submit(
            "metaflow", HELLO, {"n": 3}, options={"tags": "nightly,team-a"}
        )
        assert handle.run_id.startswith("HelloFlow/")
        event = await setup.listener.wait(handle.run_id, timeout=WAIT_LIMIT)
        assert (event.status, event.origin) == (RunStatus.SUCCEEDED, Origin.WEBHOOK)
        assert event.application == HELLO
        called = await setup.calls.next()
        assert called.run_id == handle.run_id
        result = await called.fetch_result()
        assert result.status is RunStatus.SUCCEEDED
        assert result.output["total"] == 7
        assert result.output["n"] == 3
        assert result.raw["tags"] == ["nightly", "team-a"]


async def test_a_step_that_raises_fails_the_run_with_its_error(tmp_path: Path) -> None:
    async with listening(tmp_path) as setup:
        handle = await setup.listener.submit("metaflow", HELLO, {"n": 4, "fail": True})
        event = await setup.listener.wait(handle.run_id, timeout=WAIT_LIMIT)
        assert (event.status, event.origin) == (RunStatus.FAILED, Origin.WEBHOOK)
        assert event.payload["data"]["error"] == "start: ValueError: boom 4"
        result = await setup.provider.result(HELLO, handle.run_id)
        assert (result.status, result.output) == (RunStatus.FAILED, None)
        assert result.error == "start: ValueError: boom 4"


@pytest.mark.parametrize("hook", ["unreachable", "silent", "off"])
async def test_without_a_hook_delivery_the_poller_learns_the_end(tmp_path: Path, hook: str) -> None:
    async with listening(
        tmp_path, hook=hook, poll=EAGER_POLL, env={"LISTENER_WEBHOOK_TIMEOUT": "0.5"}
    ) as setup:
        handle = await setup.listener.submit("metaflow", HELLO, {"n": 1})
        event = await setup.listener.wait(handle.run_id, timeout=WAIT_LIMIT)
        assert (event.status, event.origin) == (RunStatus.SUCCEEDED, Origin.POLL)
        assert (await setup.calls.next()).run_id == handle.run_id
        # The hook that could not report did not fail the flow.
        run = setup.provider.runs[handle.run_id]
        await asyncio.wait_for(run.ended.wait(), WAIT_LIMIT)
        assert run.returncode == 0


async def test_a_doubled_hook_delivery_calls_the_handler_once(tmp_path: Path) -> None:
    async with listening(tmp_path) as setup:
        handle = await setup.listener.submit("metaflow", TWICE, {})
        await setup.listener.wait(handle.run_id, timeout=WAIT_LIMIT)
        # The run's process ends after both hooks have run.
        await asyncio.wait_for(setup.provider.runs[handle.run_id].ended.wait(), WAIT_LIMIT)
        events = await setup.listener.store.list_events(run_id=handle.run_id)
        assert [e.origin for e in events.items] == [Origin.WEBHOOK]
        await setup.calls.next()
        assert len(setup.calls.events) == 1


async def test_cancel_stops_a_run_this_listener_started(tmp_path: Path) -> None:
    async with listening(tmp_path) as setup:
        handle = await setup.listener.submit("metaflow", HELLO, {"sleep": 60})
        run = setup.provider.runs[handle.run_id]
        assert await setup.listener.cancel(handle.run_id) is RunStatus.CANCELED
        assert run.ended.is_set()
        assert run.returncode != 0
        with pytest.raises(ProcessLookupError):
            os.kill(run.pid, 0)
        called = await setup.calls.next()
        assert called.status is RunStatus.CANCELED
        stored = await setup.listener.store.get_run(handle.run_id)
        assert stored is not None
        assert stored.status is RunStatus.CANCELED


async def test_cancel_of_a_run_started_elsewhere_is_a_clear_error(tmp_path: Path) -> None:
    async with listening(tmp_path) as setup:
        with pytest.raises(ProviderError, match="not started by this listener"):
            await setup.provider.cancel("", "HelloFlow/123")


async def test_two_flows_run_at_once(tmp_path: Path) -> None:
    async with listening(tmp_path) as setup:
        handles = await asyncio.gather(
            setup.listener.submit("metaflow", HELLO, {"n": 1}),
            setup.listener.submit("metaflow", HELLO, {"n": 2}),
        )
        assert handles[0].run_id != handles[1].run_id
        events = await asyncio.gather(
            *(setup.listener.wait(h.run_id, timeout=WAIT_LIMIT) for h in handles)
        )
        assert [e.status for e in events] == [RunStatus.SUCCEEDED] * 2
        outputs = [(await setup.provider.result(HELLO, h.run_id)).output["total"] for h in handles]
        assert outputs == [3, 5]


async def test_a_parameter_of_the_wrong_type_fails_the_submission(tmp_path: Path) -> None:
    async with listening(tmp_path) as setup:
        with pytest.raises(ProviderError, match=r"Invalid type for 'n'") as caught:
            await setup.listener.submit("metaflow", HELLO, {"n": "three"})
        assert caught.value.status_code == 400
        assert (await setup.listener.store.list_runs()).items == []
        assert setup.provider.runs == {}


@pytest.mark.parametrize(
    ("application", "input", "options", "message"),
    [
        ("missing_flow.py", {}, {}, "no flow file"),
        (HELLO, [1, 2], {}, "JSON object of the flow's parameters"),
        (HELLO, {}, {"retries": "2"}, "unknown Metaflow run option 'retries'"),
    ],
)
async def test_a_submission_metaflow_cannot_start_is_refused(
    tmp_path: Path, application: str, input: Any, options: dict[str, str], message: str
) -> None:
    async with listening(tmp_path) as setup:
        with pytest.raises(ProviderError, match=message):
            await setup.listener.submit("metaflow", application, input, options=options)
        assert (await setup.listener.store.list_runs()).items == []


async def test_run_options_reach_the_flow(tmp_path: Path) -> None:
    async with listening(tmp_path) as setup:
        handle = await setup.listener.submit(
            "metaflow", HELLO, {}, options={"env.HELLO_FAIL": "1", "with": "retry:times=0"}
        )
        event = await setup.listener.wait(handle.run_id, timeout=WAIT_LIMIT)
        assert event.payload["data"]["error"] == "start: ValueError: boom 1"
        command = setup.provider.runs[handle.run_id].executing.command_obj.command
        assert command[command.index("--with") + 1] == "retry:times=0"


async def test_a_run_started_elsewhere_is_tracked_by_pathspec(tmp_path: Path) -> None:
    async with listening(tmp_path, hook="off") as elsewhere:
        handle = await elsewhere.listener.submit("metaflow", HELLO, {"n": 5})
        await asyncio.wait_for(elsewhere.provider.runs[handle.run_id].ended.wait(), WAIT_LIMIT)
    async with listening(tmp_path / "here") as setup:
        result = await setup.listener.track("metaflow", "", handle.run_id)
        assert result.status is RunStatus.SUCCEEDED
        called = await setup.calls.next()
        assert (called.origin, called.application) == (Origin.TRACK, "HelloFlow")
        assert (await called.fetch_result()).output["total"] == 11
        with pytest.raises(ProviderError, match="no Metaflow run"):
            await setup.listener.track("metaflow", "", "HelloFlow/1")


async def test_a_failed_run_resumes_as_a_new_run(tmp_path: Path) -> None:
    async with listening(tmp_path) as setup:
        first = await setup.listener.submit(
            "metaflow", HELLO, {"n": 6}, options={"env.HELLO_FAIL": "1"}
        )
        failed = await setup.listener.wait(first.run_id, timeout=WAIT_LIMIT)
        assert failed.status is RunStatus.FAILED
        second = await setup.listener.submit(
            "metaflow",
            HELLO,
            None,
            extra={"resume": first.run_id},
            metadata={"ticket": "T-1"},
        )
        assert second.run_id != first.run_id
        event = await setup.listener.wait(second.run_id, timeout=WAIT_LIMIT)
        assert event.status is RunStatus.SUCCEEDED
        assert (await setup.provider.result(HELLO, second.run_id)).output["total"] == 13
        stored = await setup.listener.store.get_run(second.run_id)
        assert stored is not None
        # Linked to the run it resumed by the listener itself, beside the caller's metadata.
        assert stored.metadata == {"resumed_from": first.run_id, "ticket": "T-1"}


def test_the_kind_is_configured_like_any_other() -> None:
    from listener.providers import parser_for, provider_from_config
    from listener.providers.kinds import provider_kind

    provider = provider_from_config("metaflow", {"webhook_secret": "whsec_c2VjcmV0", "cwd": "/srv"})
    assert isinstance(provider, MetaflowProvider)
    assert "c2VjcmV0" not in repr(provider)
    kind = provider_kind("metaflow")
    assert kind.status("successful") is RunStatus.SUCCEEDED
    assert kind.status("timeout") is RunStatus.FAILED
    with pytest.raises(ValueError, match="termination_timeout"):
        provider_from_config("metaflow", {"termination_timeout": 0})
    event = parser_for("metaflow")(
        {"type": "run.status", "data": {"run_id": "F/1", "status": "failed"}}, delivery_id="d"
    )
    assert (event.provider, event.status) == ("metaflow", RunStatus.FAILED)
