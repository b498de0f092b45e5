"""A generic JSON API described in configuration: paths, fields and a status vocabulary.

Paths are templates holding ``{application}`` and ``{run_id}``; fields are dotted paths into
JSON answers (``data.run.id``, ``items.0.state``). Example::

    HttpProvider(
        "acme",
        "https://api.acme.example",
        submit_path="v2/apps/{application}/jobs",
        status_path="v2/jobs/{run_id}",
        cancel_path="v2/jobs/{run_id}/cancel",
        run_id_field="job.id",
        status_field="job.state",
        status_map={"done": "succeeded", "error": "failed", "waiting": "queued"},
        headers={"Authorization": "Bearer ..."},
    )
"""

from __future__ import annotations

import random
import string
from collections.abc import Mapping
from typing import Any, Final

import httpx

from listener.events import Origin, RunEvent, RunStatus, UnknownStatus
from listener.providers._transport import Transport, TransportClient, first_str, path_segment
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

__all__ = ["KIND", "HttpEventParser", "HttpProvider", "StatusMap", "get_field"]

_MISSING: Final = object()
_PLACEHOLDERS: Final = frozenset({"application", "run_id"})


def get_field(document: Any, path: str) -> Any:
    """The value at a dotted path (``a.b.0.c``; digits index lists), or None when absent."""
    current = document
    for part in path.split("."):
        if isinstance(current, Mapping):
            current = current.get(part, _MISSING)
        elif isinstance(current, list) and part.isascii() and part.isdigit():
            index = int(part)
            current = current[index] if index < len(current) else _MISSING
        else:
            return None
        if current is _MISSING:
            return None
    return current


class StatusMap:
    """Platform status words to ours; words not in the map may be our own words already."""

    def __init__(self, platform: str, mapping: Mapping[str, str] | None = None) -> None:
        self.platform = platform
        self._map: dict[str, RunStatus] = {}
        for word, ours in (mapping or {}).items():
            try:
                self._map[word.strip().lower()] = RunStatus(ours.strip().lower())
            except ValueError:
                raise ValueError(
                    f"status_map[{word!r}] = {ours!r} is not one of "
                    + ", ".join(s.value for s in RunStatus)
                ) from None

    def __call__(self, word: Any) -> RunStatus:
        if isinstance(word, str):
            key = word.strip().lower()
            if key in self._map:
                return self._map[key]
            try:
                return RunStatus(key)
            except ValueError:
                pass
        raise UnknownStatus(self.platform, word)


class HttpEventParser:
    """Reads a callback body through configured dotted paths; pure."""

    def __init__(
        self,
        provider: str,
        *,
        run_id_field: str,
        status_field: str,
        status_map: StatusMap,
        application_field: str | None = None,
        time_field: str | None = None,
    ) -> None:
        self.provider = provider
        self.run_id_field = run_id_field
        self.status_field = status_field
        self.status_map = status_map
        self.application_field = application_field
        self.time_field = time_field

    def __call__(self, payload: Any, *, delivery_id: str) -> RunEvent:
        if not isinstance(payload, Mapping):
            raise PayloadNotUnderstood("payload is not a JSON object")
        run_id = _id_text(get_field(payload, self.run_id_field))
        if run_id is None:
            raise PayloadNotUnderstood(f"no run id at {self.run_id_field!r}")
        try:
            status = self.status_map(get_field(payload, self.status_field))
        except UnknownStatus as exc:
            raise PayloadNotUnderstood(str(exc)) from None
        application = ""
        if self.application_field:
            application = first_str(get_field(payload, self.application_field)) or ""
        occurred = get_field(payload, self.time_field) if self.time_field else None
        return RunEvent(
            delivery_id=delivery_id,
            provider=self.provider,
            application=application,
            run_id=run_id,
            status=status,
            occurred_at=parse_time(occurred),
            origin=Origin.WEBHOOK,
            payload=payload,
        )


def _id_text(value: Any) -> str | None:
    """Run ids as text; integer ids (common in generic APIs) are read as their digits."""
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return first_str(value)


def _check_template(name: str, template: str | None) -> None:
    if template is None:
        return
    try:
        fields = {f for _, f, _, _ in string.Formatter().parse(template) if f is not None}
    except ValueError as exc:
        raise ValueError(f"{name} {template!r} is not a valid template: {exc}") from None
    unknown = fields - _PLACEHOLDERS
    if unknown:
        raise ValueError(
            f"{name} {template!r} uses {sorted(unknown)}; only {{application}} and {{run_id}}"
        )


