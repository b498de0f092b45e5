"""The store protocol and the records it hands out.

Every backend implements `Store`; the same contract tests run against each. Times are
timezone-aware UTC datetimes at this boundary, whatever a backend keeps on disk.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Generic, Protocol, TypeVar, runtime_checkable

from listener.errors import SchemaTooNew, StoreError, StoreUnavailable
from listener.events import Origin, RunEvent, RunStatus, Transition

__all__ = [
    "ON_END_HANDLER_PREFIX",
    "REPLAYABLE_STATES",
    "AuditRecord",
    "CallState",
    "Change",
    "HandlerCall",
    "NewRun",
    "Page",
    "PastTransition",
    "PruneCounts",
    "RecordResult",
    "RunEnd",
    "RunHistory",
    "RunRecord",
    "SchemaTooNew",
    "Store",
    "StoreCounts",
    "StoreError",
    "StoreUnavailable",
    "StoredEvent",
    "UnroutableRecord",
]

T = TypeVar("T")

# The handler name of a run's own end callback (`NewRun.on_end`), followed by its target.
ON_END_HANDLER_PREFIX = "on_end:"


class CallState(enum.StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    DONE = "done"
    DEAD = "dead"


# The states a call can be replayed from.
REPLAYABLE_STATES = (CallState.DEAD, CallState.DONE)


@dataclass(frozen=True, slots=True)
class NewRun:
    """A run the listener should watch, as registered at submission."""

    run_id: str
    provider: str
    application: str
    status: RunStatus = RunStatus.QUEUED
    submitted_at: datetime | None = None  # now, when left out
    # How long silence is trusted after news of the run before the poller asks the
    # provider; 0 means poll at once.
    grace_seconds: float = 60.0
    # How long after submission the first poll comes when the platform has said nothing
    # at all yet; None means `grace_seconds`. A short one catches a webhook path that is
    # down early, while a long grace keeps healthy runs free of polls.
    first_poll_seconds: float | None = None
    deadline: datetime | None = None
    callback: Mapping[str, Any] = field(default_factory=dict)
    metadata: Mapping[str, Any] = field(default_factory=dict)
    # A function ("package.module:function") to call once when the run ends, with
    # `on_end_context`: the store enqueues it with the run's terminal transition.
    on_end: str | None = None
    on_end_context: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class RunRecord:
    run_id: str
    provider: str
    application: str
    status: RunStatus
    submitted_at: datetime
    last_event_at: datetime | None
    grace_seconds: float
    deadline: datetime | None
    next_poll_at: datetime | None  # None once terminal
    poll_attempts: int  # status calls since the run's last news
    lease_owner: str | None
    lease_expires_at: datetime | None
    callback: Mapping[str, Any]
    metadata: Mapping[str, Any]
    updated_at: datetime
    status_calls: int = 0  # status calls made for the run over its life
    on_end: str | None = None
    on_end_context: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class RecordResult:
    """What one `Store.record` call did."""

    # The delivery id was seen before: nothing at all changed.
    duplicate: bool
    # The run was unknown to the store and was created from the event.
    run_created: bool
    # The transition applied, or None when the run did not move (a known or stale status).
    transition: Transition | None
    # The run's status after the call.
    status: RunStatus
    # Ids of the handler calls enqueued for the new transition.
    call_ids: tuple[int, ...] = ()
    # The run is recorded for another provider than the event's: nothing was stored, since
    # one platform's sender may not move another's runs.
    foreign: bool = False


@dataclass(frozen=True, slots=True)
class HandlerCall:
    """One handler to be called with one event (the one that made the transition)."""

    id: int
    handler: str
    run_id: str
    status: RunStatus
    event: RunEvent
    state: CallState
    attempts: int  # counted when claimed, so a crash mid-call still counts
    next_attempt_at: datetime
    last_error: str | None
    lease_owner: str | None
    lease_expires_at: datetime | None
    replays: int
    created_at: datetime
    updated_at: datetime
    # When its last attempt was claimed (None: never run, or handed back unstarted).
    started_at: datetime | None = None

    @property
    def last_duration(self) -> float | None:
        """Seconds its last finished attempt took, from claim to the write of its outcome;
        None while running or when it never ran."""
        if self.started_at is None or self.state is CallState.RUNNING:
            return None
        return max(0.0, (self.updated_at - self.started_at).total_seconds())


@dataclass(frozen=True, slots=True)
class UnroutableRecord:
    """A verified delivery whose payload could not be understood; kept, not dropped."""

    id: int
    source: str
    delivery_id: str | None
    reason: str
    body: bytes
    headers: Mapping[str, str]
    received_at: datetime


@dataclass(frozen=True, slots=True)
class PastTransition:
    """A transition the store holds, with the event that made it and when it was made."""

    run_id: str
    status: RunStatus
    created_at: datetime
    event: RunEvent

    @property
    def transition(self) -> Transition:
        return Transition(self.run_id, self.status)


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    items: list[T]
    # Opaque; pass it back to get the next page. None when there is no more.
    next_cursor: str | None


@dataclass(frozen=True, slots=True)
class StoreCounts:
    runs_by_status: Mapping[str, int]
    calls_by_state: Mapping[str, int]
    events: int
    unroutable: int


@dataclass(frozen=True, slots=True)
class PruneCounts:
    """What one `Store.prune` call deleted."""

    runs: int
    events: int
    transitions: int
    calls: int
    unroutable: int
    # A limit was reached: there may be more to delete, so call again.
    more: bool


@dataclass(frozen=True, slots=True)
class RunEnd:
    """A run's end as the store learned it: the event that moved it to its final status,
    how that event came (`origin`), when the platform says it happened and when it was
    recorded."""

    provider: str
    application: str
    status: RunStatus
    origin: Origin
    occurred_at: datetime
    received_at: datetime
    # Which run, and when it was submitted (or first heard of): with `occurred_at`, how
    # long it took, from which the poller learns each application's durations.
    run_id: str | None = None
    submitted_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class WebhookEpisode:
    """A provider's webhook state as every process on the store sees it: degraded since
    `since`, or not (`listener.watching`)."""

    provider: str
    degraded: bool
    since: datetime | None


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """An event as the store keeps it: with the time it was received."""

    event: RunEvent
    received_at: datetime


@dataclass(frozen=True, slots=True)
class RunHistory:
    """What the store holds of one run's story, oldest first (see `Store.run_history`)."""

    events: list[StoredEvent]
    transitions: list[PastTransition]


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """One operator action taken through a front end (the console): who took it, what it
    was, how many rows it touched, and its details (filters, ids)."""

    id: int
    at: datetime
    actor: str
    action: str
    count: int
    detail: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Change:
    """What another process committed to a shared store: whether it enqueued handler
    calls, and the runs it ended."""

    calls: bool
    ended: tuple[str, ...] = ()


