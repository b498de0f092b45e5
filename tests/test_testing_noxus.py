"""The fake Noxus engine, driven by the official client (`noxus-sdk`) as users drive the
real one: workflows, runs, callbacks, waiting by event stream and by polling, stopping."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from helpers import wait_for
from noxus_sdk.client import Client
from noxus_sdk.errors import NotFoundError, RateLimitedError, ServerError, UnauthorizedError
from noxus_sdk.resources.runs import Run, RunFailureError
from noxus_sdk.workflows import WorkflowDefinition
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from listener.testing import FakeNoxusEngine, LoopbackServer, NoxusPlan


@dataclass
class Callbacks:
    """Where runs report: every body POSTed to `/cb/{run}`, by that path's name."""

    bodies: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    base_url: str = ""

    async def hook(self, request: Request) -> Response:
        self.bodies.append((request.path_params["name"], json.loads(await request.body())))
        return Response(status_code=204)

    def url(self, name: str) -> str:
        return f"{self.base_url}/cb/{name}"


@pytest.fixture
async def callbacks() -> AsyncIterator[Callbacks]:
    found = Callbacks()
    app = Starlette(routes=[Route("/cb/{name}", found.hook, methods=["POST"])])
    async with LoopbackServer(app) as server:
        found.base_url = server.base_url
        yield found


@pytest.fixture
async def engine() -> AsyncIterator[FakeNoxusEngine]:
    async with FakeNoxusEngine(plan=NoxusPlan(runs_for=None)) as fake:
        yield fake


async def connect(engine: FakeNoxusEngine, key: str | None = None) -> Client:
    # The client's constructor makes blocking calls (the node catalog, the key's own
    # record), and the engine serves in this event loop: construct it in a thread.
    return await asyncio.to_thread(Client, key or engine.api_key, base_url=engine.base_url)


@pytest.fixture
async def client(engine: FakeNoxusEngine) -> AsyncIterator[Client]:
    sdk = await connect(engine)
    yield sdk
    await sdk.aclose()
    sdk.close()


async def running(engine: FakeNoxusEngine, client: Client, callback_url: str | None = None) -> Run:
    """A run started through the client and moved on to `running`."""
    workflow = await client.workflows.aget(engine.workflow_id)
    run = await workflow.arun({"doc": "a"}, callback_url=callback_url)
    engine.start_run(run.id)
    return run


async def test_the_client_connects_and_reads_a_workflow(
    engine: FakeNoxusEngine, client: Client
) -> None:
    assert {node["type"] for node in client.nodes} == {"InputNode", "OutputNode"}
    workflow = await asyncio.to_thread(client.workflows.get, engine.workflow_id)
    assert isinstance(workflow, WorkflowDefinition)
    assert (workflow.id, workflow.type, len(workflow.nodes), len(workflow.edges)) == (
        engine.workflow_id,
        "flow",
        2,
        1,
    )
    assert [w.id for w in await client.workflows.alist()] == [engine.workflow_id]
    with pytest.raises(NotFoundError):
        await client.workflows.aget("no-such-workflow")
    assert engine.api_calls["nodes.list"] == engine.api_calls["admin.me"] == 1


async def test_a_wrong_key_is_refused(engine: FakeNoxusEngine) -> None:
    with pytest.raises(UnauthorizedError):
        await connect(engine, "wrong-key")
    assert engine.api_calls["nodes.list"] == 1


async def test_run_and_wait_by_stream_then_the_callback(
    engine: FakeNoxusEngine, client: Client, callbacks: Callbacks
) -> None:
    workflow = await client.workflows.aget(engine.workflow_id)
    run = await asyncio.to_thread(workflow.run, {"doc": "a.pdf"}, callback_url=callbacks.url("a"))
    assert (run.status, run.input, run.output) == ("queued", {"doc": "a.pdf"}, None)
    waiting = asyncio.ensure_future(asyncio.to_thread(run.wait, 0))
    await wait_for(lambda: engine.stream_connections[run.id] == 1, "the client's stream")
    engine.finish(run.id, output={"pages": 3})
    finished = await waiting
    assert finished is run
    assert (run.status, run.output, run.progress) == ("completed", {"pages": 3}, 100)
    # Waiting took one stream and one refresh at the end: no polling.
    assert engine.status_calls[run.id] == 1
    await engine.drain()
    [(name, body)] = callbacks.bodies
    assert (name, body["id"], body["status"], body["output"]) == (
        "a",
        run.id,
        "completed",
        {"pages": 3},
    )


