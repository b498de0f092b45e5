"""The fake platform: runs that follow a plan, and their signed webhooks, on loopback.

:class:`FakePlatform` keeps the state (runs, uploads, endpoints, records of every call and
delivery), moves each run through its plan, and schedules each status change's deliveries
through the knobs; :mod:`listener.testing.api` serves its HTTP API and
:mod:`listener.testing.loopback` the socket.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import Awaitable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

import httpx

from listener.sending import WebhookSender, compact_json
from listener.signatures import generate_hmac_secret, scheme_from_name
from listener.testing.api import PlatformApi
from listener.testing.loopback import LoopbackServer
from listener.testing.payloads import nextmv_run_status_payload
from listener.testing.records import (
    FINAL_STATUSES,
    INLINE_OUTPUT_LIMIT,
    ApiFailure,
    DeliveryRecord,
    DeliveryStats,
    FakeRun,
    PlanSource,
    RunPlan,
    TrackedResult,
    WebhookEndpoint,
)

if TYPE_CHECKING:
    from listener.providers.nextmv import NextmvProvider

__all__ = ["FakePlatform"]


@dataclass
class _Pending:
    record: DeliveryRecord
    endpoint: WebhookEndpoint
    delay: float
    timer: asyncio.Task[None] | None = None


class FakePlatform:
    """A Nextmv-compatible platform on loopback, for tests, benchmarks and demos.

    Runs: every new run follows ``plan`` (a :class:`RunPlan`, or a callable taking the
    :class:`FakeRun` and returning one): ``queued_for``, then ``running`` for ``runs_for``,
    then its final status. ``time_scale`` multiplies every platform time (run durations,
    delivery delays, webhook retry backoff, reorder hold) so tests run fast. A new run
    carrying a ``result`` (an external run, as the SDK's ``track_run`` sends) ends at once
    with the tracked status, output, error and logs. ``applications`` are the ids
    ``GET /v1/applications/{id}`` knows from the start; a first run creates any other.
    ``host`` and ``port`` (0: any free one) say where to serve.

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
        applications: Iterable[str] = ("routing",),
        host: str = "127.0.0.1",
        port: int = 0,
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
        self.injected: Counter[int] = Counter()
        # Applications by id, with when each was created; a run's first submission to an
        # application not declared here creates it.
        self.applications: dict[str, datetime] = dict.fromkeys(applications, datetime.now(UTC))
        self.failures: list[ApiFailure] = []
        self._endpoints: dict[str, WebhookEndpoint] = {}
        self._lifecycles: dict[str, asyncio.Task[None]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._held: _Pending | None = None
        self._senders: list[WebhookSender] = []
        self._counter = 0
        self._api = PlatformApi(self)
        self._server = LoopbackServer(self._api.app, host=host, port=port)

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
        endpoint = WebhookEndpoint(
            endpoint_id, url, secret or generate_hmac_secret(), scheme or self.webhook_scheme
        )
        self._endpoints[endpoint_id] = endpoint
        return endpoint.secret

    def webhook_secret(self, endpoint_id: str = "default") -> str:
        return self._endpoints[endpoint_id].secret

    def disable_webhook(self, endpoint_id: str = "default") -> None:
        """Pause an endpoint: still listed (as disabled), sent nothing until replaced."""
        self._endpoints[endpoint_id].enabled = False

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

    def _admit(self, run: FakeRun) -> None:
        """Give a run just created through the API its plan, and start its lifecycle."""
        run.plan = self.plan(run) if callable(self.plan) else self.plan
        self._keep(run)
        self._lifecycles[run.id] = self._spawn(self._lifecycle(run))

    def _admit_tracked(self, run: FakeRun, result: TrackedResult) -> None:
        """Keep an external run: it ran elsewhere, so it ends at once as it was tracked."""
        run.plan = RunPlan(status=result.status, queued_for=None, runs_for=None)
        run.external = True
        run.output = result.output
        run.stderr = result.logs
        run.duration_ms = result.duration_ms
        self._keep(run)
        run.started_at = run.updated_at = datetime.now(UTC)
        self._complete(run, result.status, output=result.output, error=result.error)

    def _keep(self, run: FakeRun) -> None:
        self.runs[run.id] = run
        self.applications.setdefault(run.application, run.created_at)

    def _forget(self, run_id: str) -> None:
        """Delete a run: it stops where it is and is no longer served."""
        task = self._lifecycles.pop(run_id, None)
        if task is not None:
            task.cancel()
        del self.runs[run_id]

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
            elif not run.external:
                run.output = {"echo": run.input}
        elif status == "failed" and run.external:
            # A tracked failure keeps what was reported, even an empty error.
            run.error = error or ""
        elif status == "failed":
            run.error = error or run.plan.error
            run.stdout, run.stderr = run.plan.stdout, run.plan.stderr
        self._emit(run)

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
            if endpoint.enabled:
                self._schedule(endpoint, run, body)

    def _schedule(self, endpoint: WebhookEndpoint, run: FakeRun, body: bytes) -> None:
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

    def _sender_for(self, endpoint: WebhookEndpoint) -> WebhookSender:
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
