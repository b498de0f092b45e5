"""The provider parses the recorded Nextmv documents, the ones the official SDK validates.

A loopback server answers each route with its recorded document (see
`tests/nextmv_documents.py`), so what the provider reads here is exactly what the fake
answered and the SDK's models accepted.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

import pytest
from helpers import serve
from nextmv_documents import STABLE_BASE_URL, load
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from listener.events import RunStatus
from listener.providers.base import Submission
from listener.providers.nextmv import NextmvProvider, parse_event

APP = "/v1/applications/routing"


def run_id(name: str) -> str:
    found: str = load(name)["id"]
    return found


def served(name: str, request: Request) -> JSONResponse:
    """A recorded document, its storage URLs pointing at this server."""
    text = json.dumps(load(name)).replace(STABLE_BASE_URL, str(request.base_url).rstrip("/"))
    return JSONResponse(json.loads(text))


def recorded_paths() -> dict[str, str]:
    """The name of each recorded document by the path it was answered on."""
    by_path: dict[str, str] = {
        f"{APP}/runs/{run_id(name)}/metadata": name
        for name in (
            "metadata_queued",
            "metadata_running",
            "metadata_succeeded",
            "metadata_canceled",
        )
    }
    by_path |= {
        f"{APP}/runs/{run_id(name)}": name
        for name in ("result_succeeded", "result_failed", "result_tracked_failed")
    }
    by_path[f"{APP}/runs/{run_id('result_failed')}/logs"] = "logs"
    by_path[f"{APP}/runs/{run_id('result_succeeded')}/output"] = "output_url"
    by_path[f"{APP}/runs/uploadurl"] = "upload_url"
    return by_path


def recorded_routes(by_path: dict[str, str], uploads: dict[str, bytes]) -> list[Route]:
    """Each document of `by_path` at its path; `uploads` keeps what is put to storage."""
    storage = {
        urlsplit(load("upload_url")["upload_url"]).path: "upload",
        urlsplit(load("output_url")["url"]).path: "download",
    }

    async def answer(request: Request) -> Response:
        if storage.get(request.url.path) == "upload":
            uploads[load("upload_url")["upload_id"]] = await request.body()
            return Response(status_code=200)
        if storage.get(request.url.path) == "download":
            return JSONResponse(load("result_succeeded")["output"])
        if request.url.path == f"{APP}/runs":
            if request.method == "POST":
                return JSONResponse(load("new_run"))
            token = request.query_params.get("pagetoken")
            return JSONResponse(load("runs_page_next" if token else "runs_page"))
        name = by_path.get(request.url.path)
        return served(name, request) if name else JSONResponse({"error": "not found"}, 404)

    return [Route("/{path:path}", answer, methods=["GET", "POST", "PUT"])]


@pytest.fixture
def uploads() -> dict[str, bytes]:
    return {}


@pytest.fixture
def documents() -> dict[str, str]:
    return recorded_paths()


@pytest.fixture
async def provider(
    documents: dict[str, str], uploads: dict[str, bytes]
) -> AsyncIterator[NextmvProvider]:
    async with (
        serve(Starlette(routes=recorded_routes(documents, uploads)), lifespan="off") as url,
        NextmvProvider("recorded-key", base_url=url) as client,
    ):
        yield client


async def test_submit_reads_the_run_id(provider: NextmvProvider) -> None:
    answer = await provider.submit(Submission("routing", {"stops": 3}))
    assert answer == load("new_run")["run_id"]


async def test_submit_by_the_recorded_upload_url(
    provider: NextmvProvider, uploads: dict[str, bytes]
) -> None:
    answer = await provider.submit(Submission("routing", "3 stops\n"))
    assert answer == load("new_run")["run_id"]
    assert uploads == {load("upload_url")["upload_id"]: b"3 stops\n"}


@pytest.mark.parametrize(
    ("name", "status"),
    [
        ("metadata_queued", RunStatus.QUEUED),
        ("metadata_succeeded", RunStatus.SUCCEEDED),
        ("metadata_canceled", RunStatus.CANCELED),
    ],
)
async def test_status_from_the_run_information(
    provider: NextmvProvider, name: str, status: RunStatus
) -> None:
    state = await provider.status("routing", run_id(name))
    assert (state.run_id, state.status, state.application) == (run_id(name), status, "routing")


async def test_results(provider: NextmvProvider) -> None:
    succeeded = await provider.result("routing", run_id("result_succeeded"))
    assert succeeded.status is RunStatus.SUCCEEDED
    assert succeeded.output == load("result_succeeded")["output"]
    failed = await provider.result("routing", run_id("result_failed"))
    assert (failed.status, failed.error) == (RunStatus.FAILED, "no solution")
    tracked = await provider.result("routing", run_id("result_tracked_failed"))
    assert (tracked.status, tracked.error) == (RunStatus.FAILED, "out of memory")


async def test_an_output_left_out_is_read_from_the_recorded_output_url(
    provider: NextmvProvider, documents: dict[str, str]
) -> None:
    assert "output" not in load("result_output_by_url")
    documents[f"{APP}/runs/{run_id('result_output_by_url')}"] = "result_output_by_url"
    large = await provider.result("routing", run_id("result_output_by_url"))
    assert large.status is RunStatus.SUCCEEDED
    assert large.output == load("result_succeeded")["output"]


async def test_logs(provider: NextmvProvider) -> None:
    assert await provider.logs("routing", run_id("result_failed")) == load("logs")["log"]


async def test_listing_pages_and_batch_statuses(provider: NextmvProvider) -> None:
    listed: list[dict[str, Any]] = [*load("runs_page")["runs"], *load("runs_page_next")["runs"]]
    ids = [run["id"] async for run in provider.list_runs("routing")]
    assert ids == [run["id"] for run in listed]
    states = await provider.statuses("routing", ids)
    assert {rid: state.status.value for rid, state in states.items()} == {
        run["id"]: run["status_v2"] for run in listed
    }


def test_the_recorded_webhook() -> None:
    payload = load("webhook_run_status")
    event = parse_event(payload, delivery_id="d-1")
    assert (event.run_id, event.status, event.application) == (
        payload["data"]["run_id"],
        RunStatus.SUCCEEDED,
        "routing",
    )
