"""The PostgreSQL fast path: the records of a wave applied in two round trips.

A wave is records of distinct runs and distinct deliveries (`_plans.in_step_waves`), so
none of them reads what another writes and together they do exactly what each would do
alone through `_plans.record_plan`, which stays the reference and the fallback when a
wave fails. Instead of several statements per record, each step takes one statement for
all the wave's records, its rows as one JSON parameter, and the statements of a round go
out together in one pipeline: the events are inserted and the runs read, then the new
runs, the transitions, the run updates and the handler calls are written. The SQL text
stays constant, so the server prepares it once.
Measured (`bench/store.py`, 2,000 events from 64 callers, three runs each): group commit
with five statements per record, pipelined, recorded 1,615-1,923 events a second; with
these, 3,078-3,627 (the per-event baseline: 486-617).

Other replicas may write the same rows meanwhile, so nothing here is read before it is
locked or claimed: the run rows are read `FOR UPDATE`, and the inserts of events, runs and
transitions say with `ON CONFLICT DO NOTHING RETURNING` which rows were this wave's. The
second round writes a new run's transition in the same round trip as the run itself; if
another writer created one of those runs first, the wave reports it (`None`) and the
batch goes through the plan, which reads that run and decides again.
"""

from __future__ import annotations

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
# each one's rows, in order. It returns None when another writer got in its way.
Rounds = Generator[list[Stmt], list[list[c.Row]], list[RecordResult] | None]

