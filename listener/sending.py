"""Sign and POST webhook deliveries: the one sender of the project.

The local provider's completion webhooks, the forward handler, `listener send-test`, the
fake platforms and the test helpers all send through :class:`WebhookSender`, so a delivery
has one shape everywhere: compact JSON, ``Content-Type: application/json``, a
``User-Agent``, and the signature headers of one scheme.

The retry policy lives here too: :meth:`WebhookSender.deliver` retries anything but a 2xx
answer with exponential backoff and full jitter, signing each attempt afresh (the signing
time is that attempt's) but keeping the message id, the receiver's idempotency key.
:meth:`WebhookSender.post` is one attempt, for callers that retry on their own terms (the
dispatcher retries a failing handler) or want the answer itself.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import random
import ssl
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Self

import httpx

from listener import backoff
from listener._version import __version__
from listener.redaction import bare_url, log_text
from listener.signatures import SignatureScheme

__all__ = [
    "DeliveryResult",
    "Sleep",
    "WebhookSender",
    "compact_json",
    "new_msg_id",
    "signed_delivery",
    "tls_context",
]

log = logging.getLogger(__name__)

Sleep = Callable[[float], Awaitable[None]]

USER_AGENT = f"listener/{__version__}"


def compact_json(value: Any) -> bytes:
    """JSON as sent on the wire and measured against size limits: no spaces, UTF-8."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def new_msg_id() -> str:
    return f"msg_{uuid.uuid4().hex}"


def signed_delivery(
    scheme: SignatureScheme | None,
    payload: Any,
    msg_id: str | None = None,
    *,
    timestamp: int | None = None,
    headers: Mapping[str, str] | None = None,
) -> tuple[bytes, dict[str, str]]:
    """The body and headers of one webhook delivery signed with ``scheme``.

    ``payload`` is serialised as compact JSON (bytes are sent as they are); ``msg_id`` defaults
    to a fresh ``msg_...`` id; ``timestamp`` (Unix seconds) defaults to now; ``headers`` are
    added before the signature headers. Without a scheme the delivery goes unsigned. Example::

        scheme = StandardWebhooks([secret])
        body, headers = signed_delivery(scheme, {"type": "run.status", "data": {...}})
        response = await client.post("/hooks/local", content=body, headers=headers)
    """
    body = payload if isinstance(payload, bytes) else compact_json(payload)
    sent = {"Content-Type": "application/json", "User-Agent": USER_AGENT, **(headers or {})}
    if scheme is not None:
        sent.update(scheme.sign(body, msg_id=msg_id or new_msg_id(), timestamp=timestamp))
    return body, sent


@functools.cache
def tls_context() -> ssl.SSLContext:
    # Built once: loading the CA bundle costs tens of milliseconds per client otherwise.
    return httpx.create_ssl_context()


async def _real_sleep(seconds: float) -> None:
    await asyncio.sleep(seconds)


@dataclass(frozen=True, slots=True)
class DeliveryResult:
    """How one webhook delivery went, over all its attempts."""

    delivered: bool
    attempts: int
    status_code: int | None = None
    error: str | None = None


class WebhookSender:
    """Signs and POSTs webhooks with one scheme (or none), over one HTTP client.

    ``attempts``, ``backoff_base`` and ``backoff_cap`` are the retry policy of
    :meth:`deliver`; ``sleep`` and ``rng`` are injectable so retry tests run instantly and
    reproducibly; ``http_transport`` lets tests fail a connection on purpose. Redirects are
    not followed: a signed body goes only where it was addressed.
    """

    def __init__(
        self,
        scheme: SignatureScheme | None,
        *,
        attempts: int = 5,
        backoff_base: float = 0.5,
        backoff_cap: float = 30.0,
        timeout: float = 15.0,
        sleep: Sleep | None = None,
        rng: random.Random | None = None,
        http_transport: httpx.AsyncBaseTransport | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        if attempts < 1:
            raise ValueError("attempts must be at least 1")
        self.scheme = scheme
        self.attempts = attempts
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self._sleep = sleep or _real_sleep
        self._rng = rng or random.Random()  # jitter only, not a secret
        self._headers = dict(headers or {})
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout),
            transport=http_transport,
            follow_redirects=False,
            verify=tls_context(),
        )

    async def aclose(self) -> None:
        await self._client.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def post(self, url: str, body: bytes, *, msg_id: str) -> httpx.Response:
        """One signed attempt; the answer whatever its status. Transport errors propagate."""
        _, headers = signed_delivery(self.scheme, body, msg_id, headers=self._headers)
        return await self._client.post(url, content=body, headers=headers)

    async def deliver(
        self,
        url: str,
        body: bytes,
        *,
        msg_id: str,
        on_attempt: Callable[[int, int | None], None] | None = None,
    ) -> DeliveryResult:
        """POST ``body`` to ``url`` until a 2xx answer or the attempts run out.

        ``on_attempt(attempt, status_code or None)`` is called after each attempt.
        """
        status: int | None = None
        error: str | None = None
        for attempt in range(1, self.attempts + 1):
            try:
                response = await self.post(url, body, msg_id=msg_id)
            except httpx.TransportError as exc:
                status, error = None, type(exc).__name__
            else:
                status, error = response.status_code, None
            if on_attempt is not None:
                on_attempt(attempt, status)
            if status is not None and 200 <= status < 300:
                return DeliveryResult(True, attempt, status)
            if attempt < self.attempts:
                await self._sleep(
                    backoff.delay(attempt, self.backoff_base, self.backoff_cap, self._rng)
                )
        log.warning(
            "webhook %s to %s not delivered after %d attempts (last: %s)",
            log_text(msg_id),
            bare_url(url),
            self.attempts,
            status if status is not None else error,
        )
        return DeliveryResult(False, self.attempts, status, error)
