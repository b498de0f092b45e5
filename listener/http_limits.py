"""HTTP/1.1 connection limits the service enforces on every connection.

uvicorn's h11 protocol with two additions:

* a request head (request line and headers) over `max_header_bytes` is answered 431.
  h11 stops buffering an incomplete head at that size; a head that arrived whole is
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
so worker processes started from a pickled config get the same limits.
"""

from __future__ import annotations

import asyncio
import functools
import http
from collections.abc import Callable
from typing import Any

import h11
from uvicorn.config import Config
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.server import ServerState

__all__ = ["LimitedH11Protocol", "protocol"]

# The longest a refused connection is read from and dropped before it is closed.
_LINGER_SECONDS = 2.0


def _head_size(request: h11.Request) -> int:
    """The bytes of `request`'s head written out: request line, header lines, blank line."""
    line = len(request.method) + len(request.target) + len(b"  HTTP/1.1\r\n")
    fields = sum(len(name) + len(value) + 4 for name, value in request.headers.raw_items())
    return line + fields + 2


class _Connection(h11.Connection):
    """An h11 server connection that refuses a head over `max_head_bytes` and keeps the
    status h11 suggests for the last malformed request."""

    def __init__(self, max_head_bytes: int) -> None:
        super().__init__(h11.SERVER, max_incomplete_event_size=max_head_bytes)
        self.max_head_bytes = max_head_bytes
        self.error_status = 400

    def next_event(self) -> h11.Event | type[h11.NEED_DATA] | type[h11.PAUSED]:
        try:
            event = super().next_event()
        except h11.RemoteProtocolError as exc:
            self.error_status = exc.error_status_hint
            raise
        if isinstance(event, h11.Request) and _head_size(event) > self.max_head_bytes:
            self.error_status = http.HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE
            raise h11.RemoteProtocolError(
                "request head too large", error_status_hint=self.error_status
            )
        return event


class LimitedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a request head size limit and a request read timeout."""

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
        self.conn = self.limited = _Connection(max_header_bytes)
        self.read_timeout = read_timeout
        self._read_deadline: asyncio.TimerHandle | None = None
        self._refused = False

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
        if self.conn.their_state in (h11.IDLE, h11.SEND_BODY):
            # A request begins, or goes on after a pipelined one was answered.
            self._start_read_deadline()
        super().data_received(data)
        if self.conn.their_state not in (h11.IDLE, h11.SEND_BODY):
            self._stop_read_deadline()  # the request is in

    def on_response_complete(self) -> None:
        super().on_response_complete()
        state = self.conn.their_state
        if state is h11.SEND_BODY or (state is h11.IDLE and self.conn.trailing_data[0]):
            # Part of a pipelined request was already here: its time runs from now.
            self._start_read_deadline()

    def send_400_response(self, msg: str) -> None:
        self._refuse(self.limited.error_status)

    def _start_read_deadline(self) -> None:
        if self._read_deadline is None and not self._refused:
            self._read_deadline = self.loop.call_later(self.read_timeout, self._read_timed_out)

    def _stop_read_deadline(self) -> None:
        if self._read_deadline is not None:
            self._read_deadline.cancel()
            self._read_deadline = None

    def _read_timed_out(self) -> None:
        self._read_deadline = None
        if self.transport.is_closing():
            return
        state = self.conn.their_state
        if state is h11.SEND_BODY:
            cycle = self.cycle
            if cycle.response_started:
                self.transport.close()  # answered early; the rest of the body is not wanted
                return
            # The application has the head and waits for the body: it learns the client
            # is gone, and nothing it sends from now on reaches the socket.
            cycle.disconnected = True
            cycle.message_event.set()
            self._refuse(http.HTTPStatus.REQUEST_TIMEOUT)
        elif state is h11.IDLE and self.conn.trailing_data[0]:
            self._refuse(http.HTTPStatus.REQUEST_TIMEOUT)
        elif state is h11.IDLE:
            self.transport.close()  # silent since it was opened or since its last response

    def _refuse(self, status: int) -> None:
        """Answer `status` with a short text body, then close, whatever h11's state."""
        self._refused = True
        self._stop_read_deadline()
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


def protocol(*, max_header_bytes: int, read_timeout: float) -> Callable[..., LimitedH11Protocol]:
    """The protocol factory for `uvicorn.Config(http=...)` with these limits."""
    return functools.partial(
        LimitedH11Protocol, max_header_bytes=max_header_bytes, read_timeout=read_timeout
    )
