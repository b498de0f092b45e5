"""Rules every scheme shares: header lookup, timestamps, tolerance, hex comparison."""

from __future__ import annotations

import binascii
import hmac
import time
from collections.abc import Mapping, Sequence
from typing import Final

from listener.errors import MalformedHeader, TimestampTooNew, TimestampTooOld

DEFAULT_TOLERANCE: Final = 300
# 15 digits is ~3 * 10**7 years in seconds and ~30 000 years in milliseconds: room for every
# real clock, while keeping int() far from its digit limit.
_MAX_TIMESTAMP_DIGITS: Final = 15
# A sender lists one signature per active secret: two or three while rotating. Capping the
# header and the entries examined keeps an unauthenticated request from buying seconds of
# hashing and Ed25519 checks with thousands of bogus entries.
MAX_SIGNATURE_HEADER_CHARS: Final = 2048
MAX_SIGNATURE_ENTRIES: Final = 10


def _check_length(value: str, header: str) -> None:
    if len(value) > MAX_SIGNATURE_HEADER_CHARS:
        raise MalformedHeader(
            f"header {header} is longer than {MAX_SIGNATURE_HEADER_CHARS} characters",
            header=header,
        )


def _find(headers: Mapping[str, str], name: str) -> str | None:
    """Case-insensitive lookup of the lowercase ``name``.

    The exact lowercase key is tried first: it is what ASGI servers and well-behaved clients
    produce, and a starlette ``Headers`` is case-insensitive already. Only a miss pays for a
    scan of the items.
    """
    value = headers.get(name)
    if value is None:
        for key, candidate in headers.items():
            # isascii() keeps Unicode case folding (e.g. KELVIN SIGN -> "k") from matching.
            if isinstance(key, str) and key.isascii() and key.lower() == name:
                value = candidate
                break
        else:
            return None
    if not isinstance(value, str):
        raise MalformedHeader(f"header {name} is not text", header=name)
    return value


def _parse_timestamp(value: str, header: str) -> int:
    # isascii() first: str.isdigit() alone accepts Arabic-Indic digits, superscripts, etc.
    if (
        not value
        or len(value) > _MAX_TIMESTAMP_DIGITS
        or not value.isascii()
        or not value.isdigit()
        or (value[0] == "0" and len(value) > 1)
    ):
        raise MalformedHeader(f"{header} is not a decimal Unix timestamp", header=header)
    return int(value)


def _check_age(signed_at: float, tolerance: int | None, now: float | None, header: str) -> None:
    if tolerance is None:
        return
    current = time.time() if now is None else now
    if current - signed_at > tolerance:
        raise TimestampTooOld(
            f"{header} is {current - signed_at:.0f} s in the past; tolerance is {tolerance} s",
            header=header,
        )
    if signed_at - current > tolerance:
        raise TimestampTooNew(
            f"{header} is {signed_at - current:.0f} s in the future; tolerance is {tolerance} s",
            header=header,
        )


def _check_tolerance(tolerance: int | None) -> int | None:
    if tolerance is None:
        return None
    if isinstance(tolerance, bool) or not isinstance(tolerance, int) or tolerance < 0:
        raise ValueError("tolerance must be a non-negative whole number of seconds, or None")
    return tolerance


def _b64encode(data: bytes) -> str:
    return binascii.b2a_base64(data, newline=False).decode("ascii")


def _now_seconds(timestamp: int | None) -> int:
    if timestamp is None:
        return int(time.time())
    if isinstance(timestamp, bool) or not isinstance(timestamp, int) or timestamp < 0:
        raise ValueError("timestamp must be a non-negative whole number of Unix seconds")
    return timestamp


def _hex_matches(expected: Sequence[str], received: str) -> bool:
    if not received.isascii():
        return False
    # Senders emit lowercase hex; accepting uppercase costs nothing and loses nothing.
    received = received.lower()
    matched = False
    for digest in expected:
        # No early exit: the comparisons take the same time whichever key matches.
        matched |= hmac.compare_digest(digest, received)
    return matched
