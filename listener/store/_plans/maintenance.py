"""Plans the poller and the operators use: overdue-run claims and reschedules, counts,
retention, ping and the schema version."""

from __future__ import annotations

from collections.abc import Generator, Sequence
from datetime import datetime
from typing import Any

from listener.budget import take_from_bucket
from listener.events import Origin, RunStatus
from listener.store._common import (
    Row,
    after,
    as_utc,
    check_limit,
    utcnow,
)
from listener.store._plans.core import (
    _OPEN,
    _RUN_DUE,
    _TERMINAL,
    TERMINAL_STATUSES,
    Dialect,
    Plan,
    Stmt,
    _marks,
)
from listener.store._rows import (
    make_counts,
    run_from_row,
)
from listener.store.base import (
    PruneCounts,
    RunEnd,
    RunRecord,
    StoreCounts,
    WebhookEpisode,
)

# -- polling --


def claim_overdue_runs_plan(
    d: Dialect,
    owner: str,
    *,
    limit: int,
    lease_seconds: float,
    provider: str | None,
    now: datetime | None,
    due_by: datetime | None = None,
) -> Plan[list[RunRecord]]:
    check_limit(limit)
    moment = as_utc(now) if now is not None else utcnow()
    at, expires = d.t(moment), d.t(after(moment, lease_seconds))
    # Runs due a little later may be claimed early; leases still expire by the real clock.
    due = d.t(as_utc(due_by)) if due_by is not None else at
    by_provider = " AND provider = ?" if provider is not None else ""
    # runs_due holds the open runs in the order claimed: the walk stops at the limit, and
    # past the first run not yet due, however many runs are open or overdue.
    picked = (
        f"SELECT run_id FROM runs WHERE status IN ({_OPEN}) AND {_RUN_DUE} <= ?"
        f" AND (lease_owner IS NULL OR lease_expires_at <= ?){by_provider}"
        f" ORDER BY {_RUN_DUE}, run_id LIMIT ?{d.skip_locked}"
    )
    rows = yield (
        "UPDATE runs SET lease_owner = ?, lease_expires_at = ?, updated_at = ?"
        f" WHERE {d.pick('run_id', picked)} RETURNING run_id",
        [owner, expires, at, due, at, *([provider] if provider is not None else []), limit],
    )
    if not rows:
        return []
    ids = [r["run_id"] for r in rows]
    rows = yield (
        f"SELECT * FROM runs WHERE run_id IN ({_marks(ids)}) ORDER BY {_RUN_DUE}, run_id",
        ids,
    )
    return [run_from_row(r, d.time_value, d.json_value) for r in rows]


def reschedule_poll_plan(
    d: Dialect,
    run_id: str,
    owner: str,
    *,
    next_poll_at: datetime,
    attempts: int,
    status_call: bool = True,
) -> Plan[bool]:
    rows = yield (
        "UPDATE runs SET next_poll_at = ?, poll_attempts = ?, status_calls = status_calls + ?,"
        " lease_owner = NULL,"
        " lease_expires_at = NULL, updated_at = ? WHERE run_id = ? AND lease_owner = ?"
        " RETURNING run_id",
        [d.t(next_poll_at), int(attempts), int(status_call), d.t(utcnow()), run_id, owner],
    )
    return bool(rows)


def bring_forward_polls_plan(
    d: Dialect,
    provider: str,
    application: str | None,
    *,
    submitted_before: datetime,
    later_than: datetime,
    to: datetime,
    exclude: Sequence[str] = (),
    now: datetime | None = None,
) -> Plan[int]:
    """Move to `to` the next poll of the open, unleased runs of one application (None:
    every application but those in `exclude`) that were submitted before
    `submitted_before`, are not due until after `later_than` and were not polled since
    their last news (a polled run keeps its poller's plan)."""
    at = d.t(as_utc(now) if now is not None else utcnow())
    if application is not None:
        which, names = " AND application = ?", [application]
    elif exclude:
        which, names = f" AND application NOT IN ({_marks(exclude)})", list(exclude)
    else:
        which, names = "", []
    rows = yield (
        "UPDATE runs SET next_poll_at = ?, updated_at = ?"
        f" WHERE provider = ?{which} AND status IN ({_OPEN})"
        " AND submitted_at <= ? AND next_poll_at > ? AND poll_attempts = 0"
        " AND (lease_owner IS NULL OR lease_expires_at <= ?)"
        " RETURNING run_id",
        [d.t(to), at, provider, *names, d.t(submitted_before), d.t(later_than), at],
    )
    return len(rows)


