"""A workflow engine (Noxus-style): runs of a workflow, each with its own callback URL.

Its callbacks carry no signature, so the callback URL handed to :meth:`WorkflowProvider.submit`
must itself be unguessable: the caller builds it from the receiver's per-run token URL.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
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
    Submission,
)
from listener.providers.kinds import ProviderKind
from listener.providers.native import parse_time
from listener.sending import Sleep

__all__ = ["KIND", "STATUS_WORDS", "WorkflowProvider", "parse_event", "status_from_workflow"]

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
# Our words the engine spells differently, for the sample callback `send-test` sends.
_ENGINE_WORDS: Final = {"succeeded": "completed", "canceled": "stopped"}


def status_from_workflow(word: object) -> RunStatus:
    """Map a workflow engine's run status word (`completed`, `stopped`, ...)."""
    return status_from_words("workflow", STATUS_WORDS, word)


class WorkflowProvider(TransportClient):
    """A workflow engine's REST API. ``Submission.application`` is the workflow id."""

    name = "workflow"

    def __init__(
        self,
        api_key: str,
        base_url: str,
        *,
        timeout: float = 30.0,
        max_attempts: int = 5,
        backoff_base: float = 1.0,
        backoff_cap: float = 60.0,
        retry_after_cap: float = 60.0,
        sleep: Sleep | None = None,
        rng: random.Random | None = None,
        http_transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if not api_key:
            raise ValueError("WorkflowProvider needs an API key")
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
        return f"WorkflowProvider(base_url={self._http.base_url!r})"

    async def submit(self, submission: Submission, *, callback_url: str | None = None) -> str:
        """Start a run of the workflow; the engine calls ``callback_url`` when it changes."""
        body: dict[str, Any] = {"input": submission.input}
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
            raise ProviderError("the workflow engine answered a new run without an id")
        return run_id

    async def _get(self, application: str, run_id: str) -> Mapping[str, Any]:
        path = f"v1/workflows/{path_segment(application)}/runs/{path_segment(run_id)}"
        return _run_object(await self._http.request_json("GET", path, idempotent=True))

    async def status(self, application: str, run_id: str) -> RunState:
        run = await self._get(application, run_id)
        return RunState(
            run_id=run_id,
            application=first_str(run.get("workflow_id")) or application,
            status=_status(run.get("status")),
            updated_at=parse_time(run["updated_at"]) if "updated_at" in run else None,
            raw=run,
        )

    async def result(self, application: str, run_id: str) -> RunResult:
        run = await self._get(application, run_id)
        status = _status(run.get("status"))
        output = run.get("output", run.get("result")) if status is RunStatus.SUCCEEDED else None
        error = None
        if status is RunStatus.FAILED:
            error = first_str(run.get("error"), run.get("error_message")) or "run failed"
        return RunResult(run_id=run_id, status=status, output=output, error=error, raw=run)

    async def cancel(self, application: str, run_id: str) -> None:
        # Stopping a stopped run changes nothing, so this POST is safe to retry.
        await self._http.request("POST", f"v1/runs/{path_segment(run_id)}/stop", idempotent=True)

    def parse_event(self, payload: Any, *, delivery_id: str) -> RunEvent:
        return parse_event(payload, delivery_id=delivery_id)


def _run_object(answer: Any) -> Mapping[str, Any]:
    """The run document, whether the engine wraps it in ``data`` / ``run`` or not."""
    document = as_mapping(answer)
    for key in ("run", "data"):
        inner = document.get(key)
        if isinstance(inner, Mapping):
            return inner
    return document


def _status(word: Any) -> RunStatus:
    try:
        return status_from_workflow(word)
    except UnknownStatus as exc:
        raise ProviderError(f"the workflow engine answered {exc}") from None


def parse_event(payload: Any, *, delivery_id: str) -> RunEvent:
    """A workflow engine callback body as a `RunEvent`; `PayloadNotUnderstood` otherwise.

    The run may sit under ``data`` or ``run`` or at the top; its id is ``run_id`` or ``id``,
    its status ``status``, its workflow ``workflow_id``.
    """
    if not isinstance(payload, Mapping):
        raise PayloadNotUnderstood("payload is not a JSON object")
    run = _run_object(payload)
    run_id = first_str(run.get("run_id"), run.get("id"))
    if run_id is None:
        raise PayloadNotUnderstood("no run id (run_id or id) in the payload")
    try:
        status = status_from_workflow(run.get("status"))
    except UnknownStatus as exc:
        raise PayloadNotUnderstood(str(exc)) from None
    return RunEvent(
        delivery_id=delivery_id,
        provider="workflow",
        application=first_str(run.get("workflow_id"), payload.get("workflow_id")) or "",
        run_id=run_id,
        status=status,
        occurred_at=parse_time(run.get("updated_at", run.get("occurred_at"))),
        origin=Origin.WEBHOOK,
        payload=payload,
    )


def _sample_payload(run_id: str, application: str, status: RunStatus) -> dict[str, Any]:
    word = _ENGINE_WORDS.get(status.value, status.value)
    return {"run_id": run_id, "workflow_id": application, "status": word}


KIND: Final = ProviderKind(
    name="workflow",
    factory=WorkflowProvider,
    parse_event=parse_event,
    status_words=STATUS_WORDS,
    sample_payload=_sample_payload,
)