# Each statement takes its rows as one JSON array of objects (`json_to_recordset`): one
# parameter encoded in one call, where arrays (`unnest`) cost a Python step per value.
# Rows are inserted in array order, so the ids the tables hand out follow the order of
# the records, as they would one record at a time.
_INSERT_EVENTS = (
    "INSERT INTO events (delivery_id, provider, application, run_id, status, occurred_at,"
    " received_at, origin, payload)"
    " SELECT u.delivery_id, u.provider, u.application, u.run_id, u.status, u.occurred_at,"
    " ?::timestamptz, u.origin, u.payload"
    " FROM ROWS FROM (json_to_recordset(?::json) AS (delivery_id text, provider text,"
    " application text, run_id text, status text, occurred_at timestamptz, origin text,"
    " payload jsonb)) WITH ORDINALITY AS u(delivery_id, provider, application, run_id, status,"
    " occurred_at, origin, payload, n) ORDER BY u.n"
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
    " FROM ROWS FROM (json_to_recordset(?::json) AS (run_id text, provider text,"
    " application text, status text, submitted_at timestamptz, grace_seconds float8,"
    " next_poll_at timestamptz)) WITH ORDINALITY AS u(run_id, provider, application, status,"
    " submitted_at, grace_seconds, next_poll_at, n) ORDER BY u.n"
    " ON CONFLICT (run_id) DO NOTHING RETURNING run_id"
)
# An event for another provider's run is not kept (`RecordResult.foreign`).
_DELETE_EVENTS = "DELETE FROM events WHERE delivery_id = ANY(?::text[])"
# One statement for what follows from the transitions: each run with a `target` tries to
# reach it (a transition already stored is old news); a known run is updated to `moved`
# when it did and to `stay` when it did not (the status, next poll and whether it ended:
# terminal runs are never polled again and lose any poll lease); the handler calls of the
# transitions made are enqueued. It returns the runs that moved and the calls' ids.
_APPLY_TRANSITIONS = (
    "WITH u AS (SELECT * FROM json_to_recordset(?::json) AS u(run_id text, delivery_id text,"
    " target text, known boolean, polled integer, moved_status text, moved_poll timestamptz,"
    " moved_ended boolean, stay_status text, stay_poll timestamptz, stay_ended boolean)),"
    " t AS (INSERT INTO transitions (run_id, status, delivery_id, created_at)"
    " SELECT run_id, target, delivery_id, ?::timestamptz FROM u WHERE target IS NOT NULL"
    " ON CONFLICT (run_id, status) DO NOTHING RETURNING run_id),"
    " m AS (SELECT u.*, t.run_id IS NOT NULL AS moved FROM u LEFT JOIN t USING (run_id)"
    " WHERE u.known),"
    " r AS (UPDATE runs SET"
    " status = CASE WHEN m.moved THEN m.moved_status ELSE m.stay_status END,"
    " last_event_at = ?::timestamptz,"
    " next_poll_at = CASE WHEN m.moved THEN m.moved_poll ELSE m.stay_poll END,"
    " poll_attempts = 0, status_calls = runs.status_calls + m.polled,"
    " lease_owner = CASE WHEN (CASE WHEN m.moved THEN m.moved_ended ELSE m.stay_ended END)"
    " THEN NULL ELSE runs.lease_owner END,"
    " lease_expires_at = CASE WHEN (CASE WHEN m.moved THEN m.moved_ended ELSE m.stay_ended END)"
    " THEN NULL ELSE runs.lease_expires_at END,"
    " updated_at = ?::timestamptz FROM m WHERE runs.run_id = m.run_id),"
    " k AS (INSERT INTO handler_calls (handler, run_id, status, delivery_id, state, attempts,"
    " next_attempt_at, replays, created_at, updated_at)"
    " SELECT k.handler, k.run_id, k.status, k.delivery_id, 'pending', 0, ?::timestamptz, 0,"
    " ?::timestamptz, ?::timestamptz"
    " FROM ROWS FROM (json_to_recordset(?::json) AS (handler text, run_id text, status text,"
    " delivery_id text)) WITH ORDINALITY AS k(handler, run_id, status, delivery_id, n)"
    " WHERE k.run_id IN (SELECT run_id FROM t) ORDER BY k.n"
    " RETURNING id, run_id, handler)"
    " SELECT run_id, NULL::bigint AS id, NULL::text AS handler FROM t"
    " UNION ALL SELECT run_id, id, handler FROM k"
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


@dataclass(slots=True)
class _Step:
    """What a stored record of a run of its own provider does: the transition it tries
    (None when the run cannot move), whether it made its run, and the calls a transition
    it makes enqueues."""

    target: RunStatus | None
    created: bool
    names: list[str]


class _Polls:
    """When a run is next polled, as the JSON rows carry it: the same few values for a
    whole wave (one time, a handful of graces), each worked out once."""

    def __init__(self, now: datetime) -> None:
        self.now = now
        self._seen: dict[tuple[RunStatus, float], str | None] = {}

    def __call__(self, status: RunStatus, grace: float) -> str | None:
        key = (status, grace)
        if key not in self._seen:
            self._seen[key] = _time(c.next_poll_at(status, self.now, grace))
        return self._seen[key]


def record_wave(items: Sequence[RecordArgs]) -> Rounds:
    """Apply a wave's `record` calls (distinct runs, distinct deliveries) inside the
    caller's transaction, each as `_plans.record_plan` would; their results, in order, or
    None when another writer created one of the wave's new runs meanwhile (the caller then
    rolls back and records them through the plan)."""
    now = c.utcnow()
    at = _time(now)
    poll = _Polls(now)
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
            "occurred_at": _time(when),
            "origin": Origin(event.origin).value,
            "payload": dict(event.payload),
        }
        for event, status, when in zip(events, reported, occurred, strict=True)
    ]
    stored_rows, run_rows = yield [
        (_INSERT_EVENTS, [at, _rows(event_rows)]),
        (_LOCK_RUNS, [[event.run_id for event in events]]),
    ]
    stored = {row["delivery_id"] for row in stored_rows}
    runs = _runs_by_id(run_rows)

    # What each stored record does with its run as just read (and locked): a run first
    # heard of now is created; an event for another provider's run is not kept.
    plan: dict[int, _Step] = {}
    new_rows: list[dict[str, Any]] = []
    foreign: list[str] = []
    step_rows: list[dict[str, Any]] = []
    call_rows: list[dict[str, Any]] = []
    for i, event in enumerate(events):
        if event.delivery_id not in stored:
            continue
        run = runs.get(event.run_id)
        if run is not None and run.provider != event.provider:
            foreign.append(event.delivery_id)
            continue
        if run is None:
            grace = float(items[i].default_grace_seconds)
            new_rows.append(
                {
                    "run_id": event.run_id,
                    "provider": event.provider,
                    "application": event.application,
                    "status": reported[i].value,
                    "submitted_at": _time(min(occurred[i], now)),
                    "grace_seconds": grace,
                    "next_poll_at": poll(reported[i], grace),
                }
            )
            step = _Step(reported[i], True, [])
            on_end = None
        else:
            step = _Step(next_status(run.status, reported[i]), False, [])
            grace, on_end = run.grace, run.on_end
        plan[i] = step
        row: dict[str, Any] = {"run_id": event.run_id, "delivery_id": event.delivery_id}
        if step.target is not None:
            step.names = c.calls_for_move(items[i].handlers, step.target, on_end)
            row["target"] = step.target.value
            call_rows.extend(
                {
                    "handler": name,
                    "run_id": event.run_id,
                    "status": step.target.value,
                    "delivery_id": event.delivery_id,
                }
                for name in step.names
            )
        if run is not None:
            # Where the run goes if its transition is made, and where it stays if that
            # turns out to be old news (or there is none).
            row["known"] = True
            # A poll's news was learned by a status call: it counts with the run's others.
            row["polled"] = int(Origin(event.origin) is Origin.POLL)
            for prefix, status in (("moved", step.target), ("stay", run.status)):
                if status is not None:
                    row[f"{prefix}_status"] = status.value
                    row[f"{prefix}_poll"] = poll(status, grace)
                    row[f"{prefix}_ended"] = status.is_terminal
        step_rows.append(row)

    round_: list[Stmt] = []
    if new_rows:
        # In the order of their keys, as every other wave takes them: two replicas
        # creating the same runs wait for each other instead of deadlocking.
        new_rows.sort(key=lambda row: row["run_id"])
        round_.append((_INSERT_RUNS, [at, at, _rows(new_rows)]))
    if foreign:
        round_.append((_DELETE_EVENTS, [foreign]))
    if step_rows:
        params = [_rows(step_rows), at, at, at, at, at, at, _rows(call_rows)]
        round_.append((_APPLY_TRANSITIONS, params))
    answers = (yield round_) if round_ else []
    if new_rows and len(answers[0]) < len(new_rows):
        return None  # another writer created one of these runs first
    moved: set[str] = set()
    call_ids: dict[tuple[str, str], int] = {}
    for made in answers[-1] if step_rows else []:
        if made["id"] is None:
            moved.add(made["run_id"])
        else:
            call_ids[(made["run_id"], made["handler"])] = int(made["id"])

    results: list[RecordResult] = []
    for i, event in enumerate(events):
        run = runs.get(event.run_id)
        done = plan.get(i)
        if event.delivery_id not in stored:
            status = run.status if run is not None else reported[i]
            results.append(RecordResult(True, False, None, status))
        elif done is None:
            assert run is not None  # only a known run belongs to another provider
            results.append(RecordResult(False, False, None, run.status, foreign=True))
        elif done.target is None or event.run_id not in moved:
            # No move, or old news: a known run keeps its status.
            status = run.status if run is not None else reported[i]
            results.append(RecordResult(False, done.created, None, status))
        else:
            ids = tuple(call_ids[(event.run_id, name)] for name in done.names)
            transition = Transition(event.run_id, done.target)
            results.append(RecordResult(False, done.created, transition, done.target, ids))
    return results


def drive_rounds(
    plan: Rounds, run_all: Callable[[list[Stmt]], list[list[c.Row]]]
) -> list[RecordResult] | None:
    """Run `plan` to its end, each round's statements through `run_all` together."""
    try:
        stmts = next(plan)
        while True:
            stmts = plan.send(run_all(stmts))
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