async def test_arun_and_a_wait_by_stream_for_a_failure(
    engine: FakeNoxusEngine, client: Client, callbacks: Callbacks
) -> None:
    run = await running(engine, client, callbacks.url("b"))
    waiting = asyncio.ensure_future(run.a_wait(interval=0))
    await wait_for(lambda: engine.stream_connections[run.id] == 1, "the client's stream")
    engine.finish(run.id, "failed", error="OCR crashed")
    with pytest.raises(RunFailureError):
        await waiting
    assert (run.status, run.output) == ("failed", None)
    data = await run.adata()
    assert data["status"] == "failed"
    await engine.drain()
    assert [body["status"] for _, body in callbacks.bodies] == ["failed"]
    assert callbacks.bodies[0][1]["error"] == "OCR crashed"


async def test_stop_ends_the_run_and_its_stream(
    engine: FakeNoxusEngine, client: Client, callbacks: Callbacks
) -> None:
    run = await running(engine, client, callbacks.url("c"))
    stopped = await run.astop()
    assert stopped.status == "stopped"
    assert (await run.astop()).status == "stopped"  # stopping twice changes nothing
    # The stream of a stopped run ends after its last event, so waiting returns.
    assert await run.a_wait(interval=0) is run
    assert run.status == "stopped"
    workflow = await client.workflows.aget(engine.workflow_id)
    sync_run = await asyncio.to_thread(workflow.run, {"doc": "d"})
    assert (await asyncio.to_thread(sync_run.stop)).status == "stopped"
    await engine.drain()
    assert [(name, body["status"]) for name, body in callbacks.bodies] == [("c", "stopped")]


def waiting(run: Run, mode: str) -> asyncio.Future[Any]:
    """The client's own wait for `run`, `wait()` in a thread or `a_wait()`, polling at once."""
    if mode == "sync":
        return asyncio.ensure_future(asyncio.to_thread(run.wait, 0))
    return asyncio.ensure_future(run.a_wait(interval=0))


async def end_while_waited(engine: FakeNoxusEngine, client: Client, run: Run, end: str) -> None:
    """End `run` as `end` says: the engine finishes it, or the client stops it."""
    if end == "stopped":
        assert (await client.runs.astop(run.id)).status == "stopped"
    else:
        engine.finish(run.id, end)


async def ends_as(waited: asyncio.Future[Any], run: Run, end: str, body: Any) -> None:
    """The client's wait ended as `end` says: an error for a failure, the run otherwise,
    with the engine's echo of `body` as its output when it completed."""
    if end == "failed":
        with pytest.raises(RunFailureError):
            await waited
    else:
        assert await waited is run
    assert run.status == end
    assert run.output == ({"echo": body} if end == "completed" else None)


@pytest.mark.parametrize("end", ["completed", "failed", "stopped"])
@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_waiting_by_stream_for_each_end(
    engine: FakeNoxusEngine, client: Client, mode: str, end: str
) -> None:
    run = await running(engine, client)
    waited = waiting(run, mode)
    await wait_for(lambda: engine.stream_connections[run.id] == 1, "the client's stream")
    await end_while_waited(engine, client, run, end)
    # A stop is no terminal event to the client, but the engine ends the stream.
    await ends_as(waited, run, end, {"doc": "a"})
    assert engine.status_calls[run.id] == 1  # the refresh after the stream: no polling


@pytest.mark.parametrize("end", ["completed", "failed"])
@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_waiting_falls_back_to_polling_without_streams(
    engine: FakeNoxusEngine, client: Client, mode: str, end: str
) -> None:
    engine.streams = False
    workflow = await client.workflows.aget(engine.workflow_id)
    run = await workflow.arun({"doc": "e"})
    waited = waiting(run, mode)
    await wait_for(lambda: engine.status_calls[run.id] >= 2, "the client polling")
    engine.finish(run.id, end)
    await ends_as(waited, run, end, {"doc": "e"})
    assert engine.api_calls["runs.events"] == 1
    assert engine.stream_connections[run.id] == 0


async def test_polling_fallback_does_not_end_for_a_stopped_run(
    engine: FakeNoxusEngine, client: Client
) -> None:
    # The client polls until `completed`, `failed` or `awaiting_human_feedback`, so with
    # no stream its wait goes on past a stop: the engine keeps answering `stopped`.
    engine.streams = False
    run = await running(engine, client)
    waited = waiting(run, "async")
    await wait_for(lambda: engine.status_calls[run.id] >= 1, "the client polling")
    await end_while_waited(engine, client, run, "stopped")
    calls = engine.status_calls[run.id]
    await wait_for(lambda: engine.status_calls[run.id] >= calls + 3, "polls after the stop")
    assert not waited.done()
    assert run.status == "stopped"
    waited.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waited


