"""GitHub-style scheme: `X-Hub-Signature-256` over the body, no timestamp."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import ClassVar

from listener.errors import BadSignature, MalformedHeader, MissingHeader
from listener.signatures._common import (
    DEFAULT_TOLERANCE,
    _check_length,
    _check_tolerance,
    _find,
    _hex_matches,
)
from listener.signatures.base import Verified
from listener.signatures.keys import _utf8_keys


class GitHubSignature:
    """``X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the body>``.

    There is no timestamp, so ``tolerance`` is accepted for uniformity and ignored. The
    signature does not cover ``X-GitHub-Delivery``, so a captured delivery could be replayed
    under any fresh id: ``Verified.msg_id`` is None, and the receiver keys the delivery by a
    digest of the signed body instead, which catches replays for as long as it is kept.
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
        _check_length(raw, header)
        algorithm, equals, signature = raw.partition("=")
        if algorithm != "sha256" or not equals:
            raise MalformedHeader(f"header {header} is not sha256=<hex>", header=header)
        expected = [key.hexdigest(b"", body) for key in self._keys]
        if not _hex_matches(expected, signature):
            raise BadSignature(f"the signature in {header} does not match", header=header)
        return Verified(None, None)

    def sign(self, body: bytes, *, msg_id: str, timestamp: int | None = None) -> dict[str, str]:
        signature = self._keys[0].hexdigest(b"", body)
        return {"X-Hub-Signature-256": "sha256=" + signature, "X-GitHub-Delivery": msg_id}
