"""Bulk recovery: replaying handler calls by filter, running a handler added later over
the past transitions it subscribes to (backfill), and reading unroutable deliveries again
after a parser fix.

Each operation walks the store in chunks (keyset pages, never OFFSET), writes each chunk
in one short transaction of its own, and returns what it did as counts; nothing here
prints, so a command and a web page can both call it. Every operation is safe to stop
between chunks and to run again:

- a replay leaves each call it replays pending, with `updated_at` past the window's end
  (which is fixed when the operation starts), so running it again with the same window
  finds only the calls it had not reached;
- a backfill enqueues a handler's call for a transition only when the transition has no
  call of that handler yet, so a rerun enqueues none twice;
- a reprocessed delivery goes through `EventRecorder.record` (deduplicated by its delivery
  id) before its unroutable row is deleted, so a rerun after a stop in between finds the
  event stored and only deletes the row.

`progress` hears the counts after every chunk; `should_stop` is asked before each chunk,
and a true answer ends the operation there, with `interrupted` set in its counts.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

from listener.durations import parse_moment
from listener.errors import RecoveryError
from listener.recording import EventRecorder
from listener.registry import Handler, Handlers
from listener.sources import Source, foreign_reason, read_delivery
from listener.store.base import REPLAYABLE_STATES, CallState, Store

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "MAX_CHUNK_SIZE",
    "BackfillCounts",
    "CallFilter",
    "RecoveryError",
    "ReplayCounts",
    "ReprocessCounts",
    "backfill",
    "check_handler_names",
    "counts_dict",
    "find_handler",
    "parse_when",
    "replay_calls",
    "reprocess_unroutable",
]

DEFAULT_CHUNK_SIZE = 500
MAX_CHUNK_SIZE = 1000

C = TypeVar("C")
Progress = Callable[[C], None]
ShouldStop = Callable[[], bool]


def _plain(value: Any) -> Any:
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    return value


def counts_dict(counts: ReplayCounts | BackfillCounts | ReprocessCounts) -> dict[str, Any]:
    """An operation's counts as plain JSON data (times in ISO 8601, states as words)."""
    data: dict[str, Any] = _plain(dataclasses.asdict(counts))
    return data


def _check_chunk_size(chunk_size: int) -> int:
    if not 1 <= chunk_size <= MAX_CHUNK_SIZE:
        raise RecoveryError(f"chunk size must be 1 to {MAX_CHUNK_SIZE}, not {chunk_size}")
    return chunk_size


def parse_when(text: str | None, name: str, now: datetime) -> datetime | None:
    """The moment an option `name` gives (`parse_moment`), None when it is not given;
    `RecoveryError` naming the option when it is not a moment."""
    if text is None:
        return None
    try:
        return parse_moment(text, now=now)
    except ValueError as exc:
        raise RecoveryError(f"{name}: {exc}") from None


def _window(since: datetime | None, until: datetime | None) -> None:
    for moment in (since, until):
        if moment is not None and (moment.tzinfo is None or moment.utcoffset() is None):
            raise RecoveryError("the time window takes timezone-aware times")
    if since is not None and until is not None and since >= until:
        raise RecoveryError(
            f"the window is empty: since {since.isoformat()} is not before until "
            f"{until.isoformat()}"
        )


# -- replaying handler calls by filter --------------------------------------------------


@dataclass(frozen=True, slots=True)
class CallFilter:
    """Which handler calls a bulk replay takes: in one of `states` (dead, done), of one of
    `handlers`, whose event is of `provider` and `application`, last changed in
    `[since, until)`; None means any. Checked when made (`RecoveryError`)."""

    states: tuple[CallState, ...] = (CallState.DEAD,)
    handlers: tuple[str, ...] | None = None
    provider: str | None = None
    application: str | None = None
    since: datetime | None = None
    until: datetime | None = None

    def __post_init__(self) -> None:
        if not self.states:
            raise RecoveryError("name at least one state to replay: dead or done")
        states: list[CallState] = []
        for state in self.states:
            try:
                value = CallState(state)
            except ValueError:
                value = None
            if value not in REPLAYABLE_STATES:
                raise RecoveryError(
                    f"state {str(state)!r} cannot be replayed; only dead or done calls can"
                )
            assert value is not None
            states.append(value)
        object.__setattr__(self, "states", tuple(dict.fromkeys(states)))
        if self.handlers is not None:
            if not self.handlers or not all(isinstance(h, str) and h for h in self.handlers):
                raise RecoveryError("handler names must be non-empty")
            object.__setattr__(self, "handlers", tuple(dict.fromkeys(self.handlers)))
        for name in ("provider", "application"):
            if getattr(self, name) == "":
                raise RecoveryError(f"{name} must not be empty")
        _window(self.since, self.until)

    @classmethod
    def parse(
        cls,
        *,
        states: Iterable[str] = ("dead",),
        handlers: Iterable[str] | None = None,
        provider: str | None = None,
        application: str | None = None,
        since: str | None = None,
        until: str | None = None,
        now: datetime | None = None,
    ) -> CallFilter:
        """A filter from the words an operator writes: `since`/`until` are a duration
        before `now` (`2h`) or an ISO 8601 time; `until` defaults to `now`, so the window
        stays fixed however long the replay takes, and a rerun with the same bounds picks
        up where this one stopped."""
        moment = now or datetime.now(UTC)
        names = tuple(handlers) if handlers is not None else ()
        return cls(
            states=tuple(states),  # type: ignore[arg-type]  # checked in __post_init__
            handlers=names or None,
            provider=provider,
            application=application,
            since=parse_when(since, "--since", moment),
            until=parse_when(until, "--until", moment) or moment,
        )

    def fixed(self, now: datetime | None = None) -> CallFilter:
        """This filter with an end: `until` is `now` when it had none."""
        if self.until is not None:
            return self
        return dataclasses.replace(self, until=now or datetime.now(UTC))


