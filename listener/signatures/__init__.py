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

This package imports nothing else of the project.
"""

from __future__ import annotations

from listener.errors import (
    BadSignature,
    MalformedHeader,
    MissingHeader,
    SignatureError,
    TimestampTooNew,
    TimestampTooOld,
)
from listener.signatures._common import DEFAULT_TOLERANCE as DEFAULT_TOLERANCE
from listener.signatures.base import SignatureScheme, Verified
from listener.signatures.github import GitHubSignature
from listener.signatures.keys import generate_ed25519_keypair, generate_hmac_secret
from listener.signatures.schemes import SCHEME_NAMES, scheme_from_name
from listener.signatures.standard_webhooks import StandardWebhooks
from listener.signatures.timestamped import NextmvSignature, StripeSignature

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
