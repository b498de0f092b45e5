"""The one HTTP layer every provider uses: auth, timeouts, and retries that never start a run twice.

* :class:`Transport` calls a platform's API. Idempotent calls (GET, PUT, DELETE, a cancel)
  are retried on connection errors, timeouts, 429 and 5xx with exponential backoff and full
  jitter (:func:`listener.backoff.delay`), honouring ``Retry-After``. A call that is not
  idempotent (a POST that starts a run) is retried only when the request certainly never
  reached the server: a second run must never be started by a retry.

Error messages name the method, the path and the HTTP status; they never hold the API key,
an auth header, or the query string of an absolute URL (pre-signed URLs carry credentials
there).
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import json
import logging
import random
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any, Self
from urllib.parse import quote, urlsplit

import httpx

from listener import backoff
from listener.errors import StreamIdle
from listener.providers.base import ProviderError
from listener.redaction import bare_url, scrub
from listener.sending import Sleep, tls_context

__all__ = [
    "Transport",
    "TransportClient",
    "as_mapping",
    "first_str",
    "parse_retry_after",
    "path_segment",
    "str_options",
]

log = logging.getLogger(__name__)


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


async def _real_sleep(seconds: float) -> None:
    await asyncio.sleep(seconds)


def _retryable_status(status: int) -> bool:
    return status == 429 or 500 <= status <= 599


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
            verify=tls_context(),
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
        where = f"{method} {bare_url(url)}"
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
                f"{method} {bare_url(url)} answered HTTP {response.status_code} "
                "with a body that is not JSON",
                status_code=response.status_code,
            ) from None

    @contextlib.asynccontextmanager
    async def stream(
        self, path: str, *, params: Mapping[str, str] | None = None, read_timeout: float
    ) -> AsyncIterator[AsyncIterator[str]]:
        """A long-lived ``GET`` whose answer is read line by line as it arrives; never
        retried here (the caller resumes). A connection failure, a non-2xx answer or a
        read silent for ``read_timeout`` seconds is a ProviderError; once the answer began,
        that silence is a StreamIdle."""
        url = self.url_for(path)
        where = f"GET {bare_url(url)}"
        timeout = httpx.Timeout(self._client.timeout.connect, read=read_timeout)
        answered = False
        try:
            async with self._client.stream(
                "GET", url, params=params, headers=self._auth_headers, timeout=timeout
            ) as response:
                status = response.status_code
                if not 200 <= status < 300:
                    await response.aread()
                    detail = self._redact(response.text[:_DETAIL_LIMIT].strip())
                    raise ProviderError(
                        f"{where} answered HTTP {status}: {detail}",
                        status_code=status,
                        retry_after=parse_retry_after(response.headers.get("retry-after")),
                    )
                answered = True
                yield self._lines(response)
        except httpx.ReadTimeout:
            if not answered:
                raise ProviderError(f"{where} failed: no answer in {read_timeout:g} s") from None
            raise StreamIdle(f"{where}: nothing for {read_timeout:g} s") from None
        except httpx.TransportError as exc:
            reason = self._redact(f"{type(exc).__name__}: {exc}")
            raise ProviderError(f"{where} failed: {reason}") from None

    @staticmethod
    async def _lines(response: httpx.Response) -> AsyncIterator[str]:
        async for line in response.aiter_lines():
            yield line.rstrip("\r\n")

    def _retry_delay(self, response: httpx.Response, attempt: int) -> float:
        retry_after = parse_retry_after(response.headers.get("retry-after"))
        if retry_after is not None:
            return min(retry_after, self.retry_after_cap)
        return backoff.delay(attempt, self.backoff_base, self.backoff_cap, self._rng)

    def _redact(self, text: str) -> str:
        return scrub(text, self._secrets)


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
