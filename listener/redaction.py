"""What is fit to show: URLs, headers and settings with their credentials masked.

Every repr, log line, banner, `--json` output and error message that may hold a store URL,
a platform URL, request headers or a settings table goes through these functions, so one
rule decides what counts as a credential. Pure functions: no I/O, nothing of the project.

    >>> redact_url("postgresql://me:pw@db/x?sslmode=require&password=pw")
    'postgresql://me:***@db/x?sslmode=require&password=***'
"""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = [
    "HARMLESS_HEADERS",
    "MASK",
    "bare_url",
    "is_secret_name",
    "log_text",
    "redact_headers",
    "redact_settings",
    "redact_url",
    "scrub",
    "url_secrets",
]

MASK = "***"
# A name holding one of these words holds a credential: a query parameter (`password`,
# `X-Amz-Signature`, `sig`), a header (`Authorization`, `X-API-Key`, `Cookie`) or a
# setting (`api_key`, `callback_secret`, `secrets`).
_SECRET_WORDS = (
    "password",
    "passwd",
    "pwd",
    "secret",
    "token",
    "key",
    "authorization",
    "cookie",
    "credential",
    "signature",
)
# Whole names too short to search for as words without masking innocent ones.
_SECRET_NAMES = frozenset({"sig", "auth", "pass"})
# An `env:NAME` reference names where a secret lives, not the secret: fit to show.
_ENV_PREFIX = "env:"


def is_secret_name(name: str) -> bool:
    """Whether a query parameter, header or setting called `name` holds a credential."""
    lowered = name.lower()
    if lowered in _SECRET_NAMES:
        return True
    return any(word in lowered for word in _SECRET_WORDS)


def redact_url(url: str) -> str:
    """`url` with the password of its user part and every credential parameter masked."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return "<unreadable URL>"
    netloc, query = parts.netloc, parts.query
    userinfo, at, hostport = netloc.rpartition("@")
    if at and ":" in userinfo:
        netloc = f"{userinfo.split(':', 1)[0]}:{MASK}@{hostport}"
    pairs = urllib.parse.parse_qsl(query, keep_blank_values=True)
    if any(is_secret_name(key) for key, _ in pairs):
        cleaned = [(k, MASK if is_secret_name(k) else v) for k, v in pairs]
        query = urllib.parse.urlencode(cleaned, safe="*")
    if (netloc, query) == (parts.netloc, parts.query):
        return url
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc, query=query))


def bare_url(url: str) -> str:
    """`url` as scheme, host, port and path only: no user part, query or fragment.

    For messages about a URL someone else handed out (a pre-signed upload URL, a webhook
    target), where any part besides the address may carry a credential.
    """
    try:
        parts = urllib.parse.urlsplit(url)
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        return MASK
    if ":" in host:
        host = f"[{host}]"
    address = host if port is None else f"{host}:{port}"
    return f"{parts.scheme}://{address}{parts.path}" if parts.scheme else f"{address}{parts.path}"


def url_secrets(url: str) -> list[str]:
    """The credentials found in `url`, to `scrub` from messages that might echo them."""
    found: list[str] = []
    try:
        parts = urllib.parse.urlsplit(url)
        if parts.password:
            found.extend({parts.password, urllib.parse.unquote(parts.password)})
        for key, value in urllib.parse.parse_qsl(parts.query, keep_blank_values=True):
            if is_secret_name(key) and value:
                found.extend({value, urllib.parse.quote(value, safe="")})
    except ValueError:
        pass
    return [secret for secret in found if secret]


def scrub(message: str, secrets: Iterable[str]) -> str:
    """`message` with every occurrence of each secret masked (longest first)."""
    for secret in sorted({s for s in secrets if s}, key=len, reverse=True):
        message = message.replace(secret, MASK)
    return message


# Longest value a log line shows; the rest is counted, not printed.
LOG_TEXT_LIMIT = 200


def log_text(value: object, limit: int = LOG_TEXT_LIMIT) -> str:
    r"""`value` fit for one log line: sender-chosen text (a run id, an error message) must
    not forge lines with a newline or fill them with megabytes. Plain printable ASCII
    without spaces or quotes is shown as is, anything else JSON-quoted; over `limit`
    characters, the start and how many more.

        >>> print(log_text("run-1"), log_text("a\nb"), log_text(None))
        run-1 "a\nb" -
    """
    if value is None:
        return "-"
    text = str(value)
    cut = len(text) - limit
    if cut > 0:
        text = text[:limit]
    if not (text.isascii() and text.isprintable() and " " not in text and '"' not in text):
        text = json.dumps(text)
    return f"{text}...(+{cut} chars)" if cut > 0 else text


# Headers known to carry no credential, kept with a delivery for a person to read: what
# the body is, who sent it, and the senders' delivery ids and timestamps. Anything else is
# dropped, since a deny-list cannot know every vendor's secret header.
HARMLESS_HEADERS = frozenset(
    {
        "accept",
        "accept-encoding",
        "content-encoding",
        "content-length",
        "content-type",
        "date",
        "host",
        "user-agent",
        "traceparent",
        "tracestate",
        "x-request-id",
        "x-correlation-id",
        "x-forwarded-for",
        "x-forwarded-proto",
        "webhook-id",
        "webhook-timestamp",
        "svix-id",
        "svix-timestamp",
        "x-github-delivery",
        "x-github-event",
        "x-github-hook-id",
    }
)


def redact_headers(headers: Iterable[tuple[str, str]] | Mapping[str, str]) -> dict[str, str]:
    """The headers fit to show or keep: only those in `HARMLESS_HEADERS`."""
    items = headers.items() if isinstance(headers, Mapping) else headers
    return {name: value for name, value in items if name.lower() in HARMLESS_HEADERS}


def redact_settings(settings: Mapping[str, Any]) -> dict[str, Any]:
    """A settings table fit to show: credential values masked, URLs redacted, nested
    tables and lists walked. `env:NAME` references are kept: they name no secret."""
    return {key: _redact_value(value, is_secret_name(str(key))) for key, value in settings.items()}


def _redact_value(value: Any, secret: bool) -> Any:
    if isinstance(value, Mapping):
        return redact_settings(value)
    if isinstance(value, list | tuple):
        return [_redact_value(item, secret) for item in value]
    if isinstance(value, str):
        if value.startswith(_ENV_PREFIX):
            return value
        if secret:
            return MASK if value else value
        return redact_url(value) if "://" in value else value
    if secret and isinstance(value, bytes):
        return MASK
    return value
