"""Webhook sources: what `POST /hooks/{source}` means, and per-run callback tokens.

A source names a provider (whose parser reads the payload) and a signature scheme. A
source without a scheme takes unsigned callbacks at `/hooks/{source}/{token}`. Platforms
that take a per-run callback URL assign the run id only after they have the URL, so the
token is bound to a random nonce made at submission: `{nonce}.{HMAC(secret, nonce)}`.
The MAC proves the listener issued the URL; the nonce, kept with the run, ties the URL to
that one run (see `Receiver`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from listener.events import RunEvent, check_time
from listener.providers import parser_for
from listener.providers.base import EventParser
from listener.providers.native import NATIVE_PROVIDER
from listener.signatures import SignatureScheme
from listener.strict_json import loads_strict

__all__ = [
    "TOKEN_HEX_CHARS",
    "Source",
    "callback_token",
    "callback_url",
    "check_token",
    "foreign_reason",
    "mask_token",
    "new_nonce",
    "read_delivery",
]

# 32 hex characters: 128 bits of the HMAC, beyond guessing.
TOKEN_HEX_CHARS = 32
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
_NONCE = re.compile(r"[A-Za-z0-9_-]{1,64}")
# The token segment of a callback path, wherever the app is mounted.
_TOKEN_IN_PATH = re.compile(r"(/hooks/[^/?#]+/)[^/?#]+")


@dataclass(frozen=True, slots=True)
class Source:
    """One webhook sender: `name` is the path segment in `/hooks/{name}`.

    `provider` picks the payload parser (`listener.providers.parser_for`) unless `parser`
    is given. `scheme` verifies signed deliveries; None makes this a token source.
    `options` carries provider- or deployment-specific settings untouched.
    """

    name: str
    provider: str
    scheme: SignatureScheme | None = None
    options: Mapping[str, Any] = field(default_factory=dict)
    parser: EventParser | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if not _NAME.fullmatch(self.name):
            raise ValueError(
                f"source name {self.name!r} must be 1-100 characters of letters, digits, "
                "'.', '_' or '-', starting with a letter or digit"
            )
        if self.parser is None:
            # Fails now, at configuration, for a provider nobody can parse.
            object.__setattr__(self, "parser", parser_for(self.provider))

    @property
    def uses_token(self) -> bool:
        return self.scheme is None

    def parse(self, payload: Any, *, delivery_id: str) -> RunEvent:
        assert self.parser is not None  # set in __post_init__
        return self.parser(payload, delivery_id=delivery_id)


def _text_ok(*values: str) -> bool:
    # Lone surrogates (from JSON escapes) and NUL cannot be stored as text by every backend.
    for value in values:
        if "\x00" in value:
            return False
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return False
    return True


def read_delivery(source: Source, body: bytes, delivery_id: str) -> tuple[RunEvent | None, str]:
    """The event a verified body tells of, as `source` reads it, or None and the reason it
    cannot be read (the delivery is then kept as unroutable). The receiver reads each
    delivery with it, and `listener.recovery` reads kept ones again after a parser fix."""
    try:
        payload = loads_strict(body)
    except ValueError as exc:
        return None, str(exc)
    except RecursionError:
        return None, "the body is nested too deeply"
    try:
        event = source.parse(payload, delivery_id=delivery_id)
    except Exception as exc:
        # PayloadNotUnderstood, or a parser bug: either way the delivery is kept.
        return None, f"{type(exc).__name__}: {exc}"[:500]
    if not _text_ok(event.run_id, event.provider, event.application):
        return None, "the run id, provider or application is not valid text"
    if event.provider != source.provider and source.provider != NATIVE_PROVIDER:
        # A source speaks for its own provider only, whatever its payload claims. The
        # listener's own format (another listener forwarding) names the run's provider.
        event = dataclasses.replace(event, provider=source.provider)
    try:
        check_time(event.occurred_at, "occurred_at")
    except ValueError as exc:
        return None, str(exc)
    return event, ""


def foreign_reason(source: Source) -> str:
    """Why a delivery about a run recorded for another provider is kept as unroutable."""
    return (
        f"the run is recorded for another provider; source {source.name} reports runs"
        f" of {source.provider} only"
    )


def _key(secret: str | bytes) -> bytes:
    key = secret.encode() if isinstance(secret, str) else secret
    if not key:
        raise ValueError("the callback secret must not be empty")
    return key


def new_nonce() -> str:
    """A fresh callback nonce: 64 random bits, plenty to keep runs' URLs apart."""
    return secrets.token_hex(8)


def callback_token(secret: str | bytes, nonce: str) -> str:
    """The token of the callback URL handed to a platform for one run."""
    if not _NONCE.fullmatch(nonce):
        raise ValueError("a callback nonce is 1-64 letters, digits, '_' or '-'")
    digest = hmac.new(_key(secret), nonce.encode(), hashlib.sha256).hexdigest()
    return f"{nonce}.{digest[:TOKEN_HEX_CHARS]}"


def check_token(secret: str | bytes, token: str) -> str | None:
    """The nonce of a token the listener issued, or None; the MAC compares in constant time."""
    nonce, dot, _ = token.partition(".")
    if not dot or not _NONCE.fullmatch(nonce):
        return None
    expected = callback_token(secret, nonce)
    if hmac.compare_digest(expected.encode(), token.encode("utf-8", "surrogatepass")):
        return nonce
    return None


def callback_url(base_url: str, source: str, nonce: str, *, secret: str | bytes) -> str:
    """The URL a platform should call about one run: `{base_url}/hooks/{source}/{token}`.

    `base_url` is where the listener's app is reachable, mount prefix included.
    """
    token = callback_token(secret, nonce)
    return f"{base_url.rstrip('/')}/hooks/{quote(source, safe='')}/{token}"


def mask_token(url: str) -> str:
    """`url` (or a path) with a callback token masked, fit for a log line or an output:
    the token is a credential for its run. `/hooks/{source}` paths are unchanged."""
    return _TOKEN_IN_PATH.sub(r"\1***", url)
