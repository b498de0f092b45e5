"""The PostgreSQL fast path: the records of a wave applied a few statements at a time.

A wave is records of distinct runs and distinct deliveries (`_plans.in_step_waves`), so
none of them reads what another writes and together they do exactly what each would do
alone through `_plans.record_plan`, which stays the reference and the fallback when a
wave fails. Instead of several statements per record, the wave takes one statement per
step for all its records, each taking its rows as arrays (`unnest`); the statements of a
round go out together in one pipeline. A wave costs three or four round trips however many
records it holds, and the SQL text stays constant, so the server prepares it once.
Measured (`bench/store.py`, 2,000 events, 64 callers): the records in step, five
statements per record pipelined, took 1.0-1.2 s; these take a fraction of it.

Other replicas may write the same rows meanwhile, so nothing here is read before it is
locked or claimed: the run rows are read `FOR UPDATE`, and the inserts of events, runs and
transitions say with `ON CONFLICT DO NOTHING RETURNING` which rows were this wave's.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from listener.events import Origin, RunEvent, RunStatus, Transition, next_status
from listener.store import _common as c
from listener.store._plans import Stmt
from listener.store.base import RecordResult

# A plan for several statements a round: it yields a round's statements and is sent back
# each one's rows, in order.
Rounds = Generator[list[Stmt], list[list[c.Row]], list[RecordResult]]

# Each statement takes its rows as one JSON array of objects (`json_to_recordset`): one
# parameter encoded in one call, where arrays (`unnest`) cost a Python step per value.
# The rows come out in array order and are inserted in it, so the ids the tables hand out
# follow the order of the records, as they would one record at a time.
_INSERT_EVENTS = (
    "INSERT INTO events (delivery_id, provider, application, run_id, status, occurred_at,"
    " received_at, origin, payload)"
    " SELECT u.delivery_id, u.provider, u.application, u.run_id, u.status, u.occurred_at,"
    " ?::timestamptz, u.origin, u.payload"
    " FROM json_to_recordset(?::json) AS u(delivery_id text, provider text, application text,"
    " run_id text, status text, occurred_at timestamptz, origin text, payload jsonb)"
    " ON CONFLICT (delivery_id) DO NOTHING RETURNING delivery_id"
)
_LOCK_RUNS = (
    "SELECT run_id, status, grace_seconds, provider, on_end FROM runs"
    " WHERE run_id = ANY(?::text[]) FOR UPDATE"
)
_INSERT_RUNS = (
    "INSERT INTO runs (run_id, provider, application, status, submitted_at, last_event_at,"
    " grace_seconds, deadline, next_poll_at, poll_attempts, callback, metadata, registered,"
    " updated_at)"
    " SELECT u.run_id, u.provider, u.application, u.status, u.submitted_at, ?::timestamptz,"
    " u.grace_seconds, NULL, u.next_poll_at, 0, '{}', '{}', 0, ?::timestamptz"
    " FROM json_to_recordset(?::json) AS u(run_id text, provider text, application text,"
    " status text, submitted_at timestamptz, grace_seconds float8, next_poll_at timestamptz)"
    " ON CONFLICT (run_id) DO NOTHING RETURNING run_id"
)
# An event for another provider's run is not kept (`RecordResult.foreign`).
_DELETE_EVENTS = "DELETE FROM events WHERE delivery_id = ANY(?::text[])"
_INSERT_TRANSITIONS = (
    "INSERT INTO transitions (run_id, status, delivery_id, created_at)"
    " SELECT u.run_id, u.status, u.delivery_id, ?::timestamptz"
    " FROM json_to_recordset(?::json) AS u(run_id text, status text, delivery_id text)"
    " ON CONFLICT (run_id, status) DO NOTHING RETURNING run_id"
)
# Terminal runs are never polled again and lose any poll lease.
_UPDATE_RUNS = (
    "UPDATE runs SET status = u.status, last_event_at = ?::timestamptz,"
    " next_poll_at = u.next_poll_at, poll_attempts = 0,"
    " status_calls = runs.status_calls + u.polled,"
    " lease_owner = CASE WHEN u.terminal THEN NULL ELSE runs.lease_owner END,"
    " lease_expires_at = CASE WHEN u.terminal THEN NULL ELSE runs.lease_expires_at END,"
    " updated_at = ?::timestamptz"
    " FROM json_to_recordset(?::json) AS u(run_id text, status text,"
    " next_poll_at timestamptz, polled integer, terminal boolean)"
    " WHERE runs.run_id = u.run_id"
)
_INSERT_CALLS = (
    "INSERT INTO handler_calls (handler, run_id, status, delivery_id, state, attempts,"
    " next_attempt_at, replays, created_at, updated_at)"
    " SELECT u.handler, u.run_id, u.status, u.delivery_id, 'pending', 0, ?::timestamptz, 0,"
    " ?::timestamptz, ?::timestamptz"
    " FROM json_to_recordset(?::json) AS u(handler text, run_id text, status text,"
    " delivery_id text) RETURNING id, run_id, handler"
)
# Strict: a value JSON cannot carry exactly (NaN, say) fails the wave, and the batch then
# runs its records one by one through the plan, where only that record fails.
_ROWS = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"))


def _rows(rows: Sequence[dict[str, Any]]) -> str:
    return _ROWS.encode(rows)


def _time(value: datetime | None) -> str | None:
    """A time as the JSON rows carry it: ISO 8601 with its offset, to the microsecond."""
    return None if value is None else value.isoformat()


@dataclass(frozen=True, slots=True)
class RecordArgs:
    """A `record` call, as `record_wave` takes it."""

    event: RunEvent
    handlers: tuple[str, ...]
    default_grace_seconds: float

    @property
    def keys(self) -> tuple[str, str]:
        """What a wave may hold once: the run and the delivery this record touches."""
        return (f"run:{self.event.run_id}", f"delivery:{self.event.delivery_id}")


@dataclass(slots=True)
class _Run:
    """A run row as the wave read it."""

    status: RunStatus
    grace: float
    provider: str
    on_end: str | None


def _runs_by_id(rows: list[c.Row]) -> dict[str, _Run]:
    return {
        row["run_id"]: _Run(
            RunStatus(row["status"]), float(row["grace_seconds"]), row["provider"], row["on_end"]
        )
        for row in rows
    }


def record_wave(items: Sequence[RecordArgs]) -> Rounds:
    """Apply a wave's `record` calls (distinct runs, distinct deliveries) inside the
    caller's transaction, each as `_plans.record_plan` would; their results, in order."""
    now = c.utcnow()
    events = [item.event for item in items]
    reported = [RunStatus(event.status) for event in events]
    occurred = [c.as_utc(event.occurred_at) for event in events]
    event_rows = [
        {
            "delivery_id": event.delivery_id,
            "provider": event.provider,
            "application": event.application,
            "run_id": event.run_id,
            "status": status.value,
            "occurred_at": _time(at),
            "origin": Origin(event.origin).value,
            "payload": dict(event.payload),
        }
        for event, status, at in zip(events, reported, occurred, strict=True)
    ]
    stored_rows, run_rows = yield [
        (_INSERT_EVENTS, [now, _rows(event_rows)]),
        (_LOCK_RUNS, [[event.run_id for event in events]]),
    ]
    stored = {row["delivery_id"] for row in stored_rows}
    runs = _runs_by_id(run_rows)

    # Runs first heard of in this wave: created now, unless another writer has just made
    # them, in which case they are read (and locked) like the others.
    missing = [i for i, e in enumerate(events) if e.delivery_id in stored and e.run_id not in runs]
    created: set[str] = set()
    if missing:
        new_rows = []
        for i in missing:
            event, grace = events[i], float(items[i].default_grace_seconds)
            new_rows.append(
                {
                    "run_id": event.run_id,
                    "provider": event.provider,
                    "application": event.application,
                    "status": reported[i].value,
                    "submitted_at": _time(min(occurred[i], now)),
                    "grace_seconds": grace,
                    "next_poll_at": _time(c.next_poll_at(reported[i], now, grace)),
                }
            )
            runs[event.run_id] = _Run(reported[i], grace, event.provider, None)
        (created_rows,) = yield [(_INSERT_RUNS, [now, now, _rows(new_rows)])]
        created = {row["run_id"] for row in created_rows}
        raced = [events[i].run_id for i in missing if events[i].run_id not in created]
        if raced:
            (raced_rows,) = yield [(_LOCK_RUNS, [raced])]
            runs.update(_runs_by_id(raced_rows))

    # The transition each stored record of a run of its own provider would make.
    foreign: set[str] = set()
    targets: dict[int, RunStatus] = {}
    for i, event in enumerate(events):
        if event.delivery_id not in stored:
            continue
        new = event.run_id in created
        run = runs[event.run_id]
        if not new and run.provider != event.provider:
            foreign.add(event.delivery_id)
            continue
        target = next_status(None if new else run.status, reported[i])
        if target is not None:
            targets[i] = target
    steps: list[Stmt] = []
    if foreign:
        steps.append((_DELETE_EVENTS, [sorted(foreign)]))
    if targets:
        transition_rows = [
            {"run_id": events[i].run_id, "status": target.value, "delivery_id": events[i].delivery_id}
            for i, target in targets.items()
        ]
        steps.append((_INSERT_TRANSITIONS, [now, _rows(transition_rows)]))
    answers = (yield steps) if steps else []
    # A transition already stored is old news: handlers saw it once already.
    reached = {row["run_id"] for row in answers[-1]} if targets else set()

    results: list[RecordResult] = []
    update_rows: list[dict[str, Any]] = []
    call_rows: list[dict[str, Any]] = []
    calls_of: dict[int, list[str]] = {}
    for i, event in enumerate(events):
        run = runs.get(event.run_id)
        if event.delivery_id not in stored:
            status = run.status if run is not None else reported[i]
            results.append(RecordResult(True, False, None, status))
            continue
        assert run is not None  # locked or created above
        if event.delivery_id in foreign:
            results.append(RecordResult(False, False, None, run.status, foreign=True))
            continue
        new = event.run_id in created
        moved = targets[i] if i in targets and event.run_id in reached else None
        current = None if new else run.status
        status = moved if moved is not None else (current if current is not None else reported[i])
        if not new:
            update_rows.append(
                {
                    "run_id": event.run_id,
                    "status": status.value,
                    "next_poll_at": _time(c.next_poll_at(status, now, run.grace)),
                    # A poll's news was learned by a status call: it counts with the others.
                    "polled": int(Origin(event.origin) is Origin.POLL),
                    "terminal": status.is_terminal,
                }
            )
        if moved is not None:
            names = calls_of[i] = c.calls_for_move(items[i].handlers, moved, run.on_end)
            call_rows.extend(
                {
                    "handler": name,
                    "run_id": event.run_id,
                    "status": moved.value,
                    "delivery_id": event.delivery_id,
                }
                for name in names
            )
        transition = Transition(event.run_id, moved) if moved is not None else None
        results.append(RecordResult(False, new, transition, status))

    steps = []
    if update_rows:
        steps.append((_UPDATE_RUNS, [now, now, _rows(update_rows)]))
    if call_rows:
        steps.append((_INSERT_CALLS, [now, now, now, _rows(call_rows)]))
    answers = (yield steps) if steps else []
    if call_rows:
        ids = {(row["run_id"], row["handler"]): int(row["id"]) for row in answers[-1]}
        for i, names in calls_of.items():
            call_ids = tuple(ids[(events[i].run_id, name)] for name in names)
            results[i] = dataclasses.replace(results[i], call_ids=call_ids)
    return results


def drive_rounds(
    plan: Rounds, run_all: Callable[[list[Stmt]], list[list[c.Row]]]
) -> list[RecordResult]:
    """Run `plan` to its end, each round's statements through `run_all` together."""
    try:
        stmts = next(plan)
        while True:
            stmts = plan.send(run_all(stmts))
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
