"""Shared test helpers: real uvicorn servers on loopback, signed deliveries, waiting."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp

from listener.events import RunEvent, RunStatus
from listener.providers import native
from listener.signatures import SignatureScheme

# A safety net so a broken test fails instead of hanging; never a performance assertion.
WAIT_LIMIT = 30.0


def _config(app: ASGIApp, lifespan: str) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        host="127.0.0.1",
        port=0,
        lifespan=lifespan,  # type: ignore[arg-type]
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=5,
    )


def _base_url(server: uvicorn.Server) -> str:
    port = server.servers[0].sockets[0].getsockname()[1]
    return f"http://127.0.0.1:{port}"


@contextlib.asynccontextmanager
async def serve(app: ASGIApp, *, lifespan: str = "on") -> AsyncIterator[str]:
    """Run `app` under uvicorn on an ephemeral loopback port in this event loop."""
    server = uvicorn.Server(_config(app, lifespan))
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()  # re-raises a startup failure
            raise RuntimeError("uvicorn exited during startup")
        await asyncio.sleep(0.005)
    try:
        yield _base_url(server)
    finally:
        server.should_exit = True
        await task


@contextlib.contextmanager
def serve_in_thread(app: ASGIApp, *, lifespan: str = "on") -> Iterator[str]:
    """Run `app` under uvicorn in a background thread with its own event loop."""
    server = uvicorn.Server(_config(app, lifespan))
    thread = threading.Thread(target=lambda: asyncio.run(server.serve()), daemon=True)
    thread.start()
    deadline = time.monotonic() + WAIT_LIMIT
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.005)
    try:
        yield _base_url(server)
    finally:
        server.should_exit = True
        thread.join(WAIT_LIMIT)


def event(
    run_id: str = "run-1",
    status: RunStatus | str = RunStatus.SUCCEEDED,
    *,
    application: str = "routing",
    provider: str = "local",
    delivery_id: str = "d-1",
) -> RunEvent:
    return RunEvent(
        delivery_id=delivery_id,
        provider=provider,
        application=application,
        run_id=run_id,
        status=RunStatus(status),
    )


def payload(run_id: str = "run-1", status: RunStatus | str = "succeeded", **kw: Any) -> bytes:
    """A native `run.status` body for a run."""
    return json.dumps(native.build_payload(event(run_id, status, **kw))).encode()


def signed(
    scheme: SignatureScheme,
    body: bytes,
    msg_id: str,
    *,
    timestamp: int | None = None,
    extra: Mapping[str, str] | None = None,
) -> dict[str, str]:
    headers = scheme.sign(body, msg_id=msg_id, timestamp=timestamp)
    headers["content-type"] = "application/json"
    headers.update(extra or {})
    return headers


async def wait_for(
    condition: Callable[[], Awaitable[bool]] | Callable[[], bool], what: str = "condition"
) -> None:
    """Wait until `condition()` is true; fails after WAIT_LIMIT so a bug cannot hang."""
    deadline = time.monotonic() + WAIT_LIMIT
    while True:
        result = condition()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


class Recorder:
    """Collects events handed to a handler; tests await `next()` for each call."""

    def __init__(self) -> None:
        self.events: list[RunEvent] = []
        self._queue: asyncio.Queue[RunEvent] = asyncio.Queue()

    async def __call__(self, event: RunEvent) -> None:
        self.events.append(event)
        self._queue.put_nowait(event)

    async def next(self) -> RunEvent:
        async with asyncio.timeout(WAIT_LIMIT):
            return await self._queue.get()


def age_sqlite_store(path: str | Path, seconds: float) -> None:
    """Move every time a SQLite store at `path` holds `seconds` into the past, as if all
    of it had been written that long ago (for retention, which only touches old rows)."""
    with contextlib.closing(sqlite3.connect(path)) as conn, conn:
        tables = [
            row[0]
            for row in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name != 'sqlite_sequence'"
            )
        ]
        for table in tables:
            columns = [
                row[1]
                for row in conn.execute(f'PRAGMA table_info("{table}")')
                if row[2] == "REAL" and (row[1].endswith("_at") or row[1] == "deadline")
            ]
            if columns:
                moves = ", ".join(f'"{name}" = "{name}" - ?' for name in columns)
                conn.execute(f'UPDATE "{table}" SET {moves}', [seconds] * len(columns))


class Sleeps:
    """An injected sleep that records the delays asked for and returns at once."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


class Script:
    """A tiny server answering each call from a script of status codes, then 200."""

    def __init__(self, *statuses: int, retry_after: str | None = None) -> None:
        self.statuses = list(statuses)
        self.retry_after = retry_after
        self.calls: list[tuple[str, str, dict[str, str], bytes]] = []
        self.app = Starlette(
            routes=[
                Route(
                    "/{path:path}",
                    self.handle,
                    methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
                )
            ]
        )

    async def handle(self, request: Request) -> Response:
        self.calls.append(
            (request.method, request.url.path, dict(request.headers), await request.body())
        )
        if self.statuses:
            status = self.statuses.pop(0)
            headers = {"Retry-After": self.retry_after} if self.retry_after else None
            return JSONResponse({"error": "scripted"}, status, headers=headers)
        if request.url.path == "/text":
            return PlainTextResponse("not json")
        return JSONResponse({"ok": True, "path": request.url.path})


def free_port() -> int:
    """A loopback port free now, for a server started in another process."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port
