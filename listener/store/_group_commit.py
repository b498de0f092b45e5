"""The group-commit writer: one thread that commits queued writes together."""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

from listener.store._common import (
    T,
)
from listener.store.base import (
    StoreUnavailable,
)

# -- group commit ----------------------------------------------------------------------
# A group commit writes at most this many queued items in one transaction.
MAX_BATCH = 256


@dataclass(slots=True)
class Job:
    """One queued write: what to run on the writer's connection, and who waits for it.

    `args` lets a backend recognise writes it knows how to apply several at a time (the
    arguments of a `record` call, say); `fn` alone must still do the whole write, since a
    batch falls back to running its jobs one by one.
    """

    fn: Callable[[Any], Any]
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Any]
    args: Any = None


Outcome = tuple[bool, Any]  # (True, result) or (False, the exception to raise)
# Commits a batch on the writer's connection and returns one outcome per job, or raises
# when the whole batch failed (every caller then gets that exception).
ApplyBatch = Callable[[list[Job]], list[Outcome]]


def _settle_all(settled: list[tuple[asyncio.Future[Any], bool, Any]]) -> None:
    for future, ok, value in settled:
        if future.done():  # the caller gave up waiting (cancelled); the write still stands
            continue
        if ok:
            future.set_result(value)
        else:
            future.set_exception(value)


class GroupWriter:
    """A dedicated thread that commits queued writes together.

    Writes submitted on an event loop during one pass of that loop are handed to the
    thread together, as one queue item, at the end of the pass: one thread hand-off per
    pass rather than one per write. The thread takes whatever is queued (up to
    `max_batch` writes), hands the batch to `apply`, which commits it in one transaction,
    then wakes every caller of the batch with one hop to its event loop. It never waits
    for company: a lone write is committed at once, and a crowd that queued while the
    previous commit was in progress shares the next one.
    """

    def __init__(
        self,
        apply: ApplyBatch,
        *,
        max_batch: int,
        name: str,
        idle: Callable[[], None] | None = None,
    ) -> None:
        self._apply = apply
        # Housekeeping the backend does on this thread when nothing is queued.
        self._idle = idle
        self.max_batch = max(1, max_batch)
        self.name = name
        # Statistics: transactions committed, and writes they carried.
        self.commits = 0
        self.writes = 0
        self.largest_batch = 0
        self._queue: queue.SimpleQueue[list[Job] | None] = queue.SimpleQueue()
        # Writes submitted during the current pass of each event loop, not yet queued.
        self._gathering: dict[asyncio.AbstractEventLoop, list[Job]] = {}
        # Orders queueing against stop(): nothing is queued after the stop marker.
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stopping = False

    @property
    def running(self) -> bool:
        return self._thread is not None and not self._stopping

    def start(self) -> None:
        self._stopping = False
        self._thread = threading.Thread(target=self._main, name=self.name, daemon=True)
        self._thread.start()

    async def submit(self, fn: Callable[[Any], T], args: Any = None) -> T:
        if self._thread is None or self._stopping:
            raise StoreUnavailable("the store is not open")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        job = Job(fn, loop, future, args)
        gathering = self._gathering.get(loop)
        if gathering is not None:
            gathering.append(job)
        elif self.max_batch == 1:
            self._enqueue([job])
        else:
            self._gathering[loop] = [job]
            # Runs once the callbacks already scheduled for this pass have run, so the
            # writes they submit join this one.
            loop.call_soon(self._hand_over, loop)
        return cast(T, await future)

    def _hand_over(self, loop: asyncio.AbstractEventLoop) -> None:
        jobs = self._gathering.pop(loop, None)
        if jobs:
            self._enqueue(jobs)

    def _enqueue(self, jobs: list[Job]) -> None:
        with self._lock:
            if not self._stopping:
                self._queue.put(jobs)
                return
        closed = StoreUnavailable("the store is closed")
        for job in jobs:
            if not job.future.done():
                job.future.set_exception(closed)

    async def stop(self) -> None:
        """Finish what is queued (its callers are waiting), then end the thread."""
        thread = self._thread
        if thread is None:
            return
        # Writes this loop gathered but has not handed over yet go in before the marker.
        self._hand_over(asyncio.get_running_loop())
        with self._lock:
            self._stopping = True
            self._queue.put(None)
        await asyncio.to_thread(thread.join)
        self._thread = None

    def _main(self) -> None:
        stopping = False
        try:
            while not stopping:
                if self._idle is not None and self._queue.empty():
                    # Housekeeping only: whatever goes wrong, the writes must go on.
                    with contextlib.suppress(Exception):
                        self._idle()
                item = self._queue.get()
                if item is None:
                    break
                batch = item
                while len(batch) < self.max_batch:
                    try:
                        more = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if more is None:
                        stopping = True
                        break
                    batch.extend(more)
                for at in range(0, len(batch), self.max_batch):
                    self._commit(batch[at : at + self.max_batch])
        finally:
            while True:
                try:
                    left = self._queue.get_nowait()
                except queue.Empty:
                    break
                if left is not None:
                    closed = StoreUnavailable("the store is closed")
                    self._wake(left, [(False, closed)] * len(left))

    def _commit(self, batch: list[Job]) -> None:
        try:
            outcomes = self._apply(batch)
        except Exception as exc:
            self._wake(batch, [(False, exc)] * len(batch))
            return
        except BaseException:
            # The thread is going down: whether the batch committed is unknown, so no
            # caller may be told it did.
            lost = StoreUnavailable("the store writer stopped")
            self._wake(batch, [(False, lost)] * len(batch))
            raise
        self.commits += 1
        self.writes += len(batch)
        self.largest_batch = max(self.largest_batch, len(batch))
        # No sleep(0) to hand the GIL over here: getting it back would cost this thread a
        # wait of up to the interpreter's switch interval while the event loop is busy.
        self._wake(batch, outcomes)

    @staticmethod
    def _wake(batch: list[Job], outcomes: list[Outcome]) -> None:
        """One hop to each event loop for the whole batch."""
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Any], bool, Any]]]
        by_loop = {}
        for job, (ok, value) in zip(batch, outcomes, strict=True):
            by_loop.setdefault(job.loop, []).append((job.future, ok, value))
        for loop, settled in by_loop.items():
            # A RuntimeError means that event loop is gone: nobody is waiting any more.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_settle_all, settled)
