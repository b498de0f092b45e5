"""Store outage: the store stops answering while webhooks keep coming, then recovers.

A stream of signed deliveries (each with a bounded retry loop that honours Retry-After,
as a platform's sender does) runs through a served receiver. Once some are stored the
store is cut off (`faults`), and later restored. Promised meanwhile: every request that
starts and ends inside the outage is answered 503 with Retry-After (never 2xx, never
another 5xx); every delivery answered 2xx is in the store; every delivery is eventually
stored; every transition reaches its handler once.

The dispatcher is built here with a one-second lease rather than by the `Listener`
(whose lease is the handler timeout plus 30 s), so the outage outlasts the leases of
calls finished inside it. The dispatcher keeps trying to mark such a call done and does
not run it again when its own claim hands it back after the lease; only another claimer
could (handler calls are at-least-once), so a second run is tolerated only for a call
whose completion failed. The store is wrapped to note which completions failed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlsplit

import httpx

from listener.app import Listener
from listener.dispatch import Dispatcher, DispatchSettings
from listener.events import RunEvent, RunStatus
from listener.poller import PollSettings
from listener.providers import native
from listener.receiver import ReceiverSettings
from listener.registry import Handlers
from listener.signatures import StandardWebhooks, generate_hmac_secret
from listener.sources import Source
from listener.store.base import CallState, Store
from listener.store.postgres import PostgresStore
from listener.store.sqlite import SQLiteStore
from listener.testing import LoopbackServer

from .common import CallLog, Tally, all_calls, settle_calls
from .faults import Fault, SqliteWriteLock, TcpProxy
from .witness import Witness

__all__ = ["OutageSettings", "run_postgres_outage", "run_sqlite_outage", "run_store_outage"]

SOURCE = "std"
FINAL = (RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELED)


@dataclass(frozen=True, slots=True)
class OutageSettings:
    messages: int = 150
    spacing: float = 0.01  # seconds between the first attempts of two messages
    cut_after: int = 30  # deliveries acknowledged before the store goes away
    refusals: int = 8  # 503 answers seen during the outage before it ends
    attempts: int = 60  # per message, each after the Retry-After or a backoff
    retry_after: int = 1
    limit: float = 90.0


@dataclass(frozen=True, slots=True)
class _Attempt:
    message: int
    started: float
    ended: float
    status: int | None
    retry_after: str | None
    reason: str | None


class _CompletionWatch:
    """The store, with a note of every handler call whose completion write failed."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self.lost_completions: set[int] = set()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    async def complete_call(self, call_id: int, owner: str) -> bool:
        try:
            return await self._store.complete_call(call_id, owner)
        except Exception:
            self.lost_completions.add(call_id)
            raise


@dataclass(slots=True)
class _Timeline:
    # The store is certainly unavailable from the end of the cut to the start of the
    # restore; around those moments either answer is right.
    cut_at: float | None = None
    restoring_at: float | None = None


def _message(i: int) -> tuple[str, str, RunStatus, bytes]:
    run_id, status = f"out-{i}", FINAL[i % len(FINAL)]
    event = RunEvent("unused", "local", "routing", run_id, status)
    body = json.dumps(native.build_payload(event), separators=(",", ":")).encode()
    return f"msg-out-{i}", run_id, status, body


async def _until(condition: Callable[[], bool]) -> None:
    while not condition():
        await asyncio.sleep(0.01)


