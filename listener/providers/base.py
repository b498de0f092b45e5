"""What every platform integration provides: the `Provider` protocol and payload parsing."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

from listener.errors import PayloadNotUnderstood, ProviderError
from listener.events import RunEvent, RunStatus

__all__ = [
    "BatchStatus",
    "EventParser",
    "Pace",
    "PayloadNotUnderstood",
    "Provider",
    "ProviderError",
    "RunLinks",
    "RunResult",
    "RunState",
    "RunStream",
    "StreamedState",
    "Submission",
]


# Awaited before each platform request of a multi-request call (see `BatchStatus`): it
# returns when the caller's rate limit allows one more request.
Pace = Callable[[], Awaitable[None]]


class EventParser(Protocol):
    """Turns one verified webhook payload into a `RunEvent`; pure, no I/O.

    Raises `PayloadNotUnderstood` for anything it cannot read.
    """

    def __call__(self, payload: Any, *, delivery_id: str) -> RunEvent: ...


@dataclass(frozen=True, slots=True)
class Submission:
    """What to run: the input and the platform's own options for it."""

    application: str
    input: Any
    options: Mapping[str, str] = field(default_factory=dict)
    name: str | None = None
    description: str | None = None
    # Provider-specific extras (instance id, content type, ...).
    extra: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class RunState:
    """A run's status as the platform answers a status query."""

    run_id: str
    application: str
    status: RunStatus
    updated_at: datetime | None = None
    raw: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class RunResult:
    """A run's final information: status, output on success, error on failure."""

    run_id: str
    status: RunStatus
    output: Any = None
    error: str | None = None
    raw: Mapping[str, Any] = field(default_factory=dict)


@runtime_checkable
class Provider(Protocol):
    """One platform. `name` is what sources, runs and handler filters refer to."""

    name: str

    def parse_event(self, payload: Any, *, delivery_id: str) -> RunEvent: ...

    async def submit(self, submission: Submission, *, callback_url: str | None) -> str:
        """Start a run and return its id. Never retried in a way that could start two."""

    async def status(self, application: str, run_id: str) -> RunState: ...

    async def result(self, application: str, run_id: str) -> RunResult: ...

    async def cancel(self, application: str, run_id: str) -> None: ...

    async def aclose(self) -> None: ...


@runtime_checkable
class BatchStatus(Protocol):
    """Optional: a provider that can report many runs' statuses in one check (a run
    listing, read page by page), so the poller checks a whole batch of overdue runs at
    once."""

    async def statuses(
        self, application: str, run_ids: Sequence[str], *, pace: Pace | None = None
    ) -> dict[str, RunState]:
        """States of the runs it found; runs missing from the answer are left out.

        One check may take several platform requests (pages of a run listing). `pace`,
        when given, is awaited once before each of them, so a caller's rate limit counts
        every request, not the check as one; None sends them without waiting.
        """


@runtime_checkable
class RunLinks(Protocol):
    """Optional: a provider that knows more about a run it started than the caller said
    (a resumed run's origin), recorded in the run's metadata beside the caller's own."""

    def run_links(self, submission: Submission, run_id: str) -> Mapping[str, Any]:
        """Metadata for the new run; the caller's metadata wins on a shared key."""


@dataclass(frozen=True, slots=True)
class StreamedState:
    """One message of a run's event stream: the run's state, and where to resume after it
    (`resume_after`, passed back as `after=` to `RunStream.follow`; None: not resumable)."""

    state: RunState
    resume_after: str | None = None


@runtime_checkable
class RunStream(Protocol):
    """Optional: a provider whose platform streams a run's events as they happen, so the
    listener can learn a run's end from the stream rather than by polling for it."""

    def follow(
        self, application: str, run_id: str, *, after: str | None = None
    ) -> AsyncIterator[StreamedState]:
        """The run's states from its stream, beginning after the message `after` (None:
        from the stream's start), live, until the run ends. The iterator ends after a
        final state, or when the connection closes (resume with the last
        `resume_after`); failures are `ProviderError`, with `status_code` when the
        platform answered one (404: no stream for this run)."""
