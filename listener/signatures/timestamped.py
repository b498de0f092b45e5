"""Nextmv and Stripe-style schemes: one header holding `t=<timestamp>,v1=<hex>`."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import ClassVar, Final

from listener.errors import BadSignature, MalformedHeader, MissingHeader
from listener.signatures._common import (
    DEFAULT_TOLERANCE,
    MAX_SIGNATURE_ENTRIES,
    _check_age,
    _check_length,
    _check_tolerance,
    _find,
    _hex_matches,
    _now_seconds,
    _parse_timestamp,
)
from listener.signatures.base import Verified
from listener.signatures.keys import _utf8_keys

# Nextmv documents milliseconds but its own examples use seconds. 10**11 s is the year 5138
# and 10**11 ms is 1973, so anything larger is read as milliseconds.
_MILLISECONDS_ABOVE: Final = 10**11


class _TimestampedHex:
    """``<Header>: t=<timestamp>,v1=<hex HMAC-SHA256 of "{t}.{body}">``; keys are UTF-8."""

    name: str
    _header: ClassVar[str]
    _header_key: ClassVar[str]  # lowercase, for lookups
    _accepts_milliseconds: ClassVar[bool]

    def __init__(self, secrets: Sequence[str], *, tolerance: int | None = DEFAULT_TOLERANCE):
        self._keys = _utf8_keys(secrets, type(self).__name__)
        self.tolerance = _check_tolerance(tolerance)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(keys={len(self._keys)}, tolerance={self.tolerance})"

    def add_secret(self, secret: str) -> None:
        """Accept signatures made with `secret` too (an endpoint registered anew)."""
        # Rebound, not appended: a verify under way keeps the list it started with.
        self._keys = [*self._keys, *_utf8_keys([secret], type(self).__name__)]

    def verify(
        self, body: bytes, headers: Mapping[str, str], *, now: float | None = None
    ) -> Verified:
        header = self._header
        raw = _find(headers, self._header_key)
        if raw is None:
            raise MissingHeader(f"missing header {header}", header=header)
        _check_length(raw, header)
        timestamp_text: str | None = None
        signatures: list[str] = []
        for item in raw.split(","):
            # ", " between items is tolerated; spaces inside a value are not.
            key, equals, value = item.lstrip(" ").partition("=")
            if not equals:
                continue
            if key == "t":
                if timestamp_text is not None:
                    raise MalformedHeader(f"header {header} holds two timestamps", header=header)
                timestamp_text = value
            elif key == "v1":
                signatures.append(value)
            # Other keys (v0 and future schemes) are ignored.
        if timestamp_text is None:
            raise MalformedHeader(f"header {header} holds no t= timestamp", header=header)
        if not signatures:
            raise MalformedHeader(f"header {header} holds no v1= signature", header=header)
        timestamp = _parse_timestamp(timestamp_text, header)

        prefix = timestamp_text.encode("ascii") + b"."
        expected = [key.hexdigest(prefix, body) for key in self._keys]
        matched = False
        for signature in signatures[:MAX_SIGNATURE_ENTRIES]:
            matched |= _hex_matches(expected, signature)
        if not matched:
            raise BadSignature(f"no signature in {header} matches a configured key", header=header)

        seconds = timestamp
        signed_at: float = timestamp
        if self._accepts_milliseconds and timestamp > _MILLISECONDS_ABOVE:
            seconds = timestamp // 1000
            signed_at = timestamp / 1000
        _check_age(signed_at, self.tolerance, now, header)
        return Verified(None, seconds)

    def _timestamp_text(self, timestamp: int | None) -> str:
        return str(_now_seconds(timestamp))

    def sign(self, body: bytes, *, msg_id: str, timestamp: int | None = None) -> dict[str, str]:
        # msg_id is not part of this format; it is accepted so every scheme signs alike.
        timestamp_text = self._timestamp_text(timestamp)
        signature = self._keys[0].hexdigest(timestamp_text.encode("ascii") + b".", body)
        return {self._header: f"t={timestamp_text},v1={signature}"}


class NextmvSignature(_TimestampedHex):
    """``Nextmv-Signature: t=<ms or s>,v1=<hex>``; signs in milliseconds, verifies both."""

    name = "nextmv"
    _header = "Nextmv-Signature"
    _header_key = "nextmv-signature"
    _accepts_milliseconds = True

    def _timestamp_text(self, timestamp: int | None) -> str:
        if timestamp is None:
            return str(int(time.time() * 1000))
        return str(_now_seconds(timestamp) * 1000)


class StripeSignature(_TimestampedHex):
    """``Stripe-Signature: t=<s>,v1=<hex>[,v1=<hex>...]``; the key is the whole secret string.

    Unlike Stripe's own library, timestamps too far in the future are rejected as well.
    """

    name = "stripe"
    _header = "Stripe-Signature"
    _header_key = "stripe-signature"
    _accepts_milliseconds = False
