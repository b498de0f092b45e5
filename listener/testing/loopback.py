"""Serve any ASGI app on loopback, on an ephemeral port, in the running event loop."""

from __future__ import annotations

import asyncio
import contextlib
from types import TracebackType
from typing import Self

import uvicorn
from starlette.types import ASGIApp

__all__ = ["LoopbackServer"]


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
        # An IPv6 address is bracketed in a URL, or its colons read as the port's.
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

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