async def test_refresh_sees_each_status(engine: FakeNoxusEngine, client: Client) -> None:
    run = await running(engine, client)
    assert (await run.arefresh()).status == "running"
    engine.await_feedback(run.id)
    assert (await asyncio.to_thread(run.refresh)).status == "awaiting_human_feedback"
    # The client stops waiting for a run that waits on a person.
    assert await run.a_wait(interval=0) is run
    engine.finish(run.id)
    same = await client.runs.aget(engine.workflow_id, run.id)
    assert isinstance(same, Run)
    assert same.status == "completed"


async def test_a_stream_resumes_after_an_event_id(engine: FakeNoxusEngine, client: Client) -> None:
    engine.stream_event_limit = 1  # each connection drops after one event
    run = await running(engine, client)
    engine.finish(run.id)
    seen = []
    etag = None
    for _ in range(5):
        async for event in run.astream(etag=etag):
            seen.append(event)
        etag = seen[-1].redis_id
        if seen[-1].is_terminal:
            break
    assert [e.data["workflow_status"] for e in seen] == ["queued", "running", "completed"]
    assert len({e.redis_id for e in seen}) == 3
    assert engine.stream_connections[run.id] == 3
    # After the last event there is nothing more: the stream ends at once.
    engine.stream_event_limit = None
    assert [e async for e in run.astream(etag=etag)] == []


async def test_the_client_retries_429_and_reports_5xx(
    engine: FakeNoxusEngine, client: Client
) -> None:
    workflow = await client.workflows.aget(engine.workflow_id)
    run = await workflow.arun({"doc": "h"})
    engine.fail_next(429, route="runs.get", retry_after="0")
    assert (await run.arefresh()).status == engine.runs[run.id].status
    assert engine.injected[429] == 1
    engine.fail_next(503, route="runs.get")
    with pytest.raises(ServerError):
        await run.arefresh()
    assert engine.api_calls["runs.get"] == 3


async def test_injected_failures_are_drawn_from_the_seed() -> None:
    async with FakeNoxusEngine(api_error_rate=1.0) as engine:
        with pytest.raises(ServerError):
            await connect(engine)
        engine.api_error_rate, engine.rate_limit_rate, engine.retry_after = 0.0, 1.0, "0"
        with pytest.raises(RateLimitedError):
            await asyncio.to_thread(Client, engine.api_key, base_url=engine.base_url, max_retries=2)
        # The client tried the catalog three times, sleeping `Retry-After` between.
        assert engine.injected == {503: 1, 429: 3}


async def test_callback_knobs_drop_double_and_reorder(callbacks: Callbacks) -> None:
    async with FakeNoxusEngine(drop_rate=1.0, time_scale=0.001) as engine:
        sdk = await connect(engine)
        workflow = await sdk.workflows.aget(engine.workflow_id)
        await workflow.arun({"n": 1}, callback_url=callbacks.url("lost"))
        await engine.drain()
        assert (engine.stats.scheduled, engine.stats.dropped, callbacks.bodies) == (1, 1, [])

        engine.drop_rate, engine.duplicate_rate = 0.0, 1.0
        await workflow.arun({"n": 2}, callback_url=callbacks.url("twice"))
        await engine.drain()
        assert [name for name, _ in callbacks.bodies] == ["twice", "twice"]

        engine.duplicate_rate, engine.reorder_rate = 0.0, 1.0
        engine.plan = NoxusPlan(runs_for=None)
        first = await workflow.arun({"n": 3}, callback_url=callbacks.url("first"))
        second = await workflow.arun({"n": 4}, callback_url=callbacks.url("second"))
        engine.finish(first.id)  # held back...
        engine.reorder_rate = 0.0
        engine.finish(second.id)  # ...and sent just after this one
        await engine.drain()
        assert [name for name, _ in callbacks.bodies[2:]] == ["second", "first"]
        assert engine.stats.reordered == 1
        await sdk.aclose()


async def test_callback_delay_is_drawn_from_the_range_and_scaled(callbacks: Callbacks) -> None:
    async with FakeNoxusEngine(time_scale=0.001, delay=(1.0, 2.0)) as engine:
        sdk = await connect(engine)
        workflow = await sdk.workflows.aget(engine.workflow_id)
        for n in range(5):
            await workflow.arun({"n": n}, callback_url=callbacks.url(f"late-{n}"))
        await engine.drain()
        await sdk.aclose()
    assert sorted(name for name, _ in callbacks.bodies) == [f"late-{n}" for n in range(5)]
    assert len(engine.deliveries) == 5
    for record in engine.deliveries:
        assert 0.001 <= record.delay <= 0.002
