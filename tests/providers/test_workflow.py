"""WorkflowProvider against a tiny workflow engine served on loopback."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from helpers import Sleeps
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from listener.events import RunStatus
from listener.providers import parser_for
from listener.providers.base import PayloadNotUnderstood, Provider, ProviderError, Submission
from listener.providers.workflow import WorkflowProvider, parse_event
from listener.testing import LoopbackServer

KEY = "wf-key-42"


@dataclass
class Engine:
    """A workflow engine: runs with per-run callbacks, posted unsigned when a run ends."""

    runs: dict[str, dict[str, Any]] = field(default_factory=dict)
    fail_next_get: int = 0
    stops: int = 0

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/v1/workflows/{wid}/runs", self.create, methods=["POST"]),
                Route("/v1/workflows/{wid}/runs/{rid}", self.get, methods=["GET"]),
                Route("/v1/runs/{rid}/stop", self.stop, methods=["POST"]),
            ]
        )

    async def create(self, request: Request) -> Response:
        if request.headers.get("x-api-key") != KEY:
            return JSONResponse({"detail": "bad key"}, 403)
        body = json.loads(await request.body())
        run_id = f"wr-{len(self.runs) + 1}"
        self.runs[run_id] = {
            "id": run_id,
            "workflow_id": request.path_params["wid"],
            "status": "queued",
            "input": body["input"],
            "callback_url": body.get("callback_url"),
        }
        return JSONResponse({"run": {"id": run_id, "status": "queued"}}, 201)

    async def get(self, request: Request) -> Response:
        if request.headers.get("x-api-key") != KEY:
            return JSONResponse({"detail": "bad key"}, 403)
        if self.fail_next_get > 0:
            self.fail_next_get -= 1
            return JSONResponse({"detail": "busy"}, 503, headers={"Retry-After": "2"})
        run = self.runs.get(request.path_params["rid"])
        if run is None or run["workflow_id"] != request.path_params["wid"]:
            return JSONResponse({"detail": "not found"}, 404)
        return JSONResponse({k: v for k, v in run.items() if k != "callback_url"})

    async def stop(self, request: Request) -> Response:
        self.stops += 1
        run = self.runs[request.path_params["rid"]]
        run["status"] = "stopped"
        await self.call_back(run)
        return JSONResponse({"ok": True})

    async def call_back(self, run: dict[str, Any]) -> None:
        if run["callback_url"]:
            async with httpx.AsyncClient() as http:
                payload = {"run_id": run["id"], "workflow_id": run["workflow_id"]}
                await http.post(run["callback_url"], json={**payload, "status": run["status"]})

    async def complete(self, run_id: str, output: Any) -> None:
        run = self.runs[run_id]
        run.update(status="completed", output=output)
        await self.call_back(run)


@dataclass
class Setup:
    engine: Engine
    provider: WorkflowProvider
    callback_url: str
    callbacks: list[dict[str, Any]]
    sleeps: Sleeps


@pytest.fixture
async def setup() -> AsyncIterator[Setup]:
    engine = Engine()
    callbacks: list[dict[str, Any]] = []

    async def hook(request: Request) -> Response:
        callbacks.append(json.loads(await request.body()))
        return Response(status_code=204)

    # The per-run token URL the caller would build; unguessable, since nothing is signed.
    receiver = Starlette(routes=[Route("/hooks/workflow/{token}", hook, methods=["POST"])])
    sleeps = Sleeps()
    async with (
        LoopbackServer(engine.app()) as api,
        LoopbackServer(receiver) as hooks,
        WorkflowProvider(KEY, api.base_url, sleep=sleeps) as provider,
    ):
        yield Setup(engine, provider, f"{hooks.base_url}/hooks/workflow/t0k3n", callbacks, sleeps)


def test_is_a_provider() -> None:
    assert isinstance(WorkflowProvider("k", "https://wf.example"), Provider)


async def test_submit_status_result_and_callback(setup: Setup) -> None:
    run_id = await setup.provider.submit(
        Submission("wf-7", {"doc": "a.pdf"}), callback_url=setup.callback_url
    )
    assert setup.engine.runs[run_id]["callback_url"] == setup.callback_url
    assert setup.engine.runs[run_id]["input"] == {"doc": "a.pdf"}
    state = await setup.provider.status("wf-7", run_id)
    assert (state.status, state.application) == (RunStatus.QUEUED, "wf-7")

    setup.engine.runs[run_id]["status"] = "awaiting_human_feedback"
    assert (await setup.provider.status("wf-7", run_id)).status is RunStatus.RUNNING

    await setup.engine.complete(run_id, {"pages": 3})
    result = await setup.provider.result("wf-7", run_id)
    assert (result.status, result.output, result.error) == (
        RunStatus.SUCCEEDED,
        {"pages": 3},
        None,
    )
    [callback] = setup.callbacks
    event = parser_for("workflow")(callback, delivery_id="d")
    assert (event.run_id, event.status, event.application) == (
        run_id,
        RunStatus.SUCCEEDED,
        "wf-7",
    )


async def test_failed_run(setup: Setup) -> None:
    run_id = await setup.provider.submit(Submission("wf-7", {}))
    setup.engine.runs[run_id].update(status="failed", error="OCR crashed")
    result = await setup.provider.result("wf-7", run_id)
    assert (result.status, result.output, result.error) == (RunStatus.FAILED, None, "OCR crashed")


async def test_stop_is_cancel(setup: Setup) -> None:
    run_id = await setup.provider.submit(Submission("wf-7", {}), callback_url=setup.callback_url)
    await setup.provider.cancel("wf-7", run_id)
    assert (await setup.provider.status("wf-7", run_id)).status is RunStatus.CANCELED
    assert parse_event(setup.callbacks[0], delivery_id="d").status is RunStatus.CANCELED


async def test_no_callback_url_is_sent_when_there_is_none(setup: Setup) -> None:
    run_id = await setup.provider.submit(Submission("wf-7", {}))
    assert setup.engine.runs[run_id]["callback_url"] is None


async def test_reads_retry_and_submits_do_not(setup: Setup) -> None:
    run_id = await setup.provider.submit(Submission("wf-7", {}))
    setup.engine.fail_next_get = 1
    await setup.provider.status("wf-7", run_id)
    assert setup.sleeps.delays == [2.0]


async def test_errors_carry_the_status_and_not_the_key() -> None:
    engine = Engine()
    async with (
        LoopbackServer(engine.app()) as api,
        WorkflowProvider("wrong-key", api.base_url) as provider,
    ):
        with pytest.raises(ProviderError) as caught:
            await provider.submit(Submission("wf", {}))
    assert caught.value.status_code == 403
    assert "wrong-key" not in str(caught.value)
    with pytest.raises(ValueError, match="API key"):
        WorkflowProvider("", "https://wf.example")


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        ({"run_id": "r", "status": "completed"}, ("r", RunStatus.SUCCEEDED, "")),
        ({"id": "r", "status": "stopped", "workflow_id": "w"}, ("r", RunStatus.CANCELED, "w")),
        ({"data": {"id": "r", "status": "failed"}}, ("r", RunStatus.FAILED, "")),
        (
            {"run": {"id": "r", "status": "running"}, "workflow_id": "w"},
            ("r", RunStatus.RUNNING, "w"),
        ),
    ],
)
def test_callback_shapes(payload: Any, expected: tuple[str, RunStatus, str]) -> None:
    event = parse_event(payload, delivery_id="d")
    assert (event.run_id, event.status, event.application) == expected
    assert event.provider == "workflow"


@pytest.mark.parametrize(
    "payload",
    [None, [], {}, {"id": "r"}, {"id": "r", "status": "exploded"}, {"status": "completed"}],
)
def test_callbacks_not_understood(payload: Any) -> None:
    with pytest.raises(PayloadNotUnderstood):
        parse_event(payload, delivery_id="d")
