"""The HTTP side: verified webhook deliveries in, durably stored events out.

`POST /hooks/{source}` answers per the receiver contract (see DESIGN.md): 2xx only once
the event is committed, 4xx for what the sender must not retry, 503 for what it should.
The hot path is receive, verify, store, answer; handlers run later, in the dispatcher.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Lifespan, Receive, Scope, Send

from listener import tracing
from listener._checks import whole
from listener.answers import (
    _ANSWER_ENCODER,
    _DUPLICATE,
    _KNOWN,
    _accepted_body,
    _Answer,
    _error,
    _json,
)
from listener.errors import BodyTooLarge
from listener.events import RunEvent
from listener.metrics import CONTENT_TYPE, UNKNOWN_SOURCE, Metrics
from listener.recording import EventRecorder
from listener.redaction import log_text, redact_headers
from listener.signatures import SignatureError, Verified
from listener.sources import Source, check_token, foreign_reason, read_delivery
from listener.store.base import Store, StoreUnavailable

__all__ = [
    "DEFAULT_MAX_BODY_BYTES",
    "BodyTooLarge",
    "Receiver",
    "ReceiverSettings",
    "create_app",
    "delivery_id_for",
]

log = logging.getLogger("listener.receiver")

DEFAULT_MAX_BODY_BYTES = 1024 * 1024
# Longer ids are hashed, so a sender cannot make the store keep huge keys.
MAX_ID_CHARS = 200
# Outcomes logged at INFO; the others (rejections, unroutable, errors) at WARNING.
_QUIET = frozenset({"accepted", "duplicate", "known"})
# Refused deliveries kept for the console, newest last: a bounded memory of this process.
REFUSALS_KEPT = 200


@dataclass(frozen=True, slots=True)
class Refusal:
    """A delivery answered with an error: when, to which source, and the answer's reason
    code. Nothing the sender wrote is kept (it was not verified): no body, no header."""

    at: datetime
    source: str
    outcome: str
    http_status: int
    reason: str
    delivery_id: str | None


@dataclass(frozen=True, slots=True)
class ReceiverSettings:
    """How the webhook endpoints answer; the defaults are the service's defaults.

    A body over `max_body_bytes` is refused with 413 before it is read in full; a
    delivery the store cannot take now is answered 503 with `Retry-After: retry_after`
    seconds. With `metrics_token` set, `GET /metrics` asks for it as a bearer token
    (`Authorization: Bearer <token>`) and answers 401 without it.
    """

    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    retry_after: int = 5
    metrics_token: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        whole("max_body_bytes", self.max_body_bytes)
        whole("retry_after", self.retry_after, 0)
        if self.metrics_token is not None and not self.metrics_token:
            raise ValueError(
                "metrics_token must not be empty; leave it out to serve /metrics openly"
            )


def delivery_id_for(source: str, verified: Verified | None, body: bytes) -> str:
    """The delivery id, namespaced by source so two senders' ids never collide.

    Schemes without a message id (Nextmv) get one from the signed timestamp and the body:
    an exact retry of a delivery then deduplicates, as it should.
    """
    msg_id = verified.msg_id if verified is not None else None
    if msg_id:
        # Long ids, and ids that are not ASCII (their text depends on how the headers were
        # decoded), are kept as a digest of their bytes.
        if len(msg_id) > MAX_ID_CHARS or not msg_id.isascii():
            return f"{source}:sha256:{hashlib.sha256(msg_id.encode()).hexdigest()}"
        return f"{source}:{msg_id}"
    stamp = verified.timestamp if verified is not None else None
    digest = hashlib.sha256(body).hexdigest()[:32]
    return f"{source}:t{stamp}:{digest}" if stamp is not None else f"{source}:b:{digest}"


async def _receive_body(receive: Receive, declared: str | None, limit: int) -> bytes:
    """The body from ASGI messages, or `BodyTooLarge` as soon as it is known to exceed `limit`."""
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        kind = message["type"]
        if kind == "http.request":
            chunk: bytes = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise BodyTooLarge
            if not message.get("more_body", False):
                if not chunks:
                    return chunk
                chunks.append(chunk)
                return b"".join(chunks)
            chunks.append(chunk)
        elif kind == "http.disconnect":
            raise ClientDisconnect


def _header_map(raw: Sequence[tuple[bytes, bytes]]) -> dict[str, str]:
    """Headers by name. ASGI servers give names in lowercase, which is also all Starlette's
    `Headers` looks for; the first of repeated names wins, as there, so signature checks
    see what they would see through a Request."""
    return {name.decode("latin-1"): value.decode("latin-1") for name, value in reversed(raw)}


class _Outcome(Exception):
    """A finished delivery that ends in an error answer; carries what to log and count."""

    def __init__(self, answer: _Answer, outcome: str) -> None:
        self.answer = answer
        self.outcome = outcome


class _HookEndpoint:
    """`POST /hooks/...` as a plain ASGI app: the delivery path builds no Request or
    Response objects, only the two ASGI messages of its answer."""

    def __init__(self, receiver: Receiver) -> None:
        self.receiver = receiver

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        params = scope["path_params"]
        raw: list[tuple[bytes, bytes]] = scope["headers"]
        headers = _header_map(raw)
        limit = self.receiver.settings.max_body_bytes

        async def read() -> bytes:
            return await _receive_body(receive, headers.get("content-length"), limit)

        answer = await self.receiver.deliver(
            params["source"],
            params.get("token"),
            read,
            headers,
            lambda: [(k.decode("latin-1"), v.decode("latin-1")) for k, v in raw],
        )
        await send(answer.start_message())
        await send({"type": "http.response.body", "body": answer.body})


class Receiver:
    """The webhook endpoints over one store, handler registry and set of sources.

    `store` is None until the owning listener has opened it; deliveries get 503 until then.
    `settings` bounds bodies and says when a refused sender should retry.
    Verified events are stored through `recorder`, the path every event takes.
    `endpoint` is the delivery endpoint as a plain ASGI app, for mounting by hand under
    another path (it reads `source` and, optionally, `token` from the path parameters).
    """

    def __init__(
        self,
        *,
        sources: Sequence[Source],
        recorder: EventRecorder,
        metrics: Metrics,
        store: Store | None = None,
        callback_secret: str | bytes | None = None,
        settings: ReceiverSettings = ReceiverSettings(),
    ) -> None:
        self.sources: dict[str, Source] = {}
        for source in sources:
            self.add_source(source)
        self.recorder = recorder
        self.metrics = metrics
        self.store = store
        self.endpoint = _HookEndpoint(self)
        self.callback_secret = callback_secret
        self.settings = settings
        self.refusals: deque[Refusal] = deque(maxlen=REFUSALS_KEPT)

    def add_source(self, source: Source) -> None:
        if source.name in self.sources:
            raise ValueError(f"a source named {source.name!r} is already configured")
        self.sources[source.name] = source

    def routes(self) -> list[Route]:
        return [
            Route("/hooks/{source}", self.endpoint, methods=["POST"]),
            Route("/hooks/{source}/{token}", self.endpoint, methods=["POST"]),
            Route("/healthz", self.healthz, methods=["GET"]),
            Route("/readyz", self.readyz, methods=["GET"]),
            Route("/metrics", self.metrics_endpoint, methods=["GET"]),
        ]

    # -- deliveries ----------------------------------------------------------------------

    async def deliver(
        self,
        name: str,
        token: str | None,
        read: Callable[[], Awaitable[bytes]],
        headers: Mapping[str, str],
        all_headers: Callable[[], list[tuple[str, str]]],
    ) -> _Answer:
        """One delivery to source `name`: `read` gives the body (raising `BodyTooLarge` or
        `ClientDisconnect`), `headers` are looked up by lowercase name, and `all_headers`
        lists every header, for keeping with an unroutable delivery."""
        started = time.perf_counter()
        source = self.sources.get(name)
        label = name if source is not None else UNKNOWN_SOURCE
        delivery_id: str | None = None
        event: RunEvent | None = None
        # Read once: stop() clears it, and this delivery must see one store throughout.
        store = self.store
        # With tracing on, the signature or token check's timing, traced once its run is known.
        check: tracing.Check | None = None
        tracer = tracing.tracer()
        try:
            if source is None:
                raise _Outcome(_error(404, "unknown_source", "no such source"), "unknown_source")
            if store is None:
                raise _Outcome(self._unavailable("not_started"), "unavailable")
            body = await self._body(read)
            if source.scheme is not None:
                if token is not None:
                    raise _Outcome(
                        _error(404, "not_found", "this source takes signed deliveries only"),
                        "not_found",
                    )
                if tracer is not None:
                    check = tracing.Check(tracer, name, source.scheme.name)
                verified = self._verify(source, body, headers)
                if check is not None:
                    check.done()
                delivery_id = delivery_id_for(name, verified, body)
                event, problem = read_delivery(source, body, delivery_id)
                if event is None:
                    answer, outcome = await self._unroutable(
                        store, source, delivery_id, problem, body, all_headers()
                    )
                    return self._done(answer, label, outcome, delivery_id, None, started, check)
            else:
                delivery_id = delivery_id_for(name, None, body)
                if tracer is not None:
                    check = tracing.Check(tracer, name, "token")
                event = await self._check_token_delivery(store, source, token, body, delivery_id)
                if check is not None:
                    check.done()
            answer, outcome = await self._record(store, event, check)
            if outcome == "foreign":
                answer, outcome = await self._unroutable(
                    store, source, delivery_id, foreign_reason(source), body, all_headers()
                )
            return self._done(answer, label, outcome, delivery_id, event, started, check)
        except _Outcome as finished:
            return self._done(
                finished.answer, label, finished.outcome, delivery_id, event, started, check
            )
        except Exception as exc:
            # Nothing was stored; 503 makes the sender retry. Only the type is logged: the
            # message could quote request data.
            log.error("delivery to %s failed unexpectedly: %s", label, type(exc).__name__)
            answer = self._unavailable("internal_error")
            return self._done(answer, label, "error", delivery_id, event, started, check)

    async def _body(self, read: Callable[[], Awaitable[bytes]]) -> bytes:
        try:
            return await read()
        except BodyTooLarge:
            detail = f"the body exceeds {self.settings.max_body_bytes} bytes"
            raise _Outcome(
                _error(BodyTooLarge.http_status, "body_too_large", detail), "too_large"
            ) from None
        except ClientDisconnect:
            raise _Outcome(
                _error(400, "disconnected", "the client went away"), "disconnected"
            ) from None

    def _verify(self, source: Source, body: bytes, headers: Mapping[str, str]) -> Verified:
        assert source.scheme is not None
        try:
            return source.scheme.verify(body, headers)
        except SignatureError as exc:
            self.metrics.verification_failure(source.name, exc.reason)
            # Scheme messages name headers at most, never a secret or a received signature.
            raise _Outcome(_error(exc.http_status, exc.reason, exc.message), "rejected") from None

    async def _check_token_delivery(
        self, store: Store, source: Source, token: str | None, body: bytes, delivery_id: str
    ) -> RunEvent:
        if token is None:
            detail = "this source takes callbacks at /hooks/{source}/{token}"
            self.metrics.verification_failure(source.name, "missing_token")
            raise _Outcome(_error(400, "missing_token", detail), "rejected")
        secret = self.callback_secret
        if secret is None:
            raise _Outcome(self._unavailable("no_callback_secret"), "unavailable")
        nonce = check_token(secret, token)
        if nonce is None:
            self.metrics.verification_failure(source.name, "bad_token")
            raise _Outcome(_error(401, "bad_token", "this callback URL was not issued"), "rejected")
        event, _ = read_delivery(source, body, delivery_id)
        if event is None:
            # Nothing unauthenticated is kept: without a run the URL cannot be tied to it.
            self.metrics.verification_failure(source.name, "unverifiable_payload")
            detail = "the payload names no run to check the token against"
            raise _Outcome(_error(400, "unverifiable_payload", detail), "rejected")
        try:
            run = await store.get_run(event.run_id)
        except StoreUnavailable:
            raise _Outcome(self._unavailable("store_unavailable"), "unavailable") from None
        # The token is bound to the one run it was issued for: that run must be recorded
        # with the token's nonce. A run the submission has not recorded yet (the callback
        # beat it) gets 409 and a Retry-After, so the sender comes back once it is; a run
        # recorded without that nonce (another run, one from a signed source, a made-up id)
        # gets 401. Either way nothing is stored.
        if run is None:
            self.metrics.verification_failure(source.name, "run_not_registered")
            raise _Outcome(
                _error(
                    409,
                    "run_not_registered",
                    "no run is recorded for this callback yet; try again later",
                    {"Retry-After": str(self.settings.retry_after)},
                ),
                "rejected",
            )
        issued = run.callback.get("nonce")
        if issued is None or not hmac.compare_digest(str(issued).encode(), nonce.encode()):
            self.metrics.verification_failure(source.name, "bad_token")
            raise _Outcome(
                _error(401, "bad_token", "the token was not issued for this run"), "rejected"
            )
        return event

    async def _record(
        self, store: Store, event: RunEvent, check: tracing.Check | None
    ) -> tuple[_Answer, str]:
        try:
            result = await self.recorder.record(store, event, check=check)
        except StoreUnavailable:
            return self._unavailable("store_unavailable"), "unavailable"
        if result.foreign:
            return _DUPLICATE, "foreign"
        if result.duplicate:
            return _DUPLICATE, "duplicate"
        if result.transition is None:
            return _KNOWN, "known"
        return _json(202, _accepted_body(event.delivery_id)), "accepted"

    async def _unroutable(
        self,
        store: Store,
        source: Source,
        delivery_id: str,
        reason: str,
        body: bytes,
        headers: list[tuple[str, str]],
    ) -> tuple[_Answer, str]:
        try:
            new = await store.record_unroutable(
                source=source.name,
                delivery_id=delivery_id,
                reason=reason,
                body=body,
                headers=redact_headers(headers),
            )
        except StoreUnavailable:
            return self._unavailable("store_unavailable"), "unavailable"
        if not new:
            return _DUPLICATE, "duplicate"
        answer = {"status": "unroutable", "delivery_id": delivery_id, "detail": reason}
        return _json(202, _ANSWER_ENCODER.encode(answer).encode()), "unroutable"

    def _unavailable(self, reason: str) -> _Answer:
        headers = {"Retry-After": str(self.settings.retry_after)}
        return _error(StoreUnavailable.http_status, reason, "try again later", headers)

    def _done(
        self,
        answer: _Answer,
        source: str,
        outcome: str,
        delivery_id: str | None,
        event: RunEvent | None,
        started: float,
        check: tracing.Check | None = None,
    ) -> _Answer:
        reason = _refusal(answer)
        if check is not None and not check.emitted:
            # Not traced with a record: refused, unroutable, or failed before the store.
            check.emit(None, event, refused=reason)
        self.metrics.delivery(source, outcome)
        self.metrics.receive_seconds.observe(time.perf_counter() - started)
        if reason is not None:
            self.refusals.append(
                Refusal(datetime.now(UTC), source, outcome, answer.status_code, reason, delivery_id)
            )
        # Unroutable deliveries are 2xx but need a person's attention.
        quiet = outcome in _QUIET
        level = logging.INFO if quiet else logging.WARNING
        if log.isEnabledFor(level):
            run = event.run_id if event is not None else None
            status = event.status.value if event is not None else None
            log.log(
                level,
                "delivery source=%s id=%s run=%s status=%s outcome=%s http=%d",
                source,
                log_text(delivery_id),
                log_text(run),
                status or "-",
                outcome,
                answer.status_code,
                extra={
                    "source": source,
                    "delivery_id": delivery_id,
                    "run_id": run,
                    "outcome": outcome,
                    "http_status": answer.status_code,
                },
            )
        return answer

    # -- probes and metrics --------------------------------------------------------------

    async def healthz(self, request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(self, request: Request) -> Response:
        if self.store is None:
            return JSONResponse({"status": "not_started"}, status_code=503)
        try:
            await self.store.ping()
        except Exception as exc:
            log.warning("readiness check failed: %s", type(exc).__name__)
            return JSONResponse({"status": "store_unavailable"}, status_code=503)
        return JSONResponse({"status": "ready"})

    async def metrics_endpoint(self, request: Request) -> Response:
        if not self._metrics_allowed(request):
            return JSONResponse(
                {"error": "unauthorized", "detail": "GET /metrics needs its bearer token"},
                status_code=401,
                headers={"WWW-Authenticate": 'Bearer realm="metrics"'},
            )
        counts: Any = None
        if self.store is not None:
            try:
                counts = await self.store.counts()
            except Exception as exc:
                log.warning("reading store counts for metrics failed: %s", type(exc).__name__)
        self.metrics.store_counts(counts)
        return Response(self.metrics.render(), media_type=CONTENT_TYPE)

    def _metrics_allowed(self, request: Request) -> bool:
        token = self.settings.metrics_token
        if token is None:
            return True
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer":
            return False
        return hmac.compare_digest(given.strip().encode(), token.encode())


def _refusal(answer: _Answer) -> str | None:
    """The reason an error answer gives (its JSON `error`), None for a 2xx."""
    if answer.status_code < 300:
        return None
    reason = json.loads(answer.body).get("error")
    return reason if isinstance(reason, str) else f"http {answer.status_code}"


def create_app(receiver: Receiver, *, lifespan: Lifespan[Starlette] | None = None) -> Starlette:
    """A Starlette app serving `receiver`'s routes; `lifespan` runs when served standalone."""
    app = Starlette(routes=receiver.routes(), lifespan=lifespan)
    # A webhook sender does not follow redirects: a stray slash is a plain 404.
    app.router.redirect_slashes = False
    return app
