"""The demo: fake platform, lost webhooks, the poller recovering them, a checked summary."""

from __future__ import annotations

import itertools
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest

from listener.demo import (
    COUNT_HANDLER,
    LOG_HANDLER,
    DemoResult,
    RunReport,
    check,
    demo,
    main,
    plan_runs,
    run_demo,
)
from listener.events import Origin, RunEvent, RunStatus
from listener.registry import Handlers
from listener.store import CallState, HandlerCall, NewRun, open_store

# The summary's fixed columns: run, final, learned, running webhook, final webhook, calls.
COLUMNS = ((0, 21), (21, 32), (32, 41), (41, 50), (50, 59), (59, None))


def table(lines: list[str]) -> dict[str, tuple[str, ...]]:
    """The summary's rows by run id: (final, learned, running webhook, final webhook, calls)."""
    rows: dict[str, tuple[str, ...]] = {}
    for line in lines:
        if line.startswith("run-"):
            run, *cells = (line[a:b].strip() for a, b in COLUMNS)
            rows[run] = tuple(cells)
    return rows


async def test_a_small_demo_recovers_dropped_webhooks_by_polling() -> None:
    lines: list[str] = []
    # Seed 3 loses two runs' final webhooks and sends one delivery twice.
    result = await demo(runs=6, seed=3, out=lines.append)
    output = "\n".join(lines)
    assert result.exit_code == 0, output
    assert result.problems == []
    assert lines[-2].startswith("OK:")

    rows = table(lines)
    assert sorted(rows) == sorted(report.run_id for report in result.reports)
    by_poll = {run for run, row in rows.items() if row[1] == "poll"}
    dropped = {run for run, row in rows.items() if row[3] == "dropped"}
    # Exactly the runs whose final webhook was lost were learned by polling.
    assert by_poll == dropped
    assert by_poll
    assert len(by_poll) < len(rows)
    assert any("sent x2" in (row[2], row[3]) for row in rows.values())
    assert "1 duplicate suppressed" in output

    for report in result.reports:
        assert report.stored_status is report.true_status
        assert report.waited_status is report.true_status
        # Two handlers per transition; the running transition is only known when its
        # webhook came (the poller never asks before the run is over).
        transitions = 1 if report.running_webhook == "dropped" else 2
        assert report.calls_done == 2 * transitions
        assert int(rows[report.run_id][4]) == report.calls_done
        assert all(call.state is CallState.DONE and call.attempts == 1 for call in report.calls)
        assert all(count == 1 for count in report.counted.values())
        assert set(report.counted) == {call.status for call in report.calls}
    # Every live line names a run's end and how it was learned, once per run.
    learned = [line for line in lines if re.search(r"\s(by webhook|by poll)$", line)]
    assert len(learned) == 6

    # The seed decides everything but the timings: a second run tells the same story.
    again = await demo(runs=6, seed=3, out=lambda line: None)
    assert outcome(again) == outcome(result)


def outcome(result: DemoResult) -> list[tuple[object, ...]]:
    return [
        (r.run_id, r.true_status, r.learned_by, r.running_webhook, r.final_webhook)
        for r in result.reports
    ]


async def test_the_full_demo_passes_and_fits_80_columns() -> None:
    lines: list[str] = []
    assert await run_demo(out=lines.append) == 0, "\n".join(lines)
    rows = table(lines)
    assert len(rows) == 20
    learned = {row[1] for row in rows.values()}
    assert learned == {"webhook", "poll"}
    assert {row[0] for row in rows.values()} >= {"succeeded", "failed"}
    assert all(len(line) <= 80 for line in lines)
    assert any(line.startswith("webhooks ") and "dropped" in line for line in lines)
    assert any(line.startswith("poller ") for line in lines)
    assert any("-- " in line and "/20 done" in line for line in lines)


async def test_a_handler_that_always_fails_makes_the_demo_fail() -> None:
    broken = Handlers()

    @broken.on("succeeded", "failed", "canceled", name="broken")
    async def explode(event: RunEvent) -> None:
        raise RuntimeError("downstream is down")

    lines: list[str] = []
    code = await run_demo(runs=2, seed=1, out=lines.append, extra_handlers=[broken])
    assert code == 1
    failed = [line for line in lines if line.startswith("FAILED:")]
    assert failed
    assert "broken for run-" in failed[0]
    assert "dead after 3 attempts" in failed[0] + lines[lines.index(failed[0]) + 1]
    assert any(line.startswith("handlers ") and "2 dead" in line for line in lines)


