"""Standard Webhooks: `v1` HMAC-SHA256 and `v1a` Ed25519, `webhook-*` or `svix-*` headers."""

from __future__ import annotations

import binascii
import contextlib
import hmac
from collections.abc import Mapping, Sequence
from typing import Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from listener.errors import BadSignature, MalformedHeader, MissingHeader
from listener.signatures._common import (
    DEFAULT_TOLERANCE,
    MAX_SIGNATURE_ENTRIES,
    _b64encode,
    _check_age,
    _check_length,
    _check_tolerance,
    _find,
    _now_seconds,
    _parse_timestamp,
)
from listener.signatures.base import Verified
from listener.signatures.keys import (
    _WHPK,
    _WHSEC,
    _WHSK,
    _b64decode_secret,
    _check_secrets,
    _HmacSha256,
    check_hmac_key,
)

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
                check_hmac_key(key, what)
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
        prefixes = [prefix]
        if not msg_id.isascii():
            # ASGI servers decode header bytes as Latin-1, so a UTF-8 id arrives as other
            # text; its Latin-1 encoding is the bytes the sender signed.
            with contextlib.suppress(UnicodeEncodeError):
                prefixes.append(f"{msg_id}.{timestamp_text}.".encode("latin-1"))

        _check_length(signature, names[2])
        parsed = False
        matched = False
        digests: list[bytes] | None = None
        for entry in signature.split()[:MAX_SIGNATURE_ENTRIES]:
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
                        for head in prefixes:
                            digests.append(key.digest(head, body))
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
                    matched = any(self._ed25519_matches(received, head + body) for head in prefixes)
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
