"""Where one signed delivery's time goes, part by part, each part timed alone.

    python bench/delivery_costs.py

In this process, with no server and no other thread: the receiver's steps before the
store (header map, signature check, strict JSON decode, the source's parser), then the
SQLite store's batched record (the fast path the writer thread runs) statement by
statement and its commit, on a file in a temporary directory with the store's own
`synchronous=FULL` and WAL checkpoint size, in batches of BATCH new runs reaching a
terminal status with one handler each. Shares are of the sum of the parts; what the
server adds on top (HTTP, the hand-offs between the event loop and the writer thread,
the dispatcher) is what `bench/receiver.py` measures. The script reports; it always exits 0.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import sys
import tempfile
import time
import timeit
import uuid
from collections import defaultdict
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from receiver import signed_request

from listener import RunEvent, RunStatus, Source
from listener.receiver import _header_map, delivery_id_for
from listener.signatures import StandardWebhooks, generate_hmac_secret
from listener.store._sqlite_batch import RecordArgs, record_many
from listener.store.sqlite import AUTOCHECKPOINT_PAGES, SQLiteStore
from listener.strict_json import loads_strict

CALLS = 20_000
EVENTS = 20_000
BATCH = 32
FSYNCS = 200


def per_call(fn: Callable[[], object]) -> float:
    """Microseconds per call of `fn`, best of three runs of CALLS calls."""
    return min(timeit.repeat(fn, number=CALLS, repeat=3)) / CALLS * 1e6


def receiving_costs() -> dict[str, float]:
    secret = generate_hmac_secret()
    source = Source("std", "local", StandardWebhooks([secret]))
    assert source.scheme is not None
    scheme = source.scheme
    body, signed = signed_request(StandardWebhooks([secret]), "costs", 1)
    headers = {name.lower(): value for name, value in signed.items()}
    raw = [(name.encode(), value.encode()) for name, value in headers.items()]
    raw += [(b"host", b"127.0.0.1"), (b"content-length", str(len(body)).encode())]
    verified = scheme.verify(body, headers)
    payload = loads_strict(body)
    return {
        "header map": per_call(lambda: _header_map(raw)),
        "verify": per_call(lambda: scheme.verify(body, headers)),
        "delivery id": per_call(lambda: delivery_id_for("std", verified, body)),
        "strict JSON decode": per_call(lambda: loads_strict(body)),
        "source parser": per_call(lambda: source.parse(payload, delivery_id="std:costs")),
    }


class _Row:
    def __init__(self, row: Any) -> None:
        self.row = row

    def fetchone(self) -> Any:
        return self.row


class TimedConnection:
    """A connection that adds each statement's time, by its first words, to `spent`."""

    def __init__(self, conn: sqlite3.Connection, spent: defaultdict[str, float]) -> None:
        self.conn = conn
        self.spent = spent

    def execute(self, sql: str, *args: Any) -> Any:
        started = time.perf_counter()
        cursor = self.conn.execute(sql, *args)
        words = sql.split()
        result: Any = cursor
        if words[0] == "SELECT":
            result = _Row(cursor.fetchone())  # the look-up's one row, read inside the timing
            name = "look-up (SELECT)"
        else:
            name = f"{words[0]} {words[2]}"
        self.spent[name] += time.perf_counter() - started
        return result


def store_costs(workdir: Path) -> dict[str, float]:
    path = workdir / "costs.db"

    async def create() -> None:
        store = SQLiteStore(f"sqlite:///{path}")
        await store.open()
        await store.close()

    asyncio.run(create())
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = FULL")
    conn.execute(f"PRAGMA wal_autocheckpoint = {AUTOCHECKPOINT_PAGES}")
    now = datetime.now(UTC)
    events = [
        RunEvent(
            run_id=f"run-{n}",
            provider="local",
            application="routing-optimizer",
            status=RunStatus.SUCCEEDED,
            occurred_at=now,
            delivery_id=f"std:{uuid.uuid4().hex}",
            payload={"run_id": f"run-{n}", "metadata": {"duration_ms": 5123, "tags": ["x"]}},
        )
        for n in range(EVENTS)
    ]
    spent: defaultdict[str, float] = defaultdict(float)
    timed = TimedConnection(conn, spent)
    batch_total = commit_total = 0.0
    for at in range(0, EVENTS, BATCH):
        items = [RecordArgs(event, ("bench.handler",), 60.0) for event in events[at : at + BATCH]]
        conn.execute("BEGIN IMMEDIATE")
        started = time.perf_counter()
        record_many(timed, items)  # type: ignore[arg-type]
        batch_total += time.perf_counter() - started
        started = time.perf_counter()
        conn.execute("COMMIT")
        commit_total += time.perf_counter() - started
    conn.close()
    statements = sum(spent.values())
    costs = {
        f"store: {name}": seconds / EVENTS * 1e6
        for name, seconds in sorted(spent.items(), key=lambda item: -item[1])
    }
    costs["store: Python building the batch"] = (batch_total - statements) / EVENTS * 1e6
    costs[f"store: commit (one per {BATCH})"] = commit_total / EVENTS * 1e6
    return costs


def fsync_micros(workdir: Path) -> float:
    fd = os.open(workdir / "fsync.bin", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        started = time.perf_counter()
        for _ in range(FSYNCS):
            os.write(fd, b"x" * 4096)
            os.fsync(fd)
        return (time.perf_counter() - started) / FSYNCS * 1e6
    finally:
        os.close(fd)


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="listener-costs-") as tmp:
        workdir = Path(tmp)
        costs = {**receiving_costs(), **store_costs(workdir)}
        fsync = fsync_micros(workdir)
    total = sum(costs.values())
    print(f"{'part':<40} {'us/delivery':>12} {'share':>7}")
    print("-" * 61)
    for name, micros in costs.items():
        print(f"{name:<40} {micros:>12.1f} {micros / total:>7.1%}")
    print("-" * 61)
    print(f"{'sum':<40} {total:>12.1f}")
    print(f"one write and fsync of 4 KiB on this disk: {fsync:.0f} us")
    print(f"the parts alone allow {1e6 / total:,.0f} deliveries/s on one core")


if __name__ == "__main__":
    try:
        main()
    except Exception as exc:  # report, never fail the caller
        print(f"bench failed: {type(exc).__name__}: {exc}")
    sys.exit(0)
