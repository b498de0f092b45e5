"""Workloads the store tests share."""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, datetime, timedelta

from listener.events import RunEvent, RunStatus
from listener.store import NewRun, RecordResult, Store


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


async def with_a_leased_run(store: Store) -> None:
    """A known run with a poll lease, which a terminal event clears."""
    await store.register_run(NewRun("run-1", "nextmv", "routing", grace_seconds=7.5))
    await store.claim_overdue_runs(
        "poller", limit=5, lease_seconds=60, now=datetime.now(UTC) + timedelta(days=1)
    )


async def record_in_chunks(
    store: Store, deliveries: list[tuple[RunEvent, tuple[str, ...]]], size: int = 40
) -> list[RecordResult]:
    """`deliveries` recorded `size` at a time, each chunk at once (so batched together)."""
    results: list[RecordResult] = []
    for start in range(0, len(deliveries), size):
        chunk = deliveries[start : start + size]
        results.extend(await asyncio.gather(*(store.record(e, h) for e, h in chunk)))
    return results
