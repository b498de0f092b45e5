"""What the fake platform is told and what it keeps: run plans, runs, deliveries, failures."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

from starlette.responses import JSONResponse, Response

from listener.sending import DeliveryResult, WebhookSender

__all__ = [
    "FINAL_STATUSES",
    "INLINE_OUTPUT_LIMIT",
    "ApiFailure",
    "DeliveryRecord",
    "DeliveryStats",
    "FakeRun",
    "PlanSource",
    "RunPlan",
    "TrackedResult",
    "WebhookEndpoint",
]

FINAL_STATUSES: Final = frozenset({"succeeded", "failed", "canceled"})
INLINE_OUTPUT_LIMIT: Final = 5 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class RunPlan:
    """How a fake run goes. Times are in platform seconds, multiplied by ``time_scale``.

    ``queued_for=None`` keeps the run queued until :meth:`FakePlatform.start_run`;
    ``runs_for=None`` keeps it running until :meth:`FakePlatform.finish` or a cancel.
    ``output=None`` makes the output ``{"echo": <the input>}``.
    """

    status: str = "succeeded"
    queued_for: float | None = 0.0
    runs_for: float | None = 0.0
    output: Any = None
    error: str = "the model failed"
    stdout: str = ""
    stderr: str = ""

    def __post_init__(self) -> None:
        if self.status not in FINAL_STATUSES:
            raise ValueError(f"a plan ends succeeded, failed or canceled, not {self.status!r}")


PlanSource = RunPlan | Callable[["FakeRun"], RunPlan]


@dataclass
class FakeRun:
    """One run on the fake platform; ``status`` is its ``status_v2`` word."""

    id: str
    application: str
    input: Any
    plan: RunPlan
    instance_id: str | None = None
    options: dict[str, str] = field(default_factory=dict)
    name: str = ""
    description: str = ""
    configuration: dict[str, Any] = field(default_factory=dict)
    upload_id: str | None = None
    input_size: int = 0
    status: str = "queued"
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    updated_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    started_at: datetime | None = None
    finished_at: datetime | None = None
    output: Any = None
    error: str = ""
    stdout: str = ""
    stderr: str = ""
    # A tracked run: one that ran elsewhere and was reported with its result.
    external: bool = False
    duration_ms: int | None = None

    @property
    def is_final(self) -> bool:
        return self.status in FINAL_STATUSES


@dataclass(frozen=True, slots=True)
class TrackedResult:
    """What an external (tracked) run reported: it ran elsewhere and ended so."""

    status: str
    output: Any = None
    error: str = ""
    logs: str = ""
    duration_ms: int | None = None


@dataclass
class DeliveryRecord:
    """One webhook event for one endpoint, and what became of it."""

    msg_id: str
    endpoint_id: str
    run_id: str
    status: str
    body: bytes
    dropped: bool = False
    duplicated: bool = False
    reordered: bool = False
    delay: float = 0.0
    results: list[DeliveryResult] = field(default_factory=list)
    status_codes: list[int | None] = field(default_factory=list)

    @property
    def payload(self) -> Any:
        return json.loads(self.body)

    @property
    def delivered(self) -> bool:
        return any(result.delivered for result in self.results)


@dataclass
class DeliveryStats:
    """Counters over every delivery; a duplicated event counts twice in ``sent``."""

    scheduled: int = 0  # events produced (one per status change per endpoint)
    sent: int = 0  # HTTP deliveries answered 2xx
    failed: int = 0  # deliveries given up after every attempt
    dropped: int = 0
    duplicated: int = 0
    reordered: int = 0
    attempts: int = 0  # HTTP POSTs made, retries included


@dataclass
class ApiFailure:
    """A scripted API failure: the next matching call(s) answer ``status``.

    ``route`` names a route (``runs.create``, ``runs.metadata``, ``runs.get``, ...; None
    matches every API call). With ``after_processing`` the call takes effect before the
    failure is answered, like a gateway timing out on a request the platform did handle.
    """

    status: int = 503
    route: str | None = None
    times: int = 1
    retry_after: str | None = None
    after_processing: bool = False

    def response(self) -> Response:
        headers = {"Retry-After": self.retry_after} if self.retry_after is not None else None
        return JSONResponse(
            {"error": f"injected failure {self.status}"}, self.status, headers=headers
        )


@dataclass
class WebhookEndpoint:
    """One registered webhook endpoint: where to send, how to sign, and its sender."""

    id: str
    url: str
    secret: str
    scheme: str
    description: str = ""
    sender: WebhookSender | None = None
    # A disabled endpoint is listed but sent nothing, as an account shows one it paused.
    enabled: bool = True
