"""The SQLite fast paths: several writes of a batch applied together.

These are twins of the shared plans (`record_plan`, `complete_call_plan`), written for
SQLite to take a few statements per batch instead of several per write. Each has an
equivalence test against its plan (`tests/store/test_store_sqlite_batch.py`), and each is
kept only while measurements show it pays (see the comment at each). Claims have no twin:
one written like these was slower than the plan (0.86x the plan's time per claim loop)
and made no difference the receiver benchmark could tell from its round-to-round spread.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from listener.events import Origin, RunEvent, RunStatus, Transition, next_status
from listener.store import _common as c
from listener.store import _plans as plans
from listener.store._sqlite_conn import DIALECT, execute_on
from listener.store.base import (
    RecordResult,
)

# -- several records in one go ---------------------------------------------------------
#
# The writer applies the `record` calls of a batch together, in a handful of statements
# for the whole batch instead of five per event. Each statement takes its rows as one JSON
# array parameter (read with `json_each`), so the SQL text is constant and its prepared
# statement is reused, and each is one call into SQLite: the writer thread gives up the
# GIL (and waits to get it back from the event loop's thread) once per statement, not
# once per row. What each call does is exactly what `_plans.record_plan` does, applied
# in batch order; the plan stays the reference, and the fallback when a batch fails.
# Reading first and then writing is safe here because the writer holds SQLite's write
# lock for the whole transaction: nothing else can change these rows in between.
# Measured: recording 2,000 events through the plan alone takes 1.6x as long.

# What the batch reads before writing, in one statement: which deliveries are stored,
# the runs' status, grace (printed with 17 digits, so the float reads back exactly),
# provider and end callback, the transitions they already made, and the last handler call
# id AUTOINCREMENT handed out (the new calls take the ids it would give them next).
_LOOK_UP = (
    "SELECT (SELECT json_group_array(delivery_id) FROM events"
    " WHERE delivery_id IN (SELECT value FROM json_each(?1))),"
    " (SELECT json_group_array(json_array(run_id, status, printf('%!.17g', grace_seconds),"
    " provider, on_end))"
    " FROM runs WHERE run_id IN (SELECT value FROM json_each(?2))),"
    " (SELECT json_group_array(json_array(run_id, status)) FROM transitions"
    " WHERE run_id IN (SELECT value FROM json_each(?2))),"
    " max(coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'handler_calls'), 0),"
    " coalesce((SELECT max(id) FROM handler_calls), 0))"
)


_INSERT_EVENTS = (
    "INSERT INTO events (delivery_id, provider, application, run_id, status, occurred_at,"
    " received_at, origin, payload)"
    " SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]'),"
    " json_extract(value, '$[2]'), json_extract(value, '$[3]'), json_extract(value, '$[4]'),"
    " json_extract(value, '$[5]'), ?1, json_extract(value, '$[6]'),"
    " json_extract(value, '$[7]') FROM json_each(?2)"
)
_INSERT_RUNS = (
    "INSERT INTO runs (run_id, provider, application, status, submitted_at, last_event_at,"
    " grace_seconds, deadline, next_poll_at, poll_attempts, callback, metadata, registered,"
    " updated_at)"
    " SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]'),"
    " json_extract(value, '$[2]'), json_extract(value, '$[3]'), json_extract(value, '$[4]'),"
    " ?1, json_extract(value, '$[5]'), NULL, json_extract(value, '$[6]'), 0, '{}', '{}', 0,"
    " ?1 FROM json_each(?2)"
)
# Terminal runs are never polled again and lose any poll lease; open ones are polled
# after their grace. Each run appears once, with its state after the whole batch.
_UPDATE_RUNS = (
    "UPDATE runs SET status = u.status, last_event_at = ?1, next_poll_at = u.next_poll_at,"
    " poll_attempts = 0, status_calls = runs.status_calls + u.polled,"
    " lease_owner = CASE WHEN u.terminal THEN NULL ELSE runs.lease_owner END,"
    " lease_expires_at = CASE WHEN u.terminal THEN NULL ELSE runs.lease_expires_at END,"
    " updated_at = ?1"
    " FROM (SELECT json_extract(value, '$[0]') AS run_id, json_extract(value, '$[1]') AS status,"
    " json_extract(value, '$[2]') AS next_poll_at, json_extract(value, '$[3]') AS terminal,"
    " json_extract(value, '$[4]') AS polled"
    " FROM json_each(?2)) AS u WHERE runs.run_id = u.run_id"
)
_INSERT_TRANSITIONS = (
    "INSERT INTO transitions (run_id, status, delivery_id, created_at)"
    " SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]'),"
    " json_extract(value, '$[2]'), ?1 FROM json_each(?2)"
)
_INSERT_CALLS = (
    "INSERT INTO handler_calls (id, handler, run_id, status, delivery_id, state, attempts,"
    " next_attempt_at, replays, created_at, updated_at)"
    " SELECT ?1 + key + 1, json_extract(value, '$[0]'), json_extract(value, '$[1]'),"
    " json_extract(value, '$[2]'), json_extract(value, '$[3]'), 'pending', 0, ?2, 0, ?2, ?2"
    " FROM json_each(?3)"
)
# Strict: a value JSON cannot carry exactly (NaN, a lone surrogate once encoded) fails the
# batch, which then runs its records one by one through the plan.
_ROWS = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"))


@dataclass(frozen=True, slots=True)
class RecordArgs:
    """A `record` call, as `record_many` takes it; called with a connection, it runs
    alone, through the plan."""

    event: RunEvent
    handlers: tuple[str, ...]
    default_grace_seconds: float

    def __call__(self, conn: sqlite3.Connection) -> RecordResult:
        plan = plans.record_plan(DIALECT, self.event, self.handlers, self.default_grace_seconds)
        return plans.drive(plan, execute_on(conn))


@dataclass(frozen=True, slots=True)
class CompleteArgs:
    """A `complete_call` call, as `complete_many` takes it; called with a connection, it
    runs alone, through the plan."""

    call_id: int
    owner: str

    def __call__(self, conn: sqlite3.Connection) -> bool:
        return plans.drive(
            plans.complete_call_plan(DIALECT, self.call_id, self.owner), execute_on(conn)
        )


def batchable(event: RunEvent, handlers: Sequence[str]) -> bool:
    """Whether `record_many` may take this call: SQLite's JSON functions end a string at
    NUL, so text holding one goes through the plan, which binds it whole."""
    texts = (event.delivery_id, event.run_id, event.provider, event.application, *handlers)
    return not any(not isinstance(text, str) or "\x00" in text for text in texts)


class _Run:
    """A run's state as the batch moves it: status, grace, whose run it is, and the
    function it calls when it ends."""

    __slots__ = ("grace", "on_end", "provider", "status")

    def __init__(
        self, status: RunStatus, grace: float, provider: str, on_end: str | None = None
    ) -> None:
        self.status = status
        self.grace = grace
        self.provider = provider
        self.on_end = on_end


def _stamp(value: datetime | None) -> float | None:
    return None if value is None else value.timestamp()


def record_many(conn: sqlite3.Connection, items: Sequence[RecordArgs]) -> list[RecordResult]:
    """Apply several `record` calls, in order, inside the caller's write transaction.
    Every call must be `batchable`."""
    now = c.utcnow()
    at = now.timestamp()
    delivery_ids = list(dict.fromkeys(item.event.delivery_id for item in items))
    run_ids = list(dict.fromkeys(item.event.run_id for item in items))
    known = conn.execute(_LOOK_UP, (_ROWS.encode(delivery_ids), _ROWS.encode(run_ids))).fetchone()
    seen = set(json.loads(known[0]))
    runs = {
        run_id: _Run(RunStatus(status), float(grace), provider, on_end)
        for run_id, status, grace, provider, on_end in json.loads(known[1])
    }
    reached = {(run_id, status) for run_id, status in json.loads(known[2])}
    last_call_id = int(known[3])

    event_rows: list[list[Any]] = []
    run_rows: list[list[Any]] = []
    transition_rows: list[list[Any]] = []
    call_rows: list[list[Any]] = []
    moved_runs: dict[str, _Run] = {}  # runs to update, each once, with its final state
    polled: dict[str, int] = {}  # status calls whose news each run heard in the batch
    results: list[RecordResult] = []
    for item in items:
        event = item.event
        run_id = event.run_id
        reported = RunStatus(event.status)
        run = runs.get(run_id)
        if event.delivery_id in seen:
            status = run.status if run is not None else reported
            results.append(RecordResult(True, False, None, status))
            continue
        if run is not None and run.provider != event.provider:
            results.append(RecordResult(False, False, None, run.status, foreign=True))
            continue
        seen.add(event.delivery_id)
        occurred = c.as_utc(event.occurred_at)
        event_rows.append(
            [
                event.delivery_id,
                event.provider,
                event.application,
                run_id,
                reported.value,
                occurred.timestamp(),
                Origin(event.origin).value,
                c.dump_json(event.payload),
            ]
        )
        current: RunStatus | None
        if run is None:
            grace = float(item.default_grace_seconds)
            run_rows.append(
                [
                    run_id,
                    event.provider,
                    event.application,
                    reported.value,
                    min(occurred, now).timestamp(),
                    grace,
                    _stamp(c.next_poll_at(reported, now, grace)),
                ]
            )
            run = runs[run_id] = _Run(reported, grace, event.provider)
            created = True
            current = None
        else:
            created = False
            current = run.status
        moved: RunStatus | None = None
        target = next_status(current, reported)
        if target is not None and (run_id, target.value) not in reached:
            reached.add((run_id, target.value))
            transition_rows.append([run_id, target.value, event.delivery_id])
            moved = target
        status = moved if moved is not None else (current if current is not None else reported)
        if not created:
            run.status = status
            moved_runs[run_id] = run
            if Origin(event.origin) is Origin.POLL:
                polled[run_id] = polled.get(run_id, 0) + 1
        call_ids: tuple[int, ...] = ()
        names = c.calls_for_move(item.handlers, moved, run.on_end) if moved is not None else []
        if moved is not None and names:
            first = last_call_id + len(call_rows) + 1
            call_ids = tuple(range(first, first + len(names)))
            for name in names:
                call_rows.append([name, run_id, moved.value, event.delivery_id])
        transition = Transition(run_id, moved) if moved is not None else None
        results.append(RecordResult(False, created, transition, status, call_ids))

    if event_rows:
        conn.execute(_INSERT_EVENTS, (at, _ROWS.encode(event_rows)))
    if run_rows:
        conn.execute(_INSERT_RUNS, (at, _ROWS.encode(run_rows)))
    if moved_runs:
        updates = [
            [
                run_id,
                run.status.value,
                _stamp(c.next_poll_at(run.status, now, run.grace)),
                run.status.is_terminal,
                polled.get(run_id, 0),
            ]
            for run_id, run in moved_runs.items()
        ]
        conn.execute(_UPDATE_RUNS, (at, _ROWS.encode(updates)))
    if transition_rows:
        conn.execute(_INSERT_TRANSITIONS, (at, _ROWS.encode(transition_rows)))
    if call_rows:
        conn.execute(_INSERT_CALLS, (last_call_id, at, _ROWS.encode(call_rows)))
    return results


# Which of the calls still run under the owner's lease, then those marked done: ids go in
# as one JSON array and come back as one, so a batch of completions is three steps of the
# SQLite engine however many calls it holds (rows returned one by one would each hand the
# GIL back and forth). The owner is bound on its own, so its text stays whole.
# Measured: the plan alone takes 1.05x as long for 4,000 completions, a margin kept
# because it is the same mechanism as the records' and costs one equivalence test.
_LEASED_BY = (
    "SELECT json_group_array(id) FROM handler_calls"
    " WHERE id IN (SELECT value FROM json_each(?1)) AND state = 'running' AND lease_owner = ?2"
)
_COMPLETE = (
    "UPDATE handler_calls SET state = 'done', lease_owner = NULL, lease_expires_at = NULL,"
    " updated_at = ?3"
    " WHERE id IN (SELECT value FROM json_each(?1)) AND state = 'running' AND lease_owner = ?2"
)


def complete_many(conn: sqlite3.Connection, items: Sequence[CompleteArgs]) -> list[bool]:
    """Apply several `complete_call` calls, as `_plans.complete_call_plan` would one by
    one, with a few statements per lease owner."""
    done: set[tuple[str, int]] = set()
    by_owner: dict[str, list[int]] = {}
    for item in items:
        by_owner.setdefault(item.owner, []).append(int(item.call_id))
    at = c.utcnow().timestamp()
    for owner, ids in by_owner.items():
        wanted = _ROWS.encode(ids)
        (found,) = conn.execute(_LEASED_BY, (wanted, owner)).fetchone()
        conn.execute(_COMPLETE, (wanted, owner, at))
        done.update((owner, int(call_id)) for call_id in json.loads(found))
    results: list[bool] = []
    for item in items:
        key = (item.owner, int(item.call_id))
        # As if run one after another: only the first of repeated completions changes it.
        results.append(key in done)
        done.discard(key)
    return results


def apply_together(conn: sqlite3.Connection, items: list[Any]) -> list[Any]:
    """Several writes of one kind (all `RecordArgs` or all `CompleteArgs`) at once."""
    if isinstance(items[0], RecordArgs):
        return record_many(conn, items)
    return complete_many(conn, items)
