"""A listener serving the console on loopback, over the real SQLite and PostgreSQL stores,
with a handler the tests make fail (to fill the dead letters) or succeed."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from helpers import serve
from starlette.routing import Mount

from console.support import ADMIN_TOKEN, READ_TOKEN, SCHEME, Served
from listener import DispatchSettings, Listener, RunEvent, Source
from listener.console import ConsoleSettings
from listener.console.app import console_app


@pytest.fixture
async def served(store_url: str) -> AsyncIterator[Served]:
    listener = Listener(
        store_url=store_url,
        sources=[Source("std", "local", SCHEME)],
        # One attempt: a failing call is a dead letter at once.
        dispatch=DispatchSettings(
            sweep_interval=0.02, backoff_base=0.001, backoff_cap=0.01, max_attempts=1
        ),
    )
    settings = ConsoleSettings(read_token=READ_TOKEN, admin_token=ADMIN_TOKEN, refresh=0.5)
    failing = {"on": True}

    @listener.on("failed", name="flaky")
    async def flaky(event: RunEvent) -> None:
        if failing["on"]:
            raise RuntimeError(f"flaky refused {event.run_id}")

    # Mounted as `listener serve` mounts it.
    app = listener.asgi()
    app.router.routes.append(Mount("/ui", app=console_app(listener, settings)))
    async with serve(app) as url:
        yield Served(listener=listener, url=url, failing=failing)
