"""A fake Noxus workflow engine on loopback: workflows, runs, callbacks and event streams.

:class:`FakeNoxusEngine` keeps the state (workflows, runs and their event logs, records of
every call and callback), moves each run through its plan, and posts each run's end to
the run's own ``callback_url`` through the chaos knobs; :mod:`listener.testing.noxus_api`
serves its HTTP API, as the official client (`noxus-sdk`) speaks it::

    from listener.testing import FakeNoxusEngine, NoxusPlan

    async def test_runs_finish() -> None:
        async with FakeNoxusEngine(plan=NoxusPlan(runs_for=2.0), time_scale=0.001) as engine:
            async with engine.noxus_provider() as noxus:
                run_id = await noxus.submit(Submission(engine.workflow_id, {"doc": "a"}))
                await engine.drain()
                assert (await noxus.status(engine.workflow_id, run_id)).status == "succeeded"
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, Self

import httpx

from listener.sending import WebhookSender, compact_json
from listener.testing.chaos import CallbackChaos
from listener.testing.loopback import LoopbackServer
from listener.testing.noxus_api import NoxusApi
from listener.testing.noxus_documents import ENGINE_FINAL_STATUSES, workflow_document
from listener.testing.noxus_runs import NoxusPlan, NoxusPlanSource, NoxusRun
from listener.testing.records import ApiFailure, DeliveryRecord, DeliveryStats

if TYPE_CHECKING:
    from listener.providers.noxus import NoxusProvider

__all__ = ["DEFAULT_WORKFLOW", "FakeNoxusEngine"]

DEFAULT_WORKFLOW: Final = "wf-summarise"
_GROUP: Final = "group-fake"


def _now() -> datetime:
    return datetime.now(UTC)


class FakeNoxusEngine:
    """A Noxus-compatible workflow engine on loopback, for tests, benchmarks and demos.

    Workflows: ``workflows`` names those that exist (``GET /v1/workflows/{id}``; a run of
    any other is 404); :attr:`workflow_id` is the first.

    Runs: every new run follows ``plan`` (a :class:`NoxusPlan`, or a callable taking the
    :class:`NoxusRun` and returning one): ``queued`` for ``queued_for``, then ``running``
    for ``runs_for``, then its final status (``completed``, ``failed`` or ``stopped``).
    ``time_scale`` multiplies every engine time (run durations, callback delays and retry
    backoff, reorder hold). Each status change is added to the run's event stream
    (``GET /v1/runs/{id}/events``, resumable after an event id with ``?etag=``).

    Callbacks: a run's end (also ``running`` and ``awaiting_human_feedback`` with
    ``notify_running=True``) is POSTed, unsigned, as the run document to the run's
    ``callback_url``, retried up to ``callback_attempts`` times on anything but 2xx.

    Knobs (attributes, so they can change mid-test), drawn from ``random.Random(seed)``:
    ``drop_rate``, ``duplicate_rate``, ``delay`` (a uniform range), ``reorder_rate``
    (held back and sent just after the next callback, or after ``reorder_hold``),
    ``api_error_rate`` (503) and ``rate_limit_rate`` (429 with ``Retry-After:
    retry_after``); :meth:`fail_next` scripts exact failures. ``streams=False`` answers
    the event stream 404, as an engine without streams does; ``stream_event_limit``
    closes each stream connection after that many events, as a dropped connection does.
    ``clock`` gives every time the engine writes; ``host`` and ``port`` (0: any free one)
    where it listens.

    Records: :attr:`runs`, :attr:`deliveries`, :attr:`stats`, :attr:`api_calls` (by route
    name), :attr:`calls_by_path`, :attr:`status_calls` (run gets per run id),
    :attr:`stream_connections` (per run id), :attr:`injected` (by HTTP status).
    """

    def __init__(
        self,
        *,
        api_key: str = "fake-noxus-key",
        workflows: Sequence[str] = (DEFAULT_WORKFLOW,),
        plan: NoxusPlanSource | None = None,
        time_scale: float = 1.0,
        seed: int = 0,
        notify_running: bool = False,
        drop_rate: float = 0.0,
        duplicate_rate: float = 0.0,
        delay: tuple[float, float] = (0.0, 0.0),
        reorder_rate: float = 0.0,
        reorder_hold: float = 1.0,
        api_error_rate: float = 0.0,
        rate_limit_rate: float = 0.0,
        retry_after: str = "1",
        callback_attempts: int = 3,
        callback_backoff: float = 1.0,
        streams: bool = True,
        stream_event_limit: int | None = None,
        clock: Callable[[], datetime] = _now,
        callback_transport: httpx.AsyncBaseTransport | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        if not workflows:
            raise ValueError("the engine needs at least one workflow")
        self.api_key = api_key
        self.workflows = {
            workflow_id: workflow_document(workflow_id, f"Workflow {workflow_id}", _GROUP)
            for workflow_id in workflows
        }
        self.plan: NoxusPlanSource = plan if plan is not None else NoxusPlan()
        self.time_scale = time_scale
        self.notify_running = notify_running
        self.drop_rate = drop_rate
        self.duplicate_rate = duplicate_rate
        self.delay = delay
        self.reorder_rate = reorder_rate
        self.reorder_hold = reorder_hold
        self.api_error_rate = api_error_rate
        self.rate_limit_rate = rate_limit_rate
        self.retry_after = retry_after
        self.streams = streams
        self.stream_event_limit = stream_event_limit
        self.clock = clock

        self.rng = random.Random(seed)
        self.runs: dict[str, NoxusRun] = {}
        self.api_calls: Counter[str] = Counter()
        self.calls_by_path: Counter[str] = Counter()
        self.status_calls: Counter[str] = Counter()
        self.stream_connections: Counter[str] = Counter()
        self.injected: Counter[int] = Counter()
        self.failures: list[ApiFailure] = []
        self.closing = False
        self._lifecycles: dict[str, asyncio.Task[None]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._counter = 0
        self._sender = WebhookSender(
            None,
            attempts=callback_attempts,
            backoff_base=callback_backoff * time_scale,
            backoff_cap=60 * time_scale,
            # Backoff jitter has its own generator, so retries never shift the knobs' draws.
            rng=random.Random(seed + 1),
            headers={"User-Agent": "fake-noxus-engine"},
            http_transport=callback_transport,
        )
        self._chaos = CallbackChaos(self, self.rng, self._sender, self._spawn)
        self._server = LoopbackServer(NoxusApi(self).app, host=host, port=port)

    # --- lifecycle ----------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        return self._server.base_url

    @property
    def workflow_id(self) -> str:
        """The first workflow: the one to run when any will do."""
        return next(iter(self.workflows))

    @property
    def deliveries(self) -> list[DeliveryRecord]:
        return self._chaos.deliveries

    @property
    def stats(self) -> DeliveryStats:
        return self._chaos.stats

    async def start(self) -> str:
        self.closing = False
        return await self._server.start()

    async def stop(self) -> None:
        """Stop serving; open event streams end, unfinished runs and callbacks are dropped."""
        self.closing = True
        for run in self.runs.values():
            run.wake()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.stop()
        await self._sender.aclose()

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
        """Wait until every run with a finite plan has ended and every callback settled.

        A callback held back for reordering is sent at once.
        """
        while True:
            self._chaos.flush()
            pending = [task for task in self._tasks if not task.done()]
            if not pending:
                return
            await asyncio.gather(*pending, return_exceptions=True)

    def noxus_provider(self, **options: Any) -> NoxusProvider:
        """A :class:`~listener.providers.noxus.NoxusProvider` pointed at this engine."""
        from listener.providers.noxus import NoxusProvider

        return NoxusProvider(self.api_key, base_url=self.base_url, **options)

    # --- controls -----------------------------------------------------------------------

    def fail_next(
        self,
        status: int = 503,
        *,
        route: str | None = None,
        times: int = 1,
        retry_after: str | None = None,
        after_processing: bool = False,
    ) -> ApiFailure:
        """Script the next ``times`` matching API calls (route names as in
        :mod:`listener.testing.noxus_api`) to answer ``status``."""
        failure = ApiFailure(status, route, times, retry_after, after_processing)
        self.failures.append(failure)
        return failure

    def start_run(self, run_id: str) -> None:
        """Move a queued run to running now."""
        run = self.runs[run_id]
        if run.status == "queued":
            self._replace_lifecycle(run_id, None)
            self._change(run, "running", progress=50)
            self._replace_lifecycle(run_id, self._spawn(self._run_for(run)))

    def await_feedback(self, run_id: str) -> None:
        """Pause a run for a person's answer (``awaiting_human_feedback``) until it ends."""
        run = self.runs[run_id]
        if run.is_final:
            raise ValueError(f"run {run_id} has already ended {run.status}")
        self._replace_lifecycle(run_id, None)
        self._change(run, "awaiting_human_feedback")

    def finish(
        self,
        run_id: str,
        status: str = "completed",
        *,
        output: dict[str, Any] | None = None,
        error: str | None = None,
    ) -> None:
        """End a run now (it must not have ended) with ``status``; its callback goes out."""
        run = self.runs[run_id]
        if run.is_final:
            raise ValueError(f"run {run_id} has already ended {run.status}")
        if status not in ENGINE_FINAL_STATUSES:
            raise ValueError(f"a run ends completed, failed or stopped, not {status!r}")
        self._replace_lifecycle(run_id, None)
        self._end(run, status, output=output, error=error)

    # --- runs (the API calls these) -----------------------------------------------------

    def create_run(
        self,
        workflow_id: str,
        input: dict[str, Any],
        *,
        callback_url: str | None,
        workflow_version_id: str | None,
    ) -> NoxusRun:
        self._counter += 1
        run = NoxusRun(
            id=f"run-{self._counter:06d}-{self.rng.getrandbits(32):08x}",
            workflow_id=workflow_id,
            group_id=_GROUP,
            input=input,
            created_at=self.clock(),
            callback_url=callback_url,
            workflow_version_id=workflow_version_id,
        )
        run.plan = self.plan(run) if callable(self.plan) else self.plan
        self.runs[run.id] = run
        run.log_status()
        self._lifecycles[run.id] = self._spawn(self._lifecycle(run))
        return run

    def stop_run(self, run: NoxusRun) -> None:
        """Stop a run that has not ended; an ended one is left as it is."""
        if not run.is_final:
            self.finish(run.id, "stopped")

    # --- internals ----------------------------------------------------------------------

    def _spawn(self, coroutine: Awaitable[None]) -> asyncio.Task[None]:
        task: asyncio.Task[None] = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _replace_lifecycle(self, run_id: str, task: asyncio.Task[None] | None) -> None:
        old = self._lifecycles.pop(run_id, None)
        if old is not None and old is not asyncio.current_task():
            old.cancel()
        if task is not None:
            self._lifecycles[run_id] = task

    async def _lifecycle(self, run: NoxusRun) -> None:
        if run.plan.queued_for is None:
            return
        await asyncio.sleep(run.plan.queued_for * self.time_scale)
        if run.status == "queued":
            self._change(run, "running", progress=50)
        await self._run_for(run)

    async def _run_for(self, run: NoxusRun) -> None:
        if run.plan.runs_for is None:
            return
        await asyncio.sleep(run.plan.runs_for * self.time_scale)
        if run.status == "running":
            self._lifecycles.pop(run.id, None)
            self._end(run, run.plan.status)

    def _end(
        self,
        run: NoxusRun,
        status: str,
        *,
        output: dict[str, Any] | None = None,
        error: str | None = None,
    ) -> None:
        run.finished_at = self.clock()
        if status == "completed":
            run.output = output or run.plan.output or {"echo": run.input}
            self._change(run, status, progress=100)
        else:
            if status == "failed":
                run.error = error or run.plan.error
            self._change(run, status)

    def _change(self, run: NoxusRun, status: str, *, progress: int | None = None) -> None:
        run.status = status
        if progress is not None:
            run.progress = progress
        run.log_status()
        if run.callback_url is not None and (run.is_final or self.notify_running):
            body = compact_json(run.document())
            self._chaos.schedule(run.callback_url, run_id=run.id, status=status, body=body)
