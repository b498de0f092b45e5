"""HTTP/1.1 connection limits the service enforces on every connection.

uvicorn's httptools protocol (its C parser; uvicorn's standard extra installs it) with
two additions:

* a request head (request line and headers) over `max_header_bytes` is answered 431.
  An incomplete head is refused once more than that many bytes of it have been read
  (counted per read, so at most one read more is held); a head that arrived whole is
  measured once parsed (as its lines would be written, without optional whitespace).
* a connection has `read_timeout` seconds, from being opened or from the first byte of
  each further request, to send the whole request, head and body. A connection that
  sent part of a request by then is answered 408 and closed; one that sent nothing is
  closed. The deadline is for the whole request, so trickling a byte at a time does not
  extend it. Once the request is in, the application takes as long as it needs, and
  uvicorn's keep-alive timeout closes the connection if it then stays idle.

A refused request's answer is written, the sending side shut, and what the client still
sends is read and dropped for a moment before the close (a close with unread data would
reset the connection, and the client could lose the answer).

`protocol(...)` gives what `uvicorn.Config(http=...)` takes; it is a picklable callable,
so worker processes started from a pickled config get the same limits. (The same limits
on uvicorn's h11 protocol, a parser in Python, cost the receiver a third of its
throughput: docs/performance.md.)
"""

from __future__ import annotations

import asyncio
import functools
import http
from collections.abc import Callable
from typing import Any

from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

__all__ = ["LimitedHttpToolsProtocol", "protocol"]

# The longest a refused connection is read from and dropped before it is closed.
_LINGER_SECONDS = 2.0


class _HeadTooLarge(Exception):
    """Raised from a parser callback to stop parsing a head over the limit."""


# Where an httptools connection is in the request it is reading.
_IDLE, _HEAD, _BODY = "idle", "head", "body"
_REQUEST_LINE_EXTRA = len(b"  HTTP/1.1\r\n")
_HEADER_LINE_EXTRA = len(b": \r\n")


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a request head size limit and a request read
    timeout."""

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
        *,
        max_header_bytes: int,
        read_timeout: float,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.max_header_bytes = max_header_bytes
        self.read_timeout = read_timeout
        self._read_deadline: asyncio.TimerHandle | None = None
        self._refused = False
        # A refusal waiting for the answers to the requests before it.
        self._refusal: int | None = None
        self._error_status = http.HTTPStatus.BAD_REQUEST
        self._part = _IDLE
        # Bytes read while a head was incomplete.
        self._head_read = 0

    def connection_made(  # type: ignore[override]
        self, transport: asyncio.Transport
    ) -> None:
        super().connection_made(transport)
        self._start_read_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_read_deadline()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return  # answered already; read only so that the close is not a reset
        if self._part is _IDLE:
            self._start_read_deadline()  # a request begins
        if self._part is not _BODY:
            self._head_read += len(data)
        super().data_received(data)
        if self._refused or self.transport.is_closing():
            return
        if self._part is _IDLE:
            self._stop_read_deadline()  # the request is in
        elif self._part is _HEAD and self._head_read > self.max_header_bytes:
            self._refuse(http.HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE)

    # Parser callbacks: where the request is, and the size of its head.
    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._part = _HEAD

    def on_headers_complete(self) -> None:
        # Measured from what uvicorn parsed (names lowercased, values without trailing
        # whitespace: the same lengths as written, less optional whitespace).
        size = len(self.parser.get_method()) + len(self.url) + _REQUEST_LINE_EXTRA + 2
        for name, value in self.headers:
            size += len(name) + len(value) + _HEADER_LINE_EXTRA
        self._head_read = 0
        if size > self.max_header_bytes:
            self._error_status = http.HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE
            # Raised through the parser, which makes uvicorn call send_400_response.
            raise _HeadTooLarge
        self._part = _BODY
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._part = _IDLE
        self._head_read = 0
        super().on_message_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self._refusal is not None:
            if not self._answering():
                self._write_refusal(self._refusal)
            return
        if self._part is not _IDLE and not self.transport.is_closing():
            # Part of a pipelined request was already here, its reading paused while the
            # one before was answered: its time runs from now.
            self._stop_read_deadline()
            self._start_read_deadline()

    def send_400_response(self, msg: str) -> None:
        self._refuse(self._error_status)

    def _read_timed_out(self) -> None:
        self._read_deadline = None
        if self.transport.is_closing():
            return
        if self.pipeline:
            # Requests parsed ahead wait for the one being answered, with reading paused:
            # the wait is the server's, so the time starts again.
            self._start_read_deadline()
            return
        if self._part is _BODY:
            cycle = self.cycle
            if cycle.response_started:
                self.transport.close()  # answered early; the rest of the body is not wanted
                return
            # The application has the head and waits for the body: it learns the client
            # is gone, and nothing it sends from now on reaches the socket.
            cycle.disconnected = True
            cycle.message_event.set()
            self._refuse(http.HTTPStatus.REQUEST_TIMEOUT)
        elif self._part is _HEAD:
            self._refuse(http.HTTPStatus.REQUEST_TIMEOUT)
        else:
            self.transport.close()  # silent since it was opened or since its last response

    def _start_read_deadline(self) -> None:
        if self._read_deadline is None and not self._refused:
            self._read_deadline = self.loop.call_later(self.read_timeout, self._read_timed_out)

    def _stop_read_deadline(self) -> None:
        if self._read_deadline is not None:
            self._read_deadline.cancel()
            self._read_deadline = None

    def _answering(self) -> bool:
        """Whether requests before the refused one still wait for their answers."""
        cycle = self.cycle
        running = cycle is not None and not cycle.response_complete and not cycle.disconnected
        return running or bool(self.pipeline)

    def _refuse(self, status: int) -> None:
        """Answer `status` with a short text body, then close, whatever the parser's state:
        at once, or once the requests before this one are answered, in their order."""
        self._refused = True
        self._stop_read_deadline()
        if self._answering():
            self._refusal = status
        else:
            self._write_refusal(status)

    def _write_refusal(self, status: int) -> None:
        self._refusal = None
        phrase = http.HTTPStatus(status).phrase
        body = f"{phrase}\n".encode()
        headers = [
            *self.server_state.default_headers,
            (b"content-type", b"text/plain; charset=utf-8"),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
        ]
        lines = [f"HTTP/1.1 {status} {phrase}".encode()]
        lines += [name + b": " + value for name, value in headers]
        self.transport.write(b"\r\n".join(lines) + b"\r\n\r\n" + body)
        if self.transport.can_write_eof():
            self.transport.write_eof()
            # The client's end of the stream closes the transport (`eof_received`).
            self.loop.call_later(min(self.read_timeout, _LINGER_SECONDS), self.transport.close)
        else:
            self.transport.close()


def protocol(
    *, max_header_bytes: int, read_timeout: float
) -> Callable[..., LimitedHttpToolsProtocol]:
    """The protocol factory for `uvicorn.Config(http=...)` with these limits."""
    return functools.partial(
        LimitedHttpToolsProtocol, max_header_bytes=max_header_bytes, read_timeout=read_timeout
    )
