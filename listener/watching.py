"""The I/O half of webhook health notices: evaluates the store's recent run ends every
`NoticeSettings.interval` seconds and calls the handlers that asked for each notice.

The decisions are `listener.notices.assess`; this module only reads the window and each
provider's `Episode`, and delivers. The episodes live in the store, shared by every
process on it: each evaluates, but a move (degraded, recovered) is made by one compare
and set, and only the process that made it tells the handlers, so an episode is told
once however many replicas or workers run. Delivery is in process: a notice handler that
raises is logged and tried again at the next evaluations, up to `attempts` times in all.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta

from listener.notices import Episode, Notice, NoticeSettings, assess, window_counts
from listener.overdue import OverdueNotice
from listener.redaction import log_text
from listener.registry import Handlers, NoticeHandler
from listener.store.base import Store

__all__ = ["NoticeWatcher", "tell_overdue"]

log = logging.getLogger("listener.notices")


class NoticeWatcher:
    """Watches `providers` (those whose sources take webhooks, or a function naming them
    at each evaluation, as sources may be added to a started listener) in `store`."""

    def __init__(
        self,
        store: Store,
        handlers: Handlers,
        providers: Iterable[str] | Callable[[], Iterable[str]],
        settings: NoticeSettings | None = None,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        attempts: int = 3,
    ) -> None:
        self.store = store
        self.handlers = handlers
        self._providers = providers if callable(providers) else frozenset(providers)
        self.settings = settings or NoticeSettings()
        self.clock = clock
        self.attempts = attempts
        self.episodes: dict[str, Episode] = {}
        # Deliveries still owed: (notice, handler) -> attempts made so far.
        self._owed: dict[tuple[str, str], tuple[Notice, NoticeHandler, int]] = {}
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self.run(), name="listener-notices")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def watched(self) -> frozenset[str]:
        given = self._providers
        return frozenset(given() if callable(given) else given)

    async def evaluate(self) -> list[Notice]:
        """One evaluation: the notices it decided (already delivered, or owed)."""
        providers = self.watched()
        if not providers or not self.handlers.has_notice_handlers():
            return []  # nobody to tell: no query either
        now = self.clock()
        since = now - timedelta(seconds=self.settings.window)
        ends = await self.store.list_run_ends(since=since)
        # The episodes as every process on the store sees them: a process that starts
        # mid-episode, or another replica's evaluation, continues it rather than starting
        # its own.
        shared = {e.provider: e for e in await self.store.list_webhook_episodes()}
        decided = []
        for provider, counts in sorted(window_counts(ends, providers).items()):
            stored = shared.get(provider)
            previous = (
                Episode(degraded=stored.degraded, since=stored.since)
                if stored is not None
                else Episode()
            )
            episode, notice = assess(previous, counts, self.settings, now)
            self.episodes[provider] = previous
            if notice is None:
                continue
            moved = await self.store.move_webhook_episode(
                provider, was_degraded=previous.degraded, degraded=episode.degraded,
                since=episode.since,
            )  # fmt: skip
            if not moved:
                # Another process decided the same move first and tells the handlers.
                log.debug("%s of %s decided elsewhere", notice.kind, provider)
                continue
            self.episodes[provider] = episode
            decided.append(notice)
            log.info("%s: %s", notice.kind, notice.as_dict())
            for handler in self.handlers.notice_handlers(notice.kind, notice.provider):
                self._owed[(notice.key, handler.name)] = (notice, handler, 0)
        await self._deliver()
        return decided

    async def _deliver(self) -> None:
        for key, (notice, handler, tried) in list(self._owed.items()):
            try:
                await call_notice_handler(handler, notice)
            except Exception as exc:
                tried += 1
                if tried >= self.attempts:
                    del self._owed[key]
                    log.error(
                        "notice handler %s gave up on %s after %d attempts: %s",
                        handler.name, notice.key, tried, log_text(repr(exc)),
                    )  # fmt: skip
                else:
                    self._owed[key] = (notice, handler, tried)
                    log.warning(
                        "notice handler %s failed on %s (attempt %d): %s",
                        handler.name, notice.key, tried, log_text(repr(exc)),
                    )  # fmt: skip
            else:
                del self._owed[key]

    async def run(self) -> None:
        """Evaluate every `interval` seconds until cancelled; a failed read is logged."""
        while True:
            try:
                await self.evaluate()
            except Exception as exc:  # the store may be briefly away; try next time
                log.warning("webhook health evaluation failed: %s", log_text(repr(exc)))
            await asyncio.sleep(self.settings.interval)


async def call_notice_handler(handler: NoticeHandler, notice: Notice | OverdueNotice) -> None:
    if handler.is_async:
        await handler.func(notice)
    else:  # off the event loop, which receives webhooks meanwhile
        await asyncio.to_thread(handler.func, notice)


async def tell_overdue(handlers: Handlers, notice: OverdueNotice) -> None:
    """Call each handler asking for `run_overdue` notices of the run's provider, once: a
    handler that raises is logged, not retried (the run is not overdue a second time)."""
    log.info("%s: %s", notice.kind, notice.as_dict())
    for handler in handlers.notice_handlers(notice.kind, notice.provider):
        try:
            await call_notice_handler(handler, notice)
        except Exception as exc:
            log.error(
                "notice handler %s failed on %s: %s",
                handler.name, notice.key, log_text(repr(exc)),
            )  # fmt: skip
