"""A separate process for the store tests: python _store_worker.py MODE URL.

Modes:
  open     open the store (applying the schema) and print its version.
  record   record events forever from several tasks, printing each delivery id only
           after its `record` returned; the test kills it at a random moment.
  claim    after a "go" line on stdin, claim due handler calls and then overdue runs until
           none are left, and print what it got as JSON.
  budget   python _store_worker.py budget URL RATE BURST SECONDS: take tokens of one
           shared budget as fast as it grants them for SECONDS, and print how many.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time

from listener.budget import SharedRateLimiter
from listener.events import RunEvent, RunStatus
from listener.store import Store, open_store

HANDLERS = ("h1", "h2")
WRITERS = 16


async def record_forever(store: Store) -> None:
    tag = os.getpid()

    async def writer(number: int) -> None:
        i = 0
        while True:
            delivery = f"d-{tag}-{number}-{i}"
            event = RunEvent(
                delivery_id=delivery,
                provider="nextmv",
                application="crash",
                run_id=f"run-{tag}-{number}-{i}",
                status=RunStatus.SUCCEEDED,
                payload={"n": i},
            )
            await store.record(event, HANDLERS)
            sys.stdout.write(delivery + "\n")
            sys.stdout.flush()
            i += 1

    await asyncio.gather(*(writer(n) for n in range(WRITERS)))


async def claim_all(store: Store, owner: str) -> None:
    await asyncio.to_thread(sys.stdin.readline)
    calls: list[int] = []
    runs: list[str] = []
    while batch := await store.claim_calls(owner, limit=5, lease_seconds=300):
        calls.extend(call.id for call in batch)
    while overdue := await store.claim_overdue_runs(owner, limit=5, lease_seconds=300):
        runs.extend(run.run_id for run in overdue)
    print(json.dumps({"calls": calls, "runs": runs}), flush=True)


async def take_budget_for(store: Store, rate: float, burst: int, seconds: float) -> None:
    limiter = SharedRateLimiter(store, "poll:shared", rate, burst=burst)
    taken = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        await limiter.acquire()
        taken += 1
    print(json.dumps({"taken": taken}), flush=True)


async def main(mode: str, url: str, *args: str) -> None:
    store = await open_store(url)
    try:
        if mode == "open":
            print(await store.schema_version(), flush=True)
        elif mode == "record":
            print("ready", flush=True)
            await record_forever(store)
        elif mode == "budget":
            rate, burst, seconds = float(args[0]), int(args[1]), float(args[2])
            await take_budget_for(store, rate, burst, seconds)
        elif mode == "claim":
            print("ready", flush=True)
            await claim_all(store, f"worker-{os.getpid()}")
        else:
            raise SystemExit(f"unknown mode {mode!r}")
    finally:
        await store.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], *sys.argv[3:]))
