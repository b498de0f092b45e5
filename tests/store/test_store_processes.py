"""Several OS processes on one database, and a process killed while it records."""

from __future__ import annotations

import asyncio
import json
import random
import signal
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from listener.events import RunEvent, RunStatus
from listener.store import NewRun

WORKER = str(Path(__file__).with_name("_store_worker.py"))
Factory = Callable[..., Awaitable[Any]]


async def spawn(mode: str, url: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        WORKER,
        mode,
        url,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


async def expect_ready(proc: asyncio.subprocess.Process) -> None:
    assert proc.stdout is not None
    assert proc.stderr is not None
    line = await proc.stdout.readline()
    if line != b"ready\n":
        await proc.wait()
        raise AssertionError(f"worker did not start: {(await proc.stderr.read()).decode()}")


async def all_pages(fetch: Callable[[str | None], Awaitable[Any]]) -> list[Any]:
    items: list[Any] = []
    cursor: str | None = None
    while True:
        page = await fetch(cursor)
        items.extend(page.items)
        if page.next_cursor is None:
            return items
        cursor = page.next_cursor


async def test_processes_opening_at_once_apply_the_schema_once(
    store_url: str, store_factory: Factory
) -> None:
    procs = [await spawn("open", store_url) for _ in range(3)]
    outputs = await asyncio.gather(*(p.communicate() for p in procs))
    for proc, (out, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err.decode()
        assert out.strip() == b"9"
    store = await store_factory()
    assert await store.schema_version() == 9


async def test_two_processes_never_claim_the_same_call_or_run(
    store_url: str, store_factory: Factory
) -> None:
    store = await store_factory()
    results = await asyncio.gather(
        *(
            store.record(
                RunEvent(f"d{i}", "nextmv", "app", f"r{i}", RunStatus.SUCCEEDED), ["a", "b"]
            )
            for i in range(100)
        )
    )
    all_calls = {i for r in results for i in r.call_ids}
    long_ago = datetime.now(UTC) - timedelta(hours=1)
    for i in range(60):
        await store.register_run(
            NewRun(f"poll{i}", "nextmv", "app", submitted_at=long_ago, grace_seconds=0)
        )

    procs = [await spawn("claim", store_url) for _ in range(2)]
    for proc in procs:
        await expect_ready(proc)
    # Both start claiming at the same moment.
    outputs = await asyncio.gather(*(p.communicate(b"go\n") for p in procs))
    got: list[dict[str, list[Any]]] = []
    for proc, (out, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err.decode()
        got.append(json.loads(out))
    one, two = got
    assert not set(one["calls"]) & set(two["calls"])
    assert len(one["calls"]) + len(two["calls"]) == len(all_calls)
    assert set(one["calls"]) | set(two["calls"]) == all_calls
    assert not set(one["runs"]) & set(two["runs"])
    assert sorted(one["runs"] + two["runs"]) == sorted(f"poll{i}" for i in range(60))


async def test_acknowledged_events_survive_a_killed_process(
    store_url: str, store_factory: Factory
) -> None:
    proc = await spawn("record", store_url)
    await expect_ready(proc)
    assert proc.stdout is not None
    received: list[bytes] = []

    async def read_all() -> None:
        assert proc.stdout is not None
        while chunk := await proc.stdout.read(65536):
            received.append(chunk)

    reader = asyncio.create_task(read_all())
    delay = random.uniform(0.3, 1.5)
    await asyncio.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    await proc.wait()
    await reader
    assert proc.returncode == -signal.SIGKILL
    # Only whole lines count: a line is printed after its record() returned.
    *lines, _partial = b"".join(received).split(b"\n")
    acknowledged = {line.decode() for line in lines}
    assert acknowledged, f"nothing was acknowledged within {delay:.2f}s"

    store = await store_factory()
    events = {
        e.delivery_id: e for e in await all_pages(lambda c: store.list_events(limit=500, cursor=c))
    }
    missing = acknowledged - set(events)
    assert not missing, f"{len(missing)} acknowledged events lost (killed after {delay:.2f}s)"
    runs = {r.run_id: r for r in await all_pages(lambda c: store.list_runs(limit=500, cursor=c))}
    calls: dict[str, set[str]] = {}
    for call in await all_pages(lambda c: store.list_calls(limit=500, cursor=c)):
        calls.setdefault(call.event.delivery_id, set()).add(call.handler)
    # Every stored event, acknowledged or not, was stored whole: run, transition and calls.
    for delivery, event in events.items():
        assert runs[event.run_id].status is RunStatus.SUCCEEDED
        assert calls.get(delivery) == {"h1", "h2"}
