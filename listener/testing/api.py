"""The fake platform's HTTP API: the Nextmv run and webhook routes, and pre-signed storage.

Every route reads and changes the state of one :class:`~listener.testing.FakePlatform`; API
calls are counted there and may answer a scripted or injected failure before (or after) they
take effect.
"""

from __future__ import annotations

import asyncio
import base64
import json
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from listener.sending import compact_json
from listener.testing import documents
from listener.testing.records import ApiFailure, FakeRun, RunPlan, TrackedResult, WebhookEndpoint

if TYPE_CHECKING:
    from listener.testing.platform import FakePlatform

__all__ = ["PlatformApi"]

Handler = Callable[[Request], Awaitable[Response]]


class PlatformApi:
    """The Starlette app (:attr:`app`) serving one fake platform's API."""

    def __init__(self, platform: FakePlatform) -> None:
        self.platform = platform
        self._status_in_flight: Counter[str] = Counter()
        self._upload_tokens: dict[str, str] = {}
        # Pre-signed download URLs: token -> (content, media type), fixed when issued.
        self._downloads: dict[str, tuple[bytes, str]] = {}
        self.app = self._build_app()

    def _build_app(self) -> Starlette:
        app = "/v1/applications/{application_id}"
        run = app + "/runs/{run_id}"
        api = self._api
        routes = [
            Route(
                app + "/runs/uploadurl", api("runs.uploadurl", self._upload_url), methods=["POST"]
            ),
            Route(app + "/runs", api("runs.create", self._create_run), methods=["POST"]),
            Route(app + "/runs", api("runs.list", self._list_runs), methods=["GET"]),
            Route(run + "/metadata", api("runs.metadata", self._metadata), methods=["GET"]),
            Route(run + "/input", api("runs.input", self._input), methods=["GET"]),
            Route(run + "/output", api("runs.output", self._output), methods=["GET"]),
            Route(run + "/cancel", api("runs.cancel", self._cancel), methods=["PATCH"]),
            Route(run + "/logs", api("runs.logs", self._logs), methods=["GET"]),
            Route(run + "/logs/live", api("runs.logs.live", self._live_logs), methods=["GET"]),
            Route(run, api("runs.get", self._get_run), methods=["GET"]),
            Route(run, api("runs.delete", self._delete_run), methods=["DELETE"]),
            Route(app, api("applications.get", self._application), methods=["GET"]),
            Route("/v1/webhooks", api("webhooks.create", self._create_webhook), methods=["POST"]),
            Route("/v1/webhooks", api("webhooks.list", self._list_webhooks), methods=["GET"]),
            Route(
                "/v1/webhooks/{endpoint_id}/secret",
                api("webhooks.secret", self._webhook_secret_route),
                methods=["GET"],
            ),
            Route(
                "/v1/webhooks/{endpoint_id}",
                api("webhooks.delete", self._delete_webhook),
                methods=["DELETE"],
            ),
            Route(
                "/uploads/{upload_id}",
                self._storage("upload.put", self._put_upload),
                methods=["PUT"],
            ),
            Route(
                "/downloads/{token}", self._storage("download.get", self._download), methods=["GET"]
            ),
        ]
        return Starlette(routes=routes)

    def _count(self, route: str, request: Request) -> None:
        self.platform.api_calls[route] += 1
        self.platform.calls_by_path[f"{request.method} {request.url.path}"] += 1

    def _scripted(self, route: str) -> ApiFailure | None:
        for failure in self.platform.failures:
            if failure.times > 0 and failure.route in (None, route):
                failure.times -= 1
                return failure
        return None

    def _api(self, route: str, handler: Handler) -> Handler:
        async def endpoint(request: Request) -> Response:
            self._count(route, request)
            if route != "runs.metadata":
                return await answer(request)
            run_id = request.path_params["run_id"]
            self.platform.status_calls[run_id] += 1
            if self._status_in_flight[run_id]:
                self.platform.status_overlaps[run_id] += 1
            self._status_in_flight[run_id] += 1
            try:
                if self.platform.status_latency > 0:
                    await asyncio.sleep(self.platform.status_latency)
                return await answer(request)
            finally:
                self._status_in_flight[run_id] -= 1

        async def answer(request: Request) -> Response:
            if request.headers.get("authorization") != f"Bearer {self.platform.api_key}":
                return _error(401, "unauthorized")
            failure = self._scripted(route)
            if failure is not None and not failure.after_processing:
                self.platform.injected[failure.status] += 1
                return failure.response()
            # Two draws per API call, always, so a seed replays exactly.
            error_roll, limit_roll = self.platform.rng.random(), self.platform.rng.random()
            if failure is None and error_roll < self.platform.api_error_rate:
                self.platform.injected[503] += 1
                return _error(503, "service unavailable (injected)")
            if failure is None and limit_roll < self.platform.rate_limit_rate:
                self.platform.injected[429] += 1
                return JSONResponse(
                    {"error": "too many requests (injected)"},
                    429,
                    headers={"Retry-After": self.platform.retry_after},
                )
            response = await handler(request)
            if failure is not None:
                self.platform.injected[failure.status] += 1
                return failure.response()
            return response

        return endpoint

    def _storage(self, route: str, handler: Handler) -> Handler:
        """Pre-signed storage URLs: no API key accepted, as a real object store would."""

        async def endpoint(request: Request) -> Response:
            self._count(route, request)
            if "authorization" in request.headers:
                return _error(400, "pre-signed URLs take no Authorization header")
            failure = self._scripted(route)
            if failure is not None and not failure.after_processing:
                return failure.response()
            response = await handler(request)
            return failure.response() if failure is not None else response

        return endpoint

    def _find_run(self, request: Request) -> FakeRun | None:
        run = self.platform.runs.get(request.path_params["run_id"])
        if run is None or run.application != request.path_params["application_id"]:
            return None
        return run

    async def _create_run(self, request: Request) -> Response:
        try:
            body = json.loads(await request.body())
        except ValueError:
            return _error(400, "body is not JSON")
        if not isinstance(body, dict):
            return _error(400, "body is not a JSON object")
        sources = [key for key in ("input", "upload_id", "input_id") if key in body]
        if len(sources) != 1:
            return _error(400, "exactly one of input, upload_id, input_id is required")
        configuration = body.get("configuration") or {}
        if not isinstance(configuration, dict):
            return _error(400, "configuration is not an object")
        input_type = _dig(configuration, "format", "input", "type") or "json"
        if "input" in body:
            value = body["input"]
            size = len(compact_json(value))
        elif "upload_id" in body:
            data = self.platform.uploads.get(str(body["upload_id"]))
            if data is None:
                return _error(400, "unknown upload_id (nothing was uploaded)")
            size = len(data)
            if input_type == "json":
                try:
                    value = json.loads(data)
                except ValueError:
                    return _error(400, "uploaded input is not JSON")
            else:
                value = data.decode("utf-8", errors="replace")
        else:
            return _error(400, "input_id is not supported by the fake platform")
        options = body.get("options") or {}
        if not isinstance(options, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in options.items()
        ):
            return _error(400, "options must map strings to strings")
        run = FakeRun(
            id=self.platform._next_id("run"),
            application=request.path_params["application_id"],
            input=value,
            plan=RunPlan(),
            instance_id=request.query_params.get("instance_id"),
            options=options,
            name=str(body.get("name") or ""),
            description=str(body.get("description") or ""),
            configuration=configuration,
            upload_id=body.get("upload_id"),
            input_size=size,
        )
        if "result" not in body:
            self.platform._admit(run)
            return JSONResponse({"run_id": run.id})
        tracked = self._tracked_result(body["result"])
        if isinstance(tracked, Response):
            return tracked
        self.platform._admit_tracked(run, tracked)
        return JSONResponse({"run_id": run.id})

    def _tracked_result(self, result: Any) -> TrackedResult | Response:
        """The ``result`` of an external run, its pieces read from their uploads."""
        if not isinstance(result, dict):
            return _error(400, "result is not an object")
        status = result.get("status")
        if status not in ("succeeded", "failed"):
            return _error(400, "an external run's status is succeeded or failed")
        pieces: dict[str, bytes] = {}
        for key in ("output_upload_id", "error_upload_id"):
            upload_id = result.get(key)
            if upload_id is None:
                continue
            data = self.platform.uploads.get(str(upload_id))
            if data is None:
                return _error(400, f"unknown {key} (nothing was uploaded)")
            pieces[key] = data
        output: Any = None
        if "output_upload_id" in pieces:
            text = pieces["output_upload_id"].decode("utf-8", errors="replace")
            try:
                output = json.loads(text)
            except ValueError:
                output = text
        duration = result.get("execution_duration")
        return TrackedResult(
            status=status,
            output=output,
            error=str(result.get("error_message") or ""),
            logs=pieces.get("error_upload_id", b"").decode("utf-8", errors="replace"),
            duration_ms=duration if isinstance(duration, int) else None,
        )

    async def _list_runs(self, request: Request) -> Response:
        application = request.path_params["application_id"]
        runs = [r for r in reversed(self.platform.runs.values()) if r.application == application]
        if request.query_params.get("pagereturn") != "true":
            return JSONResponse({"runs": [documents.listed_run(r) for r in runs]})
        token = request.query_params.get("pagetoken")
        start = 0
        if token:
            try:
                start = int(base64.urlsafe_b64decode(token.encode()).decode())
            except ValueError:
                return _error(400, "bad page token")
        end = start + self.platform.page_size
        next_token = (
            base64.urlsafe_b64encode(str(end).encode()).decode() if end < len(runs) else None
        )
        # Only the page is described: a long listing must not cost every run's document.
        items = [documents.listed_run(r) for r in runs[start:end]]
        return JSONResponse({"runs": items, "next_page_token": next_token})

    async def _metadata(self, request: Request) -> Response:
        run = self._find_run(request)
        if run is None:
            return _error(404, "run not found")
        return JSONResponse(documents.run_information(run))

    async def _get_run(self, request: Request) -> Response:
        run = self._find_run(request)
        if run is None:
            return _error(404, "run not found")
        limit = self.platform.inline_output_limit
        return JSONResponse(documents.run_result(run, inline_output_limit=limit))

    async def _delete_run(self, request: Request) -> Response:
        run = self._find_run(request)
        if run is None:
            return _error(404, "run not found")
        self.platform._forget(run.id)
        return Response(status_code=204)

    async def _application(self, request: Request) -> Response:
        application = request.path_params["application_id"]
        created_at = self.platform.applications.get(application)
        if created_at is None:
            return _error(404, "application not found")
        return JSONResponse(documents.application_document(application, created_at))

    async def _input(self, request: Request) -> Response:
        run = self._find_run(request)
        if run is None:
            return _error(404, "run not found")
        if isinstance(run.input, str):
            data, media_type = run.input.encode(), "text/plain; charset=utf-8"
        else:
            data, media_type = compact_json(run.input), "application/json"
        if request.query_params.get("format") == "url":
            return JSONResponse({"url": self._download_url(data, media_type)})
        return Response(data, media_type=media_type)

    async def _output(self, request: Request) -> Response:
        run = self._find_run(request)
        if run is None:
            return _error(404, "run not found")
        if request.query_params.get("format") != "url":
            return JSONResponse(run.output)
        if run.status != "succeeded":
            return _error(404, "the run has no output")
        return JSONResponse({"url": self._download_url(compact_json(run.output))})

    def _download_url(self, data: bytes, media_type: str = "application/json") -> str:
        token = uuid.UUID(int=self.platform.rng.getrandbits(128)).hex
        self._downloads[token] = (data, media_type)
        return f"{self.platform.base_url}/downloads/{token}"

    async def _download(self, request: Request) -> Response:
        found = self._downloads.get(request.path_params["token"])
        if found is None:
            return _error(404, "no such object")
        data, media_type = found
        return Response(data, media_type=media_type)

    async def _cancel(self, request: Request) -> Response:
        run = self._find_run(request)
        if run is None:
            return _error(404, "run not found")
        if not run.is_final:
            self.platform.finish(run.id, "canceled")
        return JSONResponse({})

    async def _logs(self, request: Request) -> Response:
        run = self._find_run(request)
        if run is None:
            return _error(404, "run not found")
        return JSONResponse({"log": run.stderr})

    async def _live_logs(self, request: Request) -> Response:
        run = self._find_run(request)
        if run is None:
            return _error(404, "run not found")
        try:
            since = int(request.query_params.get("since") or 0)
        except ValueError:
            return _error(400, "bad since token")
        return JSONResponse(documents.live_logs(run, since))

    async def _upload_url(self, request: Request) -> Response:
        upload_id = self.platform._next_id("upload")
        token = uuid.UUID(int=self.platform.rng.getrandbits(128)).hex
        self._upload_tokens[upload_id] = token
        url = f"{self.platform.base_url}/uploads/{upload_id}?signature={token}"
        return JSONResponse({"upload_id": upload_id, "upload_url": url})

    async def _put_upload(self, request: Request) -> Response:
        upload_id = request.path_params["upload_id"]
        token = self._upload_tokens.get(upload_id)
        if token is None or request.query_params.get("signature") != token:
            return _error(403, "signature does not match")
        self.platform.uploads[upload_id] = await request.body()
        return Response(status_code=200)

    async def _create_webhook(self, request: Request) -> Response:
        try:
            body = json.loads(await request.body())
        except ValueError:
            return _error(400, "body is not JSON")
        if not isinstance(body, dict):
            return _error(400, "body is not a JSON object")
        endpoint_id, url = body.get("id"), body.get("endpoint_url")
        if not isinstance(endpoint_id, str) or not endpoint_id or not isinstance(url, str):
            return _error(400, "id and endpoint_url are required")
        if body.get("event_types") != ["run.status"]:
            return _error(400, 'event_types must be ["run.status"]')
        if endpoint_id in self.platform._endpoints:
            return _error(409, "an endpoint with this id exists")
        self.platform.register_webhook(url, endpoint_id=endpoint_id)
        self.platform._endpoints[endpoint_id].description = str(body.get("description") or "")
        return JSONResponse(self._endpoint_doc(self.platform._endpoints[endpoint_id]), 201)

    def _endpoint_doc(self, endpoint: WebhookEndpoint) -> dict[str, Any]:
        return {
            "id": endpoint.id,
            "event_types": ["run.status"],
            "endpoint_url": endpoint.url,
            "description": endpoint.description,
            "enabled": endpoint.enabled,
        }

    async def _list_webhooks(self, request: Request) -> Response:
        return JSONResponse([self._endpoint_doc(e) for e in self.platform._endpoints.values()])

    async def _webhook_secret_route(self, request: Request) -> Response:
        endpoint = self.platform._endpoints.get(request.path_params["endpoint_id"])
        if endpoint is None:
            return _error(404, "endpoint not found")
        return JSONResponse({"secret": endpoint.secret})

    async def _delete_webhook(self, request: Request) -> Response:
        endpoint = self.platform._endpoints.pop(request.path_params["endpoint_id"], None)
        if endpoint is None:
            return _error(404, "endpoint not found")
        return Response(status_code=204)


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status)


def _dig(document: Any, *keys: str) -> Any:
    for key in keys:
        if not isinstance(document, Mapping):
            return None
        document = document.get(key)
    return document
