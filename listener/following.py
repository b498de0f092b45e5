"""Following what other processes commit to a shared store, for a started listener."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from listener.store import Change, Store

__all__ = ["ChangeFollower"]

log = logging.getLogger("listener")


class ChangeFollower:
    """Runs `store.follow_changes(on_change)` in a task from `start` to `stop`.

    A store with no feed returns at once, and so does the task. If following fails for
    good (a bug, not an outage: the store itself reconnects), it is logged and the
    listener goes on with its sweeps and reads.
    """

    def __init__(self, store: Store, on_change: Callable[[Change], None]) -> None:
        self.store = store
        self.on_change = on_change
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._follow(), name="listener-changes")

    async def _follow(self) -> None:
        try:
            await self.store.follow_changes(self.on_change)
        except Exception as exc:
            log.error("following store changes stopped: %s", type(exc).__name__)

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is None:
            return
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
