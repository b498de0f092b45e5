"""Replicas: two `listener serve` processes on one PostgreSQL store; one is killed.

Runs are submitted to a fake Nextmv platform from this process (a `Listener` that only
records, sharing the store), so both replicas' pollers find overdue runs to claim. The
platform's webhooks go through a round-robin balancer to the two replicas in turn, and
30% of them are dropped, so the pollers have to recover those runs. Both replicas
dispatch. Once replica A has begun a number of handler calls drawn from the seed (and a
seeded moment after that, between two poll passes when one comes soon: see
`_between_poll_passes`), it is killed with SIGKILL; the balancer then sends everything
to replica B, as a load balancer does once a backend refuses connections.

Promised: every delivery answered 2xx is stored; every run ends in its true status; no
transition has two stored calls for one handler and no handler runs twice for one,
except a call that A had claimed and not finished, which B runs again once A's lease
runs out (a re-run, counted apart); the platform never answers two status calls for
one run at once (its calls take a while, so an overlap would be seen); and B finishes
all of A's leased work.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import secrets
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from listener.app import Listener
from listener.dispatch import DispatchSettings
from listener.events import Origin
from listener.poller import PollSettings
from listener.store.base import CallState, Store
from listener.testing import FakePlatform, FakeRun, LoopbackServer, RunPlan

from .common import Tally, all_calls, all_events, all_runs, settle_calls, wait_all_terminal
from .processes import (
    TERMINAL,
    ServeProcess,
    audit_call_log,
    bounded,
    read_call_log,
    wait_for_executions,
    write_call_log_plugin,
)

__all__ = ["ReplicaSettings", "run_replicas"]

APPLICATION = "routing"
SOURCE = "nextmv"
_FORWARDED = ("content-type", "retry-after")


@dataclass(frozen=True, slots=True)
class ReplicaSettings:
    runs: int = 40
    seed: int = 5
    submit_spacing: float = 0.05
    drop_rate: float = 0.3
    # Platform seconds, multiplied by time_scale: queued for up to 2, running 1 to 6.
    time_scale: float = 0.5
    status_latency: float = 0.02  # wall seconds each status call takes on the platform
    kill_after_calls: tuple[int, int] = (10, 25)  # begun by replica A, drawn from the range
    kill_jitter: float = 0.1
    # Then the kill waits up to this long for a moment when no poll lease is held.
    poll_gap_wait: float = 0.1
    # Longer than kill_jitter and poll_gap_wait together: A has calls in flight.
    handler_seconds: float = 0.3
    handler_timeout: float = 1.0  # the dispatch lease is this plus 30 s
    # The safety net; a poll lease (60 s) that A held at the kill makes the run wait.
    limit: float = 100.0


class _Balancer:
    """Round-robin over the replicas' addresses; a backend that refuses the connection is
    skipped for the next one. A request cut mid-way is answered 502 (the platform
    retries it), since the backend may have acted on it."""

    def __init__(self) -> None:
        self.upstreams: list[str] = []
        self.forwarded: Counter[int] = Counter()
        self.failovers = 0
        self.cut = 0
        self._turn = 0
        self._client = httpx.AsyncClient(timeout=10.0)

    def app(self) -> Starlette:
        return Starlette(routes=[Route("/hooks/{source}", self._forward, methods=["POST"])])

    async def aclose(self) -> None:
        await self._client.aclose()

    async def _forward(self, request: Request) -> Response:
        body = await request.body()
        headers = {
            name: value
            for name, value in request.headers.items()
            if name not in ("host", "content-length", "connection")
        }
        for _ in range(len(self.upstreams)):
            index = self._turn % len(self.upstreams)
            self._turn += 1
            try:
                answer = await self._client.post(
                    f"{self.upstreams[index]}{request.url.path}", content=body, headers=headers
                )
            except httpx.ConnectError:
                self.failovers += 1
                continue
            except httpx.HTTPError:
                self.cut += 1
                return Response(status_code=502)
            self.forwarded[index] += 1
            kept = {k: v for k, v in answer.headers.items() if k in _FORWARDED}
            return Response(answer.content, answer.status_code, headers=kept)
        return Response(status_code=503, headers={"retry-after": "1"})


def _planner(settings: ReplicaSettings) -> Callable[[FakeRun], RunPlan]:
    rng = random.Random(settings.seed)

    def plan(run: FakeRun) -> RunPlan:
        status = rng.choice(("succeeded", "succeeded", "failed", "canceled"))
        return RunPlan(status=status, queued_for=rng.uniform(0, 2), runs_for=rng.uniform(1, 6))

    return plan


def _config(
    directory: Path, store_url: str, plugin: Path, platform_url: str, settings: ReplicaSettings
) -> Path:
    path = directory / "replica.toml"
    path.write_text(
        f"""
[listener]
store = "{store_url}"
plugins = ["{plugin}"]

[server]
log_level = "warning"

[sources.{SOURCE}]
scheme = "nextmv"
secrets = ["env:REPLICA_WEBHOOK_SECRET"]

