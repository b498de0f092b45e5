"""Secrets into keys: prepared HMAC-SHA256 keys, secret checks, new secrets."""

from __future__ import annotations

import binascii
import hashlib
import secrets as _random
from collections.abc import Sequence
from typing import Final

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from listener.signatures._common import _b64encode

_WHSEC: Final = "whsec_"
_WHSK: Final = "whsk_"
_WHPK: Final = "whpk_"


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
        what = f"{scheme} secret #{index}"
        if secret.startswith(_WHPK):
            raise ValueError(f"{what} is a public key ({_WHPK}); {_PUBLIC_KEY_HINT}")
        try:
            raw = secret.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError(f"{what} is not valid Unicode text") from None
        check_hmac_key(raw, what)
        # Keying is done once here; verify() only copies the prepared state.
        keys.append(_HmacSha256(raw))
    return keys


# A public key is published: anyone holding it could sign for an HMAC scheme keyed by it.
_PUBLIC_KEY_HINT: Final = (
    "an HMAC scheme needs the shared secret, since anyone with a public key could sign"
)
MIN_HMAC_KEY_BYTES: Final = 16


def check_hmac_key(key: bytes, what: str) -> None:
    """Refuse a key too short to resist guessing (under 16 bytes)."""
    if len(key) < MIN_HMAC_KEY_BYTES:
        raise ValueError(
            f"{what} is {len(key)} bytes; an HMAC key needs at least {MIN_HMAC_KEY_BYTES}"
            " (make one with `listener keys generate`)"
        )


def _b64decode_secret(text: str, what: str) -> bytes:
    # Accept padded and unpadded base64, as the reference libraries do, but nothing looser.
    unpadded = text.rstrip("=")
    try:
        return binascii.a2b_base64(unpadded + "=" * (-len(unpadded) % 4), strict_mode=True)
    except ValueError:
        raise ValueError(f"{what} is not valid base64") from None


def generate_hmac_secret() -> str:
    """A new ``whsec_`` secret: 32 random bytes, base64. Usable by every scheme here."""
    return _WHSEC + _b64encode(_random.token_bytes(32))


def generate_ed25519_keypair() -> tuple[str, str]:
    """A new ``(whsk_..., whpk_...)`` pair for Standard Webhooks ``v1a``."""
    private = Ed25519PrivateKey.generate()
    seed = private.private_bytes_raw()
    public = private.public_key().public_bytes_raw()
    return _WHSK + _b64encode(seed), _WHPK + _b64encode(public)
