"""A minimal HTTP/1.1 client over asyncio streams, for sending thousands of odd requests.

It writes requests byte for byte as given (any header bytes, chunked or not), keeps
connections alive, and reads just enough of each answer for the tests: the status code
and the headers. A general client spends most of its time on features these requests do
not need, and normalises some of what a hostile sender would send.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["RawAnswer", "RawClient"]

_MAX_HEAD = 64 * 1024
_CHUNK = 4096


@dataclass(frozen=True, slots=True)
class RawAnswer:
    status: int
    headers: dict[str, str]
    body: bytes


class _Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    def close(self) -> None:
        self.writer.transport.abort()


class RawClient:
    """Up to `connections` keep-alive connections to `host:port`, one request on each at a
    time. `timeout` bounds every request, so a request the server never answers cannot
    hang a test."""

    def __init__(
        self, host: str, port: int, *, connections: int = 16, timeout: float = 30.0
    ) -> None:
        self.host = host
        self.port = port
        self.timeout = timeout
        self._idle: asyncio.Queue[_Connection | None] = asyncio.Queue()
        for _ in range(connections):
            self._idle.put_nowait(None)

    async def aclose(self) -> None:
        while not self._idle.empty():
            connection = self._idle.get_nowait()
            if connection is not None:
                connection.close()

    async def request(
        self,
        method: str,
        target: str,
        headers: Sequence[tuple[bytes, bytes]] = (),
        body: bytes = b"",
        *,
        chunked: bool = False,
    ) -> RawAnswer:
        """Send one request and read its answer; raises OSError or `asyncio.IncompleteReadError`
        when the connection breaks first, TimeoutError when no answer comes in time."""
        connection = await self._idle.get()
        keep: _Connection | None = None
        try:
            if connection is None:
                reader, writer = await asyncio.open_connection(self.host, self.port)
                connection = _Connection(reader, writer)
            async with asyncio.timeout(self.timeout):
                answer = await self._exchange(connection, method, target, headers, body, chunked)
            if answer.headers.get("connection", "").lower() != "close":
                keep = connection
            return answer
        finally:
            if keep is None and connection is not None:
                connection.close()
            self._idle.put_nowait(keep)

    async def abandon(
        self,
        method: str,
        target: str,
        headers: Sequence[tuple[bytes, bytes]],
        body: bytes,
        *,
        declared: int,
    ) -> None:
        """Announce `declared` body bytes, send `body` (fewer), and hang up: a sender that
        dies mid-request. Uses a connection of its own; there is no answer to read."""
        _, writer = await asyncio.open_connection(self.host, self.port)
        try:
            head = [f"{method} {target} HTTP/1.1".encode(), f"host: {self.host}".encode()]
            head += [name + b": " + value for name, value in headers]
            head.append(b"content-length: %d" % declared)
            writer.write(b"\r\n".join(head) + b"\r\n\r\n" + body)
            with contextlib.suppress(ConnectionError):
                await writer.drain()
            # One turn of the loop, so the server has read what was sent before the hang-up.
            await asyncio.sleep(0)
        finally:
            writer.transport.abort()

    async def _exchange(
        self,
        connection: _Connection,
        method: str,
        target: str,
        headers: Sequence[tuple[bytes, bytes]],
        body: bytes,
        chunked: bool,
    ) -> RawAnswer:
        head = [f"{method} {target} HTTP/1.1".encode(), f"host: {self.host}:{self.port}".encode()]
        head += [name + b": " + value for name, value in headers]
        if chunked:
            head.append(b"transfer-encoding: chunked")
            payload = b"".join(
                b"%x\r\n%s\r\n" % (len(body[i : i + _CHUNK]), body[i : i + _CHUNK])
                for i in range(0, len(body), _CHUNK)
            )
            payload += b"0\r\n\r\n"
        else:
            head.append(b"content-length: %d" % len(body))
            payload = body
        connection.writer.write(b"\r\n".join(head) + b"\r\n\r\n" + payload)
        # The server may answer early (413) and stop reading: the answer is still there to
        # read even when finishing the write fails.
        with contextlib.suppress(ConnectionError):
            await connection.writer.drain()
        return await _read_answer(connection.reader)


async def _read_answer(reader: asyncio.StreamReader) -> RawAnswer:
    raw = await reader.readuntil(b"\r\n\r\n")
    if len(raw) > _MAX_HEAD:
        raise OSError("answer head too large")
    lines = raw.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    if headers.get("transfer-encoding", "").lower() == "chunked":
        parts: list[bytes] = []
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                await reader.readuntil(b"\r\n")
                break
            parts.append(await reader.readexactly(size))
            await reader.readexactly(2)
        return RawAnswer(status, headers, b"".join(parts))
    length = int(headers.get("content-length", "0"))
    return RawAnswer(status, headers, await reader.readexactly(length))
