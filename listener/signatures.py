"""Signing and verification of webhook deliveries, sans I/O.

Each scheme is a small class built from one or more secrets (several at once, newest first,
so keys can be rotated) and a timestamp tolerance. ``verify(body, headers)`` either returns a
:class:`Verified` or raises a :class:`SignatureError` subclass, and nothing else, whatever the
headers and body hold. ``sign(body, msg_id=...)`` returns the headers a sender adds, so tests
and the fake platform sign with the same code production verifies with.

Schemes: :class:`StandardWebhooks` (``webhook-*`` or ``svix-*`` headers, ``v1`` HMAC-SHA256
and ``v1a`` Ed25519), :class:`NextmvSignature`, :class:`StripeSignature` and
:class:`GitHubSignature`.

Parsing rules shared by all schemes:

* Header names are matched case-insensitively (ASCII only).
* Timestamps are strict: ASCII digits only, at most 15 of them, no sign, no spaces, no
  decimal point or exponent, and no leading zeros (``"0"`` itself aside). The signed content
  uses the timestamp exactly as sent, so allowing one spelling per instant keeps the header
  and the signed bytes unambiguous.
* The signature is checked before the timestamp. A forged request is therefore always
  reported as ``BadSignature`` whatever its timestamp, and ``TimestampTooOld`` /
  ``TimestampTooNew`` only ever describe authentic deliveries (a replay or clock skew), which
  is what those metrics are for. A timestamp that does not parse is rejected before any MAC
  is computed.

This module imports nothing else of the project.
"""

from __future__ import annotations

import binascii
import hashlib
import hmac
import secrets as _random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar, Final, Protocol, runtime_checkable

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from listener.errors import (
    BadSignature,
    MalformedHeader,
    MissingHeader,
    SignatureError,
    TimestampTooNew,
    TimestampTooOld,
)

__all__ = [
    "SCHEME_NAMES",
    "BadSignature",
    "GitHubSignature",
    "MalformedHeader",
    "MissingHeader",
    "NextmvSignature",
    "SignatureError",
    "SignatureScheme",
    "StandardWebhooks",
    "StripeSignature",
    "TimestampTooNew",
    "TimestampTooOld",
    "Verified",
    "generate_ed25519_keypair",
    "generate_hmac_secret",
    "scheme_from_name",
]

DEFAULT_TOLERANCE: Final = 300
# 15 digits is ~3 * 10**7 years in seconds and ~30 000 years in milliseconds: room for every
# real clock, while keeping int() far from its digit limit.
_MAX_TIMESTAMP_DIGITS: Final = 15
# Nextmv documents milliseconds but its own examples use seconds. 10**11 s is the year 5138
# and 10**11 ms is 1973, so anything larger is read as milliseconds.
_MILLISECONDS_ABOVE: Final = 10**11

_WHSEC: Final = "whsec_"
_WHSK: Final = "whsk_"
_WHPK: Final = "whpk_"


# --- public types -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, init=False)
class Verified:
    """What a successful verification learned: the delivery id and when it was signed."""

    msg_id: str | None
    timestamp: int | None  # Unix seconds

    def __init__(self, msg_id: str | None, timestamp: int | None) -> None:
        # The generated frozen __init__ goes through object.__setattr__ per field, which cost
        # about a tenth of a whole verification; setting the slots directly does not.
        _set_msg_id(self, msg_id)
        _set_timestamp(self, timestamp)


_set_msg_id: Callable[[Verified, str | None], None] = Verified.__dict__["msg_id"].__set__
_set_timestamp: Callable[[Verified, int | None], None] = Verified.__dict__["timestamp"].__set__


@runtime_checkable
class SignatureScheme(Protocol):
    """What every scheme offers; the receiver holds one per source."""

    name: str

    def verify(
        self, body: bytes, headers: Mapping[str, str], *, now: float | None = None
    ) -> Verified: ...

    def sign(self, body: bytes, *, msg_id: str, timestamp: int | None = None) -> dict[str, str]: ...


# --- shared helpers -----------------------------------------------------------------------


# XOR tables for the HMAC pads (RFC 2104), applied with bytes.translate.
_IPAD: Final = bytes(value ^ 0x36 for value in range(256))
_OPAD: Final = bytes(value ^ 0x5C for value in range(256))
_SHA256_BLOCK: Final = 64


