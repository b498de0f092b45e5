"""Nextmv Cloud: runs over its REST API, and its `run.status` webhooks.

Nextmv webhooks are account-level endpoints (see :meth:`NextmvProvider.register_webhook`),
not per-run callbacks, so :meth:`NextmvProvider.submit` ignores ``callback_url``: register
the listener's endpoint once and every run of the account reports there.
"""

from __future__ import annotations

import json
import random
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import httpx

from listener.events import Origin, RunEvent, RunStatus, UnknownStatus, status_from_words
from listener.providers._transport import (
    Transport,
    TransportClient,
    as_mapping,
    first_str,
    path_segment,
    str_options,
)
from listener.providers.base import (
    Pace,
    PayloadNotUnderstood,
    ProviderError,
    RunResult,
    RunState,
    Submission,
)
from listener.providers.kinds import ProviderKind
from listener.providers.native import parse_time
from listener.sending import Sleep, compact_json

__all__ = [
    "DEFAULT_BASE_URL",
    "KIND",
    "STATUS_WORDS",
    "UPLOAD_THRESHOLD",
    "NextmvProvider",
    "RunPage",
    "parse_event",
    "status_from_nextmv",
]

DEFAULT_BASE_URL: Final = "https://api.cloud.nextmv.io"
# Inputs larger than this (as compact JSON) go through an upload URL, as the official SDK does.
UPLOAD_THRESHOLD: Final = 5 * 1024 * 1024
EVENT_TYPES: Final = ("run.status",)
STATUS_WORDS: Final[Mapping[str, RunStatus]] = {
    # "none" is what Nextmv reports before a run is scheduled.
    "none": RunStatus.QUEUED,
    "queued": RunStatus.QUEUED,
    "running": RunStatus.RUNNING,
    "succeeded": RunStatus.SUCCEEDED,
    "failed": RunStatus.FAILED,
    "canceled": RunStatus.CANCELED,
}


def status_from_nextmv(word: object) -> RunStatus:
    """Map a Nextmv `status_v2` word."""
    return status_from_words("nextmv", STATUS_WORDS, word)


def _format(input_type: str) -> dict[str, Any]:
    return {"format": {"input": {"type": input_type}, "output": {"type": "json"}}}


@dataclass(frozen=True, slots=True)
class RunPage:
    """One page of a run listing and the token of the next one (None on the last page)."""

    runs: list[Mapping[str, Any]]
    next_page_token: str | None = None


@dataclass(frozen=True, slots=True)
class _Encoded:
    data: bytes
    input_type: str
    content_type: str
    inline: bool
    value: Any = field(default=None)


