"""`serve`'s connection limits against attacks sent over real sockets to a real process:
an oversized request head, a request that stops half way or trickles in, a connection
that never speaks, too many connections at once.

The server's own timeouts are set short; each test waits a bounded time (PROCESS_LIMIT)
for the server to answer or close, and never judges how fast it did.
"""

from __future__ import annotations

import signal
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from helpers import payload, signed

from cli.support import (
    PROCESS_LIMIT,
    WEBHOOK_SECRET,
    LongRunning,
    free_port,
    long_running,
    store_url,
    write_config,
)
from listener.cli.serve import uvicorn_options
from listener.config import ServerConfig
from listener.signatures import StandardWebhooks

ENV = {"HOOK_SECRET": WEBHOOK_SECRET}
BIG_HEADER = b"X-Padding: " + b"a" * 200_000 + b"\r\n"


def config_text(directory: Path, server: str) -> str:
    return f"""
[listener]
store = "{store_url(directory)}"
[server]
port = 0
log_level = "info"
{server}
[sources.std]
provider = "local"
scheme = "standard-webhooks"
secrets = ["env:HOOK_SECRET"]
"""


@contextmanager
def serving(directory: Path, server: str, *, workers: int = 1) -> Iterator[tuple[LongRunning, str]]:
    """A `serve` process with these `[server]` settings, ready, and its base URL."""
    config = write_config(directory, config_text(directory, server))
    port = free_port()
    args = ["--config", str(config), "serve", "--port", str(port), "--workers", str(workers)]
    base_url = f"http://127.0.0.1:{port}"
    with long_running(args, cwd=directory, env=ENV) as process:
        process.wait_for_line("Application startup complete")
        # A worker logs that just before it listens: give it a bounded number of tries.
        for _ in range(100):
            try:
                httpx.get(f"{base_url}/healthz", timeout=PROCESS_LIMIT).raise_for_status()
                break
            except httpx.TransportError:
                time.sleep(0.05)
        yield process, base_url


def address(base_url: str) -> tuple[str, int]:
    host, port = base_url.removeprefix("http://").rsplit(":", 1)
    return host, int(port)


def connect(base_url: str) -> socket.socket:
    sock = socket.create_connection(address(base_url), timeout=PROCESS_LIMIT)
    sock.settimeout(PROCESS_LIMIT)  # a safety net: the server is expected to act first
    return sock


