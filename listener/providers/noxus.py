"""The Noxus workflow engine: runs of a workflow, each reporting to its own callback URL.

It speaks the engine's REST API as the official client (`noxus-sdk`) does: ``X-API-Key``
on every call, a run started by ``POST /v1/workflows/{id}/runs`` with
``{"input", "workflow_version_id"?, "callback_url"?}``, read by
``GET /v1/workflows/{id}/runs/{run}`` and stopped by ``POST /v1/runs/{run}/stop``. When a
run ends the engine POSTs the run document to that run's ``callback_url``, unsigned, so
the URL handed to :meth:`NoxusProvider.submit` must itself be unguessable: the listener
hands it the receiver's per-run token URL (``/hooks/{source}/{token}``, see
`listener.sources`).
"""

from __future__ import annotations

import json
import random
from collections.abc import AsyncIterator, Mapping
from typing import Any, Final

import httpx

from listener.events import Origin, RunEvent, RunStatus, UnknownStatus, status_from_words
from listener.providers._transport import (
    Transport,
    TransportClient,
    as_mapping,
    first_str,
    path_segment,
)
from listener.providers.base import (
    PayloadNotUnderstood,
    ProviderError,
    RunResult,
    RunState,
    StreamedState,
    Submission,
)
from listener.providers.kinds import ProviderKind
from listener.providers.native import parse_time
from listener.providers.sse import read_events
from listener.sending import Sleep

__all__ = [
    "DEFAULT_BASE_URL",
    "KIND",
    "STATUS_WORDS",
    "NoxusProvider",
    "parse_event",
    "read_callback",
    "status_from_noxus",
]

DEFAULT_BASE_URL: Final = "https://backend.noxus.ai"
STATUS_WORDS: Final[Mapping[str, RunStatus]] = {
    "queued": RunStatus.QUEUED,
    "pending": RunStatus.QUEUED,
    "running": RunStatus.RUNNING,
    # A run waiting on a person is still in progress, not finished.
    "awaiting_human_feedback": RunStatus.RUNNING,
    "completed": RunStatus.SUCCEEDED,
    "failed": RunStatus.FAILED,
    "stopped": RunStatus.CANCELED,
    "cancelled": RunStatus.CANCELED,
    "canceled": RunStatus.CANCELED,
}


def status_from_noxus(word: object, *, platform: str = "noxus") -> RunStatus:
    """Map an engine run status word (`completed`, `stopped`, ...); `UnknownStatus` else."""
    return status_from_words(platform, STATUS_WORDS, word)


