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
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from listener.sending import compact_json
from listener.testing.payloads import iso
from listener.testing.records import ApiFailure, FakeRun, RunPlan, WebhookEndpoint

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
        self._downloads: dict[str, str] = {}
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
            Route(run + "/output", api("runs.output", self._output_url), methods=["GET"]),
            Route(run + "/cancel", api("runs.cancel", self._cancel), methods=["PATCH"]),
            Route(run + "/logs", api("runs.logs", self._logs), methods=["GET"]),
            Route(run, api("runs.get", self._get_run), methods=["GET"]),
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
        self.platform._admit(run)
        return JSONResponse({"run_id": run.id})

    async def _list_runs(self, request: Request) -> Response:
        application = request.path_params["application_id"]
        runs = [r for r in reversed(self.platform.runs.values()) if r.application == application]
        if request.query_params.get("pagereturn") != "true":
            return JSONResponse([self._info(r, with_output=False) for r in runs])
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
        items = [self._info(r, with_output=False) for r in runs[start:end]]
        return JSONResponse({"runs": items, "next_page_token": next_token})

    async def _metadata(self, request: Request) -> Response:
        run = self._find_run(request)
        if run is None:
            return _error(404, "run not found")
        return JSONResponse(self._info(run, with_output=False))

    async def _get_run(self, request: Request) -> Response:
        run = self._find_run(request)
        if run is None:
            return _error(404, "run not found")
        return JSONResponse(self._info(run, with_output=True))

    async def _output_url(self, request: Request) -> Response:
        run = self._find_run(request)
        if run is None:
            return _error(404, "run not found")
        if request.query_params.get("format") != "url":
            return JSONResponse(run.output)
        if run.status != "succeeded":
            return _error(404, "the run has no output")
        token = uuid.UUID(int=self.platform.rng.getrandbits(128)).hex
        self._downloads[token] = run.id
        return JSONResponse({"url": f"{self.platform.base_url}/downloads/{token}"})

    async def _download(self, request: Request) -> Response:
        run_id = self._downloads.get(request.path_params["token"])
        if run_id is None:
            return _error(404, "no such object")
        return Response(
            compact_json(self.platform.runs[run_id].output), media_type="application/json"
        )

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

    def _info(self, run: FakeRun, *, with_output: bool) -> dict[str, Any]:
        output_size = len(compact_json(run.output)) if run.output is not None else 0
        duration = 0
        if run.started_at is not None:
            end = run.finished_at or datetime.now(UTC)
            duration = int((end - run.started_at).total_seconds() * 1000)
        run_format = run.configuration.get("format")
        if not isinstance(run_format, Mapping) or "output" not in run_format:
            run_format = {"input": {"type": "json"}, "output": {"type": "json"}}
        info: dict[str, Any] = {
            "id": run.id,
            "name": run.name,
            "description": run.description,
            "user_email": "someone@example.com",
            "metadata": {
                "application_id": run.application,
                "application_instance_id": run.instance_id or "",
                "application_version_id": "",
                "created_at": iso(run.created_at),
                "duration": duration,
                "error": run.error,
                "input_size": run.input_size,
                "output_size": output_size,
                "format": run_format,
                "run_type": {"type": "standard"},
                "status_v2": run.status,
            },
        }
        if with_output:
            if run.status == "succeeded" and output_size <= self.platform.inline_output_limit:
                info["output"] = run.output
            if run.status == "failed":
                info["error_log"] = {"error": run.error, "stdout": run.stdout, "stderr": run.stderr}
        return info


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status)


def _dig(document: Any, *keys: str) -> Any:
    for key in keys:
        if not isinstance(document, Mapping):
            return None
        document = document.get(key)
    return document