@runtime_checkable
class Store(Protocol):
    """Durable runs, events, transitions and handler calls.

    `record` is the heart of it: one atomic operation that stores an event, moves its
    run, and enqueues handler calls for a new transition. When it returns, all of that
    is committed; when it raises `StoreUnavailable`, none of it is.
    """

    url: str

    async def open(self) -> None:
        """Connect and apply the schema (idempotent, safe across processes)."""

    async def close(self) -> None: ...

    async def ping(self) -> None:
        """Raise `StoreUnavailable` unless the store answers a trivial query."""

    async def list_run_ends(self, *, since: datetime, limit: int = 10_000) -> list[RunEnd]:
        """Runs that ended since `since`, newest first, at most `limit`."""
        ...

    async def take_budget(self, name: str, *, rate: float, burst: int, want: int) -> int:
        """Up to `want` tokens of the request budget `name`, shared by every process on
        this store: a bucket of `rate` tokens a second holding at most `burst`. Returns
        how many were granted, 0 when it is empty."""
        ...

    async def list_webhook_episodes(self) -> list[WebhookEpisode]:
        """Each provider's shared webhook state; a provider never moved is not listed."""
        ...

    async def move_webhook_episode(
        self, provider: str, *, was_degraded: bool, degraded: bool, since: datetime | None
    ) -> bool:
        """Move `provider`'s shared webhook state from `was_degraded` to `degraded` (since
        `since`). True if this call moved it; False if the state was no longer
        `was_degraded` (another process moved it first, and told the handlers)."""
        ...

    async def follow_changes(self, on_change: Callable[[Change], None]) -> None:
        """Report what other processes commit (`Change`) to `on_change`, until cancelled;
        a store with no such feed returns at once, and its readers find those commits by
        their own sweeps and reads."""

    async def schema_version(self) -> int: ...

    # -- runs ----------------------------------------------------------------------------

    async def register_run(self, run: NewRun) -> bool:
        """Record a run to watch. True if new; registering it again changes nothing.

        A run first created by its own event (the webhook beat the registration) takes
        the registration's details; if that event already ended it, the run's `on_end`
        call is enqueued here, so it is called once all the same."""

    async def get_run(self, run_id: str) -> RunRecord | None: ...

    async def list_runs(
        self,
        *,
        status: Sequence[RunStatus] | None = None,
        provider: str | None = None,
        application: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 100,
        cursor: str | None = None,
    ) -> Page[RunRecord]:
        """Runs, newest submitted first, filtered; `since`/`until` bound `submitted_at`."""

    # -- events --------------------------------------------------------------------------

    async def record(self, event: RunEvent, handlers: Sequence[str] = ()) -> RecordResult:
        """Store an event atomically; see `RecordResult` for what it reports.

        - A delivery id seen before: `duplicate=True`, nothing changes.
        - Otherwise the event is stored; an unknown run is created from it (grace and
          deadline defaults of the store); the run moves per `events.next_status`.
        - When the run moves, the transition (unique per run and status) is stored and
          one pending handler call per name in `handlers` is enqueued, due now; a
          terminal transition also enqueues the run's `on_end` call, if it has one.
        - `last_event_at` is set and the next poll is pushed back by the run's grace;
          a terminal run is never polled again.

        Concurrent calls are committed together in small groups; each call returns
        only once its own data is committed.
        """

    async def record_unroutable(
        self,
        *,
        source: str,
        delivery_id: str | None,
        reason: str,
        body: bytes,
        headers: Mapping[str, str],
    ) -> bool:
        """Keep a verified delivery that was not understood. False if that delivery id was
        already kept."""

    async def get_event(self, delivery_id: str) -> RunEvent | None: ...

    async def list_events(
        self,
        *,
        run_id: str | None = None,
        status: Sequence[RunStatus] | None = None,
        provider: str | None = None,
        application: str | None = None,
        origin: Origin | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 100,
        cursor: str | None = None,
    ) -> Page[RunEvent]:
        """Events, newest received first; `since`/`until` bound the time received."""

    async def list_unroutable(
        self, *, limit: int = 100, cursor: str | None = None
    ) -> Page[UnroutableRecord]: ...

    # -- handler calls -------------------------------------------------------------------

    async def claim_calls(
        self, owner: str, *, limit: int, lease_seconds: float, now: datetime | None = None
    ) -> list[HandlerCall]:
        """Claim due calls: pending with `next_attempt_at <= now`, or running with an
        expired lease (a crashed claimer). Each claimed call is `running`, leased to
        `owner` until now + lease, with `attempts` incremented.

        Calls for one run and one handler run in transition order: a call is not claimed
        while an earlier call for the same run and handler is pending or running.
        Two claimers never get the same call.
        """

    async def complete_call(self, call_id: int, owner: str) -> bool:
        """Mark done. False (and no change) if `owner` no longer holds the lease."""

    async def fail_call(
        self, call_id: int, owner: str, *, error: str, retry_at: datetime | None
    ) -> bool:
        """Record a failed attempt: pending again at `retry_at`, or dead when it is None.
        False (and no change) if `owner` no longer holds the lease."""

    async def release_call(self, call_id: int, owner: str) -> bool:
        """Give an unstarted or interrupted call back (shutdown): pending, due now, and
        the attempt it was claimed with is not counted."""

    async def replay_call(self, call_id: int) -> bool:
        """Make a dead or done call pending again with zero attempts; counts a replay.
        False when the call does not exist or is pending or running."""

    async def get_call(self, call_id: int) -> HandlerCall | None: ...

    async def list_calls(
        self,
        *,
        state: CallState | None = None,
        run_id: str | None = None,
        handler: str | None = None,
        limit: int = 100,
        cursor: str | None = None,
    ) -> Page[HandlerCall]:
        """Calls, newest first. `state=CallState.DEAD` lists the dead letters."""

    # -- bulk recovery -------------------------------------------------------------------
    # Keyset walks in ascending order and writes of one chunk each, for `listener.recovery`.

    async def find_calls(
        self,
        *,
        states: Sequence[CallState],
        handlers: Sequence[str] | None = None,
        provider: str | None = None,
        application: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        after_id: int = 0,
        limit: int = 500,
    ) -> list[int]:
        """Ids of calls in one of `states` (dead or done), of one of `handlers`, whose
        event is of `provider` and `application`, last changed in `[since, until)`, with an
        id above `after_id`: the first `limit`, lowest id first. None means any."""
        ...

    async def replay_calls(
        self, call_ids: Sequence[int], *, states: Sequence[CallState] = REPLAYABLE_STATES
    ) -> list[int]:
        """`replay_call` for each of `call_ids` still in one of `states`, in one
        transaction; the ids replayed. A call pending or running meanwhile is left alone."""
        ...

    async def list_transitions(
        self,
        *,
        since: datetime,
        until: datetime | None = None,
        limit: int = 500,
        cursor: str | None = None,
    ) -> Page[PastTransition]:
        """Transitions made in `[since, until)`, oldest first, with their events."""
        ...

    async def enqueue_calls(
        self, handler: str, transitions: Sequence[Transition], *, known_as: Sequence[str] = ()
    ) -> list[int]:
        """A pending call of `handler`, due now, for each of `transitions` that has no call
        of it yet (under its name or any of `known_as`), in one transaction; the new ids.
        Calling again with the same transitions enqueues nothing more."""
        ...

    async def scan_unroutable(
        self, *, after_id: int = 0, limit: int = 500
    ) -> list[UnroutableRecord]:
        """Unroutable deliveries with an id above `after_id`, oldest first, at most `limit`."""
        ...

    async def settle_unroutable(
        self, *, remove: Sequence[int] = (), reasons: Mapping[int, str] | None = None
    ) -> int:
        """In one transaction, delete the unroutable deliveries of `remove` and set the
        reason of those in `reasons`; how many were deleted."""
        ...

    async def run_history(self, run_id: str, *, limit: int = 1000) -> RunHistory:
        """One run's stored events (with the time each was received) and transitions,
        oldest first, at most `limit` of each."""
        ...

    # -- audit ---------------------------------------------------------------------------

    async def record_audit(
        self, *, actor: str, action: str, count: int, detail: Mapping[str, Any]
    ) -> int:
        """Keep one operator action (`AuditRecord`); its id."""
        ...

    async def list_audit(self, *, limit: int = 100, cursor: str | None = None) -> Page[AuditRecord]:
        """Operator actions, newest first."""
        ...

    # -- polling -------------------------------------------------------------------------

    async def claim_overdue_runs(
        self,
        owner: str,
        *,
        limit: int,
        lease_seconds: float,
        provider: str | None = None,
        now: datetime | None = None,
        due_by: datetime | None = None,
    ) -> list[RunRecord]:
        """Claim runs to poll: not terminal, with `next_poll_at <= due_by` (default now)
        or a deadline by then, and no lease unexpired at `now`. Soonest due first. Two
        claimers never get the same run while a lease holds."""

    async def reschedule_poll(
        self,
        run_id: str,
        owner: str,
        *,
        next_poll_at: datetime,
        attempts: int,
        status_call: bool = True,
    ) -> bool:
        """After a poll that learned nothing final: set the next poll time and attempt
        count, and release the lease; `status_call` False when the poller put the run
        off without asking its platform (it counts no call). False if `owner` no longer
        holds the lease."""

    async def bring_forward_polls(
        self,
        provider: str,
        application: str | None,
        *,
        submitted_before: datetime,
        later_than: datetime,
        to: datetime,
        exclude: Sequence[str] = (),
    ) -> int:
        """Move the next poll of one application's open runs (None: those of every
        application of `provider` not in `exclude`) submitted before `submitted_before`
        and not due until after `later_than` to `to`, if not polled since their last
        news (a polled run keeps its poller's plan); leased runs are left to their
        poller. Returns how many moved. The poller uses it to check runs past their
        application's expected end that silence would leave alone."""

    async def release_run(self, run_id: str, owner: str) -> bool:
        """Release a poll lease without changing the schedule."""

    async def mark_overdue(self, run_id: str) -> bool:
        """Note that `run_id` was reported overdue. True the first time only, whichever
        process asks, so each run is reported once (`listener.overdue`)."""
        ...

    # -- reporting -----------------------------------------------------------------------

    async def counts(self) -> StoreCounts: ...

    # -- retention -----------------------------------------------------------------------

    async def prune(self, *, before: datetime, limit: int = 1000) -> PruneCounts:
        """Delete what is finished and older than `before`, at most `limit` rows of each kind
        per call (so a large backlog is removed in several short transactions that do not
        hold up deliveries); call again while `counts.more`.

        In one transaction:
        - done handler calls of terminal runs, last changed before `before`;
        - terminal runs changed and submitted before `before` that have no handler call
          left at all, with all their events and transitions (a pending, running or dead
          call, or a recent done one, keeps its run and the run's events, so dead letters
          can still be replayed);
        - unroutable deliveries received before `before`.

        A run that is not terminal is never touched, nor are its events or calls: the
        poller still tracks it. `limit` (at least 1) caps the runs, the calls and the
        unroutable deliveries separately; a run's events and transitions go with it.
        `more` says whether any of the limits was reached. `before` must be timezone-aware.

        Deliveries are deduplicated by the events kept: a delivery that a sender retries
        after its event was pruned is taken as new. Keep more than the senders' retry
        window (days, for most platforms).
        """