async def test_a_store_that_already_holds_runs_is_refused(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'used.db'}"
    store = await open_store(url)
    try:
        await store.register_run(NewRun("run-old", "nextmv", "routing"))
    finally:
        await store.close()
    lines: list[str] = []
    assert await run_demo(runs=1, out=lines.append, store_url=url) == 1
    verdict = [line for line in lines if line.startswith("FAILED: ")]
    assert verdict
    assert "already holds 1 run; give an empty one" in " ".join(lines[lines.index(verdict[0]) :])


def test_main_runs_the_demo_on_a_given_store(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{tmp_path / 'demo.db'}"
    assert main(["--runs", "1", "--seed", "2", "--store", url, "--verbose"]) == 0
    assert (tmp_path / "demo.db").exists()
    printed = capsys.readouterr().out
    # --verbose prints the log handler's line for every transition as it is written.
    assert re.search(r"^run run-\S+ (succeeded|failed|canceled) provider=nextmv", printed, re.M)
    assert "OK: every run reached its true final status" in printed


def test_plans_are_seeded_and_keep_status_changes_apart() -> None:
    plans = plan_runs(20, seed=0)
    assert plans == plan_runs(20, seed=0)
    assert plans != plan_runs(20, seed=1)
    moments = sorted(moment for plan in plans for moment in (plan.start, plan.end))
    assert len(set(moments)) == 40
    assert min(b - a for a, b in itertools.pairwise(moments)) > 0.1
    assert all(plan.start < plan.end for plan in plans)
    statuses = [plan.status for plan in plans]
    assert statuses.count(RunStatus.FAILED) == 4
    assert statuses.count(RunStatus.CANCELED) == 1
    # Many runs squeeze into a bounded window rather than making the demo longer.
    assert max(plan.end for plan in plan_runs(500, seed=0)) < 14


def _call(
    run_id: str,
    status: RunStatus,
    handler: str,
    *,
    state: CallState = CallState.DONE,
    attempts: int = 1,
    error: str | None = None,
) -> HandlerCall:
    now = datetime.now(UTC)
    event = RunEvent(f"d-{run_id}-{status}", "nextmv", "routing", run_id, status)
    return HandlerCall(
        id=1,
        handler=handler,
        run_id=run_id,
        status=status,
        event=event,
        state=state,
        attempts=attempts,
        next_attempt_at=now,
        last_error=error,
        lease_owner=None,
        lease_expires_at=None,
        replays=0,
        created_at=now,
        updated_at=now,
    )


def _report(**changes: object) -> RunReport:
    report = RunReport(
        run_id="run-1",
        true_status=RunStatus.SUCCEEDED,
        stored_status=RunStatus.SUCCEEDED,
        waited_status=RunStatus.SUCCEEDED,
        learned_by=Origin.WEBHOOK,
        running_webhook="sent",
        final_webhook="sent",
        calls=[
            _call("run-1", RunStatus.SUCCEEDED, COUNT_HANDLER),
            _call("run-1", RunStatus.SUCCEEDED, LOG_HANDLER),
        ],
        counted={RunStatus.SUCCEEDED: 1},
    )
    for name, value in changes.items():
        setattr(report, name, value)
    return report


HANDLERS = {COUNT_HANDLER: True, LOG_HANDLER: True}


def test_check_accepts_a_run_that_ended_right() -> None:
    assert check([_report()], HANDLERS) == []


def test_check_names_each_broken_promise() -> None:
    wrong_status = check([_report(stored_status=RunStatus.FAILED)], HANDLERS)
    assert wrong_status == ["run-1 is failed in the store, not succeeded"]
    never_waited = check([_report(waited_status=None)], HANDLERS)
    assert never_waited == ["waiting for run-1 gave unknown, not succeeded"]
    assert check([_report(learned_by=None)], HANDLERS) == [
        "run-1: no stored event says how its end was learned"
    ]
    counted_twice = check([_report(counted={RunStatus.SUCCEEDED: 2})], HANDLERS)
    assert counted_twice == [f"{COUNT_HANDLER} for run-1 succeeded counted 2 calls, not 1"]
    missing = check([_report(calls=[_call("run-1", RunStatus.SUCCEEDED, LOG_HANDLER)])], HANDLERS)
    assert missing == [f"run-1 succeeded: 0 calls of {COUNT_HANDLER} were enqueued, not 1"]
    dead = _call(
        "run-1", RunStatus.SUCCEEDED, LOG_HANDLER, state=CallState.DEAD, attempts=3, error="x" * 90
    )
    retried = _call("run-1", RunStatus.SUCCEEDED, COUNT_HANDLER, attempts=2)
    problems = check([_report(calls=[retried, dead])], HANDLERS)
    assert problems == [
        f"{COUNT_HANDLER} for run-1 succeeded was called 2 times, not once",
        f"{LOG_HANDLER} for run-1 succeeded ended dead after 3 attempts ({'x' * 77}...)",
    ]