@dataclass(frozen=True, slots=True)
class ReplayCounts:
    """What a bulk replay did (or, in a dry run, would do)."""

    filter: CallFilter
    dry_run: bool = False
    matched: int = 0  # calls the filter took
    replayed: int = 0  # made pending again (none in a dry run)
    skipped: int = 0  # matched, but pending or running by the time of the write
    chunks: int = 0
    interrupted: bool = False


async def check_handler_names(store: Store, handlers: Handlers, names: Iterable[str]) -> None:
    """`RecoveryError` for a name that neither a loaded plugin registers nor any stored
    call carries (a handler removed since still has its calls replayable)."""
    for name in names:
        if name in handlers:
            continue
        page = await store.list_calls(handler=name, limit=1)
        if not page.items:
            known = ", ".join(handlers.names()) or "none"
            raise RecoveryError(
                f"unknown handler {name!r}: no plugin registers it and the store holds no "
                f"call of it; registered: {known}"
            )


async def replay_calls(
    store: Store,
    call_filter: CallFilter,
    *,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    dry_run: bool = False,
    progress: Progress[ReplayCounts] | None = None,
    should_stop: ShouldStop | None = None,
) -> ReplayCounts:
    """Make the calls `call_filter` takes pending again, `chunk_size` at a time (each
    chunk one transaction), oldest first; a dry run only counts them. A call already
    pending or running is left alone. The filter gets an end (`CallFilter.fixed`) if it
    had none: the calls replayed here are changed after it, so the walk never meets them
    again."""
    _check_chunk_size(chunk_size)
    f = call_filter.fixed()
    counts = ReplayCounts(filter=f, dry_run=dry_run)
    after = 0
    while True:
        if should_stop is not None and should_stop():
            return dataclasses.replace(counts, interrupted=True)
        ids = await store.find_calls(
            states=f.states,
            handlers=f.handlers,
            provider=f.provider,
            application=f.application,
            since=f.since,
            until=f.until,
            after_id=after,
            limit=chunk_size,
        )
        if not ids:
            return counts
        after = ids[-1]
        replayed = 0 if dry_run else len(await store.replay_calls(ids, states=f.states))
        counts = dataclasses.replace(
            counts,
            matched=counts.matched + len(ids),
            replayed=counts.replayed + replayed,
            skipped=counts.skipped + (0 if dry_run else len(ids) - replayed),
            chunks=counts.chunks + 1,
        )
        if progress is not None:
            progress(counts)


# -- backfilling a handler over past transitions ----------------------------------------


@dataclass(frozen=True, slots=True)
class BackfillCounts:
    """What a backfill did (or, in a dry run, would look at)."""

    handler: str
    since: datetime
    until: datetime
    dry_run: bool = False
    scanned: int = 0  # transitions made in the window
    matched: int = 0  # of them, those the handler subscribes to
    enqueued: int = 0  # new pending calls (none in a dry run)
    already: int = 0  # matched, but with a call of the handler already
    chunks: int = 0
    interrupted: bool = False


def find_handler(handlers: Handlers, name: str) -> Handler:
    """The registered handler `name` (or an earlier name of it); `RecoveryError` naming
    the registered ones otherwise."""
    handler = handlers.get(name)
    if handler is None:
        known = ", ".join(handlers.names()) or "none"
        raise RecoveryError(f"unknown handler {name!r}: the configured plugins register {known}")
    return handler


