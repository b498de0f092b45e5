"""The receiver's HTTP answers: short JSON bodies, the constant ones encoded once."""

from __future__ import annotations

import json
from collections.abc import Mapping

from starlette.responses import Response
from starlette.types import Message

# The encoding Starlette's JSONResponse uses, so answers read the same either way.
_ANSWER_ENCODER = json.JSONEncoder(
    ensure_ascii=False, allow_nan=False, indent=None, separators=(",", ":")
)


class _Answer:
    """A finished delivery's HTTP answer: status, JSON body, any extra headers."""

    __slots__ = ("body", "headers", "status_code")

    def __init__(
        self, status_code: int, body: bytes, headers: Mapping[str, str] | None = None
    ) -> None:
        self.status_code = status_code
        self.body = body
        self.headers = headers

    def response(self) -> Response:
        return Response(
            self.body,
            status_code=self.status_code,
            headers=self.headers,
            media_type="application/json",
        )

    def start_message(self) -> Message:
        raw = [
            (b"content-length", str(len(self.body)).encode()),
            (b"content-type", b"application/json"),
        ]
        if self.headers:
            raw.extend(
                (name.lower().encode("latin-1"), value.encode("latin-1"))
                for name, value in self.headers.items()
            )
        return {"type": "http.response.start", "status": self.status_code, "headers": raw}


def _json(status: int, body: bytes) -> _Answer:
    return _Answer(status, body)


# Answers without per-request content, encoded once.
_DUPLICATE = _Answer(200, b'{"status":"duplicate"}')
_KNOWN = _Answer(200, b'{"status":"known"}')


def _error(
    status: int, reason: str, detail: str, headers: Mapping[str, str] | None = None
) -> _Answer:
    body = _ANSWER_ENCODER.encode({"error": reason, "detail": detail}).encode()
    return _Answer(status, body, headers)


def _accepted_body(delivery_id: str) -> bytes:
    if (
        delivery_id.isascii()
        and delivery_id.isprintable()
        and not any(c in delivery_id for c in '"\\')
    ):
        return b'{"status":"accepted","delivery_id":"%s"}' % delivery_id.encode()
    return b'{"status":"accepted","delivery_id":%s}' % json.dumps(delivery_id).encode()
