"""The connection limits of `listener.http_limits`, in this process on asyncio's own event
loop (the `serve` tests run them in a real process, on uvloop when installed).

Each test waits a bounded time (WAIT_LIMIT) for the server to answer or close, and never
judges how fast it did.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator

import pytest
import uvicorn
from helpers import WAIT_LIMIT
from starlette.types import Receive, Scope, Send

from listener.cli.serve import uvicorn_options
from listener.config import ServerConfig

READ_TIMEOUT = 0.3
MAX_HEADER_BYTES = 4096
REQUEST = b"GET /read HTTP/1.1\r\nHost: listener\r\n\r\n"
STALLED_BODY = b"POST /read HTTP/1.1\r\nHost: listener\r\nContent-Length: 10\r\n\r\n12345"


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    """`/read` reads the whole body before answering 200, `/slow` answers 200 after longer
    than the read timeout; any other path answers at once."""
    if scope["type"] != "http":
        return
    status = 200
    if scope["path"] == "/slow":
        await asyncio.sleep(READ_TIMEOUT * 2)
    elif scope["path"] == "/read":
        message = await receive()
        while message["type"] == "http.request" and message.get("more_body"):
            message = await receive()
        if message["type"] == "http.disconnect":
            return
    else:
        status = 202
    await send(
        {"type": "http.response.start", "status": status, "headers": [(b"content-length", b"2")]}
    )
    await send({"type": "http.response.body", "body": b"ok"})


@contextlib.asynccontextmanager
async def limited_server() -> AsyncIterator[tuple[str, int]]:
    settings = ServerConfig(
        port=0,
        log_level="warning",
        read_timeout=READ_TIMEOUT,
        keep_alive_timeout=0.3,
        max_header_bytes=MAX_HEADER_BYTES,
    )
    config = uvicorn.Config(app, lifespan="off", access_log=False, **uvicorn_options(settings))
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    async with asyncio.timeout(WAIT_LIMIT):
        while not server.started:
            assert not task.done(), "uvicorn exited during startup"
            await asyncio.sleep(0.005)
    try:
        yield "127.0.0.1", server.servers[0].sockets[0].getsockname()[1]
    finally:
        server.should_exit = True
        await task


@pytest.fixture
async def address() -> AsyncIterator[tuple[str, int]]:
    async with limited_server() as where:
        yield where


async def exchange(address: tuple[str, int], *parts: bytes) -> bytes:
    """Send `parts`, then read until the server closes the connection."""
    reader, writer = await asyncio.open_connection(*address)
    try:
        for part in parts:
            writer.write(part)
        await writer.drain()
        async with asyncio.timeout(WAIT_LIMIT):
            return await reader.read()
    finally:
        writer.close()


def statuses(received: bytes) -> list[int]:
    """The status of each response in `received`, in order."""
    return [int(status) for status in re.findall(rb"HTTP/1\.1 (\d{3}) ", received)]


async def test_a_head_over_the_limit_is_answered_431(address: tuple[str, int]) -> None:
    big = b"GET /read HTTP/1.1\r\nHost: listener\r\nX-Padding: " + b"a" * 5000 + b"\r\n\r\n"
    received = await exchange(address, big)
    assert statuses(received) == [431]
    assert received.endswith(b"Request Header Fields Too Large\n")


def head_of(size: int) -> bytes:
    """A GET request whose head, as written, is `size` bytes."""
    start = b"GET /read HTTP/1.1\r\nHost: listener\r\nX-Padding: "
    return start + b"a" * (size - len(start) - 4) + b"\r\n\r\n"


async def test_a_head_at_the_limit_is_served_and_one_byte_more_is_not(
    address: tuple[str, int],
) -> None:
    assert len(head_of(MAX_HEADER_BYTES)) == MAX_HEADER_BYTES
    assert statuses(await exchange(address, head_of(MAX_HEADER_BYTES))) == [200]
    assert statuses(await exchange(address, head_of(MAX_HEADER_BYTES + 1))) == [431]


async def test_a_head_over_the_limit_after_a_served_request_is_answered_431(
    address: tuple[str, int],
) -> None:
    received = await exchange(address, REQUEST, head_of(MAX_HEADER_BYTES + 1))
    assert statuses(received) == [200, 431]


async def test_a_head_over_the_limit_in_pieces_is_answered_431(address: tuple[str, int]) -> None:
    pieces = [b"GET /read HTTP/1.1\r\nHost: listener\r\n"] + [
        b"X-Pad: " + b"a" * 500 + b"\r\n"
    ] * 20
    assert statuses(await exchange(address, *pieces)) == [431]


async def test_a_malformed_request_is_still_answered_400(address: tuple[str, int]) -> None:
    assert statuses(await exchange(address, b"NOT HTTP AT ALL\r\n\r\n")) == [400]


@pytest.mark.parametrize("request_bytes", [b"GET /read HTTP/1.1\r\nHo", STALLED_BODY])
async def test_a_stalled_request_is_answered_408(
    address: tuple[str, int], request_bytes: bytes
) -> None:
    assert statuses(await exchange(address, request_bytes)) == [408]


async def test_a_silent_connection_is_closed(address: tuple[str, int]) -> None:
    assert await exchange(address) == b""


async def test_an_early_answer_then_a_stalled_body_is_closed(address: tuple[str, int]) -> None:
    early = b"POST /early HTTP/1.1\r\nHost: listener\r\nContent-Length: 10\r\n\r\n123"
    assert statuses(await exchange(address, early)) == [202]


async def test_pipelined_requests_are_each_served_then_the_rest_times_out(
    address: tuple[str, int],
) -> None:
    # Two whole requests and the start of a third in one write: the third's time runs
    # from when the second is answered.
    received = await exchange(address, REQUEST + REQUEST + STALLED_BODY)
    assert statuses(received) == [200, 200, 408]


async def test_a_pipelined_request_waiting_behind_a_slow_answer_gets_its_own_time(
    address: tuple[str, int],
) -> None:
    # The stalled request's reading is paused while /slow takes longer than the read
    # timeout: it times out only after /slow is answered, not before.
    slow = b"GET /slow HTTP/1.1\r\nHost: listener\r\n\r\n"
    assert statuses(await exchange(address, slow + STALLED_BODY)) == [200, 408]


async def test_kept_alive_requests_each_get_their_own_deadline(address: tuple[str, int]) -> None:
    reader, writer = await asyncio.open_connection(*address)
    try:
        async with asyncio.timeout(WAIT_LIMIT):
            for _ in range(2):
                writer.write(REQUEST)
                await writer.drain()
                head = await reader.readuntil(b"\r\n\r\n")
                assert statuses(head) == [200]
                assert await reader.readexactly(2) == b"ok"
            assert await reader.read() == b""  # then idle past the keep-alive timeout
    finally:
        writer.close()