def take_budget_plan(
    d: Dialect, name: str, *, rate: float, burst: int, want: int, now: datetime | None = None
) -> Plan[int]:
    """Up to `want` tokens of the shared budget `name` (a bucket of `rate` a second, at
    most `burst` saved), created full on first use; the row is locked while it is read
    and written back, so replicas taking at once each get their own tokens."""
    at = as_utc(now) if now is not None else utcnow()
    yield (
        "INSERT INTO rate_budgets (name, tokens, updated_at) VALUES (?, ?, ?)"
        " ON CONFLICT (name) DO NOTHING",
        [name, float(burst), d.t(at)],
    )
    rows = yield (
        f"SELECT tokens, updated_at FROM rate_budgets WHERE name = ?{d.for_update}",
        [name],
    )
    updated = d.time_value(rows[0]["updated_at"])
    granted, left = take_from_bucket(
        float(rows[0]["tokens"]),
        (at - updated).total_seconds(),
        rate=rate,
        burst=burst,
        want=want,
    )
    yield (
        "UPDATE rate_budgets SET tokens = ?, updated_at = ? WHERE name = ?",
        [left, d.t(max(at, updated)), name],
    )
    return granted


def mark_overdue_plan(d: Dialect, run_id: str) -> Plan[bool]:
    rows = yield (
        "UPDATE runs SET overdue_noticed_at = ?"
        " WHERE run_id = ? AND overdue_noticed_at IS NULL RETURNING run_id",
        [d.t(utcnow()), run_id],
    )
    return bool(rows)


def release_run_plan(d: Dialect, run_id: str, owner: str) -> Plan[bool]:
    rows = yield (
        "UPDATE runs SET lease_owner = NULL, lease_expires_at = NULL, updated_at = ?"
        " WHERE run_id = ? AND lease_owner = ? RETURNING run_id",
        [d.t(utcnow()), run_id, owner],
    )
    return bool(rows)


# -- reporting --


def list_webhook_episodes_plan(d: Dialect) -> Plan[list[WebhookEpisode]]:
    rows = yield ("SELECT provider, degraded, since FROM webhook_episodes ORDER BY provider", [])
    return [
        WebhookEpisode(
            provider=r["provider"],
            degraded=bool(r["degraded"]),
            since=d.time_value(r["since"]) if r["since"] is not None else None,
        )
        for r in rows
    ]


def move_webhook_episode_plan(
    d: Dialect, provider: str, *, was_degraded: bool, degraded: bool, since: datetime | None
) -> Plan[bool]:
    """One statement: created in its new state when never moved (a provider starts not
    degraded), else moved only from `was_degraded`, so of several processes deciding the
    same move, one wins."""
    rows = yield (
        "INSERT INTO webhook_episodes (provider, degraded, since, updated_at)"
        " VALUES (?, ?, ?, ?) ON CONFLICT (provider) DO UPDATE SET"
        " degraded = excluded.degraded, since = excluded.since, updated_at = excluded.updated_at"
        " WHERE webhook_episodes.degraded = ? RETURNING provider",
        # 0 or 1: one column type both backends compare alike.
        [provider, int(degraded), d.opt_t(since), d.t(utcnow()), int(was_degraded)],
    )
    return bool(rows)


def list_run_ends_plan(d: Dialect, *, since: datetime, limit: int) -> Plan[list[RunEnd]]:
    check_limit(limit)
    columns = "e.provider, e.application, e.origin, e.occurred_at, e.received_at"
    if d.lateral:
        # Each transition's event looked up by its key: a hash join would read every event.
        event = (
            f"CROSS JOIN LATERAL (SELECT {columns} FROM events e"
            f" WHERE e.delivery_id = t.delivery_id{d.probe}) AS e"
        )
        run = (
            "LEFT JOIN LATERAL (SELECT r.submitted_at FROM runs r"
            f" WHERE r.run_id = t.run_id{d.probe}) AS r ON true"
        )
    else:
        event = "JOIN events e ON e.delivery_id = t.delivery_id"
        run = "LEFT JOIN runs r ON r.run_id = t.run_id"
    rows = yield (
        f"SELECT t.status, t.run_id, r.submitted_at, {columns} FROM transitions t {event} {run}"
        f" WHERE t.created_at >= ? AND t.status IN ({_marks(TERMINAL_STATUSES)})"
        " ORDER BY t.created_at DESC LIMIT ?",
        [d.t(since), *TERMINAL_STATUSES, limit],
    )
    return [
        RunEnd(
            provider=r["provider"],
            application=r["application"],
            status=RunStatus(r["status"]),
            origin=Origin(r["origin"]),
            occurred_at=d.time_value(r["occurred_at"]),
            received_at=d.time_value(r["received_at"]),
            run_id=r["run_id"],
            submitted_at=(None if r["submitted_at"] is None else d.time_value(r["submitted_at"])),
        )
        for r in rows
    ]


def counts_plan() -> Plan[StoreCounts]:
    runs = yield ("SELECT status AS k, count(*) AS n FROM runs GROUP BY status", [])
    calls = yield ("SELECT state AS k, count(*) AS n FROM handler_calls GROUP BY state", [])
    events = yield ("SELECT count(*) AS n FROM events", [])
    unroutable = yield ("SELECT count(*) AS n FROM unroutable", [])
    return make_counts(
        [(r["k"], r["n"]) for r in runs],
        [(r["k"], r["n"]) for r in calls],
        int(events[0]["n"]),
        int(unroutable[0]["n"]),
    )


