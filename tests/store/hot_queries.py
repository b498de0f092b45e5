"""The store's hot queries over a store filled in bulk, for the tests of their plans on
each backend (test_store_plans_postgres.py, test_store_plans_sqlite.py).

`fill_statements` writes `runs` runs, one submitted a second with the newest at `now`: one
in 20 running and one queued (their next poll a minute after submission, so nearly all
overdue), one failed, the rest succeeded; ten events a run, one transition, and a handler
call for each ended run: mostly done, one in 50 pending and due, one in 500 running under
a lease that ran out.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from listener.events import RunStatus
from listener.store import _plans as plans

BIG_TABLES = ("runs", "events", "handler_calls")
# One row a run, and narrow: at the tests' size PostgreSQL rightly reads all of it rather
# than probe its index hundreds of times, as retention's deletes do (at a million runs it
# probes); the tests check that an index is there to probe.
NARROW_TABLES = ("transitions",)

_STATUS = (
    "CASE i % 20 WHEN 0 THEN 'running' WHEN 1 THEN 'queued' WHEN 2 THEN 'failed'"
    " ELSE 'succeeded' END"
)


@dataclass(frozen=True)
class Spelling:
    """How a backend writes a time from seconds, a JSON object and a series of i (and j)."""

    ts: Callable[[str], str]
    json: Callable[[str], str]
    series: Callable[[int], tuple[str, str]]  # (prefix, FROM) of i in 1..runs
    series_j: Callable[[int], tuple[str, str]]  # the same, with j in 0..9


def _cte(runs: int) -> str:
    return (
        f"WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < {runs}),"
        " k(j) AS (SELECT 0 UNION ALL SELECT j + 1 FROM k WHERE j < 9) "
    )


POSTGRES = Spelling(
    ts=lambda expr: f"to_timestamp({expr})",
    json=lambda expr: f"jsonb_build_object('id', {expr})",
    series=lambda runs: ("", f"generate_series(1, {runs}) AS s(i)"),
    series_j=lambda runs: (
        "",
        f"generate_series(1, {runs}) AS s(i), generate_series(0, 9) AS k(j)",
    ),
)
SQLITE = Spelling(
    ts=lambda expr: f"({expr})",
    json=lambda expr: f"json_object('id', {expr})",
    series=lambda runs: (_cte(runs), "s"),
    series_j=lambda runs: (_cte(runs), "s, k"),
)


def fill_statements(s: Spelling, runs: int, now: float) -> Iterator[str]:
    """Statements without parameters (`%` is the modulo) that fill an empty store."""

    def at(offset: str) -> str:
        return s.ts(f"{now!r} - i + {offset}")

    prefix, source = s.series(runs)
    yield (
        f"{prefix}INSERT INTO runs (run_id, provider, application, status, submitted_at,"
        " last_event_at, grace_seconds, deadline, next_poll_at, callback, metadata, updated_at)"
        f" SELECT 'run-' || i, 'nextmv', 'app-' || (i % 10), {_STATUS}, {at('0')}, {at('9')},"
        f" 60, CASE WHEN i % 40 = 0 THEN {at('3600')} END,"
        f" CASE WHEN i % 20 IN (0, 1) THEN {at('60')} END, '{{}}', '{{}}', {at('9')}"
        f" FROM {source}"
    )
    yield (
        f"{prefix}INSERT INTO transitions (run_id, status, delivery_id, created_at)"
        f" SELECT 'run-' || i, {_STATUS}, 'dlv-' || i || '-9', {at('9')} FROM {source}"
    )
    yield (
        f"{prefix}INSERT INTO handler_calls (handler, run_id, status, delivery_id, state,"
        " attempts, next_attempt_at, lease_owner, lease_expires_at, created_at, updated_at)"
        " SELECT 'notify', 'run-' || i, CASE i % 20 WHEN 2 THEN 'failed' ELSE 'succeeded' END,"
        " 'dlv-' || i || '-9',"
        " CASE WHEN i % 50 = 3 THEN 'pending' WHEN i % 500 = 7 THEN 'running' ELSE 'done' END,"
        f" 1, {at('10')}, CASE WHEN i % 500 = 7 THEN 'gone' END,"
        f" CASE WHEN i % 500 = 7 THEN {at('100')} END, {at('9')}, {at('10')}"
        f" FROM {source} WHERE i % 20 NOT IN (0, 1) ORDER BY i DESC"
    )
    prefix, source = s.series_j(runs)
    run_id = "'run-' || i"
    yield (
        f"{prefix}INSERT INTO events (delivery_id, provider, application, run_id, status,"
        " occurred_at, received_at, origin, payload)"
        " SELECT 'dlv-' || i || '-' || j, 'nextmv', 'app-' || (i % 10), 'run-' || i,"
        f" CASE WHEN j = 9 THEN {_STATUS} ELSE 'running' END, {at('j')}, {at('j')},"
        f" 'webhook', {s.json(run_id)}"
        f" FROM {source} ORDER BY i DESC, j"
    )


@dataclass(frozen=True)
class HotQuery:
    name: str
    make: Callable[[], plans.Plan[Any]]
    found: int  # rows its first statement finds in the filled store
    # Its first statement reads rows in the order it wants them from an index, so it stops
    # at its limit however many rows qualify: no sort.
    in_order: bool = False
    # The index its first statement must walk, where another would read far more rows
    # than it returns when what it wants is rare.
    index: str | None = None


def hot_queries(d: plans.Dialect, runs: int, now: float) -> list[HotQuery]:
    at = datetime.fromtimestamp(now, UTC)
    page: dict[str, Any] = {
        "provider": None,
        "application": None,
        "since": None,
        "until": None,
        "limit": 100,
        "cursor": None,
    }
    events: dict[str, Any] = {**page, "status": None, "origin": None}
    return [
        HotQuery(
            "claim_calls",
            lambda: plans.claim_calls_plan(d, "me", limit=50, lease_seconds=60, now=at),
            # The expired leases come first: all of them (the newest has not run out).
            runs // 500 - 1,
            in_order=True,
        ),
        HotQuery(
            "claim_overdue_runs",
            lambda: plans.claim_overdue_runs_plan(
                d, "me", limit=50, lease_seconds=60, provider=None, now=at
            ),
            50,
            in_order=True,
        ),
        HotQuery(
            "claim_overdue_runs of a provider",
            lambda: plans.claim_overdue_runs_plan(
                d, "me", limit=50, lease_seconds=60, provider="nextmv", now=at
            ),
            50,
            in_order=True,
        ),
        HotQuery("list_runs", lambda: plans.list_runs_plan(d, status=None, **page), 101),
        HotQuery(
            "list_runs of open runs",
            lambda: plans.list_runs_plan(d, status=[RunStatus.RUNNING, RunStatus.QUEUED], **page),
            101,
            index="runs_open",
        ),
        HotQuery("list_events", lambda: plans.list_events_plan(d, run_id=None, **events), 101),
        HotQuery(
            "list_events of a run",
            lambda: plans.list_events_plan(d, run_id="run-77", **events),
            10,
        ),
        HotQuery(
            "list_run_ends",
            # The ends of the newest 7200 runs (each ends nine seconds after submission),
            # nine in ten of them terminal.
            lambda: plans.list_run_ends_plan(d, since=at - timedelta(seconds=7191), limit=10_000),
            min(runs, 7200) * 9 // 10,
        ),
        HotQuery(
            "prune",
            lambda: plans.prune_plan(d, before=at - timedelta(seconds=runs // 2), limit=1000),
            min(1000, runs // 2 * 9 // 10),
            in_order=True,
        ),
    ]
