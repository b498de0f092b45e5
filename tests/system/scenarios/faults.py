"""Ways to make a healthy store unavailable for a while, and to bring it back.

- `TcpProxy` sits on loopback between the listener and PostgreSQL. `cut()` aborts every
  open connection and stops listening, so new connections are refused outright, as when
  the database host goes away; `restore()` listens again on the same port.
- `SqliteWriteLock` has another process take SQLite's write lock and hold it, as a
  maintenance session (`BEGIN EXCLUSIVE` in the `sqlite3` shell, a backup tool) would;
  writes then fail with SQLITE_BUSY once the store's busy timeout runs out.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from pathlib import Path
from typing import Protocol
from urllib.parse import urlsplit, urlunsplit

__all__ = ["Fault", "SqliteWriteLock", "TcpProxy"]

_PUMP_BYTES = 65536
_LIMIT = 15.0


class Fault(Protocol):
    name: str

    async def cut(self) -> None: ...

    async def restore(self) -> None: ...


class TcpProxy:
    """A byte-for-byte TCP forwarder on 127.0.0.1 to `upstream_host:upstream_port`."""

    name = "PostgreSQL connections refused"

    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self.upstream_host = upstream_host
        self.upstream_port = upstream_port
        self.port = 0
        self.connections = 0  # accepted and forwarded, over the proxy's life
        self._server: asyncio.Server | None = None
        self._open: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    def url_for(self, url: str, *, password: str | None = None) -> str:
        """`url` (a PostgreSQL URL) pointed at this proxy, with `password` if given."""
        parts = urlsplit(url)
        user = parts.username or ""
        auth = f"{user}:{password}@" if password is not None else (f"{user}@" if user else "")
        return urlunsplit(parts._replace(netloc=f"{auth}127.0.0.1:{self.port}"))

    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._accept, "127.0.0.1", self.port, reuse_address=True
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def cut(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for writer in list(self._open):
            writer.transport.abort()
        self._open.clear()
        if server is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(server.wait_closed(), _LIMIT)

    async def restore(self) -> None:
        if self._server is None:
            await self.start()

    async def stop(self) -> None:
        await self.cut()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(
                self.upstream_host, self.upstream_port
            )
        except OSError:
            writer.transport.abort()
            return
        if self._server is None:  # cut while connecting upstream
            writer.transport.abort()
            up_writer.transport.abort()
            return
        self.connections += 1
        self._open.update((writer, up_writer))
        pumps = [
            asyncio.create_task(self._pump(reader, up_writer)),
            asyncio.create_task(self._pump(up_reader, writer)),
        ]
        self._tasks.update(pumps)
        try:
            await asyncio.gather(*pumps)
        finally:
            self._tasks.difference_update(pumps)
            for end in (writer, up_writer):
                self._open.discard(end)
                end.transport.abort()

    @staticmethod
    async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            while data := await reader.read(_PUMP_BYTES):
                writer.write(data)
                await writer.drain()
        # One side finished: the other direction has nothing more to say either.
        writer.transport.abort()


_HOLD_LOCK = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], timeout=30, isolation_level=None)
conn.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
sys.stdin.readline()
conn.execute("ROLLBACK")
conn.close()
"""


class SqliteWriteLock:
    """Another process holding the write lock of the SQLite database at `path`."""

    name = "SQLite write lock held by another process"

    def __init__(self, path: Path) -> None:
        self.path = path
        self._process: asyncio.subprocess.Process | None = None

    async def cut(self) -> None:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            _HOLD_LOCK,
            str(self.path),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        self._process = process
        assert process.stdout is not None
        line = await asyncio.wait_for(process.stdout.readline(), _LIMIT)
        if line.strip() != b"locked":
            raise RuntimeError("the lock-holding process did not take the lock")

    async def restore(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        assert process.stdin is not None
        process.stdin.write(b"\n")
        with contextlib.suppress(ConnectionError):
            await process.stdin.drain()
        try:
            await asyncio.wait_for(process.wait(), _LIMIT)
        except TimeoutError:
            process.kill()
            await process.wait()
