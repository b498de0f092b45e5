"""NoxusProvider against the fake engine, alone and inside a listener whose per-run
callback URLs the engine calls."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import aclosing
from pathlib import Path

import pytest
from helpers import Sleeps, wait_for
from noxus_sdk.client import Client
from noxus_sdk.workflows import WorkflowDefinition

from listener import Listener, PollSchedule, PollSettings
from listener.events import Origin, RunEvent, RunStatus
from listener.providers import provider_from_config
from listener.providers.base import Provider, ProviderError, Submission
from listener.providers.noxus import DEFAULT_BASE_URL, NoxusProvider
from listener.providers.workflow import WorkflowProvider
from listener.sources import Source, check_token
from listener.testing import FakeNoxusEngine, LoopbackServer, NoxusPlan

SECRET = "a-callback-secret"


@pytest.fixture
async def engine() -> AsyncIterator[FakeNoxusEngine]:
    async with FakeNoxusEngine(plan=NoxusPlan(runs_for=None)) as fake:
        yield fake


@pytest.fixture
async def noxus(engine: FakeNoxusEngine) -> AsyncIterator[NoxusProvider]:
    sleeps = Sleeps()
    async with engine.noxus_provider(sleep=sleeps) as provider:
        yield provider


def test_is_a_provider_with_the_engine_as_default() -> None:
    provider = NoxusProvider("k")
    assert isinstance(provider, Provider)
    assert DEFAULT_BASE_URL in repr(provider)
    assert "k" not in repr(provider).replace("backend", "")
    with pytest.raises(ValueError, match="API key"):
        NoxusProvider("")


async def test_submit_status_result(engine: FakeNoxusEngine, noxus: NoxusProvider) -> None:
    workflow = engine.workflow_id
    submission = Submission(workflow, {"doc": "a"}, extra={"workflow_version_id": "v-2"})
    run_id = await noxus.submit(submission, callback_url="http://127.0.0.1:9/hooks/noxus/t")
    run = engine.runs[run_id]
    assert (run.input, run.workflow_version_id, run.callback_url) == (
        {"doc": "a"},
        "v-2",
        "http://127.0.0.1:9/hooks/noxus/t",
    )
    engine.start_run(run_id)
    engine.await_feedback(run_id)
    state = await noxus.status(workflow, run_id)
    assert (state.status, state.application, state.updated_at) == (
        RunStatus.RUNNING,
        workflow,
        None,
    )
    engine.finish(run_id, output={"pages": 3})
    result = await noxus.result(workflow, run_id)
    assert (result.status, result.output, result.error) == (RunStatus.SUCCEEDED, {"pages": 3}, None)
    assert (await noxus.status(workflow, run_id)).updated_at is not None


async def test_a_failed_and_a_stopped_run(engine: FakeNoxusEngine, noxus: NoxusProvider) -> None:
    workflow = engine.workflow_id
    failing = await noxus.submit(Submission(workflow, {}))
    engine.finish(failing, "failed", error="OCR crashed")
    result = await noxus.result(workflow, failing)
    assert (result.status, result.output, result.error) == (RunStatus.FAILED, None, "OCR crashed")
    stopping = await noxus.submit(Submission(workflow, {}))
    await noxus.cancel(workflow, stopping)
    await noxus.cancel(workflow, stopping)  # a second stop changes nothing
    assert (await noxus.status(workflow, stopping)).status is RunStatus.CANCELED
    assert engine.api_calls["runs.stop"] == 2


async def test_reads_retry_and_submits_do_not(engine: FakeNoxusEngine) -> None:
    sleeps = Sleeps()
    async with engine.noxus_provider(sleep=sleeps) as noxus:
        run_id = await noxus.submit(Submission(engine.workflow_id, {}))
        engine.fail_next(503, route="runs.get", retry_after="2")
        engine.fail_next(429, route="runs.get", retry_after="3")
        assert (await noxus.status(engine.workflow_id, run_id)).status is RunStatus.RUNNING
        assert sleeps.delays == [2.0, 3.0]
        engine.fail_next(503, route="runs.create", after_processing=True)
        with pytest.raises(ProviderError) as caught:
            await noxus.submit(Submission(engine.workflow_id, {}))
        assert caught.value.status_code == 503
        assert (len(engine.runs), engine.api_calls["runs.create"]) == (2, 2)


async def test_errors_carry_the_status_and_not_the_key(engine: FakeNoxusEngine) -> None:
    async with NoxusProvider("wrong-key-value", base_url=engine.base_url) as noxus:
        with pytest.raises(ProviderError) as caught:
            await noxus.submit(Submission(engine.workflow_id, {}))
    assert caught.value.status_code == 401
    assert "wrong-key-value" not in str(caught.value)
    async with engine.noxus_provider() as noxus:
        with pytest.raises(ProviderError) as missing:
            await noxus.status("no-such-workflow", "r-1")
    assert missing.value.status_code == 404


def test_the_workflow_kind_is_the_same_engine_under_its_old_name() -> None:
    settings = {"api_key": "k", "base_url": "https://wf.example"}
    old = provider_from_config("engine", {"kind": "workflow", **settings})
    new = provider_from_config("engine", {"kind": "noxus", **settings})
    assert isinstance(old, WorkflowProvider)
    assert isinstance(old, NoxusProvider)
    assert (old.name, new.name) == ("workflow", "noxus")
    assert type(new) is NoxusProvider


@pytest.mark.parametrize("kind", ["noxus", "workflow"])
async def test_a_listener_learns_each_end_by_its_run_callback(
    tmp_path: Path, engine: FakeNoxusEngine, kind: str
) -> None:
    engine.duplicate_rate = 1.0  # every callback arrives twice; each end is recorded once
    provider = provider_from_config(kind, {"api_key": engine.api_key, "base_url": engine.base_url})
    listener = Listener(
        store_url=f"sqlite:///{tmp_path / 'listener.db'}",
        sources=[Source(kind, kind)],
        providers=[provider],
        callback_secret=SECRET,
    )
    ends = {"completed": RunStatus.SUCCEEDED, "failed": RunStatus.FAILED}
    seen: list[tuple[str, RunStatus]] = []

    @listener.on_any
    async def record(event: RunEvent) -> None:
        seen.append((event.run_id, event.status))

    async with listener, LoopbackServer(listener.asgi()) as server, aclosing(provider):
        listener.public_url = server.base_url
        handles = {
            word: await listener.submit(kind, engine.workflow_id, {"w": word}) for word in ends
        }
        stopped = await listener.submit(kind, engine.workflow_id, {"w": "stopped"})
        for word, handle in handles.items():
            assert handle.callback_url is not None
            token = handle.callback_url.rsplit("/", 1)[1]
            assert handle.callback_url.startswith(f"{server.base_url}/hooks/{kind}/")
            assert check_token(SECRET, token) is not None
            assert engine.runs[handle.run_id].callback_url == handle.callback_url
            engine.finish(handle.run_id, word)
        assert await listener.cancel(stopped.run_id) is RunStatus.CANCELED
        for word, handle in handles.items():
            event = await listener.wait(handle.run_id, timeout=30)
            assert (event.status, event.origin, event.provider) == (
                ends[word],
                Origin.WEBHOOK,
                kind,
            )
        await engine.drain()
        assert engine.stats.sent == 6

        # Six deliveries, three transitions: each handled once.
        async def settled() -> bool:
            states = (await listener.store.counts()).calls_by_state
            return not states.get("pending") and not states.get("running")

        await wait_for(settled, "handler calls to finish")
        assert (await listener.store.counts()).calls_by_state["done"] == 3
        assert sorted(status for _, status in seen) == ["canceled", "failed", "succeeded"]
        result = await listener.client.provider(kind).result(
            engine.workflow_id, handles["completed"].run_id
        )
        assert result.output == {"echo": {"w": "completed"}}


async def test_a_run_started_by_the_official_client_is_tracked_to_its_end(
    tmp_path: Path, engine: FakeNoxusEngine
) -> None:
    client = await asyncio.to_thread(
        Client, engine.api_key, base_url=engine.base_url, load_nodes=False, load_me=False
    )
    run = await WorkflowDefinition(client=client, id=engine.workflow_id).arun({"doc": "a"})
    async with engine.noxus_provider() as noxus:
        listener = Listener(
            store_url=f"sqlite:///{tmp_path / 'listener.db'}",
            providers=[noxus],
            poll=PollSettings(interval=0.05, grace=0, schedule=PollSchedule(interval=0.05)),
        )
        async with listener:
            await listener.track("noxus", engine.workflow_id, run.id, "running")
            await wait_for(lambda: engine.status_calls[run.id] >= 1, "the poller's first check")
            engine.finish(run.id)
            event = await listener.wait(run.id, timeout=30)
    assert (event.status, event.origin) == (RunStatus.SUCCEEDED, Origin.POLL)
    await client.aclose()