class _HmacSha256:
    """HMAC-SHA256 with the keyed inner and outer hash states computed once.

    ``hmac.new(key, digestmod=sha256).copy()`` re-enters Python-level wrapper code on every
    call and costs about as much as hashing a 1 KiB body; copying two ``hashlib`` states is
    done in C. The result is plain RFC 2104 HMAC, checked against ``hmac.new`` in the tests.
    """

    __slots__ = ("_inner", "_outer")

    def __init__(self, key: bytes) -> None:
        if len(key) > _SHA256_BLOCK:
            key = hashlib.sha256(key).digest()
        key = key.ljust(_SHA256_BLOCK, b"\0")
        self._inner = hashlib.sha256(key.translate(_IPAD))
        self._outer = hashlib.sha256(key.translate(_OPAD))

    def __repr__(self) -> str:
        return "_HmacSha256(<key hidden>)"

    def digest(self, head: bytes, body: bytes) -> bytes:
        inner = self._inner.copy()
        inner.update(head)
        inner.update(body)
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.digest()

    def hexdigest(self, head: bytes, body: bytes) -> str:
        return self.digest(head, body).hex()


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


def _check_secrets(secrets: Sequence[str], scheme: str) -> None:
    # A bare string is a Sequence[str] too; iterating it would turn each character into a key.
    if isinstance(secrets, str | bytes):
        raise TypeError(f"{scheme} takes a list of secrets, not a single string")
    if len(secrets) == 0:
        raise ValueError(f"{scheme} needs at least one secret")
    for index, secret in enumerate(secrets, start=1):
        if not isinstance(secret, str):
            raise TypeError(f"{scheme} secret #{index} is not a string")
        if not secret:
            raise ValueError(f"{scheme} secret #{index} is empty")


def _utf8_keys(secrets: Sequence[str], scheme: str) -> list[_HmacSha256]:
    """HMAC-SHA256 keys made of each secret's UTF-8 bytes."""
    _check_secrets(secrets, scheme)
    keys = []
    for index, secret in enumerate(secrets, start=1):
        try:
            raw = secret.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError(f"{scheme} secret #{index} is not valid Unicode text") from None
        # Keying is done once here; verify() only copies the prepared state.
        keys.append(_HmacSha256(raw))
    return keys


def _b64decode_secret(text: str, what: str) -> bytes:
    # Accept padded and unpadded base64, as the reference libraries do, but nothing looser.
    unpadded = text.rstrip("=")
    try:
        return binascii.a2b_base64(unpadded + "=" * (-len(unpadded) % 4), strict_mode=True)
    except ValueError:
        raise ValueError(f"{what} is not valid base64") from None


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


# --- Standard Webhooks --------------------------------------------------------------------

_WEBHOOK_NAMES: Final = ("webhook-id", "webhook-timestamp", "webhook-signature")
_SVIX_NAMES: Final = ("svix-id", "svix-timestamp", "svix-signature")


