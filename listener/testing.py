"""Test helpers: a fake Nextmv-compatible platform on loopback, and signed-event builders.

:class:`FakePlatform` serves the Nextmv run and webhook API on ``127.0.0.1`` (an ephemeral
port, in the running event loop) closely enough that a client written against the real API
works unchanged. Runs follow a :class:`RunPlan`; each status change is POSTed as a signed
``run.status`` webhook to every registered endpoint, with knobs to drop, duplicate, delay and
reorder deliveries and to fail API calls, all driven by one seeded ``random.Random``::

    from listener.providers.base import Submission
    from listener.testing import FakePlatform, RunPlan

    async def test_runs_finish(receiver_url: str) -> None:
        async with FakePlatform(plan=RunPlan(runs_for=2.0), time_scale=0.001) as platform:
            secret = platform.register_webhook(receiver_url)  # the endpoint under test
            async with platform.nextmv_provider() as provider:
                run_id = await provider.submit(Submission("routing", {"stops": 3}))
                await platform.drain()  # every finite run ended, every delivery settled
                assert (await provider.status("routing", run_id)).status == "succeeded"
            assert platform.deliveries[0].delivered

:func:`signed_delivery` and :func:`nextmv_run_status_payload` build single deliveries for
receiver tests without a platform. :class:`LoopbackServer` serves any ASGI app the same way.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import random
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, Self

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp

from listener.providers._transport import DeliveryResult, WebhookSender, compact_json
from listener.signatures import SignatureScheme, generate_hmac_secret, scheme_from_name

if TYPE_CHECKING:
    from listener.providers.nextmv import NextmvProvider

__all__ = [
    "ApiFailure",
    "DeliveryRecord",
    "DeliveryStats",
    "FakePlatform",
    "FakeRun",
    "LoopbackServer",
    "RunPlan",
    "nextmv_run_status_payload",
    "signed_delivery",
]

FINAL_STATUSES: Final = frozenset({"succeeded", "failed", "canceled"})
INLINE_OUTPUT_LIMIT: Final = 5 * 1024 * 1024


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


# --- signed-event builders ------------------------------------------------------------------


def signed_delivery(
    scheme: SignatureScheme,
    payload: Any,
    msg_id: str | None = None,
    *,
    timestamp: int | None = None,
) -> tuple[bytes, dict[str, str]]:
    """The body and headers of one webhook delivery signed with ``scheme``.

    ``payload`` is serialised as compact JSON (bytes are sent as they are); ``msg_id`` defaults
    to a fresh ``msg_...`` id; ``timestamp`` (Unix seconds) defaults to now. Example::

        scheme = StandardWebhooks([secret])
        body, headers = signed_delivery(scheme, {"type": "run.status", "data": {...}})
        response = await client.post("/hooks/local", content=body, headers=headers)
    """
    body = payload if isinstance(payload, bytes) else compact_json(payload)
    headers = {"Content-Type": "application/json"}
    headers.update(
        scheme.sign(body, msg_id=msg_id or f"msg_{uuid.uuid4().hex}", timestamp=timestamp)
    )
    return body, headers


def nextmv_run_status_payload(
    run_id: str,
    application: str,
    status: str,
    *,
    created_at: datetime | None = None,
    updated_at: datetime | None = None,
    instance_id: str | None = None,
) -> dict[str, Any]:
    """A ``run.status`` webhook body as the fake platform sends it (``status`` a status_v2 word)."""
    now = datetime.now(UTC)
    return {
        "type": "run.status",
        "data": {
            "run_id": run_id,
            "application_id": application,
            "application_instance_id": instance_id or "",
            "status_v2": status,
            "created_at": _iso(created_at or now),
            "updated_at": _iso(updated_at or now),
        },
    }


# --- a loopback server --------------------------------------------------------------------


class LoopbackServer:
    """Serves an ASGI app with uvicorn on 127.0.0.1 in the running event loop.

    ``port=0`` picks a free port; :attr:`base_url` tells which. Used as::

        async with LoopbackServer(app) as server:
            httpx.get(server.base_url + "/healthz")
    """

    def __init__(self, app: ASGIApp, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self.app = app
        self.host = host
        self.port = port
        self._server: uvicorn.Server | None = None

    @property
    def base_url(self) -> str:
        if self._server is None:
            raise RuntimeError("the server is not started")
        return f"http://{self.host}:{self.port}"

    async def start(self) -> str:
        config = uvicorn.Config(
            self.app,
            host=self.host,
            port=self.port,
            lifespan="off",
            # No logging configuration: a test helper must not change the host's loggers.
            log_config=None,
            access_log=False,
        )
        config.load()
        server = uvicorn.Server(config)
        # startup() rather than serve(): no signal handlers are taken from the host program,
        # and stopping needs no polling loop, which keeps test suites fast.
        server.lifespan = config.lifespan_class(config)
        await server.startup()
        await server.on_tick(0)
        sockets = server.servers[0].sockets
        self.port = sockets[0].getsockname()[1]
        self._server = server
        return self.base_url

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        for listener in server.servers:
            listener.close()
        for connection in list(server.server_state.connections):
            connection.shutdown()
        # In-flight responses finish, then their connections close themselves.
        for _ in range(500):
            if not server.server_state.connections and not server.server_state.tasks:
                break
            await asyncio.sleep(0.01)
        for listener in server.servers:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(listener.wait_closed(), 5)

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()


# --- the fake platform ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RunPlan:
    """How a fake run goes. Times are in platform seconds, multiplied by ``time_scale``.

    ``queued_for=None`` keeps the run queued until :meth:`FakePlatform.start_run`;
    ``runs_for=None`` keeps it running until :meth:`FakePlatform.finish` or a cancel.
    ``output=None`` makes the output ``{"echo": <the input>}``.
    """

    status: str = "succeeded"
    queued_for: float | None = 0.0
    runs_for: float | None = 0.0
    output: Any = None
    error: str = "the model failed"
    stdout: str = ""
    stderr: str = ""

    def __post_init__(self) -> None:
        if self.status not in FINAL_STATUSES:
            raise ValueError(f"a plan ends succeeded, failed or canceled, not {self.status!r}")


PlanSource = RunPlan | Callable[["FakeRun"], RunPlan]


@dataclass
class FakeRun:
    """One run on the fake platform; ``status`` is its ``status_v2`` word."""

    id: str
    application: str
    input: Any
    plan: RunPlan
    instance_id: str | None = None
    options: dict[str, str] = field(default_factory=dict)
    name: str = ""
    description: str = ""
    configuration: dict[str, Any] = field(default_factory=dict)
    upload_id: str | None = None
    input_size: int = 0
    status: str = "queued"
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    updated_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    started_at: datetime | None = None
    finished_at: datetime | None = None
    output: Any = None
    error: str = ""
    stdout: str = ""
    stderr: str = ""

    @property
    def is_final(self) -> bool:
        return self.status in FINAL_STATUSES


@dataclass
class DeliveryRecord:
    """One webhook event for one endpoint, and what became of it."""

    msg_id: str
    endpoint_id: str
    run_id: str
    status: str
    body: bytes
    dropped: bool = False
    duplicated: bool = False
    reordered: bool = False
    delay: float = 0.0
    results: list[DeliveryResult] = field(default_factory=list)
    status_codes: list[int | None] = field(default_factory=list)

    @property
    def payload(self) -> Any:
        return json.loads(self.body)

    @property
    def delivered(self) -> bool:
        return any(result.delivered for result in self.results)


@dataclass
class DeliveryStats:
    """Counters over every delivery; a duplicated event counts twice in ``sent``."""

    scheduled: int = 0  # events produced (one per status change per endpoint)
    sent: int = 0  # HTTP deliveries answered 2xx
    failed: int = 0  # deliveries given up after every attempt
    dropped: int = 0
    duplicated: int = 0
    reordered: int = 0
    attempts: int = 0  # HTTP POSTs made, retries included


@dataclass
class ApiFailure:
    """A scripted API failure: the next matching call(s) answer ``status``.

    ``route`` names a route (``runs.create``, ``runs.metadata``, ``runs.get``, ...; None
    matches every API call). With ``after_processing`` the call takes effect before the
    failure is answered, like a gateway timing out on a request the platform did handle.
    """

    status: int = 503
    route: str | None = None
    times: int = 1
    retry_after: str | None = None
    after_processing: bool = False

    def response(self) -> Response:
        headers = {"Retry-After": self.retry_after} if self.retry_after is not None else None
        return JSONResponse(
            {"error": f"injected failure {self.status}"}, self.status, headers=headers
        )


@dataclass
class _Endpoint:
    id: str
    url: str
    secret: str
    scheme: str
    description: str = ""
    sender: WebhookSender | None = None


@dataclass
class _Pending:
    record: DeliveryRecord
    endpoint: _Endpoint
    delay: float
    timer: asyncio.Task[None] | None = None


Handler = Callable[[Request], Awaitable[Response]]


class FakePlatform:
    """A Nextmv-compatible platform on loopback, for tests, benchmarks and demos.

    Runs: every new run follows ``plan`` (a :class:`RunPlan`, or a callable taking the
    :class:`FakeRun` and returning one): ``queued_for``, then ``running`` for ``runs_for``,
    then its final status. ``time_scale`` multiplies every platform time (run durations,
    delivery delays, webhook retry backoff, reorder hold) so tests run fast.

    Webhooks: each status change (the final one; also ``running`` with
    ``notify_running=True``) is POSTed as ``{"type": "run.status", "data": {...}}`` to every
    endpoint registered through the API or :meth:`register_webhook`, signed with
    ``webhook_scheme`` (``nextmv``, ``standard-webhooks``, ``stripe`` or ``github``) and
    retried up to ``webhook_attempts`` times on anything but 2xx, through
    ``webhook_transport`` when one is given (an ``httpx`` transport).

    Knobs (attributes, so they can change mid-test), all drawn from ``random.Random(seed)``:
    ``drop_rate``, ``duplicate_rate`` (sent twice, same message id), ``delay`` (a uniform
    range), ``reorder_rate`` (held back and released just after the next delivery, or after
    ``reorder_hold``), ``api_error_rate`` (503) and ``rate_limit_rate`` (429 with
    ``Retry-After: retry_after``). :meth:`fail_next` scripts exact failures.
    ``status_latency`` (wall seconds, not scaled) makes each run status call
    (``runs.metadata``) take that long, so calls for one run that overlap can be seen.

    Records: :attr:`runs`, :attr:`deliveries`, :attr:`stats`, :attr:`api_calls` (by route
    name), :attr:`calls_by_path` (``"GET /v1/..."``), :attr:`status_calls` (metadata calls
    per run id), :attr:`injected` (failures answered, by HTTP status), :attr:`uploads`,
    :attr:`status_overlaps` (per run id, status calls that began while another status call
    of that run was still being answered: two pollers asking at once).
    """

    def __init__(
        self,
        *,
        api_key: str = "fake-api-key",
        plan: PlanSource | None = None,
        time_scale: float = 1.0,
        seed: int = 0,
        webhook_scheme: str = "nextmv",
        notify_running: bool = False,
        drop_rate: float = 0.0,
        duplicate_rate: float = 0.0,
        delay: tuple[float, float] = (0.0, 0.0),
        reorder_rate: float = 0.0,
        reorder_hold: float = 1.0,
        api_error_rate: float = 0.0,
        rate_limit_rate: float = 0.0,
        retry_after: str = "1",
        webhook_attempts: int = 3,
        webhook_backoff: float = 1.0,
        page_size: int = 20,
        inline_output_limit: int = INLINE_OUTPUT_LIMIT,
        webhook_transport: httpx.AsyncBaseTransport | None = None,
        status_latency: float = 0.0,
    ) -> None:
        scheme_from_name(webhook_scheme, [generate_hmac_secret()])  # fail early on a bad name
        self.api_key = api_key
        self.plan: PlanSource = plan if plan is not None else RunPlan()
        self.time_scale = time_scale
        self.webhook_scheme = webhook_scheme
        self.notify_running = notify_running
        self.drop_rate = drop_rate
        self.duplicate_rate = duplicate_rate
        self.delay = delay
        self.reorder_rate = reorder_rate
        self.reorder_hold = reorder_hold
        self.api_error_rate = api_error_rate
        self.rate_limit_rate = rate_limit_rate
        self.retry_after = retry_after
        self.webhook_attempts = webhook_attempts
        self.webhook_backoff = webhook_backoff
        self.page_size = page_size
        self.inline_output_limit = inline_output_limit
        self.webhook_transport = webhook_transport
        self.status_latency = status_latency

        self.rng = random.Random(seed)
        # Backoff jitter has its own generator, so retries never shift the knobs' draws.
        self._jitter = random.Random(seed + 1)
        self.runs: dict[str, FakeRun] = {}
        self.uploads: dict[str, bytes] = {}
        self.deliveries: list[DeliveryRecord] = []
        self.stats = DeliveryStats()
        self.api_calls: Counter[str] = Counter()
        self.calls_by_path: Counter[str] = Counter()
        self.status_calls: Counter[str] = Counter()
        self.status_overlaps: Counter[str] = Counter()
        self._status_in_flight: Counter[str] = Counter()
        self.injected: Counter[int] = Counter()
        self.failures: list[ApiFailure] = []
        self._endpoints: dict[str, _Endpoint] = {}
        self._upload_tokens: dict[str, str] = {}
        self._downloads: dict[str, str] = {}
        self._lifecycles: dict[str, asyncio.Task[None]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._held: _Pending | None = None
        self._senders: list[WebhookSender] = []
        self._counter = 0
        self._server = LoopbackServer(self._build_app())

    # --- lifecycle ----------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        return self._server.base_url

    async def start(self) -> str:
        return await self._server.start()

    async def stop(self) -> None:
        """Stop serving; runs still going and deliveries not yet made are abandoned."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.stop()
        for sender in self._senders:
            await sender.aclose()
        self._senders.clear()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def drain(self) -> None:
        """Wait until every run with a finite plan has ended and every delivery settled.

        A delivery held back for reordering is released at once.
        """
        while True:
            self._release_held()
            pending = [task for task in self._tasks if not task.done()]
            if not pending:
                return
            await asyncio.gather(*pending, return_exceptions=True)

    def nextmv_provider(self, **options: Any) -> NextmvProvider:
        """A :class:`~listener.providers.nextmv.NextmvProvider` pointed at this platform."""
        from listener.providers.nextmv import NextmvProvider

        return NextmvProvider(self.api_key, base_url=self.base_url, **options)

    # --- controls -----------------------------------------------------------------------

    def register_webhook(
        self,
        url: str,
        *,
        endpoint_id: str = "default",
        secret: str | None = None,
        scheme: str | None = None,
    ) -> str:
        """Register an endpoint (as the API does) and return its signing secret."""
        if endpoint_id in self._endpoints:
            raise ValueError(f"endpoint {endpoint_id!r} is already registered")
        endpoint = _Endpoint(
            endpoint_id, url, secret or generate_hmac_secret(), scheme or self.webhook_scheme
        )
        self._endpoints[endpoint_id] = endpoint
        return endpoint.secret

    def webhook_secret(self, endpoint_id: str = "default") -> str:
        return self._endpoints[endpoint_id].secret

    def fail_next(
        self,
        status: int = 503,
        *,
        route: str | None = None,
        times: int = 1,
        retry_after: str | None = None,
        after_processing: bool = False,
    ) -> ApiFailure:
        """Script the next ``times`` matching API calls to answer ``status``."""
        failure = ApiFailure(status, route, times, retry_after, after_processing)
        self.failures.append(failure)
        return failure

    def start_run(self, run_id: str) -> None:
        """Move a queued run to running now."""
        run = self.runs[run_id]
        if run.status == "queued":
            task = self._lifecycles.pop(run_id, None)
            if task is not None:
                task.cancel()
            self._set_running(run)
            self._lifecycles[run_id] = self._spawn(self._run_for(run))

    def finish(
        self,
        run_id: str,
        status: str = "succeeded",
        *,
        output: Any = None,
        error: str | None = None,
    ) -> None:
        """End a run now (it must not have ended) with ``status``; its webhook goes out."""
        run = self.runs[run_id]
        if run.is_final:
            raise ValueError(f"run {run_id} has already ended {run.status}")
        task = self._lifecycles.pop(run_id, None)
        if task is not None:
            task.cancel()
        self._complete(run, status, output=output, error=error)

    # --- runs -----------------------------------------------------------------------------

    def _next_id(self, prefix: str) -> str:
        self._counter += 1
        return f"{prefix}-{self._counter:06d}-{self.rng.getrandbits(32):08x}"

    def _spawn(self, coroutine: Awaitable[None]) -> asyncio.Task[None]:
        task: asyncio.Task[None] = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _lifecycle(self, run: FakeRun) -> None:
        plan = run.plan
        if plan.queued_for is None:
            return
        if plan.queued_for > 0:
            await asyncio.sleep(plan.queued_for * self.time_scale)
        if run.status == "queued":
            self._set_running(run)
        await self._run_for(run)

    async def _run_for(self, run: FakeRun) -> None:
        plan = run.plan
        if plan.runs_for is None:
            return
        await asyncio.sleep(plan.runs_for * self.time_scale)
        if not run.is_final:
            self._lifecycles.pop(run.id, None)
            self._complete(run, plan.status)

    def _set_running(self, run: FakeRun) -> None:
        run.status = "running"
        run.started_at = run.updated_at = datetime.now(UTC)
        if self.notify_running:
            self._emit(run)

    def _complete(
        self, run: FakeRun, status: str, *, output: Any = None, error: str | None = None
    ) -> None:
        if status not in FINAL_STATUSES:
            raise ValueError(f"a run ends succeeded, failed or canceled, not {status!r}")
        run.status = status
        run.finished_at = run.updated_at = datetime.now(UTC)
        if status == "succeeded":
            if output is not None:
                run.output = output
            elif run.plan.output is not None:
                run.output = run.plan.output
            else:
                run.output = {"echo": run.input}
        elif status == "failed":
            run.error = error or run.plan.error
            run.stdout, run.stderr = run.plan.stdout, run.plan.stderr
        self._emit(run)

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
                "created_at": _iso(run.created_at),
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
            if run.status == "succeeded" and output_size <= self.inline_output_limit:
                info["output"] = run.output
            if run.status == "failed":
                info["error_log"] = {"error": run.error, "stdout": run.stdout, "stderr": run.stderr}
        return info

    # --- deliveries -----------------------------------------------------------------------

    def _emit(self, run: FakeRun) -> None:
        payload = nextmv_run_status_payload(
            run.id,
            run.application,
            run.status,
            created_at=run.created_at,
            updated_at=run.updated_at,
            instance_id=run.instance_id,
        )
        body = compact_json(payload)
        for endpoint in self._endpoints.values():
            self._schedule(endpoint, run, body)

    def _schedule(self, endpoint: _Endpoint, run: FakeRun, body: bytes) -> None:
        # Four draws per delivery, always in this order, so a seed replays exactly.
        drop = self.rng.random() < self.drop_rate
        duplicate = self.rng.random() < self.duplicate_rate
        low, high = self.delay
        delay = self.rng.uniform(low, high) * self.time_scale if high > 0 else 0.0
        hold = self.rng.random() < self.reorder_rate
        record = DeliveryRecord(
            msg_id=f"msg_{self.rng.getrandbits(96):024x}",
            endpoint_id=endpoint.id,
            run_id=run.id,
            status=run.status,
            body=body,
            dropped=drop,
            duplicated=duplicate and not drop,
            delay=delay,
        )
        self.deliveries.append(record)
        self.stats.scheduled += 1
        if drop:
            self.stats.dropped += 1
            return
        if record.duplicated:
            self.stats.duplicated += 1
        pending = _Pending(record, endpoint, delay)
        if hold and self._held is None:
            record.reordered = True
            self.stats.reordered += 1
            self._held = pending
            pending.timer = self._spawn(self._release_later(pending))
            return
        held, self._held = self._held, None
        if held is not None and held.timer is not None:
            held.timer.cancel()
        self._spawn(self._send_in_order(pending, held))

    async def _release_later(self, pending: _Pending) -> None:
        await asyncio.sleep(self.reorder_hold * self.time_scale)
        if self._held is pending:
            self._held = None
            await self._send(pending)

    def _release_held(self) -> None:
        held, self._held = self._held, None
        if held is not None:
            if held.timer is not None:
                held.timer.cancel()
            self._spawn(self._send(held))

    async def _send_in_order(self, first: _Pending, then: _Pending | None) -> None:
        await self._send(first)
        if then is not None:
            await self._send(then)

    async def _send(self, pending: _Pending) -> None:
        if pending.delay > 0:
            await asyncio.sleep(pending.delay)
        record, endpoint = pending.record, pending.endpoint
        sender = self._sender_for(endpoint)

        def on_attempt(_: int, status_code: int | None) -> None:
            self.stats.attempts += 1
            record.status_codes.append(status_code)

        for _ in range(2 if record.duplicated else 1):
            result = await sender.deliver(
                endpoint.url, record.body, msg_id=record.msg_id, on_attempt=on_attempt
            )
            record.results.append(result)
            if result.delivered:
                self.stats.sent += 1
            else:
                self.stats.failed += 1

    def _sender_for(self, endpoint: _Endpoint) -> WebhookSender:
        if endpoint.sender is None:
            endpoint.sender = WebhookSender(
                scheme_from_name(endpoint.scheme, [endpoint.secret]),
                attempts=self.webhook_attempts,
                backoff_base=self.webhook_backoff * self.time_scale,
                backoff_cap=60 * self.time_scale,
                rng=self._jitter,
                headers={"User-Agent": "listener-fake-platform"},
                http_transport=self.webhook_transport,
            )
            self._senders.append(endpoint.sender)
        return endpoint.sender

    # --- HTTP -----------------------------------------------------------------------------

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
        self.api_calls[route] += 1
        self.calls_by_path[f"{request.method} {request.url.path}"] += 1

    def _scripted(self, route: str) -> ApiFailure | None:
        for failure in self.failures:
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
            self.status_calls[run_id] += 1
            if self._status_in_flight[run_id]:
                self.status_overlaps[run_id] += 1
            self._status_in_flight[run_id] += 1
            try:
                if self.status_latency > 0:
                    await asyncio.sleep(self.status_latency)
                return await answer(request)
            finally:
                self._status_in_flight[run_id] -= 1

        async def answer(request: Request) -> Response:
            if request.headers.get("authorization") != f"Bearer {self.api_key}":
                return _error(401, "unauthorized")
            failure = self._scripted(route)
            if failure is not None and not failure.after_processing:
                self.injected[failure.status] += 1
                return failure.response()
            # Two draws per API call, always, so a seed replays exactly.
            error_roll, limit_roll = self.rng.random(), self.rng.random()
            if failure is None and error_roll < self.api_error_rate:
                self.injected[503] += 1
                return _error(503, "service unavailable (injected)")
            if failure is None and limit_roll < self.rate_limit_rate:
                self.injected[429] += 1
                return JSONResponse(
                    {"error": "too many requests (injected)"},
                    429,
                    headers={"Retry-After": self.retry_after},
                )
            response = await handler(request)
            if failure is not None:
                self.injected[failure.status] += 1
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
        run = self.runs.get(request.path_params["run_id"])
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
            data = self.uploads.get(str(body["upload_id"]))
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
            id=self._next_id("run"),
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
        run.plan = self.plan(run) if callable(self.plan) else self.plan
        self.runs[run.id] = run
        self._lifecycles[run.id] = self._spawn(self._lifecycle(run))
        return JSONResponse({"run_id": run.id})

    async def _list_runs(self, request: Request) -> Response:
        application = request.path_params["application_id"]
        runs = [r for r in reversed(self.runs.values()) if r.application == application]
        if request.query_params.get("pagereturn") != "true":
            return JSONResponse([self._info(r, with_output=False) for r in runs])
        token = request.query_params.get("pagetoken")
        start = 0
        if token:
            try:
                start = int(base64.urlsafe_b64decode(token.encode()).decode())
            except ValueError:
                return _error(400, "bad page token")
        end = start + self.page_size
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
        token = uuid.UUID(int=self.rng.getrandbits(128)).hex
        self._downloads[token] = run.id
        return JSONResponse({"url": f"{self.base_url}/downloads/{token}"})

    async def _download(self, request: Request) -> Response:
        run_id = self._downloads.get(request.path_params["token"])
        if run_id is None:
            return _error(404, "no such object")
        return Response(compact_json(self.runs[run_id].output), media_type="application/json")

    async def _cancel(self, request: Request) -> Response:
        run = self._find_run(request)
        if run is None:
            return _error(404, "run not found")
        if not run.is_final:
            self.finish(run.id, "canceled")
        return JSONResponse({})

    async def _logs(self, request: Request) -> Response:
        run = self._find_run(request)
        if run is None:
            return _error(404, "run not found")
        return JSONResponse({"log": run.stderr})

    async def _upload_url(self, request: Request) -> Response:
        upload_id = self._next_id("upload")
        token = uuid.UUID(int=self.rng.getrandbits(128)).hex
        self._upload_tokens[upload_id] = token
        url = f"{self.base_url}/uploads/{upload_id}?signature={token}"
        return JSONResponse({"upload_id": upload_id, "upload_url": url})

    async def _put_upload(self, request: Request) -> Response:
        upload_id = request.path_params["upload_id"]
        token = self._upload_tokens.get(upload_id)
        if token is None or request.query_params.get("signature") != token:
            return _error(403, "signature does not match")
        self.uploads[upload_id] = await request.body()
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
        if endpoint_id in self._endpoints:
            return _error(409, "an endpoint with this id exists")
        self.register_webhook(url, endpoint_id=endpoint_id)
        self._endpoints[endpoint_id].description = str(body.get("description") or "")
        return JSONResponse(self._endpoint_doc(self._endpoints[endpoint_id]), 201)

    def _endpoint_doc(self, endpoint: _Endpoint) -> dict[str, Any]:
        return {
            "id": endpoint.id,
            "event_types": ["run.status"],
            "endpoint_url": endpoint.url,
            "description": endpoint.description,
        }

    async def _list_webhooks(self, request: Request) -> Response:
        return JSONResponse([self._endpoint_doc(e) for e in self._endpoints.values()])

    async def _webhook_secret_route(self, request: Request) -> Response:
        endpoint = self._endpoints.get(request.path_params["endpoint_id"])
        if endpoint is None:
            return _error(404, "endpoint not found")
        return JSONResponse({"secret": endpoint.secret})

    async def _delete_webhook(self, request: Request) -> Response:
        endpoint = self._endpoints.pop(request.path_params["endpoint_id"], None)
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