class NextmvProvider(TransportClient):
    """A Nextmv Cloud account, through its REST API.

    ``Submission.application`` is the application id; ``Submission.extra`` may hold
    ``instance_id`` (else the provider's default) and ``configuration`` (else a JSON or text
    format configuration matching the input).

    ``status_pages`` bounds how many pages of the run listing (50 runs a page on the real
    API) one batch status check reads (see :meth:`statuses`); runs it does not reach are
    asked about one by one.
    """

    name = "nextmv"

    def __init__(
        self,
        api_key: str,
        *,
        base_url: str = DEFAULT_BASE_URL,
        instance_id: str | None = None,
        timeout: float = 30.0,
        max_attempts: int = 5,
        backoff_base: float = 1.0,
        backoff_cap: float = 60.0,
        retry_after_cap: float = 60.0,
        upload_threshold: int = UPLOAD_THRESHOLD,
        status_pages: int = 20,
        sleep: Sleep | None = None,
        rng: random.Random | None = None,
        http_transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if not api_key:
            raise ValueError("NextmvProvider needs an API key")
        if status_pages < 1:
            raise ValueError("status_pages must be at least 1")
        self.instance_id = instance_id
        self.upload_threshold = upload_threshold
        self.status_pages = status_pages
        self._http = Transport(
            base_url,
            auth_headers={"Authorization": f"Bearer {api_key}"},
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
        return f"NextmvProvider(base_url={self._http.base_url!r}, instance_id={self.instance_id!r})"

    # --- runs ---------------------------------------------------------------------------

    async def submit(self, submission: Submission, *, callback_url: str | None = None) -> str:
        """Start a run and return its id; ``callback_url`` is ignored (webhooks are per account).

        The new-run POST is never retried once it may have reached the platform, so a run
        is never started twice; the upload steps before it are safe to repeat.
        """
        app = _app_path(submission.application)
        encoded = _encode_input(submission.input)
        body: dict[str, Any] = {}
        if encoded.inline and len(encoded.data) <= self.upload_threshold:
            body["input"] = encoded.value
        else:
            body["upload_id"] = await self._upload(app, encoded)
        if submission.name is not None:
            body["name"] = submission.name
        if submission.description is not None:
            body["description"] = submission.description
        if submission.options:
            body["options"] = str_options(submission.options)
        configuration = submission.extra.get("configuration")
        body["configuration"] = (
            configuration if configuration is not None else _format(encoded.input_type)
        )
        instance_id = submission.extra.get("instance_id", self.instance_id)
        params = {"instance_id": str(instance_id)} if instance_id else None
        answer = await self._http.request_json(
            "POST", f"{app}/runs", params=params, json_body=body, idempotent=False
        )
        run_id = first_str(as_mapping(answer).get("run_id"))
        if run_id is None:
            raise ProviderError("Nextmv answered a new run without a run_id")
        return run_id

    async def _upload(self, app: str, encoded: _Encoded) -> str:
        # Asking twice for an upload URL only leaves one unused, so this POST may be retried.
        answer = as_mapping(
            await self._http.request_json("POST", f"{app}/runs/uploadurl", idempotent=True)
        )
        upload_id = first_str(answer.get("upload_id"))
        upload_url = first_str(answer.get("upload_url"))
        if upload_id is None or upload_url is None:
            raise ProviderError("Nextmv answered an upload URL request without upload_id/url")
        # A pre-signed storage URL: sending our bearer key there would leak it (and fail).
        await self._http.request(
            "PUT",
            upload_url,
            content=encoded.data,
            headers={"Content-Type": encoded.content_type},
            auth=False,
            idempotent=True,
        )
        return upload_id

    async def run_information(self, application: str, run_id: str) -> Mapping[str, Any]:
        """The run's metadata document (no output)."""
        path = f"{_run_path(application, run_id)}/metadata"
        return as_mapping(await self._http.request_json("GET", path, idempotent=True))

    async def status(self, application: str, run_id: str) -> RunState:
        info = await self.run_information(application, run_id)
        metadata = as_mapping(info.get("metadata"))
        status = _status_of(info)
        return RunState(
            run_id=run_id,
            application=first_str(metadata.get("application_id")) or application,
            status=status,
            updated_at=None,
            raw=info,
        )

    async def result(self, application: str, run_id: str) -> RunResult:
        """The run's final information; a large output is fetched through its download URL."""
        path = _run_path(application, run_id)
        info = as_mapping(await self._http.request_json("GET", path, idempotent=True))
        status = _status_of(info)
        metadata = as_mapping(info.get("metadata"))
        output: Any = None
        error: str | None = None
        if status is RunStatus.SUCCEEDED:
            output = info.get("output")
            # The platform leaves a large output out of the run document; it is downloaded.
            if output is None and metadata.get("output_size") != 0:
                output = await self._download_output(path)
        elif status is RunStatus.FAILED:
            error_log = as_mapping(info.get("error_log"))
            error = first_str(error_log.get("error"), metadata.get("error")) or "run failed"
        return RunResult(run_id=run_id, status=status, output=output, error=error, raw=info)

    async def _download_output(self, run_path: str) -> Any:
        answer = as_mapping(
            await self._http.request_json(
                "GET", f"{run_path}/output", params={"format": "url"}, idempotent=True
            )
        )
        url = first_str(answer.get("url"))
        if url is None:
            raise ProviderError("Nextmv answered an output URL request without a url")
        response = await self._http.request("GET", url, auth=False, idempotent=True)
        try:
            return json.loads(response.content)
        except ValueError:
            return response.text

    async def cancel(self, application: str, run_id: str) -> None:
        # Canceling twice cancels once, so the PATCH is retried like a read.
        await self._http.request(
            "PATCH", f"{_run_path(application, run_id)}/cancel", idempotent=True
        )

    async def logs(self, application: str, run_id: str) -> str:
        answer = await self._http.request_json(
            "GET", f"{_run_path(application, run_id)}/logs", idempotent=True
        )
        log = as_mapping(answer).get("log")
        return log if isinstance(log, str) else ""

    async def runs_page(self, application: str, page_token: str | None = None) -> RunPage:
        """One page of the application's runs, newest first as the platform orders them."""
        params = {"pagereturn": "true"}
        if page_token:
            params["pagetoken"] = page_token
        answer = as_mapping(
            await self._http.request_json(
                "GET", f"{_app_path(application)}/runs", params=params, idempotent=True
            )
        )
        runs = [run for run in answer.get("runs") or [] if isinstance(run, Mapping)]
        return RunPage(runs=runs, next_page_token=first_str(answer.get("next_page_token")))

    async def list_runs(
        self, application: str, page_token: str | None = None
    ) -> AsyncIterator[Mapping[str, Any]]:
        """Every run of the application from ``page_token`` on, page after page."""
        seen: set[str] = set()
        token = page_token
        while True:
            page = await self.runs_page(application, token)
            for run in page.runs:
                yield run
            token = page.next_page_token
            # A token seen before would loop forever; the listing is complete.
            if token is None or token in seen:
                return
            seen.add(token)

    async def statuses(
        self,
        application: str,
        run_ids: Sequence[str],
        *,
        max_pages: int | None = None,
        min_hits: int = 2,
        pace: Pace | None = None,
    ) -> dict[str, RunState]:
        """Many runs' states from the run listing, one call a page: the poller's batch check.

        Pages are read newest first while runs of `run_ids` are missing and a further
        page is likely to cost less than asking them one by one: while the last page
        held at least `min_hits` of them (deeper pages hold fewer unfinished runs), or
        more of them are missing than pages were read. `max_pages` (default: the
        provider's `status_pages`) bounds the read. Runs of `run_ids` not found are left
        out (the caller asks about those one by one). The answer also holds every other
        run on the pages read: they came at no extra cost, and a caller watching them too
        may use what they say. `pace`, when given, is awaited before each page request,
        so a caller's rate limit counts every page (retries of one page by the transport
        are paced by its own backoff, as for any other call).
        """
        wanted = set(run_ids)
        found: dict[str, RunState] = {}
        missing = len(wanted)
        token: str | None = None
        seen_tokens: set[str] = set()
        limit = self.status_pages if max_pages is None else max_pages
        for pages in range(1, limit + 1):
            if pace is not None:
                await pace()
            page = await self.runs_page(application, token)
            hits = 0
            for info in page.runs:
                run_id = first_str(info.get("id"))
                if run_id is None or run_id in found:
                    continue
                try:
                    status = _status_of(info)
                except ProviderError:
                    continue
                found[run_id] = RunState(run_id, application, status, raw=info)
                if run_id in wanted:
                    hits += 1
            token = page.next_page_token
            missing -= hits
            # A token seen before would only repeat pages already read.
            if token is None or token in seen_tokens or missing == 0:
                break
            if hits < min_hits and missing <= pages:
                break
            seen_tokens.add(token)
        return found

    # --- webhooks -----------------------------------------------------------------------

    async def register_webhook(
        self, endpoint_id: str, endpoint_url: str, description: str = ""
    ) -> Mapping[str, Any]:
        """Create an account-level endpoint receiving `run.status` events for every run."""
        body = {
            "id": endpoint_id,
            "event_types": list(EVENT_TYPES),
            "endpoint_url": endpoint_url,
            "description": description,
        }
        return as_mapping(
            await self._http.request_json("POST", "v1/webhooks", json_body=body, idempotent=False)
        )

    async def list_webhooks(self) -> Any:
        """The account's endpoints, as the API lists them (see `parse_endpoints`)."""
        return await self._http.request_json("GET", "v1/webhooks", idempotent=True)

    async def delete_webhook(self, endpoint_id: str) -> None:
        """Delete an endpoint; a missing one is not an error (already gone)."""
        try:
            await self._http.request(
                "DELETE", f"v1/webhooks/{path_segment(endpoint_id)}", idempotent=True
            )
        except ProviderError as exc:
            if exc.status_code != 404:
                raise

    async def webhook_secret(self, endpoint_id: str) -> str:
        """The signing secret of an endpoint, for the receiver's `nextmv` scheme."""
        answer = await self._http.request_json(
            "GET", f"v1/webhooks/{path_segment(endpoint_id)}/secret", idempotent=True
        )
        if isinstance(answer, str) and answer:
            return answer
        secret = first_str(as_mapping(answer).get("secret"))
        if secret is None:
            raise ProviderError("Nextmv answered a webhook secret request without a secret")
        return secret

    def parse_event(self, payload: Any, *, delivery_id: str) -> RunEvent:
        return parse_event(payload, delivery_id=delivery_id)


def _app_path(application: str) -> str:
    return f"v1/applications/{path_segment(application)}"


def _run_path(application: str, run_id: str) -> str:
    return f"{_app_path(application)}/runs/{path_segment(run_id)}"


def _status_of(info: Mapping[str, Any]) -> RunStatus:
    metadata = as_mapping(info.get("metadata"))
    word = metadata.get("status_v2", info.get("status_v2"))
    try:
        return status_from_nextmv(word)
    except UnknownStatus as exc:
        raise ProviderError(f"Nextmv answered {exc}") from None


def _encode_input(value: Any) -> _Encoded:
    if isinstance(value, str):
        return _Encoded(value.encode(), "text", "text/plain; charset=utf-8", inline=False)
    if isinstance(value, bytes | bytearray):
        return _Encoded(bytes(value), "text", "application/octet-stream", inline=False)
    try:
        data = compact_json(value)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"run input is neither text nor JSON-serialisable: {exc}") from None
    return _Encoded(data, "json", "application/json", inline=True, value=value)


# --- webhook payloads -----------------------------------------------------------------------


def parse_event(payload: Any, *, delivery_id: str) -> RunEvent:
    """A `run.status` webhook body as a `RunEvent`; `PayloadNotUnderstood` for anything else.

    Nextmv does not publish the exact body, so this reads it tolerantly: the run may sit under
    ``data.run``, ``data``, ``payload.run``, ``payload`` or at the top; its id is ``run_id``
    or ``id``; its status ``status_v2`` or ``status``, also under ``metadata``; the
    application ``application_id``. A top-level ``id`` beside a ``data`` or ``payload``
    object is the event's id, not the run's, and is not used. Pure: no I/O, and no exception
    other than `PayloadNotUnderstood` whatever JSON value it is given.
    """
    if not isinstance(payload, Mapping):
        raise PayloadNotUnderstood("payload is not a JSON object")
    candidates = _candidates(payload)
    run_id: str | None = None
    for candidate, nested in candidates:
        # A top-level id beside a nested run object is the event's id, not the run's.
        own_id = candidate.get("id") if nested or len(candidates) == 1 else None
        run_id = first_str(candidate.get("run_id"), own_id)
        if run_id is not None:
            break
    if run_id is None:
        raise PayloadNotUnderstood("no run id (run_id or id) in the payload")

    word: Any = None
    for candidate, _ in candidates:
        metadata = as_mapping(candidate.get("metadata"))
        for value in (
            candidate.get("status_v2"),
            candidate.get("status"),
            metadata.get("status_v2"),
            metadata.get("status"),
        ):
            if isinstance(value, str) and value:
                word = value
                break
        if word is not None:
            break
    if word is None:
        raise PayloadNotUnderstood("no run status (status_v2 or status) in the payload")
    try:
        status = status_from_nextmv(word)
    except UnknownStatus as exc:
        raise PayloadNotUnderstood(str(exc)) from None

    application = ""
    occurred: Any = None
    for candidate, _ in candidates:
        metadata = as_mapping(candidate.get("metadata"))
        if not application:
            application = (
                first_str(candidate.get("application_id"), metadata.get("application_id")) or ""
            )
        if occurred is None:
            for key in ("occurred_at", "updated_at", "timestamp"):
                occurred = candidate.get(key, metadata.get(key))
                if occurred is not None:
                    break
    return RunEvent(
        delivery_id=delivery_id,
        provider="nextmv",
        application=application,
        run_id=run_id,
        status=status,
        occurred_at=parse_time(occurred),
        origin=Origin.WEBHOOK,
        payload=payload,
    )


def _candidates(payload: Mapping[str, Any]) -> list[tuple[Mapping[str, Any], bool]]:
    """Objects that may describe the run, most specific first, each with a nested flag."""
    found: list[tuple[Mapping[str, Any], bool]] = []
    for key in ("data", "payload"):
        outer = payload.get(key)
        if isinstance(outer, Mapping):
            inner = outer.get("run")
            if isinstance(inner, Mapping):
                found.append((inner, True))
            found.append((outer, True))
    run = payload.get("run")
    if isinstance(run, Mapping):
        found.append((run, True))
    found.append((payload, False))
    return found


def _sample_payload(run_id: str, application: str, status: RunStatus) -> dict[str, Any]:
    # The fake platform's builder, not one written here: a body this module builds would
    # only repeat this module's reading of the format.
    from listener.testing.payloads import nextmv_run_status_payload

    return nextmv_run_status_payload(run_id, application, status.value)


KIND: Final = ProviderKind(
    name="nextmv",
    factory=NextmvProvider,
    parse_event=parse_event,
    status_words=STATUS_WORDS,
    sample_payload=_sample_payload,
    # The Nextmv API has no run event stream: its runs end by webhook or poll.
    streams=False,
)
