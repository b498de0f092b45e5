"""Runs on the fake Noxus engine: what each is told to do, its state, and its event log."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from listener.testing.noxus_documents import (
    ENGINE_FINAL_STATUSES,
    run_document,
    stream_message,
)

__all__ = ["NoxusPlan", "NoxusPlanSource", "NoxusRun", "parse_redis_id"]


@dataclass(frozen=True, slots=True)
class NoxusPlan:
    """How a fake run goes. Times are in engine seconds, multiplied by ``time_scale``.

    ``queued_for=None`` keeps the run queued until :meth:`FakeNoxusEngine.start_run`;
    ``runs_for=None`` keeps it running until :meth:`FakeNoxusEngine.finish` or a stop.
    ``output=None`` makes the output ``{"echo": <the input>}``.
    """

    status: str = "completed"
    queued_for: float | None = 0.0
    runs_for: float | None = 0.0
    output: dict[str, Any] | None = None
    error: str = "the workflow failed"

    def __post_init__(self) -> None:
        if self.status not in ENGINE_FINAL_STATUSES:
            raise ValueError(f"a plan ends completed, failed or stopped, not {self.status!r}")


NoxusPlanSource = NoxusPlan | Callable[["NoxusRun"], NoxusPlan]


def parse_redis_id(value: str) -> tuple[int, int]:
    """An event id (``<milliseconds>-<sequence>``) as a comparable pair; ValueError else."""
    millis, dash, sequence = value.partition("-")
    if not dash or not millis.isdigit() or not sequence.isdigit():
        raise ValueError(f"not an event id: {value!r}")
    return int(millis), int(sequence)


@dataclass
class NoxusRun:
    """One run of a workflow; ``status`` is the engine's word for it."""

    id: str
    workflow_id: str
    group_id: str
    input: dict[str, Any]
    created_at: datetime
    plan: NoxusPlan = field(default_factory=NoxusPlan)
    callback_url: str | None = None
    workflow_version_id: str | None = None
    status: str = "queued"
    progress: int = 0
    finished_at: datetime | None = None
    output: dict[str, Any] | None = None
    error: str | None = None
    # The run's event stream so far: every message, in order, each with its id.
    events: list[dict[str, Any]] = field(default_factory=list)
    _wakeup: asyncio.Event = field(default_factory=asyncio.Event, repr=False)

    @property
    def is_final(self) -> bool:
        return self.status in ENGINE_FINAL_STATUSES

    def document(self) -> dict[str, Any]:
        return run_document(
            run_id=self.id,
            workflow_id=self.workflow_id,
            group_id=self.group_id,
            input=self.input,
            status=self.status,
            progress=self.progress,
            created_at=self.created_at,
            finished_at=self.finished_at,
            output=self.output,
            error=self.error,
        )

    def log_status(self) -> None:
        """Add the current status to the event stream and wake its readers."""
        millis = int(self.created_at.timestamp() * 1000)
        redis_id = f"{millis}-{len(self.events)}"
        self.events.append(stream_message(self.id, self.status, self.progress, redis_id))
        self.wake()

    def wake(self) -> None:
        woken, self._wakeup = self._wakeup, asyncio.Event()
        woken.set()

    def next_change(self) -> asyncio.Event:
        """Set at the next change; take it before reading :attr:`events`."""
        return self._wakeup

    def events_after(self, etag: str | None) -> int:
        """Where a stream resumed after event ``etag`` starts (0: from the first event)."""
        if not etag:
            return 0
        after = parse_redis_id(etag)
        for index, event in enumerate(self.events):
            if parse_redis_id(event["redisId"]) > after:
                return index
        return len(self.events)
