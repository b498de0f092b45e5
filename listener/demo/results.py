"""What became of each run, gathered from the platform and the store, and the checks."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from listener.demo.constants import COUNT_HANDLER
from listener.demo.handlers import CallCounter
from listener.events import Origin, RunEvent, RunStatus
from listener.store.base import CallState, HandlerCall, Store
from listener.testing import DeliveryRecord, FakePlatform


@dataclass(slots=True)
class RunReport:
    """What became of one run, from the platform's records and the listener's store."""

    run_id: str
    true_status: RunStatus
    stored_status: RunStatus | None
    waited_status: RunStatus | None
    learned_by: Origin | None
    running_webhook: str
    final_webhook: str
    calls: list[HandlerCall] = field(default_factory=list)
    counted: Mapping[RunStatus, int] = field(default_factory=dict)

    @property
    def calls_done(self) -> int:
        return sum(1 for call in self.calls if call.state is CallState.DONE)


@dataclass(slots=True)
class DemoResult:
    """The outcome the demo reports; `problems` is empty when every promise held."""

    reports: list[RunReport]
    problems: list[str]

    @property
    def exit_code(self) -> int:
        return 0 if not self.problems else 1


def check(reports: Sequence[RunReport], handler_names: Mapping[str, bool]) -> list[str]:
    """Everything that went wrong, as sentences; empty when the demo kept its promises.

    `handler_names` maps each registered handler to whether it takes terminal statuses
    (all the demo's handlers do). A run must end in its true status, in the store and as
    `wait` saw it; its terminal transition must have one call per such handler; and every
    call must be done after exactly one attempt, which the counting handler confirms.
    """
    problems: list[str] = []
    for report in reports:
        run, true = report.run_id, report.true_status
        if report.stored_status is not true:
            problems.append(f"{run} is {_word(report.stored_status)} in the store, not {true}")
        if report.waited_status is not true:
            problems.append(f"waiting for {run} gave {_word(report.waited_status)}, not {true}")
        if report.learned_by is None:
            problems.append(f"{run}: no stored event says how its end was learned")
        final_calls = [call for call in report.calls if call.status is true]
        for name, terminal in handler_names.items():
            if not terminal:
                continue
            count = sum(1 for call in final_calls if call.handler == name)
            if count != 1:
                problems.append(f"{run} {true}: {count} calls of {name} were enqueued, not 1")
        for call in report.calls:
            where = f"{call.handler} for {run} {call.status}"
            if call.state is not CallState.DONE:
                error = call.last_error or ""
                detail = (
                    f" ({error[:77]}...)" if len(error) > 80 else f" ({error})" if error else ""
                )
                problems.append(
                    f"{where} ended {call.state} after {call.attempts} attempts{detail}"
                )
            elif call.attempts != 1:
                problems.append(f"{where} was called {call.attempts} times, not once")
            if call.handler == COUNT_HANDLER:
                seen = report.counted.get(call.status, 0)
                if seen != 1:
                    problems.append(f"{where} counted {seen} calls, not 1")
    return problems


def _word(status: RunStatus | None) -> str:
    return "unknown" if status is None else status.value


def _fate(deliveries: Sequence[DeliveryRecord], status: str) -> str:
    """What the platform did with a run's webhook for `status`."""
    records = [d for d in deliveries if d.status == status]
    if not records:
        return "-"
    record = records[0]
    if record.dropped:
        return "dropped"
    if not record.delivered:
        return "failed"
    return "sent x2" if record.duplicated else "sent"


async def _report(
    store: Store,
    platform: FakePlatform,
    run_id: str,
    waited: RunEvent | None,
    counter: CallCounter,
) -> RunReport:
    fake = platform.runs[run_id]
    true = RunStatus(fake.status)
    record = await store.get_run(run_id)
    calls = (await store.list_calls(run_id=run_id, limit=1000)).items
    calls.sort(key=lambda call: call.id)
    learned: Origin | None = None
    # A call carries the event that made its transition: that one taught the listener.
    final_calls = [call for call in calls if call.status is true]
    if final_calls:
        learned = final_calls[0].event.origin
    else:
        events = (await store.list_events(run_id=run_id, status=[true], limit=1000)).items
        if events:
            learned = events[-1].origin  # newest first: the last is the first received
    deliveries = [d for d in platform.deliveries if d.run_id == run_id]
    return RunReport(
        run_id=run_id,
        true_status=true,
        stored_status=record.status if record is not None else None,
        waited_status=waited.status if waited is not None else None,
        learned_by=learned,
        running_webhook=_fate(deliveries, "running"),
        final_webhook=_fate(deliveries, fake.status),
        calls=calls,
        counted=counter.for_run(run_id),
    )