class NoxusProvider(TransportClient):
    """The engine's REST API. ``Submission.application`` is the workflow id;
    ``Submission.extra["workflow_version_id"]`` runs one version of it. It offers run
    streams (`RunStream`): :meth:`follow` reads a run's server-sent events."""

    name = "noxus"

    def __init__(
        self,
        api_key: str,
        *,
        base_url: str = DEFAULT_BASE_URL,
        timeout: float = 30.0,
        max_attempts: int = 5,
        backoff_base: float = 1.0,
        backoff_cap: float = 60.0,
        retry_after_cap: float = 60.0,
        stream_idle: float = 300.0,
        sleep: Sleep | None = None,
        rng: random.Random | None = None,
        http_transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if not api_key:
            raise ValueError(f"{type(self).__name__} needs an API key")
        if not stream_idle > 0:
            raise ValueError("stream_idle must be positive")
        # A run stream silent this long is taken as a dead connection (and resumed).
        self.stream_idle = stream_idle
        self._http = Transport(
            base_url,
            auth_headers={"X-API-Key": api_key},
            timeout=timeout,
            max_attempts=max_attempts,
            backoff_base=backoff_base,
            backoff_cap=backoff_cap,
            retry_after_cap=retry_after_cap,
            sleep=sleep,
            rng=rng,
            http_transport=http_transport,
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}(base_url={self._http.base_url!r})"

    async def submit(self, submission: Submission, *, callback_url: str | None = None) -> str:
        """Start a run of the workflow; the engine POSTs its end to ``callback_url``.

        The POST is never retried once it may have reached the engine, so a run is never
        started twice.
        """
        body: dict[str, Any] = {"input": submission.input}
        version = submission.extra.get("workflow_version_id")
        if version:
            body["workflow_version_id"] = str(version)
        if callback_url is not None:
            body["callback_url"] = callback_url
        answer = await self._http.request_json(
            "POST",
            f"v1/workflows/{path_segment(submission.application)}/runs",
            json_body=body,
            idempotent=False,
        )
        run = _run_object(answer)
        run_id = first_str(run.get("id"), run.get("run_id"))
        if run_id is None:
            raise ProviderError("the engine answered a new run without an id")
        return run_id

    async def run_document(self, application: str, run_id: str) -> Mapping[str, Any]:
        """The run as the engine describes it (status, progress, output, ...)."""
        path = f"v1/workflows/{path_segment(application)}/runs/{path_segment(run_id)}"
        return _run_object(await self._http.request_json("GET", path, idempotent=True))

    async def status(self, application: str, run_id: str) -> RunState:
        run = await self.run_document(application, run_id)
        moment = run.get("finished_at") or run.get("updated_at")
        return RunState(
            run_id=run_id,
            application=first_str(run.get("workflow_id")) or application,
            status=self._status(run.get("status")),
            updated_at=parse_time(moment) if moment else None,
            raw=run,
        )

    async def result(self, application: str, run_id: str) -> RunResult:
        """The run's ``output`` once completed; its error once failed."""
        run = await self.run_document(application, run_id)
        status = self._status(run.get("status"))
        output = run.get("output", run.get("result")) if status is RunStatus.SUCCEEDED else None
        error = None
        if status is RunStatus.FAILED:
            error = first_str(run.get("error"), run.get("error_message")) or "run failed"
        return RunResult(run_id=run_id, status=status, output=output, error=error, raw=run)

    async def cancel(self, application: str, run_id: str) -> None:
        # Stopping a stopped run changes nothing, so this POST is safe to retry.
        await self._http.request("POST", f"v1/runs/{path_segment(run_id)}/stop", idempotent=True)

    async def follow(
        self, application: str, run_id: str, *, after: str | None = None
    ) -> AsyncIterator[StreamedState]:
        """The run's event stream (``GET /v1/runs/{run}/events``, resumed with ``?etag=``
        after message ``after``), as the official client reads it: ``message`` events
        whose JSON carries ``data.workflow_status`` and the message id ``redisId``."""
        params = {"etag": after} if after else None
        path = f"v1/runs/{path_segment(run_id)}/events"
        async with self._http.stream(path, params=params, read_timeout=self.stream_idle) as lines:
            async for event in read_events(lines):
                if event.event != "message":
                    continue
                message = _stream_message(event.data)
                state = RunState(
                    run_id=run_id,
                    application=application,
                    status=self._status(message["data"].get("workflow_status")),
                    raw=message,
                )
                yield StreamedState(state, first_str(message.get("redisId"), event.id))
                if state.status.is_terminal:
                    return

    def parse_event(self, payload: Any, *, delivery_id: str) -> RunEvent:
        return read_callback(payload, delivery_id=delivery_id, provider=self.name)

    def _status(self, word: Any) -> RunStatus:
        try:
            return status_from_noxus(word, platform=self.name)
        except UnknownStatus as exc:
            raise ProviderError(f"the engine answered {exc}") from None


def _stream_message(data: str) -> Mapping[str, Any]:
    """One stream message's JSON, with its ``data`` object; ProviderError otherwise."""
    try:
        message = json.loads(data)
    except ValueError:
        raise ProviderError("the engine streamed a message that is not JSON") from None
    if not isinstance(message, dict) or not isinstance(message.get("data"), dict):
        raise ProviderError("the engine streamed a message without a data object")
    return message


def _run_object(answer: Any) -> Mapping[str, Any]:
    """The run document, whether the answer wraps it in ``run`` / ``data`` or not."""
    document = as_mapping(answer)
    for key in ("run", "data"):
        inner = document.get(key)
        if isinstance(inner, Mapping):
            return inner
    return document


def read_callback(payload: Any, *, delivery_id: str, provider: str) -> RunEvent:
    """A callback body (the run document) as a `RunEvent` of `provider`;
    `PayloadNotUnderstood` for anything else.

    The run may also sit under ``run`` or ``data``; its id is ``id`` or ``run_id``, its
    status ``status``, its workflow ``workflow_id``, its time ``finished_at``, else
    ``updated_at``, else ``created_at``.
    """
    if not isinstance(payload, Mapping):
        raise PayloadNotUnderstood("payload is not a JSON object")
    run = _run_object(payload)
    run_id = first_str(run.get("run_id"), run.get("id"))
    if run_id is None:
        raise PayloadNotUnderstood("no run id (id or run_id) in the payload")
    try:
        status = status_from_noxus(run.get("status"), platform=provider)
    except UnknownStatus as exc:
        raise PayloadNotUnderstood(str(exc)) from None
    moment = next(
        (run[key] for key in ("finished_at", "updated_at", "created_at") if run.get(key)), None
    )
    return RunEvent(
        delivery_id=delivery_id,
        provider=provider,
        application=first_str(run.get("workflow_id"), payload.get("workflow_id")) or "",
        run_id=run_id,
        status=status,
        occurred_at=parse_time(moment),
        origin=Origin.WEBHOOK,
        payload=payload,
    )


def parse_event(payload: Any, *, delivery_id: str) -> RunEvent:
    """A Noxus callback body as a `RunEvent` of provider `noxus` (see `read_callback`)."""
    return read_callback(payload, delivery_id=delivery_id, provider="noxus")


def _sample_payload(run_id: str, application: str, status: RunStatus) -> dict[str, Any]:
    # The fake engine's own document, not one written here: a body this module builds
    # would only repeat this module's reading of the format.
    from datetime import UTC, datetime

    from listener.testing.noxus_documents import run_document

    words = {"succeeded": "completed", "canceled": "stopped", "expired": "failed"}
    now = datetime.now(UTC)
    return run_document(
        run_id=run_id,
        workflow_id=application,
        group_id="",
        input={},
        status=words.get(status.value, status.value),
        progress=100 if status.is_terminal else 0,
        created_at=now,
        finished_at=now if status.is_terminal else None,
    )


KIND: Final = ProviderKind(
    name="noxus",
    factory=NoxusProvider,
    parse_event=parse_event,
    status_words=STATUS_WORDS,
    sample_payload=_sample_payload,
    streams=True,
)
