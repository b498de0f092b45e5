"""The one HTTP layer every provider uses: auth, timeouts, and retries that never start a run twice.

Two classes:

* :class:`Transport` calls a platform's API. Idempotent calls (GET, PUT, DELETE, a cancel)
  are retried on connection errors, timeouts, 429 and 5xx with exponential backoff and full
  jitter (:func:`listener.backoff.delay`), honouring ``Retry-After``. A call that is not
  idempotent (a POST that starts a run) is retried only when the request certainly never
  reached the server: a second run must never be started by a retry.
* :class:`WebhookSender` delivers one signed webhook with bounded retries, keeping the same
  message id on every attempt so the receiver can deduplicate.

Error messages name the method, the path and the HTTP status; they never hold the API key,
an auth header, or the query string of an absolute URL (pre-signed URLs carry credentials
there).
"""

from __future__ import annotations

import asyncio
import email.utils
import functools
import json
import logging
import random
import ssl
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Self
from urllib.parse import quote, urlsplit

import httpx

from listener import backoff
from listener.providers.base import ProviderError
from listener.redaction import scrub
from listener.signatures import SignatureScheme

__all__ = [
    "DeliveryResult",
    "Sleep",
    "Transport",
    "TransportClient",
    "WebhookSender",
    "as_mapping",
    "compact_json",
    "first_str",
    "parse_retry_after",
    "path_segment",
    "str_options",
]

log = logging.getLogger(__name__)

Sleep = Callable[[float], Awaitable[None]]

