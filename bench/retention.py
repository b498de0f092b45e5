"""How long deliveries wait for the store while a retention pass runs, fixed against
paced chunks.

    python bench/retention.py [--sizes 10000,1000000] [--runs 5000] [--ids counter]

For each size, a fresh SQLite store is filled as `bench/scale.py` fills it, then two
passes each prune `--runs` of the oldest runs (with their events, transitions and calls):
first in chunks of 1,000 rows each (`chunk_seconds=None`), then paced (the default, about
`CHUNK_SECONDS` a chunk), over the next oldest runs. During each pass a delivery is
recorded through the store every 5 ms, and the time each took is kept. It prints, for
each pass, the chunks, the runs pruned per second and the deliveries' median, p99 and
longest time; both passes run on the same store in the same minute, so their ratio is
what to read. The store is removed at the end; the script always exits 0.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from scale import ID_LAYOUTS, fill_sqlite

from listener import RunEvent, RunStatus
from listener.health import percentile
from listener.retention import CHUNK_SECONDS, prune_store
from listener.store.base import PruneCounts, Store
from listener.store.sqlite import SQLiteStore

RECORD_EVERY = 0.005
FIXED_CHUNK = 1000


class CountingStore(SQLiteStore):
    """A SQLite store that counts the prune calls (chunks) it is asked for."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.chunks = 0

    async def prune(self, *, before: datetime, limit: int = 1000) -> PruneCounts:
        self.chunks += 1
        return await super().prune(before=before, limit=limit)


async def deliveries(store: Store, stop: asyncio.Event, label: str) -> list[float]:
    """Record a new run's end every `RECORD_EVERY` seconds until `stop`; each one's time."""
    taken: list[float] = []
    n = 0
    while not stop.is_set():
        n += 1
        event = RunEvent(
            delivery_id=f"bench-{label}-{n}",
            provider="nextmv",
            application="app-0",
            run_id=f"bench-{label}-{n}",
            status=RunStatus.SUCCEEDED,
        )
        started = time.perf_counter()
        await store.record(event, handlers=("notify",))
        taken.append(time.perf_counter() - started)
        await asyncio.sleep(RECORD_EVERY)
    return taken


async def one_pass(
    store: CountingStore, before: datetime, chunk_seconds: float | None, label: str
) -> tuple[int, int, float, list[float]]:
    chunks_before = store.chunks
    stop = asyncio.Event()
    recording = asyncio.create_task(deliveries(store, stop, label))
    await asyncio.sleep(0.1)  # the deliveries flow before the pass starts
    started = time.perf_counter()
    counts = await prune_store(store, before=before, limit=FIXED_CHUNK, chunk_seconds=chunk_seconds)
    took = time.perf_counter() - started
    stop.set()
    return counts.runs, store.chunks - chunks_before, took, await recording


async def bench(runs: int, pruned: int, ids: str) -> None:
    root = Path(tempfile.mkdtemp(prefix="listener-retention-"))
    try:
        path = root / "listener.db"
        url = f"sqlite:///{path}"
        now = await fill_sqlite(path, runs, ids)
        counting = CountingStore(url)
        await counting.open()
        try:
            # Run i was submitted at now - (runs - i) and last changed 10 s later: a cutoff
            # past the first `pruned` of them takes those (the open ones among them stay).
            passes = [
                ("chunks of 1,000", None, now - runs + pruned + 11),
                (
                    f"paced, {CHUNK_SECONDS * 1000:g} ms",
                    CHUNK_SECONDS,
                    now - runs + 2 * pruned + 11,
                ),
            ]
            print(f"\nSQLite, {runs:,} runs ({ids} ids): a pass pruning about {pruned:,} runs")
            print(f"{'chunks':<18}{'count':>7}{'runs/s':>9}   delivery ms: median     p99  longest")
            for label, seconds, cut in passes:
                before = datetime.fromtimestamp(cut, UTC)
                done, chunks, took, times = await one_pass(counting, before, seconds, label[:5])
                p99 = percentile(times, 0.99) or 0.0
                print(
                    f"{label:<18}{chunks:>7}{done / took:>9,.0f}"
                    f"   {statistics.median(times) * 1000:>19.2f}{p99 * 1000:>8.2f}"
                    f"{max(times) * 1000:>9.2f}",
                    flush=True,
                )
        finally:
            await counting.close()
    finally:
        shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10000,1000000", help="runs per store")
    parser.add_argument("--runs", type=int, default=5000, help="runs each pass prunes")
    parser.add_argument("--ids", choices=ID_LAYOUTS, default="counter")
    args = parser.parse_args()
    for size in sorted(int(s) for s in args.sizes.split(",")):
        asyncio.run(bench(size, min(args.runs, size * 4 // 10), args.ids))


if __name__ == "__main__":
    main()
