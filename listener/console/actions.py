"""The console's actions, each through `listener.recovery` and each written to the audit:
who (the session's label), what (the action and its filter), how many."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from listener.recording import EventRecorder
from listener.recovery import (
    BackfillCounts,
    CallFilter,
    ReplayCounts,
    ReprocessCounts,
    backfill,
    counts_dict,
    replay_calls,
    reprocess_unroutable,
)
from listener.registry import Handlers
from listener.sources import Source
from listener.store.base import CallState, Store

__all__ = ["backfill_handler", "replay_by_filter", "replay_one", "reprocess"]


async def _audit(
    store: Store,
    actor: str,
    action: str,
    count: int,
    counts: ReplayCounts | BackfillCounts | ReprocessCounts,
) -> None:
    """A bulk action written to the audit with its counts; a dry run changes nothing and
    is not written."""
    if not counts.dry_run:
        await store.record_audit(
            actor=actor, action=action, count=count, detail=counts_dict(counts)
        )


async def replay_one(store: Store, actor: str, call_id: int) -> bool:
    """Replay one dead or done call; audited when it was replayed."""
    done = await store.replay_calls([call_id], states=(CallState.DEAD, CallState.DONE))
    if done:
        await store.record_audit(
            actor=actor, action="replay call", count=len(done), detail={"call_ids": done}
        )
    return bool(done)


async def replay_by_filter(
    store: Store, actor: str, call_filter: CallFilter, *, dry_run: bool
) -> ReplayCounts:
    """`recovery.replay_calls` over the filter; a real run is audited with its counts."""
    counts = await replay_calls(store, call_filter, dry_run=dry_run)
    await _audit(store, actor, "replay by filter", counts.replayed, counts)
    return counts


async def reprocess(
    store: Store,
    actor: str,
    recorder: EventRecorder,
    sources: Mapping[str, Source],
    *,
    dry_run: bool,
) -> ReprocessCounts:
    """`recovery.reprocess_unroutable`; a real run is audited with its counts."""
    counts = await reprocess_unroutable(store, recorder, sources, dry_run=dry_run)
    await _audit(store, actor, "reprocess unroutable", counts.readable, counts)
    return counts


async def backfill_handler(
    store: Store,
    actor: str,
    handlers: Handlers,
    handler: str,
    *,
    since: datetime,
    until: datetime,
    dry_run: bool,
) -> BackfillCounts:
    """`recovery.backfill` of `handler` over `[since, until)`; a real run is audited."""
    counts = await backfill(store, handlers, handler, since=since, until=until, dry_run=dry_run)
    await _audit(store, actor, "backfill", counts.enqueued, counts)
    return counts
