"""Reading a POSTed form: `application/x-www-form-urlencoded` only, with the standard
library. The console's forms carry a few short fields and no files, so a multipart parser
(another dependency) would add only attack surface."""

from __future__ import annotations

from urllib.parse import parse_qsl

from starlette.requests import Request

__all__ = ["MAX_FORM_BYTES", "read_form"]

MAX_FORM_BYTES = 16 * 1024


class _FormError(ValueError):
    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


async def read_form(request: Request) -> dict[str, str]:
    """The fields of the form (the last value of a repeated name); an empty body is an
    empty form, whatever its type."""
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            raise _FormError("form too large", 413)
    if not body:
        return {}
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "application/x-www-form-urlencoded":
        raise _FormError("expected a form (application/x-www-form-urlencoded)", 415)
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise _FormError("form is not UTF-8", 400) from None
    return dict(parse_qsl(text, keep_blank_values=True, max_num_fields=64))