def read_until_closed(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection."""
    received = bytearray()
    while chunk := sock.recv(65536):
        received += chunk
    return bytes(received)


def read_response(sock: socket.socket) -> bytes:
    """One response with a Content-Length body, leaving the connection open."""
    received = bytearray()
    while b"\r\n\r\n" not in received:
        chunk = sock.recv(65536)
        assert chunk, f"closed before a whole response: {bytes(received)!r}"
        received += chunk
    head, _, body = bytes(received).partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk, "closed inside a response body"
        body += chunk
    return head + b"\r\n\r\n" + body


def status_of(response: bytes) -> int:
    assert response.startswith(b"HTTP/1.1 "), response[:200]
    return int(response.split(b" ", 2)[1])


def oversized_head_status(base_url: str) -> int:
    with connect(base_url) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: listener\r\n" + BIG_HEADER + b"\r\n")
        sock.shutdown(socket.SHUT_WR)
        return status_of(read_until_closed(sock))


def stalled_request_status(base_url: str, request: bytes) -> int:
    """The answer to `request` sent and then nothing more (the connection stays open)."""
    with connect(base_url) as sock:
        sock.sendall(request)
        return status_of(read_until_closed(sock))


HALF_A_HEAD = b"POST /hooks/std HTTP/1.1\r\nHost: listener\r\nContent-Ty"
HALF_A_BODY = (
    b"POST /hooks/std HTTP/1.1\r\nHost: listener\r\nContent-Type: application/json\r\n"
    b'Content-Length: 100\r\n\r\n{"type": "run.st'
)


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One `serve` process with short read and keep-alive timeouts, shared by the tests
    that each use connections of their own."""
    directory = tmp_path_factory.mktemp("limits")
    settings = "read_timeout = 0.5\nkeep_alive_timeout = 0.5"
    with serving(directory, settings) as (process, base_url):
        yield base_url
        assert process.stop(signal.SIGTERM) == 0, "".join(process.stderr)
    # A request cut off by the read timeout reaches the app as a disconnect it handles,
    # not as an error.
    assert not any("Exception in ASGI application" in line for line in process.stderr)


def test_a_200_kb_request_head_is_answered_431(limited: str) -> None:
    assert oversized_head_status(limited) == 431


def test_a_head_within_the_limit_is_served(limited: str) -> None:
    padding = {"x-padding": "a" * 60_000}
    answer = httpx.get(f"{limited}/healthz", headers=padding, timeout=PROCESS_LIMIT)
    assert answer.status_code == 200


@pytest.mark.parametrize("request_bytes", [HALF_A_HEAD, HALF_A_BODY], ids=["head", "body"])
def test_a_request_that_stops_half_way_is_answered_408_and_closed(
    limited: str, request_bytes: bytes
) -> None:
    assert stalled_request_status(limited, request_bytes) == 408


def test_a_request_trickling_in_is_cut_off_by_the_read_timeout(limited: str) -> None:
    # One byte at a time keeps the connection busy, but the deadline is for the whole
    # request: the server answers before the request is ever complete.
    # Padded up to the declared Content-Length, so the loop ends with the request: at most
    # that many bytes, each followed by a short wait for an answer.
    request = HALF_A_BODY + b" " * (100 - len(HALF_A_BODY.partition(b"\r\n\r\n")[2]))
    with connect(limited) as sock:
        sock.settimeout(0.05)
        received = b""
        for byte in request:
            sock.sendall(bytes([byte]))
            try:
                received = sock.recv(65536)
            except TimeoutError:
                continue
            break
        assert received, "the whole request went through without an answer"
        sock.settimeout(PROCESS_LIMIT)
        received += read_until_closed(sock)
    assert status_of(received) == 408


def test_a_connection_that_sends_nothing_is_closed(limited: str) -> None:
    with connect(limited) as sock:
        assert read_until_closed(sock) == b""


def test_an_idle_connection_after_a_response_is_closed(limited: str) -> None:
    with connect(limited) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: listener\r\n\r\n")
        assert status_of(read_response(sock)) == 200
        assert read_until_closed(sock) == b""  # the keep-alive timeout


def test_a_signed_delivery_still_works(limited: str) -> None:
    body = payload("run-limits")
    headers = signed(StandardWebhooks([WEBHOOK_SECRET]), body, "msg-limits")
    answer = httpx.post(f"{limited}/hooks/std", content=body, headers=headers, timeout=30)
    assert answer.status_code == 202, answer.text
    # Two requests on one kept-alive connection: each has its own read deadline.
    with connect(limited) as sock:
        for _ in range(2):
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: listener\r\n\r\n")
            assert status_of(read_response(sock)) == 200


def test_connections_beyond_limit_concurrency_get_503(tmp_path: Path) -> None:
    settings = "limit_concurrency = 2\nkeep_alive_timeout = 30"
    with serving(tmp_path, settings) as (process, base_url), connect(base_url) as held:
        request = b"GET /healthz HTTP/1.1\r\nHost: listener\r\n\r\n"
        held.sendall(request)
        assert status_of(read_response(held)) == 200  # and kept alive: one of two
        with connect(base_url) as second:
            second.sendall(request)
            assert status_of(read_until_closed(second)) == 503
        assert process.stop(signal.SIGTERM) == 0


def test_workers_get_the_same_limits(tmp_path: Path) -> None:
    with serving(tmp_path, "read_timeout = 0.5", workers=2) as (process, base_url):
        assert oversized_head_status(base_url) == 431
        assert stalled_request_status(base_url, HALF_A_BODY) == 408
        assert httpx.get(f"{base_url}/readyz", timeout=PROCESS_LIMIT).status_code == 200
        assert process.stop(signal.SIGTERM) == 0


def test_uvicorn_options_carry_every_server_setting() -> None:
    server = ServerConfig(
        host="::1",
        port=0,
        log_level="debug",
        max_header_bytes=4096,
        read_timeout=1.5,
        keep_alive_timeout=2.5,
        limit_concurrency=7,
    )
    options = uvicorn_options(server)
    assert {key: options[key] for key in ("host", "port", "log_level")} == {
        "host": "::1",
        "port": 0,
        "log_level": "debug",
    }
    assert options["timeout_keep_alive"] == 2.5
    assert options["limit_concurrency"] == 7
    assert options["http"].keywords == {"max_header_bytes": 4096, "read_timeout": 1.5}