async def run_store_outage(
    store: Store,
    fault: Fault,
    *,
    name: str,
    settings: OutageSettings | None = None,
    check_readiness: bool = True,
    witness: Witness | None = None,
) -> Tally:
    """Drive deliveries through an outage of the open `store` made by `fault`."""
    settings = settings or OutageSettings()
    secret = generate_hmac_secret()
    if witness is not None:
        witness.secret("Standard Webhooks secret", secret)
    sender_scheme = StandardWebhooks([secret])
    calls = CallLog()
    router = Handlers()
    router.add(calls.handler("every"), name="system.every")
    listener = Listener(
        store=store,
        sources=[Source(SOURCE, "local", StandardWebhooks([secret]))],
        handlers=[router],
        dispatch=DispatchSettings(enabled=False),
        poll=PollSettings(enabled=False),
        receiver=ReceiverSettings(retry_after=settings.retry_after),
    )
    watch = _CompletionWatch(store)
    dispatcher = Dispatcher(
        cast(Store, watch),
        listener.handlers,
        DispatchSettings(
            handler_timeout=0.5,
            max_attempts=20,
            sweep_interval=0.05,
            backoff_base=0.05,
            backoff_cap=0.2,
            shutdown_timeout=5.0,
        ),
        owner="outage-dispatcher",
        lease_seconds=1.0,
    )
    attempts: list[_Attempt] = []
    timeline = _Timeline()
    readiness: dict[str, int] = {}
    loop = asyncio.get_running_loop()

    async def deliver(client: httpx.AsyncClient, i: int) -> bool:
        msg_id, _, _, body = _message(i)
        for attempt in range(1, settings.attempts + 1):
            # Signed afresh on every attempt, with the same id, as senders do.
            headers = {"content-type": "application/json"}
            headers.update(sender_scheme.sign(body, msg_id=msg_id))
            started = loop.time()
            try:
                response = await client.post(f"/hooks/{SOURCE}", content=body, headers=headers)
            except httpx.HTTPError as exc:
                attempts.append(_Attempt(i, started, loop.time(), None, None, type(exc).__name__))
                await asyncio.sleep(min(0.05 * 2**attempt, 1.0))
                continue
            reason = None
            if response.status_code >= 400:
                with contextlib.suppress(ValueError, AttributeError):
                    reason = response.json().get("error")
            retry_after = response.headers.get("retry-after")
            attempts.append(
                _Attempt(i, started, loop.time(), response.status_code, retry_after, reason)
            )
            if 200 <= response.status_code < 300:
                return True
            if retry_after is not None and retry_after.isdigit():
                await asyncio.sleep(int(retry_after))
            else:
                await asyncio.sleep(min(0.05 * 2**attempt, 1.0))
        return False

    def acknowledged() -> int:
        return sum(1 for a in attempts if a.status is not None and 200 <= a.status < 300)

    def refused_in_outage() -> int:
        cut = timeline.cut_at
        return sum(1 for a in attempts if cut is not None and a.started >= cut and a.status == 503)

    tally = Tally(name)
    delivered: list[bool] = []
    async with contextlib.AsyncExitStack() as stack:
        await stack.enter_async_context(listener)
        app = listener.asgi()
        server = await stack.enter_async_context(
            LoopbackServer(witness.wrap(app) if witness is not None else app)
        )
        client = await stack.enter_async_context(
            httpx.AsyncClient(
                base_url=server.base_url,
                timeout=30.0,
                # A pooled connection left idle as long as the server's keep-alive timeout
                # (5 s, httpx's default expiry too) races the server closing it, and the
                # request dies unanswered; idle connections are dropped well before.
                limits=httpx.Limits(max_connections=64, keepalive_expiry=1.0),
            )
        )
        await dispatcher.start()
        stack.push_async_callback(dispatcher.stop)
        stack.push_async_callback(fault.restore)  # whatever happens, end the outage

        senders: list[asyncio.Task[bool]] = []

        async def feed() -> list[bool]:
            for i in range(settings.messages):
                senders.append(asyncio.create_task(deliver(client, i)))
                await asyncio.sleep(settings.spacing)
            return list(await asyncio.gather(*senders))

        async with asyncio.timeout(settings.limit):
            feeding = asyncio.create_task(feed())
            try:
                await _until(lambda: acknowledged() >= settings.cut_after)
                await fault.cut()
                timeline.cut_at = loop.time()
                await _until(lambda: refused_in_outage() >= settings.refusals)
                if check_readiness:
                    readiness["during"] = (await client.get("/readyz")).status_code
                timeline.restoring_at = loop.time()
                await fault.restore()
                delivered = await feeding
            finally:
                # On failure, no sender may outlive the scenario.
                for task in [feeding, *senders]:
                    task.cancel()
                await asyncio.gather(feeding, *senders, return_exceptions=True)
            await settle_calls(store)
            if check_readiness:
                readiness["after"] = (await client.get("/readyz")).status_code
        await _audit(tally, store, calls, watch, attempts, delivered, timeline, readiness)
        if witness is not None:
            witness.metrics_pages.append((await client.get("/metrics")).text)
    return tally


