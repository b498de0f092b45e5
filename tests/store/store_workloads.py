"""Workloads the store tests share."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

from listener.events import RunEvent, RunStatus


def mixed_events(rng: random.Random, count: int) -> list[tuple[RunEvent, tuple[str, ...]]]:
    """Deliveries as they come: several per run in any order, repeats of a delivery (also
    within one batch), runs known beforehand, text that JSON must escape."""
    statuses = list(RunStatus)
    picked: list[tuple[RunEvent, tuple[str, ...]]] = []
    for i in range(count):
        if picked and rng.random() < 0.15:
            picked.append(rng.choice(picked))  # the same delivery again
            continue
        run = f"run-{rng.randrange(12)}"
        handlers = rng.choice([(), ("h",), ("h", "g"), ("g", "h", "g")])
        payload = {"n": i, "text": rng.choice(["plain", 'é\n"quoted"', "\u2603", ""])}
        event = RunEvent(
            f"d{i}",
            rng.choice(["nextmv", "local"]),
            "routing",
            run,
            rng.choice(statuses),
            occurred_at=datetime(2026, 1, 1, tzinfo=UTC) + timedelta(seconds=rng.random()),
            payload=payload,
        )
        picked.append((event, handlers))
    return picked
