"""HttpProvider (a JSON API described in configuration) against a tiny loopback API."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from listener import providers
from listener.events import RunStatus
from listener.providers import parser_for, provider_from_config
from listener.providers.base import PayloadNotUnderstood, Provider, ProviderError, Submission
from listener.providers.http import HttpProvider, StatusMap, get_field
from listener.testing import LoopbackServer

TOKEN = "acme-token-77"
STATUS_MAP = {"waiting": "queued", "busy": "running", "done": "succeeded", "error": "failed"}


@dataclass
class Acme:
    """An API with its own shapes: jobs nested under `job`, integer ids, its own words."""

    jobs: dict[int, dict[str, Any]] = field(default_factory=dict)
    requests: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)
    cancels: int = 0

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/v2/apps/{app}/jobs", self.create, methods=["POST"]),
                Route("/v2/jobs/{job_id:int}", self.get, methods=["GET"]),
                Route("/v2/jobs/{job_id:int}/output", self.output, methods=["GET"]),
                Route("/v2/jobs/{job_id:int}", self.cancel, methods=["DELETE"]),
            ]
        )

    def authorized(self, request: Request) -> bool:
        return request.headers.get("authorization") == f"Token {TOKEN}"

    async def create(self, request: Request) -> Response:
        if not self.authorized(request):
            return JSONResponse({"message": "no"}, 401)
        body = json.loads(await request.body())
        self.requests.append(("POST", request.url.path, body))
        job_id = 100 + len(self.jobs)
        self.jobs[job_id] = {"id": job_id, "state": "waiting", "app": request.path_params["app"]}
        return JSONResponse({"job": {"id": job_id, "state": "waiting"}}, 201)

    async def get(self, request: Request) -> Response:
        job = self.jobs.get(request.path_params["job_id"])
        if job is None:
            return JSONResponse({"message": "gone"}, 404)
        return JSONResponse({"job": {"id": job["id"], "state": job["state"]}})

    async def output(self, request: Request) -> Response:
        job = self.jobs[request.path_params["job_id"]]
        return JSONResponse(
            {"job": {"id": job["id"], "state": job["state"]}, "result": job.get("result")}
            | ({"problem": {"text": job["problem"]}} if "problem" in job else {})
        )

    async def cancel(self, request: Request) -> Response:
        self.cancels += 1
        self.jobs[request.path_params["job_id"]]["state"] = "canceled"
        return Response(status_code=204)


def make(base_url: str, **overrides: Any) -> HttpProvider:
    options: dict[str, Any] = {
        "submit_path": "v2/apps/{application}/jobs",
        "status_path": "v2/jobs/{run_id}",
        "result_path": "v2/jobs/{run_id}/output",
        "cancel_path": "v2/jobs/{run_id}",
        "cancel_method": "DELETE",
        "run_id_field": "job.id",
        "status_field": "job.state",
        "status_map": STATUS_MAP,
        "output_field": "result",
        "error_field": "problem.text",
        "headers": {"Authorization": f"Token {TOKEN}"},
        "event_run_id_field": "data.job_id",
        "event_status_field": "data.state",
        "event_application_field": "data.app",
    }
    options.update(overrides)
    return HttpProvider("acme", base_url, **options)


@dataclass
class Setup:
    acme: Acme
    provider: HttpProvider
    base_url: str


@pytest.fixture
async def setup() -> AsyncIterator[Setup]:
    acme = Acme()
    async with LoopbackServer(acme.app()) as server, make(server.base_url) as provider:
        yield Setup(acme, provider, server.base_url)


def test_is_a_provider() -> None:
    assert isinstance(make("https://acme.example"), Provider)


async def test_submit_status_result_cancel(setup: Setup) -> None:
    run_id = await setup.provider.submit(
        Submission("solver", {"x": 1}, options={"fast": "yes"}),
        callback_url="https://listener.example/hooks/acme",
    )
    assert run_id == "100"
    assert setup.acme.requests == [
        (
            "POST",
            "/v2/apps/solver/jobs",
            {
                "input": {"x": 1},
                "options": {"fast": "yes"},
                "callback_url": "https://listener.example/hooks/acme",
            },
        )
    ]
    assert (await setup.provider.status("solver", run_id)).status is RunStatus.QUEUED
    setup.acme.jobs[100]["state"] = "BUSY"  # words are matched without case
    assert (await setup.provider.status("solver", run_id)).status is RunStatus.RUNNING

    setup.acme.jobs[100].update(state="done", result={"best": 42})
    result = await setup.provider.result("solver", run_id)
    assert (result.status, result.output, result.error) == (RunStatus.SUCCEEDED, {"best": 42}, None)

    other = await setup.provider.submit(Submission("solver", {}))
    await setup.provider.cancel("solver", other)
    assert setup.acme.cancels == 1
    # Our own words need no mapping.
    assert (await setup.provider.status("solver", other)).status is RunStatus.CANCELED


async def test_failed_result_reads_the_error_field(setup: Setup) -> None:
    run_id = await setup.provider.submit(Submission("solver", {}))
    setup.acme.jobs[int(run_id)].update(state="error", problem="diverged")
    result = await setup.provider.result("solver", run_id)
    assert (result.status, result.error) == (RunStatus.FAILED, "diverged")


async def test_unknown_words_and_missing_ids_are_provider_errors(setup: Setup) -> None:
    run_id = await setup.provider.submit(Submission("solver", {}))
    setup.acme.jobs[int(run_id)]["state"] = "melted"
    with pytest.raises(ProviderError, match="melted"):
        await setup.provider.status("solver", run_id)
    async with make(setup.base_url, run_id_field="job.number") as provider:
        with pytest.raises(ProviderError, match=r"job\.number"):
            await provider.submit(Submission("solver", {}))


async def test_fields_left_out_of_the_submission(setup: Setup) -> None:
    async with make(
        setup.base_url, input_field="payload", options_field=None, callback_field=None
    ) as provider:
        await provider.submit(
            Submission("solver", [1], options={"a": "b"}), callback_url="https://l.example/h"
        )
    assert setup.acme.requests[-1][2] == {"payload": [1]}


async def test_without_a_cancel_path() -> None:
    async with make("https://acme.example", cancel_path=None) as provider:
        with pytest.raises(ProviderError, match="cancel_path"):
            await provider.cancel("solver", "1")


async def test_headers_never_appear_in_errors(setup: Setup) -> None:
    async with make(setup.base_url, headers={"Authorization": "Token wrong-7f3a"}) as provider:
        with pytest.raises(ProviderError) as caught:
            await provider.submit(Submission("solver", {}))
    assert caught.value.status_code == 401
    assert "wrong-7f3a" not in str(caught.value)


def test_templates_are_checked() -> None:
    with pytest.raises(ValueError, match="only"):
        make("https://acme.example", status_path="v2/{tenant}/jobs/{run_id}")
    with pytest.raises(ValueError, match="not a valid template"):
        make("https://acme.example", status_path="v2/jobs/{run_id")
    with pytest.raises(ValueError, match="status_map"):
        make("https://acme.example", status_map={"done": "finished"})


def test_path_values_are_escaped() -> None:
    provider = make("https://acme.example")
    assert provider._path("v2/jobs/{run_id}", "a", "../x?y") == "v2/jobs/..%2Fx%3Fy"


def test_event_parser() -> None:
    provider = make("https://acme.example")
    payload = {"data": {"job_id": 7, "state": "done", "app": "solver"}}
    event = provider.parse_event(payload, delivery_id="d")
    assert (event.provider, event.run_id, event.status, event.application) == (
        "acme",
        "7",
        RunStatus.SUCCEEDED,
        "solver",
    )
    bad_payloads: list[object] = [
        None,
        [],
        {},
        {"data": {"job_id": 7}},
        {"data": {"job_id": 7, "state": "zzz"}},
    ]
    for bad in bad_payloads:
        with pytest.raises(PayloadNotUnderstood):
            provider.parse_event(bad, delivery_id="d")


def test_get_field() -> None:
    document = {"a": {"b": [{"c": 1}, {"c": 2}]}, "n": None}
    assert get_field(document, "a.b.1.c") == 2
    assert get_field(document, "a.b.5.c") is None
    assert get_field(document, "a.x") is None
    assert get_field(document, "a.b.c") is None
    assert get_field("text", "a") is None
    assert get_field(document, "n") is None


def test_status_map() -> None:
    words = StatusMap("acme", {"Done": "Succeeded"})
    assert words(" done ") is RunStatus.SUCCEEDED
    assert words("running") is RunStatus.RUNNING


async def test_provider_from_config_registers_the_parser(
    setup: Setup, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(providers, "_CONFIGURED", dict(providers._CONFIGURED))
    provider = provider_from_config(
        "acme-configured",
        {
            "kind": "http",
            "base_url": setup.base_url,
            "submit_path": "v2/apps/{application}/jobs",
            "status_path": "v2/jobs/{run_id}",
            "run_id_field": "job.id",
            "status_field": "job.state",
            "status_map": STATUS_MAP,
            "headers": {"Authorization": f"Token {TOKEN}"},
        },
    )
    assert isinstance(provider, HttpProvider)
    assert provider.name == "acme-configured"
    run_id = await provider.submit(Submission("solver", {}))
    assert (await provider.status("solver", run_id)).status is RunStatus.QUEUED
    await provider.aclose()
    event = parser_for("acme-configured")({"job": {"id": 5, "state": "done"}}, delivery_id="d")
    assert (event.run_id, event.status) == ("5", RunStatus.SUCCEEDED)