class StandardWebhooks:
    """Standard Webhooks 1.0: ``v1`` HMAC-SHA256 and ``v1a`` Ed25519 signatures.

    Secrets: ``whsec_<base64>`` (an HMAC key; a bare base64 key without the prefix is accepted
    too), ``whsk_<base64 32-byte seed>`` (an Ed25519 signing key, which also verifies) and
    ``whpk_<base64 32-byte public key>`` (verifies only). ``svix-*`` headers are read when no
    ``webhook-signature`` header is present.
    """

    name = "standard-webhooks"

    def __init__(self, secrets: Sequence[str], *, tolerance: int | None = DEFAULT_TOLERANCE):
        _check_secrets(secrets, "StandardWebhooks")
        self.tolerance = _check_tolerance(tolerance)
        self._hmac_keys: list[_HmacSha256] = []
        self._public_keys: list[Ed25519PublicKey] = []
        # The first secret able to sign (whpk_ keys cannot) is the one sign() uses.
        self._signer: _HmacSha256 | Ed25519PrivateKey | None = None
        for index, secret in enumerate(secrets, start=1):
            what = f"StandardWebhooks secret #{index}"
            if secret.startswith(_WHSK):
                seed = _b64decode_secret(secret[len(_WHSK) :], what)
                if len(seed) != 32:
                    raise ValueError(f"{what} ({_WHSK}) must hold a 32-byte Ed25519 seed")
                private = Ed25519PrivateKey.from_private_bytes(seed)
                self._public_keys.append(private.public_key())
                if self._signer is None:
                    self._signer = private
            elif secret.startswith(_WHPK):
                raw = _b64decode_secret(secret[len(_WHPK) :], what)
                if len(raw) != 32:
                    raise ValueError(f"{what} ({_WHPK}) must hold a 32-byte Ed25519 public key")
                self._public_keys.append(Ed25519PublicKey.from_public_bytes(raw))
            else:
                # Without a known prefix the secret is read as bare base64, as the reference
                # libraries do.
                encoded = secret[len(_WHSEC) :] if secret.startswith(_WHSEC) else secret
                key = _b64decode_secret(encoded, what)
                if not key:
                    raise ValueError(f"{what} is empty after base64 decoding")
                mac = _HmacSha256(key)
                self._hmac_keys.append(mac)
                if self._signer is None:
                    self._signer = mac

    def __repr__(self) -> str:
        return (
            f"StandardWebhooks(v1_keys={len(self._hmac_keys)}, "
            f"v1a_keys={len(self._public_keys)}, tolerance={self.tolerance})"
        )

    def verify(
        self, body: bytes, headers: Mapping[str, str], *, now: float | None = None
    ) -> Verified:
        # Fast path: the three headers under their exact lowercase names, as ASGI servers
        # deliver them (a starlette Headers is case-insensitive anyway). Anything else (other
        # cases, svix-* names, absent or non-text values) takes the careful lookup.
        msg_id = headers.get("webhook-id")
        timestamp_text = headers.get("webhook-timestamp")
        signature = headers.get("webhook-signature")
        names = _WEBHOOK_NAMES
        if type(msg_id) is not str or type(timestamp_text) is not str or type(signature) is not str:
            msg_id, timestamp_text, signature, names = self._lookup(headers)
        if not msg_id:
            raise MalformedHeader(f"header {names[0]} is empty", header=names[0])
        timestamp = _parse_timestamp(timestamp_text, names[1])
        try:
            # UTF-8, as the reference libraries encode the id; only lone surrogates can fail.
            prefix = f"{msg_id}.{timestamp_text}.".encode()
        except UnicodeEncodeError:
            raise MalformedHeader(f"header {names[0]} is not valid text", header=names[0]) from None

        parsed = False
        matched = False
        digests: list[bytes] | None = None
        for entry in signature.split():
            version, comma, value = entry.partition(",")
            if not comma or not version:
                continue
            parsed = True
            if version == "v1":
                if not self._hmac_keys:
                    continue
                try:
                    received = binascii.a2b_base64(value, strict_mode=True)
                except ValueError:
                    continue  # malformed base64 cannot match; the other entries may
                if digests is None:
                    # Computed once, and only when a v1 entry is present.
                    digests = []
                    for key in self._hmac_keys:
                        digests.append(key.digest(prefix, body))
                for digest in digests:
                    matched |= hmac.compare_digest(digest, received)
            elif version == "v1a":
                if not self._public_keys:
                    continue
                try:
                    received = binascii.a2b_base64(value, strict_mode=True)
                except ValueError:
                    continue
                if len(received) == 64:
                    matched = self._ed25519_matches(received, prefix + body)
            # Any other version is unknown to us and skipped, as the specification asks.
            if matched:
                break

        if not matched:
            if not parsed:
                raise MalformedHeader(
                    f"header {names[2]} holds no version,signature entry", header=names[2]
                )
            raise BadSignature(
                f"no signature in {names[2]} matches a configured key", header=names[2]
            )
        _check_age(timestamp, self.tolerance, now, names[1])
        return Verified(msg_id, timestamp)

    @staticmethod
    def _lookup(headers: Mapping[str, str]) -> tuple[str, str, str, tuple[str, str, str]]:
        """Find the id, timestamp and signature headers under any case, webhook-* or svix-*."""
        names = _WEBHOOK_NAMES
        signature = _find(headers, names[2])
        if signature is None:
            names = _SVIX_NAMES
            signature = _find(headers, names[2])
            if signature is None:
                raise MissingHeader(f"missing header {_WEBHOOK_NAMES[2]}", header=_WEBHOOK_NAMES[2])
        msg_id = _find(headers, names[0])
        if msg_id is None:
            raise MissingHeader(f"missing header {names[0]}", header=names[0])
        timestamp_text = _find(headers, names[1])
        if timestamp_text is None:
            raise MissingHeader(f"missing header {names[1]}", header=names[1])
        return msg_id, timestamp_text, signature, names

    def _ed25519_matches(self, signature: bytes, content: bytes) -> bool:
        for public in self._public_keys:
            try:
                public.verify(signature, content)
            except InvalidSignature:
                continue
            return True
        return False

    def sign(self, body: bytes, *, msg_id: str, timestamp: int | None = None) -> dict[str, str]:
        signer = self._signer
        if signer is None:
            raise ValueError(
                "this StandardWebhooks scheme holds only whpk_ public keys, which verify but "
                "cannot sign; add a whsec_ or whsk_ secret to sign"
            )
        if not msg_id:
            raise ValueError("msg_id must not be empty")
        seconds = _now_seconds(timestamp)
        content = f"{msg_id}.{seconds}.".encode() + body
        if isinstance(signer, Ed25519PrivateKey):
            signature = "v1a," + _b64encode(signer.sign(content))
        else:
            signature = "v1," + _b64encode(signer.digest(content, b""))
        return {
            "webhook-id": msg_id,
            "webhook-timestamp": str(seconds),
            "webhook-signature": signature,
        }


