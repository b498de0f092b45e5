"""The fake Noxus engine's HTTP API: the routes the official client (`noxus-sdk`) calls.

Route names, for :meth:`FakeNoxusEngine.fail_next` and :attr:`FakeNoxusEngine.api_calls`:
``nodes.list``, ``admin.me``, ``workflows.list``, ``workflows.get``, ``runs.create``,
``runs.list``, ``runs.get``, ``runs.stop``, ``runs.data``, ``runs.events``. Every call
needs the engine's ``X-API-Key`` (401 otherwise); errors are ``{"detail": ...}``.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from listener.testing.noxus_documents import (
    NODE_CATALOG,
    STREAM_END_STATUSES,
    api_key_document,
)
from listener.testing.noxus_runs import NoxusRun

if TYPE_CHECKING:
    from listener.testing.noxus_engine import FakeNoxusEngine

__all__ = ["NoxusApi"]

Handler = Callable[[Request], Awaitable[Response]]


def _detail(status: int, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"detail": detail}, status, headers=headers)


class NoxusApi:
    """The Starlette app (:attr:`app`) serving one fake engine."""

    def __init__(self, engine: FakeNoxusEngine) -> None:
        self.engine = engine
        workflow = "/v1/workflows/{workflow_id}"
        run = "/v1/runs/{run_id}"
        table: list[tuple[str, str, str, Handler]] = [
            ("nodes.list", "GET", "/v1/nodes", self._nodes),
            ("admin.me", "GET", "/v1/admin/me", self._me),
            ("workflows.list", "GET", "/v1/workflows", self._workflows),
            ("workflows.get", "GET", workflow, self._workflow),
            ("runs.create", "POST", workflow + "/runs", self._create),
            ("runs.list", "GET", workflow + "/runs", self._runs),
            ("runs.get", "GET", workflow + "/runs/{run_id}", self._run),
            ("runs.stop", "POST", run + "/stop", self._stop),
            ("runs.data", "GET", run + "/data", self._data),
            ("runs.events", "GET", run + "/events", self._events),
        ]
        self.app = Starlette(
            routes=[
                Route(path, self._guarded(name, handler), methods=[method])
                for name, method, path, handler in table
            ]
        )

    # --- what every call goes through ---------------------------------------------------

    def _guarded(self, route: str, handler: Handler) -> Handler:
        engine = self.engine

        async def endpoint(request: Request) -> Response:
            engine.api_calls[route] += 1
            engine.calls_by_path[f"{request.method} {request.url.path}"] += 1
            if route == "runs.get":
                engine.status_calls[request.path_params["run_id"]] += 1
            if request.headers.get("x-api-key") != engine.api_key:
                return _detail(401, "invalid API key")
            scripted = (f for f in engine.failures if f.times > 0 and f.route in (None, route))
            failure = next(scripted, None)
            if failure is not None:
                failure.times -= 1
                engine.injected[failure.status] += 1
                if not failure.after_processing:
                    return failure.response()
                await handler(request)
                return failure.response()
            # Two draws per API call, always, so a seed replays exactly.
            error_roll, limit_roll = engine.rng.random(), engine.rng.random()
            if error_roll < engine.api_error_rate:
                engine.injected[503] += 1
                return _detail(503, "service unavailable (injected)")
            if limit_roll < engine.rate_limit_rate:
                engine.injected[429] += 1
                return _detail(429, "rate limited (injected)", {"Retry-After": engine.retry_after})
            return await handler(request)

        return endpoint

    def _workflow_of(self, request: Request) -> str | None:
        workflow_id: str = request.path_params["workflow_id"]
        return workflow_id if workflow_id in self.engine.workflows else None

    def _run_of(self, request: Request) -> NoxusRun | None:
        run = self.engine.runs.get(request.path_params["run_id"])
        workflow_id = request.path_params.get("workflow_id")
        if run is None or (workflow_id is not None and run.workflow_id != workflow_id):
            return None
        return run

    # --- catalog and workflows ----------------------------------------------------------

    async def _nodes(self, request: Request) -> Response:
        return JSONResponse(list(NODE_CATALOG))

    async def _me(self, request: Request) -> Response:
        return JSONResponse(api_key_document("key-fake"))

    async def _workflows(self, request: Request) -> Response:
        documents = list(self.engine.workflows.values())
        return JSONResponse(_page(request, documents))

    async def _workflow(self, request: Request) -> Response:
        workflow_id = self._workflow_of(request)
        if workflow_id is None:
            return _detail(404, "workflow not found")
        return JSONResponse(self.engine.workflows[workflow_id])

    # --- runs ---------------------------------------------------------------------------

    async def _create(self, request: Request) -> Response:
        workflow_id = self._workflow_of(request)
        if workflow_id is None:
            return _detail(404, "workflow not found")
        try:
            body = json.loads(await request.body())
        except ValueError:
            return _detail(422, "the body is not JSON")
        if not isinstance(body, dict) or not isinstance(body.get("input"), dict):
            return _detail(422, "input: an object is required")
        callback_url = body.get("callback_url")
        if callback_url is not None and not (
            isinstance(callback_url, str) and callback_url.startswith(("http://", "https://"))
        ):
            return _detail(422, "callback_url: an http(s) URL is required")
        version = body.get("workflow_version_id")
        run = self.engine.create_run(
            workflow_id,
            body["input"],
            callback_url=callback_url,
            workflow_version_id=str(version) if version is not None else None,
        )
        return JSONResponse(run.document())

    async def _runs(self, request: Request) -> Response:
        workflow_id = self._workflow_of(request)
        if workflow_id is None:
            return _detail(404, "workflow not found")
        runs = [r for r in reversed(self.engine.runs.values()) if r.workflow_id == workflow_id]
        return JSONResponse(_page(request, [run.document() for run in runs]))

    async def _run(self, request: Request) -> Response:
        run = self._run_of(request)
        if run is None:
            return _detail(404, "run not found")
        return JSONResponse(run.document())

    async def _stop(self, request: Request) -> Response:
        run = self._run_of(request)
        if run is None:
            return _detail(404, "run not found")
        self.engine.stop_run(run)
        return JSONResponse(run.document())

    async def _data(self, request: Request) -> Response:
        run = self._run_of(request)
        if run is None:
            return _detail(404, "run not found")
        nodes = [
            {"node_id": "input", "status": run.status, "input": run.input, "output": run.input},
            {"node_id": "output", "status": run.status, "input": run.input, "output": run.output},
        ]
        return JSONResponse({"run_id": run.id, "status": run.status, "nodes": nodes})

    async def _events(self, request: Request) -> Response:
        run = self._run_of(request)
        if run is None or not self.engine.streams:
            return _detail(404, "not found")
        try:
            start = run.events_after(request.query_params.get("etag"))
        except ValueError as exc:
            return _detail(400, str(exc))
        self.engine.stream_connections[run.id] += 1
        return StreamingResponse(
            self._stream(run, start),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store"},
        )

    async def _stream(self, run: NoxusRun, start: int) -> AsyncIterator[bytes]:
        """The run's events from ``start`` on, live, until the run ends (or the limit)."""
        limit = self.engine.stream_event_limit
        sent, index = 0, start
        while not self.engine.closing:
            change = run.next_change()
            while index < len(run.events):
                event = run.events[index]
                index += 1
                yield f"event: message\ndata: {json.dumps(event)}\n\n".encode()
                sent += 1
                ended = event["data"]["workflow_status"] in STREAM_END_STATUSES
                if ended or (limit is not None and sent >= limit):
                    return
            if run.is_final:  # resumed after its last event: nothing more will come
                return
            await change.wait()


def _page(request: Request, items: list[dict[str, Any]]) -> dict[str, Any]:
    """One page of a listing, as the engine pages: ``page`` (from 1) and ``size``."""
    try:
        page = max(1, int(request.query_params.get("page", "1")))
        size = max(1, int(request.query_params.get("size", "10")))
    except ValueError:
        page, size = 1, 10
    chosen = items[(page - 1) * size : page * size]
    return {"items": chosen, "page": page, "size": size, "total": len(items)}
