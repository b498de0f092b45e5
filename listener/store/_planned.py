"""The store operations that are one shared plan each, written once for both backends.

A backend says how it runs a plan: `_read_plan` for a read, `_write_plan` for a write in
a transaction of its own or its writer's, and `_delivery_plan` for a write on the
delivery path, which a backend that commits in groups batches with the others. It sets
`dialect` and `default_grace_seconds`, and overrides any operation it runs its own way.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any, TypeVar

from listener.events import Origin, RunEvent, RunStatus, Transition
from listener.store import _plans as plans
from listener.store.base import (
    REPLAYABLE_STATES,
    AuditRecord,
    CallState,
    Change,
    HandlerCall,
    NewRun,
    Page,
    PastTransition,
    PruneCounts,
    RecordResult,
    RunEnd,
    RunHistory,
    RunRecord,
    StoreCounts,
    UnroutableRecord,
    WebhookEpisode,
)

__all__ = ["PlannedStore"]

T = TypeVar("T")


class PlannedStore:
    """Every `Store` operation that is one plan, over the backend's three ways to run one."""

    dialect: plans.Dialect
    default_grace_seconds: float

    async def _read_plan(self, make: Callable[[], plans.Plan[T]]) -> T:
        raise NotImplementedError

    async def _write_plan(self, make: Callable[[], plans.Plan[T]]) -> T:
        raise NotImplementedError

    async def _delivery_plan(self, make: Callable[[], plans.Plan[T]]) -> T:
        raise NotImplementedError

    async def list_run_ends(self, *, since: datetime, limit: int = 10_000) -> list[RunEnd]:
        return await self._read_plan(
            lambda: plans.list_run_ends_plan(self.dialect, since=since, limit=limit)
        )

    async def list_webhook_episodes(self) -> list[WebhookEpisode]:
        return await self._read_plan(lambda: plans.list_webhook_episodes_plan(self.dialect))

    async def move_webhook_episode(
        self, provider: str, *, was_degraded: bool, degraded: bool, since: datetime | None
    ) -> bool:
        return await self._write_plan(
            lambda: plans.move_webhook_episode_plan(
                self.dialect, provider, was_degraded=was_degraded, degraded=degraded, since=since
            )
        )

    async def take_budget(self, name: str, *, rate: float, burst: int, want: int) -> int:
        return await self._write_plan(
            lambda: plans.take_budget_plan(self.dialect, name, rate=rate, burst=burst, want=want)
        )

    async def follow_changes(self, on_change: Callable[[Change], None]) -> None:
        """No feed of other processes' commits: readers find them by sweeps and reads."""

    async def ping(self) -> None:
        await self._read_plan(plans.ping_plan)

    async def schema_version(self) -> int:
        return await self._read_plan(plans.schema_version_plan)

    # -- runs --------------------------------------------------------------------------

    async def register_run(self, run: NewRun) -> bool:
        return await self._write_plan(lambda: plans.register_run_plan(self.dialect, run))

    async def get_run(self, run_id: str) -> RunRecord | None:
        return await self._read_plan(lambda: plans.get_run_plan(self.dialect, run_id))

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
        return await self._read_plan(
            lambda: plans.list_runs_plan(
                self.dialect,
                status=status,
                provider=provider,
                application=application,
                since=since,
                until=until,
                limit=limit,
                cursor=cursor,
            )
        )

    # -- events ------------------------------------------------------------------------

    async def record(self, event: RunEvent, handlers: Sequence[str] = ()) -> RecordResult:
        names = tuple(handlers)
        return await self._delivery_plan(
            lambda: plans.record_plan(self.dialect, event, names, self.default_grace_seconds)
        )

    async def record_unroutable(
        self,
        *,
        source: str,
        delivery_id: str | None,
        reason: str,
        body: bytes,
        headers: Mapping[str, str],
    ) -> bool:
        return await self._delivery_plan(
            lambda: plans.record_unroutable_plan(
                self.dialect,
                source=source,
                delivery_id=delivery_id,
                reason=reason,
                body=body,
                headers=headers,
            )
        )

    async def get_event(self, delivery_id: str) -> RunEvent | None:
        return await self._read_plan(lambda: plans.get_event_plan(self.dialect, delivery_id))

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
        return await self._read_plan(
            lambda: plans.list_events_plan(
                self.dialect,
                run_id=run_id,
                status=status,
                provider=provider,
                application=application,
                origin=origin,
                since=since,
                until=until,
                limit=limit,
                cursor=cursor,
            )
        )

    async def list_unroutable(
        self, *, limit: int = 100, cursor: str | None = None
    ) -> Page[UnroutableRecord]:
        return await self._read_plan(
            lambda: plans.list_unroutable_plan(self.dialect, limit=limit, cursor=cursor)
        )

    # -- handler calls -----------------------------------------------------------------

    async def claim_calls(
        self, owner: str, *, limit: int, lease_seconds: float, now: datetime | None = None
    ) -> list[HandlerCall]:
        return await self._write_plan(
            lambda: plans.claim_calls_plan(
                self.dialect, owner, limit=limit, lease_seconds=lease_seconds, now=now
            )
        )

    async def complete_call(self, call_id: int, owner: str) -> bool:
        return await self._write_plan(
            lambda: plans.complete_call_plan(self.dialect, call_id, owner)
        )

    async def fail_call(
        self, call_id: int, owner: str, *, error: str, retry_at: datetime | None
    ) -> bool:
        return await self._write_plan(
            lambda: plans.fail_call_plan(
                self.dialect, call_id, owner, error=error, retry_at=retry_at
            )
        )

    async def release_call(self, call_id: int, owner: str) -> bool:
        return await self._write_plan(lambda: plans.release_call_plan(self.dialect, call_id, owner))

    async def replay_call(self, call_id: int) -> bool:
        return await self._write_plan(lambda: plans.replay_call_plan(self.dialect, call_id))

    async def get_call(self, call_id: int) -> HandlerCall | None:
        return await self._read_plan(lambda: plans.get_call_plan(self.dialect, call_id))

    async def list_calls(
        self,
        *,
        state: CallState | None = None,
        run_id: str | None = None,
        handler: str | None = None,
        limit: int = 100,
        cursor: str | None = None,
    ) -> Page[HandlerCall]:
        return await self._read_plan(
            lambda: plans.list_calls_plan(
                self.dialect,
                state=state,
                run_id=run_id,
                handler=handler,
                limit=limit,
                cursor=cursor,
            )
        )

    # -- bulk recovery -----------------------------------------------------------------

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
        return await self._read_plan(
            lambda: plans.find_calls_plan(
                self.dialect,
                states=states,
                handlers=handlers,
                provider=provider,
                application=application,
                since=since,
                until=until,
                after_id=after_id,
                limit=limit,
            )
        )

    async def replay_calls(
        self, call_ids: Sequence[int], *, states: Sequence[CallState] = REPLAYABLE_STATES
    ) -> list[int]:
        ids = tuple(call_ids)
        return await self._write_plan(
            lambda: plans.replay_calls_plan(self.dialect, ids, states=states)
        )

    async def list_transitions(
        self,
        *,
        since: datetime,
        until: datetime | None = None,
        limit: int = 500,
        cursor: str | None = None,
    ) -> Page[PastTransition]:
        return await self._read_plan(
            lambda: plans.list_transitions_plan(
                self.dialect, since=since, until=until, limit=limit, cursor=cursor
            )
        )

    async def enqueue_calls(
        self, handler: str, transitions: Sequence[Transition], *, known_as: Sequence[str] = ()
    ) -> list[int]:
        items, names = tuple(transitions), tuple(known_as)
        return await self._write_plan(
            lambda: plans.enqueue_calls_plan(self.dialect, handler, items, known_as=names)
        )

    async def scan_unroutable(
        self, *, after_id: int = 0, limit: int = 500
    ) -> list[UnroutableRecord]:
        return await self._read_plan(
            lambda: plans.scan_unroutable_plan(self.dialect, after_id=after_id, limit=limit)
        )

    async def settle_unroutable(
        self, *, remove: Sequence[int] = (), reasons: Mapping[int, str] | None = None
    ) -> int:
        ids, texts = tuple(remove), dict(reasons or {})
        return await self._write_plan(
            lambda: plans.settle_unroutable_plan(self.dialect, remove=ids, reasons=texts)
        )

    async def run_history(self, run_id: str, *, limit: int = 1000) -> RunHistory:
        return await self._read_plan(
            lambda: plans.run_history_plan(self.dialect, run_id, limit=limit)
        )

    # -- audit ---------------------------------------------------------------------------

    async def record_audit(
        self, *, actor: str, action: str, count: int, detail: Mapping[str, Any]
    ) -> int:
        return await self._write_plan(
            lambda: plans.record_audit_plan(
                self.dialect, actor=actor, action=action, count=count, detail=detail
            )
        )

    async def list_audit(self, *, limit: int = 100, cursor: str | None = None) -> Page[AuditRecord]:
        return await self._read_plan(
            lambda: plans.list_audit_plan(self.dialect, limit=limit, cursor=cursor)
        )

    # -- polling -----------------------------------------------------------------------

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
        return await self._write_plan(
            lambda: plans.claim_overdue_runs_plan(
                self.dialect,
                owner,
                limit=limit,
                lease_seconds=lease_seconds,
                provider=provider,
                now=now,
                due_by=due_by,
            )
        )

    async def reschedule_poll(
        self,
        run_id: str,
        owner: str,
        *,
        next_poll_at: datetime,
        attempts: int,
        status_call: bool = True,
    ) -> bool:
        return await self._write_plan(
            lambda: plans.reschedule_poll_plan(
                self.dialect,
                run_id,
                owner,
                next_poll_at=next_poll_at,
                attempts=attempts,
                status_call=status_call,
            )
        )

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
        return await self._write_plan(
            lambda: plans.bring_forward_polls_plan(
                self.dialect,
                provider,
                application,
                submitted_before=submitted_before,
                later_than=later_than,
                to=to,
                exclude=exclude,
            )
        )

    async def release_run(self, run_id: str, owner: str) -> bool:
        return await self._write_plan(lambda: plans.release_run_plan(self.dialect, run_id, owner))

    async def mark_overdue(self, run_id: str) -> bool:
        return await self._write_plan(lambda: plans.mark_overdue_plan(self.dialect, run_id))

    # -- reporting and retention -------------------------------------------------------

    async def counts(self) -> StoreCounts:
        return await self._read_plan(plans.counts_plan)

    async def prune(self, *, before: datetime, limit: int = 1000) -> PruneCounts:
        return await self._write_plan(
            lambda: plans.prune_plan(self.dialect, before=before, limit=limit)
        )