# --- Nextmv and Stripe-style: "t=<timestamp>,v1=<hex>" ------------------------------------


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

    def verify(
        self, body: bytes, headers: Mapping[str, str], *, now: float | None = None
    ) -> Verified:
        header = self._header
        raw = _find(headers, self._header_key)
        if raw is None:
            raise MissingHeader(f"missing header {header}", header=header)
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
        for signature in signatures:
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


# --- GitHub -------------------------------------------------------------------------------


class GitHubSignature:
    """``X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the body>``.

    There is no timestamp, so ``tolerance`` is accepted for uniformity and ignored; replays are
    caught by deduplicating on ``X-GitHub-Delivery``, returned as ``Verified.msg_id``.
    """

    name = "github"
    _header: ClassVar[str] = "X-Hub-Signature-256"

    def __init__(self, secrets: Sequence[str], *, tolerance: int | None = DEFAULT_TOLERANCE):
        self._keys = _utf8_keys(secrets, "GitHubSignature")
        self.tolerance = _check_tolerance(tolerance)

    def __repr__(self) -> str:
        return f"GitHubSignature(keys={len(self._keys)})"

    def verify(
        self, body: bytes, headers: Mapping[str, str], *, now: float | None = None
    ) -> Verified:
        header = self._header
        raw = _find(headers, "x-hub-signature-256")
        if raw is None:
            raise MissingHeader(f"missing header {header}", header=header)
        algorithm, equals, signature = raw.partition("=")
        if algorithm != "sha256" or not equals:
            raise MalformedHeader(f"header {header} is not sha256=<hex>", header=header)
        expected = [key.hexdigest(b"", body) for key in self._keys]
        if not _hex_matches(expected, signature):
            raise BadSignature(f"the signature in {header} does not match", header=header)
        delivery = _find(headers, "x-github-delivery")
        return Verified(delivery or None, None)

    def sign(self, body: bytes, *, msg_id: str, timestamp: int | None = None) -> dict[str, str]:
        signature = self._keys[0].hexdigest(b"", body)
        return {"X-Hub-Signature-256": "sha256=" + signature, "X-GitHub-Delivery": msg_id}


# --- helpers ------------------------------------------------------------------------------


def generate_hmac_secret() -> str:
    """A new ``whsec_`` secret: 32 random bytes, base64. Usable by every scheme here."""
    return _WHSEC + _b64encode(_random.token_bytes(32))


def generate_ed25519_keypair() -> tuple[str, str]:
    """A new ``(whsk_..., whpk_...)`` pair for Standard Webhooks ``v1a``."""
    private = Ed25519PrivateKey.generate()
    seed = private.private_bytes_raw()
    public = private.public_key().public_bytes_raw()
    return _WHSK + _b64encode(seed), _WHPK + _b64encode(public)


_SCHEMES: Final[
    dict[str, type[StandardWebhooks | NextmvSignature | StripeSignature | GitHubSignature]]
] = {
    StandardWebhooks.name: StandardWebhooks,
    NextmvSignature.name: NextmvSignature,
    StripeSignature.name: StripeSignature,
    GitHubSignature.name: GitHubSignature,
}


# The names `scheme_from_name` builds, as configuration and the command line spell them.
SCHEME_NAMES: Final = tuple(sorted(_SCHEMES))


def scheme_from_name(
    name: str, secrets: Sequence[str], tolerance: int | None = DEFAULT_TOLERANCE
) -> SignatureScheme:
    """Build the scheme called ``name`` (as configured for a source)."""
    try:
        cls = _SCHEMES[name]
    except KeyError:
        known = ", ".join(sorted(_SCHEMES))
        raise ValueError(f"unknown signature scheme {name!r}; known: {known}") from None
    return cls(secrets, tolerance=tolerance)
