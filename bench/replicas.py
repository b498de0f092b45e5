"""How soon one PostgreSQL replica learns what another committed.

    python bench/replicas.py

Two stores on one throwaway schema stand for two replicas. The writer records runs
reaching a terminal status, one at a time; the other replica learns each end:

* notice: from the writer's commit (its `record` returning) to the other store's
  `follow_changes` reporting the run ended (0 when that came first);
* wait, notified: from the commit to `RunClient.wait` returning on the other replica,
  woken by that report (as a started `Listener` is);
* wait, reading: the same wait with no feed, finding the end by reading the store every
  `poll_interval` (0.25 s), as before notices and as on SQLite today.

The two waits alternate run by run, so both see the same machine. Target: a wait under
50 ms from the commit (p95). The script reports; it always exits 0.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from store import DEFAULT_POSTGRES_URL, with_search_path

from listener.client import RunClient
from listener.events import RunEvent, RunStatus
from listener.store import Change, RecordResult
from listener.store.postgres import PostgresStore

RUNS = 200
TARGET_MS = 50.0


def percentiles(samples: list[float]) -> tuple[float, float, float]:
    cuts = statistics.quantiles(samples, n=100)
    return cuts[49] * 1000, cuts[94] * 1000, max(samples) * 1000


async def measure(url: str) -> dict[str, list[float]]:
    follower, writer = PostgresStore(url), PostgresStore(url)
    await follower.open()
    await writer.open()
    heard: dict[str, float] = {}
    notified = RunClient(lambda: follower, {}, _never_records)
    reading = RunClient(lambda: follower, {}, _never_records)

    def on_change(change: Change) -> None:
        for run_id in change.ended:
            heard[run_id] = time.perf_counter()
            notified.notify_ended(run_id)

    task = asyncio.create_task(follower.follow_changes(on_change))
    samples: dict[str, list[float]] = {"notice": [], "wait, notified": [], "wait, reading": []}
    try:
        await writer.record(RunEvent("warm", "local", "bench", "warm", RunStatus.SUCCEEDED))
        await asyncio.sleep(0.5)  # following, and the first notice heard
        for n in range(RUNS):
            run_id = f"run-{n}"
            mode = "wait, notified" if n % 2 == 0 else "wait, reading"
            client = notified if n % 2 == 0 else reading
            event = RunEvent(f"d-{n}", "local", "bench", run_id, RunStatus.RUNNING)
            await writer.record(event)  # the run exists and is open: the wait blocks
            waiting = asyncio.create_task(client.wait(run_id, timeout=10))
            await asyncio.sleep(0.01)  # the wait has read the open run
            ended = RunEvent(f"e-{n}", "local", "bench", run_id, RunStatus.SUCCEEDED)
            await writer.record(ended)
            committed = time.perf_counter()
            await waiting
            samples[mode].append(time.perf_counter() - committed)
            for _ in range(100):
                if run_id in heard:
                    break
                await asyncio.sleep(0.005)
            if run_id in heard:
                samples["notice"].append(max(0.0, heard[run_id] - committed))
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await writer.close()
        await follower.close()
    return samples


async def _never_records(event: RunEvent) -> RecordResult:
    raise AssertionError("the bench records through the writer store only")


async def main() -> None:
    import psycopg

    base = os.environ.get("LISTENER_TEST_POSTGRES_URL") or DEFAULT_POSTGRES_URL
    schema = f"bench_{uuid.uuid4().hex}"
    try:
        with psycopg.connect(base, autocommit=True, connect_timeout=3) as conn:
            conn.execute(f'CREATE SCHEMA "{schema}"')
    except psycopg.Error as exc:
        print(f"PostgreSQL unreachable ({type(exc).__name__}); nothing measured")
        return
    try:
        samples = await measure(with_search_path(base, schema))
    finally:
        with psycopg.connect(base, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    print(f"{RUNS} runs ended by one replica, learned by another, on loopback")
    print(f"{'from the commit to':<22} {'runs':>5} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8}")
    for name, values in samples.items():
        p50, p95, top = percentiles(values)
        print(f"{name:<22} {len(values):>5} {p50:>8.1f} {p95:>8.1f} {top:>8.1f}")
    _, notified, _ = percentiles(samples["wait, notified"])
    _, reading, _ = percentiles(samples["wait, reading"])
    print(f"wait p95 notified vs reading: {notified:.1f} ms vs {reading:.1f} ms")
    verdict = "PASS" if notified < TARGET_MS else "FAIL"
    print(f"{verdict}  wait on another replica under {TARGET_MS:g} ms (p95): {notified:.1f} ms")


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except Exception as exc:  # report, never fail the caller
        print(f"bench failed: {type(exc).__name__}: {exc}")
    sys.exit(0)