async def _audit(
    tally: Tally,
    store: Store,
    calls: CallLog,
    watch: _CompletionWatch,
    attempts: list[_Attempt],
    delivered: list[bool],
    timeline: _Timeline,
    readiness: dict[str, int],
) -> None:
    assert timeline.cut_at is not None
    assert timeline.restoring_at is not None
    cut, restoring = timeline.cut_at, timeline.restoring_at
    tally.sent = len(attempts)
    tally.acknowledged = sum(1 for a in attempts if a.status is not None and 200 <= a.status < 300)
    tally.stored = (await store.counts()).events
    tally.handler_calls = calls.total
    tally.duplicates_suppressed = sum(1 for a in attempts if a.status == 200)

    statuses = Counter(a.status for a in attempts)
    unexpected = {
        s: n for s, n in statuses.items() if s is None or not (200 <= s < 300 or s == 503)
    }
    if unexpected:
        # No status: the request failed in transport; name the error it failed with.
        failed = Counter(a.reason for a in attempts if a.status is None)
        tally.problem(f"answers other than 2xx and 503: {unexpected}; transport errors: {failed}")
    if any(a.status == 503 and not a.retry_after for a in attempts):
        tally.problem("a 503 came without Retry-After")
    inside = [a for a in attempts if a.started >= cut and a.ended <= restoring]
    if any(a.status != 503 for a in inside):
        tally.problem(f"answers inside the outage: {Counter(a.status for a in inside)}")
    reasons = Counter(a.reason for a in attempts if a.status == 503)
    if set(reasons) - {"store_unavailable"}:
        # Still a 503, so nothing is lost; but the store raised something other than
        # StoreUnavailable, which the receiver only logs as an unexpected failure.
        tally.problem(f"503 reasons other than store_unavailable: {dict(reasons)}")
    if readiness.get("during", 503) != 503 or readiness.get("after", 200) != 200:
        tally.problem(f"readiness during and after the outage: {readiness}")

    acked = {a.message for a in attempts if a.status is not None and 200 <= a.status < 300}
    for i, ok in enumerate(delivered):
        msg_id, run_id, status, _ = _message(i)
        if not ok:
            tally.lost += 1
            tally.problem(f"{msg_id} was never acknowledged")
        if i in acked and await store.get_event(f"{SOURCE}:{msg_id}") is None:
            tally.lost += 1
            tally.problem(f"{msg_id} was acknowledged but is not in the store")
        run = await store.get_run(run_id)
        if run is None or run.status is not status:
            tally.lost += 1
            tally.problem(f"{run_id} is {run.status if run else 'missing'}, not {status}")

    stored_calls = await all_calls(store)
    reran = 0
    for call in stored_calls:
        n = calls.count("every", call.run_id, call.status.value)
        if call.state is not CallState.DONE:
            tally.problem(f"call {call.id} for {call.run_id} is {call.state.value}")
        if n == 0:
            tally.lost += 1
            tally.problem(f"{call.run_id} {call.status.value}: the handler was never called")
        elif n == 2 and call.id in watch.lost_completions:
            reran += 1  # at-least-once: its completion was lost to the outage
        elif n > 1:
            tally.double_calls += n - 1
            tally.problem(f"{call.run_id} {call.status.value}: the handler was called {n} times")
    if len(stored_calls) != len(delivered):
        tally.problem(f"{len(stored_calls)} handler calls stored for {len(delivered)} runs")
    back = [a.ended for a in attempts if a.started >= restoring and a.status and a.status < 300]
    tally.notes.update(
        {
            "refused 503 during the outage": sum(
                1 for a in attempts if a.started >= cut and a.status == 503
            ),
            "acknowledged before the cut": sum(
                1 for a in attempts if a.ended < cut and a.status and 200 <= a.status < 300
            ),
            "outage (ms)": round((restoring - cut) * 1000),
            # From the start of the restore to the first delivery acknowledged after it.
            "recovery (ms)": round((min(back, default=restoring) - restoring) * 1000),
        }
    )
    tally.reruns = reran


async def run_postgres_outage(
    pg_url: str,
    settings: OutageSettings | None = None,
    *,
    name: str = "store outage (PostgreSQL)",
    password: str | None = None,
    witness: Witness | None = None,
) -> Tally:
    """The outage scenario on PostgreSQL at `pg_url`, reached through a `TcpProxy`."""
    parts = urlsplit(pg_url)
    proxy = TcpProxy(parts.hostname or "127.0.0.1", parts.port or 5432)
    await proxy.start()
    try:
        url = proxy.url_for(pg_url, password=password)
        if witness is not None and password is not None:
            witness.secret("database password", password)
        # During the outage each write waits the store's pool timeout (1 s by default)
        # for a connection before the receiver answers 503.
        store = PostgresStore(url, max_size=4)
        await store.open()
        try:
            return await run_store_outage(
                store, proxy, name=name, settings=settings, witness=witness
            )
        finally:
            await store.close()
    finally:
        await proxy.stop()


async def run_sqlite_outage(
    directory: Path,
    settings: OutageSettings | None = None,
    *,
    name: str = "store outage (SQLite)",
    witness: Witness | None = None,
) -> Tally:
    """The outage scenario on SQLite: another process holds the database's write lock."""
    path = directory / "outage.db"
    # Writes give up after a quarter of a second of waiting for the lock, then 503.
    store = SQLiteStore(f"sqlite:///{path}", busy_timeout=0.25)
    await store.open()
    try:
        # Reads go on under WAL while another process holds the write lock, so the
        # readiness probe (a read) rightly stays ready: it is not checked here.
        return await run_store_outage(
            store,
            SqliteWriteLock(path),
            name=name,
            settings=settings,
            check_readiness=False,
            witness=witness,
        )
    finally:
        await store.close()