[providers.nextmv]
api_key = "env:REPLICA_API_KEY"
base_url = "{platform_url}"
timeout = 10.0
max_attempts = 3
backoff_base = 0.05
backoff_cap = 0.2
retry_after_cap = 0.2
# One page of the listing per batch check: runs not on it are asked about one by one.
status_pages = 1

[dispatch]
handler_timeout = {settings.handler_timeout}
sweep_interval = 0.1
backoff_base = 0.05
backoff_cap = 0.2
shutdown_timeout = 5.0

[poller]
interval = 0.25
grace = 1.0
first_poll = 1.0
schedule_interval = 0.25
schedule_cap = 1.0
rate_limit = 200.0
batch_size = 20
"""
    )
    return path


async def run_replicas(
    store_url: str,
    directory: Path,
    settings: ReplicaSettings | None = None,
    *,
    name: str = "replica killed (PostgreSQL)",
) -> Tally:
    """Run the replica scenario on the PostgreSQL store at `store_url` (a fresh schema),
    with its files in `directory`."""
    settings = settings or ReplicaSettings()
    rng = random.Random(settings.seed)
    kill_after = rng.randint(*settings.kill_after_calls)
    kill_pause = rng.uniform(0.0, settings.kill_jitter)
    api_key = f"nxk_{secrets.token_hex(16)}"
    platform = FakePlatform(
        api_key=api_key,
        plan=_planner(settings),
        time_scale=settings.time_scale,
        seed=settings.seed,
        notify_running=True,
        drop_rate=settings.drop_rate,
        webhook_attempts=8,
        webhook_backoff=0.5,
        status_latency=settings.status_latency,
    )
    balancer = _Balancer()
    log = directory / "calls.log"
    plugin = write_call_log_plugin(
        directory / "replica_handlers.py", log, pause=settings.handler_seconds
    )
    tally = Tally(name)
    async with contextlib.AsyncExitStack() as stack:
        await stack.enter_async_context(platform)
        stack.push_async_callback(balancer.aclose)
        front = await stack.enter_async_context(LoopbackServer(balancer.app()))
        secret = platform.register_webhook(f"{front.base_url}/hooks/{SOURCE}")
        config = _config(directory, store_url, plugin, platform.base_url, settings)
        env = {"REPLICA_WEBHOOK_SECRET": secret, "REPLICA_API_KEY": api_key}
        a = ServeProcess(config, cwd=directory, env=env, name="replica A")
        b = ServeProcess(config, cwd=directory, env=env, name="replica B")
        stack.push_async_callback(b.close)
        stack.push_async_callback(a.close)
        provider = await stack.enter_async_context(
            platform.nextmv_provider(max_attempts=3, backoff_base=0.05, backoff_cap=0.2)
        )
        # Submits and records runs only: the replicas poll and dispatch.
        submitter = Listener(
            store_url=store_url,
            providers=[provider],
            dispatch=DispatchSettings(enabled=False),
            poll=PollSettings(enabled=False, grace=1.0, first_poll=1.0),
        )
        await stack.enter_async_context(submitter)
        store = submitter.store

        async with bounded(name, settings.limit, a, b):
            # The schema exists (the submitter made it); start both replicas together.
            balancer.upstreams = list(await asyncio.gather(a.start(), b.start()))
            submitting = asyncio.create_task(_submit_all(submitter, settings))
            try:
                await wait_for_executions(log, pid=a.pid, count=kill_after)
                await asyncio.sleep(kill_pause)
                await _between_poll_passes(store, settings.poll_gap_wait)
                await a.kill()
                killed_at = datetime.now(UTC)
                forwarded_before_kill = Counter(balancer.forwarded)
                calls = await all_calls(store)
                in_flight = {
                    c.id
                    for c in calls
                    if c.state is CallState.RUNNING and f":{a.pid}:" in (c.lease_owner or "")
                }
                # A live poller's pass ends well within a second; a lease unchanged a
                # second after the kill is the dead replica's.
                leases_at_kill = await _run_leases(store, killed_at)
                await asyncio.sleep(1.0)
                held = await _run_leases(store, killed_at)
                left_leased = {r for r, lease in leases_at_kill.items() if held.get(r) == lease}
                run_ids = await submitting
            finally:
                submitting.cancel()
                await asyncio.gather(submitting, return_exceptions=True)
            await platform.drain()
            await wait_all_terminal(store, len(run_ids))
            # A's calls come back to B once their lease runs out.
            await settle_calls(store)
        code = await b.terminate()
        if code != 0:
            tally.problem(f"replica B exited {code} on SIGTERM:\n{b.tail()}")
        for process in (a, b):
            for line in process.errors[:5]:
                tally.problem(f"{process.name} logged: {line.strip()}")
        await _audit(tally, store, platform, run_ids, log, in_flight, pids=(a.pid, b.pid))
        executions, _ = read_call_log(log)
        finished_by_b = {
            (c.handler, c.run_id, c.status.value)
            for c in await all_calls(store)
            if c.id in in_flight
        } & {(e.handler, e.run_id, e.status) for e in executions if e.pid == b.pid}
        tally.notes.update(
            {
                "runs": len(run_ids),
                "webhooks dropped": platform.stats.dropped,
                "deliveries to A before the kill": forwarded_before_kill[0],
                "deliveries to B before the kill": forwarded_before_kill[1],
                "deliveries to B after the kill": balancer.forwarded[1] - forwarded_before_kill[1],
                "deliveries failed over": balancer.failovers,
                "deliveries cut at the kill": balancer.cut,
                "status calls": sum(platform.status_calls.values()),
                "listing calls": platform.api_calls["runs.list"],
                "status calls overlapping for one run": sum(platform.status_overlaps.values()),
                "calls run by A": sum(1 for e in executions if e.pid == a.pid),
                "calls run by B": sum(1 for e in executions if e.pid == b.pid),
                "calls in flight on A at the kill": len(in_flight),
                "A's calls finished by B": len(finished_by_b),
                "runs left under A's poll lease": len(left_leased),
            }
        )
    return tally


async def _between_poll_passes(store: Store, wait: float) -> None:
    """Return at a moment when no replica holds a poll lease, or after `wait` seconds.

    A poll lease lasts 60 s (the poller's default; the service has no setting for it),
    so a kill in the middle of a poll pass would hold the scenario for a minute before
    the survivor may poll those runs. Handler-call leases are what the scenario waits
    out; a kill mid-pass is left to chance (and then waited out too).
    """
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(wait):
            while await _run_leases(store, datetime.now(UTC)):
                await asyncio.sleep(0.005)


async def _run_leases(store: Store, now: datetime) -> dict[str, tuple[str | None, datetime]]:
    """The poll leases unexpired at `now`: run id to (owner, expiry)."""
    return {
        r.run_id: (r.lease_owner, r.lease_expires_at)
        for r in await all_runs(store)
        if r.lease_expires_at is not None and r.lease_expires_at > now
    }


async def _submit_all(listener: Listener, settings: ReplicaSettings) -> list[str]:
    run_ids: list[str] = []
    for k in range(settings.runs):
        handle = await listener.submit("nextmv", APPLICATION, {"case": k})
        run_ids.append(handle.run_id)
        await asyncio.sleep(settings.submit_spacing)
    return run_ids


async def _audit(
    tally: Tally,
    store: Store,
    platform: FakePlatform,
    run_ids: list[str],
    log: Path,
    in_flight: set[int],
    *,
    pids: tuple[int, int],
) -> None:
    events = await all_events(store)
    calls = await all_calls(store)
    runs = {run.run_id: run for run in await all_runs(store)}
    codes = [code for record in platform.deliveries for code in record.status_codes]
    tally.sent = len(codes)
    tally.acknowledged = sum(1 for code in codes if code is not None and 200 <= code < 300)
    tally.stored = len(events)
    unexpected = Counter(c for c in codes if c not in (200, 202, 502, 503))
    if unexpected:
        tally.problem(f"webhook answers other than 200, 202, 502 and 503: {dict(unexpected)}")

    # Every delivery answered 2xx is in the store, as that run and status, from a webhook.
    webhook_reports: dict[str, set[str]] = defaultdict(set)
    for event in events:
        if event.origin is Origin.WEBHOOK:
            webhook_reports[event.run_id].add(event.status.value)
    for record in platform.deliveries:
        if record.delivered and record.status not in webhook_reports[record.run_id]:
            tally.lost += 1
            tally.problem(f"{record.run_id} {record.status}: acknowledged but not stored")

    # Every run ends in its true status, and its terminal handler has a call for it.
    terminal_calls = {(c.run_id, c.status.value) for c in calls if c.handler == TERMINAL}
    for run_id in run_ids:
        truth = platform.runs[run_id].status
        stored = runs.get(run_id)
        if stored is None or stored.status.value != truth:
            tally.lost += 1
            found = stored.status.value if stored is not None else "missing"
            tally.problem(f"{run_id} is {found} in the store, truly {truth}")
        if (run_id, truth) not in terminal_calls:
            tally.lost += 1
            tally.problem(f"{run_id}: no terminal handler call for {truth}")

    if platform.status_overlaps:
        tally.problem(f"runs polled by two at once: {dict(platform.status_overlaps)}")

    audit_call_log(tally, calls, log, in_flight_at_kill=in_flight, pids=pids)
    # A report that did not move its run called nothing: 200 answers to webhooks, and
    # polls that only confirmed what was known.
    made_transition = {c.event.delivery_id for c in calls}
    idle_polls = sum(
        1 for e in events if e.origin is Origin.POLL and e.delivery_id not in made_transition
    )
    tally.duplicates_suppressed = sum(1 for code in codes if code == 200) + idle_polls
    tally.notes["runs learned by poll"] = sum(
        1
        for e in events
        if e.origin is Origin.POLL and e.status.is_terminal and e.delivery_id in made_transition
    )