# -- retention --

# Keys per DELETE ... IN (...): well inside both databases' limits on parameters.
PRUNE_IN_CHUNK = 500


# What `prune_plan` may delete, each as the condition on its table and its parameters
# (all of them the cutoff). Done calls of terminal runs: calls_done walks the done ones
# oldest first, each run looked up by its key.
def _prune_calls(d: Dialect) -> str:
    return (
        "state = 'done' AND updated_at < ? AND EXISTS (SELECT 1 FROM runs r"
        f" WHERE r.run_id = handler_calls.run_id AND r.status IN ({_TERMINAL}){d.probe})"
    )


# Terminal runs with no call left: runs_by_submitted narrows the scan, the NOT EXISTS reads
# calls_by_run_handler, once per run.
def _prune_runs(d: Dialect) -> str:
    return (
        f"status IN ({_TERMINAL}) AND submitted_at < ? AND updated_at < ?"
        f" AND NOT EXISTS (SELECT 1 FROM handler_calls h WHERE h.run_id = runs.run_id{d.probe})"
    )


_PRUNE_UNROUTABLE = "received_at < ?"


def _delete_keys(
    table: str, key: str, keys: Sequence[Any], where: str = "", params: Sequence[Any] = ()
) -> Generator[Stmt, list[Row], list[Any]]:
    """Delete the rows of `table` whose `key` is one of `keys` (and that still meet
    `where`, when given); the keys of the rows deleted."""
    gone: list[Any] = []
    also = f" AND {where}" if where else ""
    for at in range(0, len(keys), PRUNE_IN_CHUNK):
        chunk = list(keys[at : at + PRUNE_IN_CHUNK])
        rows = yield (
            f"DELETE FROM {table} WHERE {key} IN ({_marks(chunk)}){also} RETURNING {key}",
            [*chunk, *params],
        )
        gone.extend(row[key] for row in rows)
    return gone


def prune_plan(d: Dialect, *, before: datetime, limit: int) -> Plan[PruneCounts]:
    """One chunk of retention, in the caller's transaction: done calls of terminal runs,
    then terminal runs left without any call (with their events and transitions), then
    unroutable deliveries; at most `limit` of each, oldest first.

    Each kind is picked first (with `skip_locked`: on PostgreSQL, rows that another
    transaction is changing are left for a later call, never waited for), then deleted
    by key with its condition checked again, so a row that changed in between (a call
    replayed, a run that heard news) is kept. Picking in a subquery of the DELETE itself
    could take more than `limit`: PostgreSQL may run such a subquery again, and it then
    skips the rows the statement has just deleted and picks the next ones.
    """
    check_limit(limit)
    cutoff = d.t(before)

    prune_calls, prune_runs = _prune_calls(d), _prune_runs(d)
    rows = yield (
        f"SELECT id FROM handler_calls{d.done_calls_index} WHERE {prune_calls}"
        f" ORDER BY updated_at, id LIMIT ?{d.skip_locked}",
        [cutoff, limit],
    )
    picked_calls = [row["id"] for row in rows]
    calls = yield from _delete_keys("handler_calls", "id", picked_calls, prune_calls, [cutoff])

    rows = yield (
        f"SELECT run_id FROM runs WHERE {prune_runs}"
        f" ORDER BY submitted_at, run_id LIMIT ?{d.skip_locked}",
        [cutoff, cutoff, limit],
    )
    picked_runs = [row["run_id"] for row in rows]
    runs = yield from _delete_keys("runs", "run_id", picked_runs, prune_runs, [cutoff, cutoff])
    # Everything the deleted runs owned: events_by_run and the transitions' primary key.
    events = yield from _delete_keys("events", "run_id", runs)
    transitions = yield from _delete_keys("transitions", "run_id", runs)

    # Ids grow with the time received: the oldest come first.
    rows = yield (
        f"SELECT id FROM unroutable WHERE {_PRUNE_UNROUTABLE} ORDER BY id LIMIT ?{d.skip_locked}",
        [cutoff, limit],
    )
    picked_unroutable = [row["id"] for row in rows]
    unroutable = yield from _delete_keys(
        "unroutable", "id", picked_unroutable, _PRUNE_UNROUTABLE, [cutoff]
    )
    return PruneCounts(
        runs=len(runs),
        events=len(events),
        transitions=len(transitions),
        calls=len(calls),
        unroutable=len(unroutable),
        more=max(len(picked_calls), len(picked_runs), len(picked_unroutable)) >= limit,
    )


def ping_plan() -> Plan[None]:
    yield ("SELECT 1 AS one", [])


def schema_version_plan() -> Plan[int]:
    rows = yield ("SELECT coalesce(max(version), 0) AS v FROM schema_version", [])
    return int(rows[0]["v"])