# Exceptions raised before a single byte of the request was written: safe to retry any call.
_NEVER_SENT: tuple[type[Exception], ...] = (
    httpx.ConnectError,
    httpx.ConnectTimeout,
    httpx.PoolTimeout,
)
_DETAIL_LIMIT = 200


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta seconds or an HTTP date), or None."""
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    if text.isascii() and text.isdigit():
        return float(int(text[:9]))
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    current = time.time() if now is None else now
    return max(0.0, when.timestamp() - current)


def _retryable_status(status: int) -> bool:
    return status == 429 or 500 <= status <= 599


async def _real_sleep(seconds: float) -> None:
    await asyncio.sleep(seconds)


@functools.cache
def _tls_context() -> ssl.SSLContext:
    # Built once: loading the CA bundle costs tens of milliseconds per client otherwise.
    return httpx.create_ssl_context()


class Transport:
    """A small wrapper around ``httpx.AsyncClient`` for one platform's API.

    ``auth_headers`` are sent only on calls made with ``auth=True`` (the default); calls to
    absolute URLs handed out by the platform (upload and download URLs) pass ``auth=False``
    so the key never travels to a storage host. ``sleep`` and ``rng`` are injectable so
    retry tests run instantly and reproducibly; ``http_transport`` lets tests fail a
    connection on purpose.
    """

    def __init__(
        self,
        base_url: str,
        *,
        auth_headers: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float = 30.0,
        connect_timeout: float = 10.0,
        max_attempts: int = 4,
        backoff_base: float = 0.5,
        backoff_cap: float = 30.0,
        retry_after_cap: float = 60.0,
        sleep: Sleep | None = None,
        rng: random.Random | None = None,
        http_transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError("base_url must be an absolute http(s) URL")
        self.base_url = base_url.rstrip("/")
        self.max_attempts = max_attempts
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self.retry_after_cap = retry_after_cap
        self._auth_headers = dict(auth_headers or {})
        # Every auth header value is scrubbed from error text, in case a server echoes it.
        self._secrets = [value for value in self._auth_headers.values() if value]
        for value in list(self._secrets):
            scheme, _, credential = value.partition(" ")
            if credential and scheme.isalpha():
                self._secrets.append(credential)
        self._sleep = sleep or _real_sleep
        self._rng = rng or random.Random()  # jitter only, not a secret
        self._client = httpx.AsyncClient(
            headers=dict(headers or {}),
            timeout=httpx.Timeout(timeout, connect=connect_timeout),
            transport=http_transport,
            follow_redirects=False,
            verify=_tls_context(),
        )

    def __repr__(self) -> str:
        return f"Transport(base_url={self.base_url!r})"

    async def aclose(self) -> None:
        await self._client.aclose()

    def url_for(self, path: str) -> str:
        if path.startswith(("http://", "https://")):
            return path
        return f"{self.base_url}/{path.lstrip('/')}"

    async def request(
        self,
        method: str,
        path: str,
        *,
        idempotent: bool,
        params: Mapping[str, str] | None = None,
        json_body: Any = None,
        content: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        auth: bool = True,
    ) -> httpx.Response:
        """Send one call, retrying as its idempotency allows; a 2xx answer or ProviderError.

        ``path`` is relative to the base URL, or an absolute URL (then pass ``auth=False``
        unless it is the platform's own API).
        """
        url = self.url_for(path)
        where = f"{method} {_describe(url)}"
        send_headers = dict(self._auth_headers) if auth else {}
        send_headers.update(headers or {})
        body = content
        if json_body is not None:
            body = json.dumps(json_body, separators=(",", ":"), ensure_ascii=False).encode()
            send_headers.setdefault("Content-Type", "application/json")

        attempt = 0
        while True:
            attempt += 1
            last = attempt >= self.max_attempts
            try:
                response = await self._client.request(
                    method, url, params=params, content=body, headers=send_headers
                )
            except httpx.TransportError as exc:
                never_sent = isinstance(exc, _NEVER_SENT)
                reason = self._redact(f"{type(exc).__name__}: {exc}")
                if last or not (idempotent or never_sent):
                    raise ProviderError(f"{where} failed: {reason}") from None
                delay = backoff.delay(attempt, self.backoff_base, self.backoff_cap, self._rng)
                log.info("%s failed (%s); retry %d in %.2f s", where, reason, attempt, delay)
                await self._sleep(delay)
                continue

            status = response.status_code
            if 200 <= status < 300:
                return response
            if last or not idempotent or not _retryable_status(status):
                detail = self._redact(response.text[:_DETAIL_LIMIT].strip())
                message = f"{where} answered HTTP {status}"
                raise ProviderError(
                    f"{message}: {detail}" if detail else message,
                    status_code=status,
                    retry_after=parse_retry_after(response.headers.get("retry-after")),
                )
            delay = self._retry_delay(response, attempt)
            log.info("%s answered HTTP %d; retry %d in %.2f s", where, status, attempt, delay)
            await self._sleep(delay)

    async def request_json(
        self,
        method: str,
        path: str,
        *,
        idempotent: bool,
        params: Mapping[str, str] | None = None,
        json_body: Any = None,
        content: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        auth: bool = True,
    ) -> Any:
        """Like :meth:`request`, and decode the answer as JSON (ProviderError when it is not)."""
        response = await self.request(
            method,
            path,
            idempotent=idempotent,
            params=params,
            json_body=json_body,
            content=content,
            headers=headers,
            auth=auth,
        )
        try:
            return response.json()
        except ValueError:
            url = self.url_for(path)
            raise ProviderError(
                f"{method} {_describe(url)} answered HTTP {response.status_code} "
                "with a body that is not JSON",
                status_code=response.status_code,
            ) from None

    def _retry_delay(self, response: httpx.Response, attempt: int) -> float:
        retry_after = parse_retry_after(response.headers.get("retry-after"))
        if retry_after is not None:
            return min(retry_after, self.retry_after_cap)
        return backoff.delay(attempt, self.backoff_base, self.backoff_cap, self._rng)

    def _redact(self, text: str) -> str:
        return scrub(text, self._secrets)


def _describe(url: str) -> str:
    """The URL without query or fragment, which may carry pre-signed credentials."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}{parts.path}"


class TransportClient:
    """A provider over one `Transport` (its `_http`): `aclose()` closes it, and the
    provider works as `async with provider:`."""

    _http: Transport

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


@dataclass(frozen=True, slots=True)
class DeliveryResult:
    """How one webhook delivery went, over all its attempts."""

    delivered: bool
    attempts: int
    status_code: int | None = None
    error: str | None = None


class WebhookSender:
    """Delivers signed webhooks, retrying on anything but a 2xx answer.

    Each attempt is signed afresh (the signing time is that attempt's), but the message id is
    the same on every attempt: it is the receiver's idempotency key.
    """

    def __init__(
        self,
        scheme: SignatureScheme,
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
        self._headers = {"Content-Type": "application/json", **(headers or {})}
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout),
            transport=http_transport,
            follow_redirects=False,
            verify=_tls_context(),
        )

    async def aclose(self) -> None:
        await self._client.aclose()

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
            headers = {**self._headers, **self.scheme.sign(body, msg_id=msg_id)}
            try:
                response = await self._client.post(url, content=body, headers=headers)
            except httpx.TransportError as exc:
                status, error = None, type(exc).__name__
            else:
                status, error = response.status_code, None
                if 200 <= status < 300:
                    if on_attempt is not None:
                        on_attempt(attempt, status)
                    return DeliveryResult(True, attempt, status)
            if on_attempt is not None:
                on_attempt(attempt, status)
            if attempt < self.attempts:
                await self._sleep(
                    backoff.delay(attempt, self.backoff_base, self.backoff_cap, self._rng)
                )
        log.warning(
            "webhook %s to %s not delivered after %d attempts (last: %s)",
            msg_id,
            _describe(url),
            self.attempts,
            status if status is not None else error,
        )
        return DeliveryResult(False, self.attempts, status, error)


def compact_json(value: Any) -> bytes:
    """JSON as sent on the wire and measured against size limits: no spaces, UTF-8."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def first_str(*candidates: Any) -> str | None:
    """The first candidate that is a non-empty string."""
    for candidate in candidates:
        if isinstance(candidate, str) and candidate:
            return candidate
    return None


def as_mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def str_options(options: Mapping[str, Any]) -> dict[str, str]:
    """Platform options are string to string; render other values as JSON does."""
    rendered: dict[str, str] = {}
    for key, value in options.items():
        if isinstance(value, str):
            rendered[str(key)] = value
        else:
            rendered[str(key)] = json.dumps(value)
    return rendered


def path_segment(value: str) -> str:
    """One URL path segment, so an id can never reach another path."""
    return quote(value, safe="")