async def backfill(
    store: Store,
    handlers: Handlers,
    handler_name: str,
    *,
    since: datetime,
    until: datetime | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    dry_run: bool = False,
    progress: Progress[BackfillCounts] | None = None,
    should_stop: ShouldStop | None = None,
) -> BackfillCounts:
    """Enqueue a call of the handler `handler_name` (registered in `handlers`, as the
    service loads them) for each transition made in `[since, until)` that it subscribes to
    (`Handler.matches` on the event that made it, as when the event was recorded) and
    that has no call of it yet: at most one call per transition and handler, however often
    this runs. `until` defaults to now: the running service routes later ones itself."""
    _check_chunk_size(chunk_size)
    handler = find_handler(handlers, handler_name)
    end = until or datetime.now(UTC)
    _window(since, end)
    counts = BackfillCounts(handler=handler.name, since=since, until=end, dry_run=dry_run)
    cursor: str | None = None
    while True:
        if should_stop is not None and should_stop():
            return dataclasses.replace(counts, interrupted=True)
        page = await store.list_transitions(since=since, until=end, limit=chunk_size, cursor=cursor)
        matched = [past.transition for past in page.items if handler.matches(past.event)]
        enqueued = 0
        if matched and not dry_run:
            new = await store.enqueue_calls(handler.name, matched, known_as=handler.aliases)
            enqueued = len(new)
        counts = dataclasses.replace(
            counts,
            scanned=counts.scanned + len(page.items),
            matched=counts.matched + len(matched),
            enqueued=counts.enqueued + enqueued,
            already=counts.already + (0 if dry_run else len(matched) - enqueued),
            chunks=counts.chunks + (1 if page.items else 0),
        )
        if page.items and progress is not None:
            progress(counts)
        if page.next_cursor is None:
            return counts
        cursor = page.next_cursor


# -- reading unroutable deliveries again --------------------------------------------------


@dataclass(frozen=True, slots=True)
class ReprocessCounts:
    """What reading the unroutable deliveries again did (or, in a dry run, would do)."""

    dry_run: bool = False
    scanned: int = 0  # unroutable deliveries read
    recorded: int = 0  # now read and recorded as new events (their rows deleted)
    duplicate: int = 0  # now read, but already recorded (their rows deleted)
    calls: int = 0  # handler calls the new events enqueued
    unroutable: int = 0  # still not understood, or about another provider's run: kept
    skipped: int = 0  # of a source not configured, or a token source: kept as they are
    chunks: int = 0
    interrupted: bool = False

    @property
    def readable(self) -> int:
        return self.recorded + self.duplicate


async def reprocess_unroutable(
    store: Store,
    recorder: EventRecorder,
    sources: Mapping[str, Source],
    *,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    dry_run: bool = False,
    progress: Progress[ReprocessCounts] | None = None,
    should_stop: ShouldStop | None = None,
) -> ReprocessCounts:
    """Read each unroutable delivery again with its source's current parser (`sources`,
    as the service has them). One that now reads as an event is recorded through
    `recorder` (deduplicated, its handlers' calls enqueued, as any delivery) and then its
    row is deleted; one still unreadable stays, with the new reason; one of a source no
    longer configured, or of a token source, stays as it is. A dry run records nothing."""
    _check_chunk_size(chunk_size)
    counts = ReprocessCounts(dry_run=dry_run)
    after = 0
    while True:
        if should_stop is not None and should_stop():
            return dataclasses.replace(counts, interrupted=True)
        rows = await store.scan_unroutable(after_id=after, limit=chunk_size)
        if not rows:
            return counts
        after = rows[-1].id
        remove: list[int] = []
        reasons: dict[int, str] = {}
        recorded = duplicate = calls = unroutable = skipped = 0
        for row in rows:
            source = sources.get(row.source)
            # A token source's delivery is not read again: its callback URL was checked
            # against the run the payload named when it came, and a parser that now reads
            # another run from the same body would move a run the token was not issued for.
            if source is None or source.uses_token or row.delivery_id is None:
                skipped += 1
                continue
            event, reason = read_delivery(source, row.body, row.delivery_id)
            if event is None:
                unroutable += 1
                reasons[row.id] = reason
                continue
            if dry_run:
                recorded += 1
                continue
            result = await recorder.record(store, event)
            if result.foreign:
                unroutable += 1
                reasons[row.id] = foreign_reason(source)
                continue
            remove.append(row.id)
            if result.duplicate:
                duplicate += 1
            else:
                recorded += 1
                calls += len(result.call_ids)
        if not dry_run and (remove or reasons):
            await store.settle_unroutable(remove=remove, reasons=reasons)
        counts = dataclasses.replace(
            counts,
            scanned=counts.scanned + len(rows),
            recorded=counts.recorded + recorded,
            duplicate=counts.duplicate + duplicate,
            calls=counts.calls + calls,
            unroutable=counts.unroutable + unroutable,
            skipped=counts.skipped + skipped,
            chunks=counts.chunks + 1,
        )
        if progress is not None:
            progress(counts)
