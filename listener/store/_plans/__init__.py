"""Every store operation written once, as a plan of SQL statements.

A plan is a generator that yields the statements to run (SQL with `?` placeholders, and
parameters) and is sent back each statement's rows. A backend only drives plans inside its
own transactions; what the SQL does and how a result is built is shared, so the two
backends cannot drift apart.
"""

from __future__ import annotations

from listener.store._plans.calls import (
    CLAIM_SET,
    CLAIMABLE,
    claim_calls_plan,
    claimable_calls,
    complete_call_plan,
    fail_call_plan,
    get_call_plan,
    list_calls_plan,
    release_call_plan,
    replay_call_plan,
)
from listener.store._plans.console import (
    list_audit_plan,
    record_audit_plan,
    run_history_plan,
)
from listener.store._plans.core import (
    CALL_SELECT,
    OPEN_STATUSES,
    TERMINAL_STATUSES,
    Dialect,
    Plan,
    Query,
    Stmt,
    drive,
    in_step_waves,
)
from listener.store._plans.events import (
    get_event_plan,
    list_events_plan,
    list_unroutable_plan,
    record_plan,
    record_unroutable_plan,
)
from listener.store._plans.maintenance import (
    PRUNE_IN_CHUNK,
    bring_forward_polls_plan,
    claim_overdue_runs_plan,
    counts_plan,
    list_run_ends_plan,
    list_webhook_episodes_plan,
    mark_overdue_plan,
    move_webhook_episode_plan,
    ping_plan,
    prune_plan,
    release_run_plan,
    reschedule_poll_plan,
    schema_version_plan,
    take_budget_plan,
)
from listener.store._plans.recovery import (
    enqueue_calls_plan,
    find_calls_plan,
    list_transitions_plan,
    replay_calls_plan,
    scan_unroutable_plan,
    settle_unroutable_plan,
)
from listener.store._plans.runs import (
    get_run_plan,
    list_runs_plan,
    register_run_plan,
)

__all__ = [
    "CALL_SELECT",
    "CLAIMABLE",
    "CLAIM_SET",
    "OPEN_STATUSES",
    "PRUNE_IN_CHUNK",
    "TERMINAL_STATUSES",
    "Dialect",
    "Plan",
    "Query",
    "Stmt",
    "bring_forward_polls_plan",
    "claim_calls_plan",
    "claim_overdue_runs_plan",
    "claimable_calls",
    "complete_call_plan",
    "counts_plan",
    "drive",
    "enqueue_calls_plan",
    "fail_call_plan",
    "find_calls_plan",
    "get_call_plan",
    "get_event_plan",
    "get_run_plan",
    "in_step_waves",
    "list_audit_plan",
    "list_calls_plan",
    "list_events_plan",
    "list_run_ends_plan",
    "list_runs_plan",
    "list_transitions_plan",
    "list_unroutable_plan",
    "list_webhook_episodes_plan",
    "mark_overdue_plan",
    "move_webhook_episode_plan",
    "ping_plan",
    "prune_plan",
    "record_audit_plan",
    "record_plan",
    "record_unroutable_plan",
    "register_run_plan",
    "release_call_plan",
    "release_run_plan",
    "replay_call_plan",
    "replay_calls_plan",
    "reschedule_poll_plan",
    "run_history_plan",
    "scan_unroutable_plan",
    "schema_version_plan",
    "settle_unroutable_plan",
    "take_budget_plan",
]