class HttpProvider(TransportClient):
    """A platform whose JSON API is described by paths and dotted fields.

    Submit sends ``{input_field: input, "options": {...}, callback_field: callback_url}``
    (a field set to None is left out) and reads the run id at ``run_id_field``. Status and
    result read ``status_field``; result also reads ``output_field`` and ``error_field``.
    Callback bodies are read at ``event_run_id_field`` / ``event_status_field`` (the same as
    the API fields unless given).
    """

    def __init__(
        self,
        name: str,
        base_url: str,
        *,
        submit_path: str,
        status_path: str,
        result_path: str | None = None,
        cancel_path: str | None = None,
        run_id_field: str = "id",
        status_field: str = "status",
        status_map: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        input_field: str | None = "input",
        options_field: str | None = "options",
        callback_field: str | None = "callback_url",
        output_field: str = "output",
        error_field: str = "error",
        cancel_method: str = "POST",
        event_run_id_field: str | None = None,
        event_status_field: str | None = None,
        event_application_field: str | None = None,
        event_time_field: str | None = None,
        timeout: float = 30.0,
        max_attempts: int = 5,
        backoff_base: float = 1.0,
        backoff_cap: float = 60.0,
        retry_after_cap: float = 60.0,
        sleep: Sleep | None = None,
        rng: random.Random | None = None,
        http_transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if not name:
            raise ValueError("HttpProvider needs a name")
        for label, template in (
            ("submit_path", submit_path),
            ("status_path", status_path),
            ("result_path", result_path),
            ("cancel_path", cancel_path),
        ):
            _check_template(label, template)
        self.name = name
        self.submit_path = submit_path
        self.status_path = status_path
        self.result_path = result_path or status_path
        self.cancel_path = cancel_path
        self.run_id_field = run_id_field
        self.status_field = status_field
        self.input_field = input_field
        self.options_field = options_field
        self.callback_field = callback_field
        self.output_field = output_field
        self.error_field = error_field
        self.cancel_method = cancel_method.upper()
        self.status_map = StatusMap(name, status_map)
        self._parser = HttpEventParser(
            name,
            run_id_field=event_run_id_field or run_id_field,
            status_field=event_status_field or status_field,
            status_map=self.status_map,
            application_field=event_application_field,
            time_field=event_time_field,
        )
        # Every configured header may be a credential: all are scrubbed from error text.
        self._http = Transport(
            base_url,
            auth_headers=headers,
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
        return f"HttpProvider(name={self.name!r}, base_url={self._http.base_url!r})"

    @property
    def parser(self) -> HttpEventParser:
        return self._parser

    def _path(self, template: str, application: str, run_id: str = "") -> str:
        return template.format(application=path_segment(application), run_id=path_segment(run_id))

    async def submit(self, submission: Submission, *, callback_url: str | None = None) -> str:
        body: dict[str, Any] = {}
        if self.input_field:
            body[self.input_field] = submission.input
        if self.options_field and submission.options:
            body[self.options_field] = dict(submission.options)
        if self.callback_field and callback_url is not None:
            body[self.callback_field] = callback_url
        answer = await self._http.request_json(
            "POST",
            self._path(self.submit_path, submission.application),
            json_body=body,
            idempotent=False,
        )
        run_id = _id_text(get_field(answer, self.run_id_field))
        if run_id is None:
            raise ProviderError(f"{self.name} answered a new run without {self.run_id_field!r}")
        return run_id

    def _status(self, document: Any) -> RunStatus:
        try:
            return self.status_map(get_field(document, self.status_field))
        except UnknownStatus as exc:
            raise ProviderError(f"{self.name} answered {exc}") from None

    async def status(self, application: str, run_id: str) -> RunState:
        path = self._path(self.status_path, application, run_id)
        answer = await self._http.request_json("GET", path, idempotent=True)
        raw = answer if isinstance(answer, Mapping) else {"answer": answer}
        return RunState(run_id, application, self._status(answer), raw=raw)

    async def result(self, application: str, run_id: str) -> RunResult:
        path = self._path(self.result_path, application, run_id)
        answer = await self._http.request_json("GET", path, idempotent=True)
        status = self._status(answer)
        output = get_field(answer, self.output_field) if status is RunStatus.SUCCEEDED else None
        error = None
        if status is RunStatus.FAILED:
            error = first_str(get_field(answer, self.error_field)) or "run failed"
        raw = answer if isinstance(answer, Mapping) else {"answer": answer}
        return RunResult(run_id, status, output=output, error=error, raw=raw)

    async def cancel(self, application: str, run_id: str) -> None:
        if self.cancel_path is None:
            raise ProviderError(f"provider {self.name!r} has no cancel_path configured")
        # A cancel repeated changes nothing, so it is retried like a read.
        await self._http.request(
            self.cancel_method,
            self._path(self.cancel_path, application, run_id),
            idempotent=True,
        )

    def parse_event(self, payload: Any, *, delivery_id: str) -> RunEvent:
        return self._parser(payload, delivery_id=delivery_id)


# Each configured API lays out its callbacks its own way: the built provider carries the
# parser (`HttpProvider.parser`), registered under the provider's name when it is built.
KIND: Final = ProviderKind(name="http", factory=HttpProvider, named=True)
