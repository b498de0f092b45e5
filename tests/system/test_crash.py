"""A `listener serve` process killed with SIGKILL mid-stream, and restarted on its store.

Concurrent senders keep delivering signed webhooks, retrying with the same message id
whatever went unanswered. Nothing acknowledged is lost in the kill (checked while no
process runs), everything unanswered is accepted after the restart, every handler call
ends done, and a handler runs twice only for a call that was in flight at the kill.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from scenarios import CrashSettings, Tally, assert_held, run_crash
from scenarios.processes import EVERY, Execution, audit_executions

from listener.events import RunEvent, RunStatus
from listener.store.base import CallState, HandlerCall


async def test_kill_and_restart_on_sqlite(tmp_path: Path) -> None:
    tally = await run_crash(tmp_path, CrashSettings())
    assert_held(tally)
    assert tally.lost == 0
    assert tally.double_calls == 0
    # Re-runs are allowed only for calls claimed and not done at the kill.
    assert tally.reruns <= tally.notes["calls in flight at the kill"]
    # The scenario proves something only if the kill really cut into the work.
    assert tally.notes["acknowledged by the killed process"] > 0
    assert tally.notes["calls in flight at the kill"] > 0
    assert tally.notes["deliveries unanswered (cut, refused)"] > 0
    assert tally.notes["acknowledged by the restarted process"] > 0
    assert tally.notes["calls run by the restarted process"] > 0


def _call(call_id: int, run_id: str, state: CallState = CallState.DONE) -> HandlerCall:
    now = datetime.now(UTC)
    event = RunEvent("d", "local", "routing", run_id, RunStatus.SUCCEEDED)
    return HandlerCall(
        id=call_id,
        handler=EVERY,
        run_id=run_id,
        status=RunStatus.SUCCEEDED,
        event=event,
        state=state,
        attempts=1,
        next_attempt_at=now,
        last_error=None,
        lease_owner=None,
        lease_expires_at=None,
        replays=0,
        created_at=now,
        updated_at=now,
    )


def test_the_audit_tells_reruns_from_double_calls() -> None:
    """A second run of a call in flight at the kill, by the restarted process, is a re-run;
    a second run of any other call, or two runs by one process, is a double call; a
    call that never ran is lost."""
    killed, restarted = 100, 200
    calls = [_call(1, "once"), _call(2, "rerun"), _call(3, "twice"), _call(4, "same-pid")]
    calls += [_call(5, "never"), _call(6, "stuck", CallState.RUNNING)]

    def ran(run_id: str, pid: int) -> Execution:
        return Execution(EVERY, run_id, "succeeded", "key", pid)

    executions = [
        ran("once", killed),
        ran("rerun", killed),
        ran("rerun", restarted),
        ran("twice", killed),
        ran("twice", restarted),
        ran("same-pid", killed),
        ran("same-pid", killed),
        ran("stuck", restarted),
    ]
    tally = Tally("audit")
    audit_executions(
        tally,
        calls,
        executions,
        in_flight_at_kill={2, 4},
        killed_pid=killed,
        survivor_pid=restarted,
    )
    assert (tally.reruns, tally.double_calls, tally.lost) == (1, 2, 1)
    assert tally.handler_calls == len(executions)
    assert any("stuck" in problem and "running" in problem for problem in tally.problems)
    assert not tally.held
