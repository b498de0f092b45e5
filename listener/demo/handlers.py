"""The example handlers: a sync call counter and an async log-line writer."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable

from listener.demo.constants import COUNT_HANDLER, LOG_HANDLER
from listener.events import RunEvent, RunStatus
from listener.registry import Handlers


class CallCounter:
    """A sync handler (the dispatcher runs it on a thread) counting calls per transition."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.calls: Counter[tuple[str, RunStatus]] = Counter()

    def __call__(self, event: RunEvent) -> None:
        with self._lock:
            self.calls[(event.run_id, event.status)] += 1

    def for_run(self, run_id: str) -> dict[RunStatus, int]:
        with self._lock:
            return {status: n for (run, status), n in self.calls.items() if run == run_id}

    @property
    def total(self) -> int:
        with self._lock:
            return sum(self.calls.values())


def demo_handlers(
    counter: CallCounter, log: list[str], echo: Callable[[str], None] | None
) -> Handlers:
    """The demo's router: a sync counter and an async `handlers.log`-style line writer."""
    router = Handlers()
    router.add(counter, name=COUNT_HANDLER)

    async def log_transition(event: RunEvent) -> None:
        line = (
            f"run {event.run_id} {event.status.value} provider={event.provider} "
            f"application={event.application} origin={event.origin.value}"
        )
        log.append(line)
        if echo is not None:
            echo(line)

    router.add(log_transition, name=LOG_HANDLER)
    return router
