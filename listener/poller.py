"""Fallback reconciliation: ask providers about runs whose webhook has not come in time.

Only overdue runs are polled (see `Store.claim_overdue_runs`), so with healthy webhooks
the poller makes no calls at all. What a poll learns goes through the same `record`
path as a webhook, so deduplication and handler routing are identical. With no public
URL (grace zero, no receiver) this is plain polling mode.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import uuid
from collections import defaultdict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from listener import backoff
from listener._checks import at_least, flag, positive, whole
from listener.budget import SharedRateLimiter
from listener.events import RunEvent, RunStatus, next_status
from listener.overdue import OverdueNotice, OverdueSettings, find_overdue, overdue_after
from listener.providers.base import BatchStatus, Provider, ProviderError, RunState
from listener.run_durations import DurationBook, LearnSettings, next_check
from listener.store.base import RecordResult, RunRecord, Store, StoreUnavailable

__all__ = ["PollReport", "PollSchedule", "PollSettings", "Poller"]

logger = logging.getLogger("listener.poller")

Recorder = Callable[[RunEvent], Awaitable[RecordResult]]
OnOverdue = Callable[[OverdueNotice], Awaitable[None]]

# How many finished runs seen in listings are remembered, to look each up only once.
_SEEN_FINAL_LIMIT = 100_000
# Overdue runs looked at per application and refresh: the oldest are the most overdue.
_OVERDUE_BATCH = 100


@dataclass(frozen=True, slots=True)
class PollSchedule:
    """When to ask again about a run that is still not finished. Pure; no clock.

    The first poll happens when the run's grace period has passed with no news (the
    store keeps that time). After `attempt` polls that learned nothing final, the next
    comes `interval * factor ** (attempt - 1)` seconds later, capped at `cap`, spread by
    +/- `jitter` (a fraction) so runs submitted together do not poll in lockstep.
    """

    interval: float = 2.0
    factor: float = 2.0
    cap: float = 60.0
    jitter: float = 0.2

    def __post_init__(self) -> None:
        if self.interval <= 0 or self.cap <= 0:
            raise ValueError("interval and cap must be positive")
        if self.factor < 1:
            raise ValueError("factor must be at least 1")
        if not 0 <= self.jitter < 1:
            raise ValueError("jitter must be in [0, 1)")

    def ceiling(self, attempt: int) -> float:
        return backoff.ceiling(attempt, self.interval, self.cap, self.factor)

    def delay(self, attempt: int, rng: random.Random) -> float:
        base = self.ceiling(attempt)
        return base * (1.0 + self.jitter * rng.uniform(-1.0, 1.0))


@dataclass(frozen=True, slots=True)
class PollSettings:
    """When a listener asks providers about runs; the defaults are the service's defaults.

    `enabled` runs the fallback poller in this process. A submitted run the platform says
    nothing about is checked `first_poll` seconds after submission (None: after `grace`),
    or from `schedule`'s first step if that is sooner and no source of the listener reads
    its provider's payloads (no webhook can reach it). After news, silence is trusted for
    `grace` seconds; a run still unfinished `deadline` seconds after submission (None: no
    deadline) becomes `expired`, and with `cancel_at_deadline` is canceled through its
    provider first (a failed cancel is logged; the run expires all the same). The poller
    looks for due runs every `interval` seconds, claims at most `batch_size` at a time
    for `lease` seconds each, and makes at most `rate_limit` status calls a second per
    provider, counted across every process on the store (`listener.budget`). With
    `learn` (None: never), the poller learns each application's run durations from the
    runs it sees end and checks runs near their expected end instead
    (`listener.run_durations`); a run open past `overdue` of its application's
    durations is reported once (`listener.overdue`).
    """

    enabled: bool = True
    grace: float = 300.0
    first_poll: float | None = 30.0
    deadline: float | None = None
    interval: float = 1.0
    schedule: PollSchedule = field(default_factory=PollSchedule)
    rate_limit: float = 10.0
    batch_size: int = 100
    lease: float = 60.0
    learn: LearnSettings | None = field(default_factory=LearnSettings)
    overdue: OverdueSettings = field(default_factory=OverdueSettings)
    cancel_at_deadline: bool = False

    def __post_init__(self) -> None:
        flag("enabled", self.enabled)
        flag("cancel_at_deadline", self.cancel_at_deadline)
        if self.learn is not None and not isinstance(self.learn, LearnSettings):
            raise ValueError(f"learn must be LearnSettings or None, got {self.learn!r}")
        at_least("grace", self.grace, 0)
        if self.first_poll is not None:
            at_least("first_poll", self.first_poll, 0)
        if self.deadline is not None:
            positive("deadline", self.deadline)
        positive("interval", self.interval)
        if not isinstance(self.schedule, PollSchedule):
            raise ValueError(f"schedule must be a PollSchedule, got {self.schedule!r}")
        positive("rate_limit", self.rate_limit)
        whole("batch_size", self.batch_size)
        positive("lease", self.lease)


@dataclass(slots=True)
class PollReport:
    """What one pass did, for logs, metrics and tests."""

    claimed: int = 0
    status_calls: int = 0  # platform requests: one per run status or listing page read
    learned: int = 0  # events recorded from what providers answered
    expired: int = 0
    errors: int = 0
    rescheduled: int = 0
    put_off: int = 0  # claimed runs left alone because this process streams them
    brought_forward: int = 0  # silent runs past their expected end, made due now
    providers_paused: set[str] = field(default_factory=set)


class Poller:
    """Claims overdue runs from the store, asks their providers, records what it learns.

    `record` is the listener's own path for events (match handlers, store, wake the
    dispatcher). Of `settings`, the poller reads `schedule`, `interval`, `batch_size`,
    `lease` and `rate_limit` (status calls a second per provider, counting each page of
    a run listing as one call); the rest is for the listener's submissions. Runs of a
    provider that implements `BatchStatus` are checked `batch_size` at a time in one
    batch check.

    A batch call reads a page of the platform's run listing whichever runs are on it, so
    it carries more than the runs that are due:

    - runs of that provider due within `ride_window` seconds (default: the schedule's
      cap, at most a quarter of the lease) ride along: if the pages read for
      the due runs show them, they count as polled now and their next poll moves on
      (never earlier than planned); if not, they are left as they were;
    - any other run this listener watches that the pages show finished is recorded at
      once, so a lost final webhook of a run trusted to report is caught by the next
      listing read for any reason, not only when its grace runs out.

    `streaming(run_id)`, when given, says which runs this process follows by a healthy
    event stream (`listener.streaming`): claimed, such a run is put off on its schedule
    without a status call (its deadline still applies), so the poller asks only about
    runs nothing else here is following, and about a streamed run again as soon as its
    stream fails.
    """

    def __init__(
        self,
        store: Store,
        providers: Mapping[str, Provider],
        record: Recorder,
        settings: PollSettings = PollSettings(),
        *,
        owner: str | None = None,
        concurrency: int = 8,
        max_pause: float = 300.0,
        ride_window: float | None = None,
        rng: random.Random | None = None,
        streaming: Callable[[str], bool] | None = None,
        on_overdue: OnOverdue | None = None,
    ) -> None:
        if ride_window is not None and ride_window < 0:
            raise ValueError("ride_window must not be negative")
        self.store = store
        self.providers = providers
        self.record = record
        self.settings = settings
        self.owner = owner or f"poller-{uuid.uuid4().hex[:12]}"
        self.schedule = settings.schedule
        self.interval = settings.interval
        self.batch_size = settings.batch_size
        self.lease_seconds = settings.lease
        self.rate_limit = settings.rate_limit
        self.max_pause = max_pause
        # Early runs are claimed with the clock moved ahead, which also takes leases that
        # would expire within the window: keep it well inside a lease. A whole cap lets
        # every open run at the cap that a read shows count as checked, so the runs of
        # one page come due together and one read serves them all: reschedules are
        # cheap store writes, listing pages are the platform's rate-limited calls.
        default_window = min(self.schedule.cap, self.lease_seconds / 4)
        self.ride_window = default_window if ride_window is None else ride_window
        self.rng = rng or random.Random()
        self.streaming = streaming
        self.durations = DurationBook(settings.learn) if settings.learn is not None else None
        self._learned_at: datetime | None = None
        self.on_overdue = on_overdue
        # Runs found overdue by this process, oldest first: asked of the store once each.
        self._overdue: dict[str, None] = {}
        self._limiters: dict[str, SharedRateLimiter] = {}
        # Runs a listing showed finished, so each is looked up in the store only once.
        self._seen_final: dict[str, None] = {}
        self._paused_until: dict[str, datetime] = {}
        self._unknown_providers: set[str] = set()
        self._concurrency = asyncio.Semaphore(concurrency)
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._wakeup = asyncio.Event()

    # -- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        if self._task is not None:
            raise RuntimeError("the poller is already started")
        self._stopping.clear()
        self._task = asyncio.create_task(self._loop(), name="listener-poller")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is None:
            return
        self._stopping.set()
        self._wakeup.set()
        await task

    def wake(self) -> None:
        """Run a pass now rather than at the next interval."""
        self._wakeup.set()

    async def _loop(self) -> None:
        while not self._stopping.is_set():
            try:
                report = await self.poll_once()
            except StoreUnavailable as exc:
                logger.warning("poll pass skipped: store unavailable (%s)", type(exc).__name__)
                report = PollReport()
            except Exception as exc:
                if self._stopping.is_set():
                    return  # a pass cut short by the shutdown (its clients closing)
                # One bad pass must not end polling for good: the runs stay due, and the
                # next pass claims them again once their leases end.
                logger.error("poll pass failed: %s", type(exc).__name__)
                logger.debug("poll pass failed", exc_info=exc)
                report = PollReport()
            # A full batch means more runs are due: go again without waiting.
            if report.claimed >= self.batch_size:
                continue
            self._wakeup.clear()
            if self._stopping.is_set():  # stopped during the pass: its wake-up is cleared
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), timeout=self.interval)

    # -- one pass ------------------------------------------------------------------------

    async def poll_once(self, now: datetime | None = None) -> PollReport:
        """Claim the runs due now, poll them, record what was learned."""
        now = now or datetime.now(UTC)
        report = PollReport()
        await self._learn(now, report)
        runs = await self.store.claim_overdue_runs(
            self.owner, limit=self.batch_size, lease_seconds=self.lease_seconds, now=now
        )
        report.claimed = len(runs)
        if self.streaming is not None:
            streamed = [run for run in runs if self.streaming(run.run_id)]
            runs = [run for run in runs if not self.streaming(run.run_id)]
            report.put_off = len(streamed)
            await asyncio.gather(
                *(self._settle(run, None, now, report, asked=False) for run in streamed)
            )
        groups: dict[tuple[str, str], list[RunRecord]] = defaultdict(list)
        for run in runs:
            groups[(run.provider, run.application)].append(run)
        riders = await self._claim_riders({provider for provider, _ in groups}, now)
        for key in set(riders) - set(groups):
            # Nothing of that application is due, so no listing is read for it.
            for run in riders.pop(key):
                await self.store.release_run(run.run_id, self.owner)
        await asyncio.gather(
            *(
                self._poll_group(p, app, group, riders.get((p, app), []), now, report)
                for (p, app), group in groups.items()
            )
        )
        return report

    async def _learn(self, now: datetime, report: PollReport) -> None:
        """Every `learn.refresh` seconds: take in the runs that ended since the last look,
        and make due now the silent runs each application's durations say to check.

        A run trusted to report (its `running` webhook came, and no poll since) is left
        alone by its grace,
        which is long; past its application's expected end it is checked all the same
        (`DurationBook.silent_check_after`). Runs reaching that age before the next
        refresh are taken now, so none waits a refresh period past it. Runs polled on
        the learned schedule are due within a cap, so they are never moved.
        """
        book, learn = self.durations, self.settings.learn
        if book is None or learn is None:
            return
        if (
            self._learned_at is not None
            and (now - self._learned_at).total_seconds() < learn.refresh
        ):
            return
        # Refreshes overlap by one period (the book counts each run once), so an end
        # committed while the last read ran is not missed; the first looks back a week.
        since = (
            now - timedelta(days=7)
            if self._learned_at is None
            else self._learned_at - timedelta(seconds=learn.refresh)
        )
        self._learned_at = now
        book.add(await self.store.list_run_ends(since=since))
        horizon = now + timedelta(seconds=1.5 * self.schedule.cap)
        for provider, application in book.applications():
            after = book.silent_check_after(provider, application)
            if after is None:
                continue
            past = max(0.0, after - learn.refresh)
            report.brought_forward += await self.store.bring_forward_polls(
                provider,
                application,
                submitted_before=now - timedelta(seconds=past),
                later_than=horizon,
                to=now,
            )
        for provider, known in book.losing_providers():
            # Applications with too few ends for a bound of their own, while the
            # provider loses ends: their silent runs go on the fixed schedule.
            report.brought_forward += await self.store.bring_forward_polls(
                provider,
                None,
                submitted_before=now,
                later_than=horizon,
                to=now,
                exclude=known,
            )
        if self.on_overdue is not None:
            await self._report_overdue(book, now)

    async def _report_overdue(self, book: DurationBook, now: datetime) -> None:
        """Tell `on_overdue` of each open run past its application's overdue limit, once."""
        assert self.on_overdue is not None
        settings = self.settings.overdue
        for provider, application in book.applications():
            expected = book.expected(provider, application)
            if expected is None:
                continue
            limit = overdue_after(expected, settings)
            page = await self.store.list_runs(
                status=[RunStatus.QUEUED, RunStatus.RUNNING],
                provider=provider,
                application=application,
                until=now - timedelta(seconds=limit),
                limit=_OVERDUE_BATCH,
            )
            for notice in find_overdue(page.items, expected, settings, now, self._overdue):
                self._overdue[notice.run_id] = None
                if len(self._overdue) > _SEEN_FINAL_LIMIT:
                    del self._overdue[next(iter(self._overdue))]
                # The store says who reports it: another replica, or this process before
                # a restart, may have already.
                if await self.store.mark_overdue(notice.run_id):
                    await self.on_overdue(notice)

    async def _claim_riders(
        self, provider_names: set[str], now: datetime
    ) -> dict[tuple[str, str], list[RunRecord]]:
        """Runs of batch-capable providers due within the ride window, claimed now."""
        riders: dict[tuple[str, str], list[RunRecord]] = defaultdict(list)
        if self.ride_window <= 0:
            return riders
        for name in sorted(provider_names):
            provider = self.providers.get(name)
            paused_until = self._paused_until.get(name)
            if not isinstance(provider, BatchStatus) or (
                paused_until is not None and paused_until > now
            ):
                continue
            early = await self.store.claim_overdue_runs(
                self.owner,
                limit=self.batch_size,
                lease_seconds=self.lease_seconds,
                provider=name,
                now=now,
                due_by=now + timedelta(seconds=self.ride_window),
            )
            for run in early:
                riders[(run.provider, run.application)].append(run)
        return riders

    async def _poll_group(
        self,
        provider_name: str,
        application: str,
        runs: Sequence[RunRecord],
        riders: Sequence[RunRecord],
        now: datetime,
        report: PollReport,
    ) -> None:
        # Each run's writes are issued together, not one after another: the store commits
        # concurrent writes in shared transactions, so a pass costs a few commits, not one
        # per run.
        provider = self.providers.get(provider_name)
        paused_until = self._paused_until.get(provider_name)
        if provider is None or (paused_until is not None and paused_until > now):
            if provider is None:
                if provider_name not in self._unknown_providers:
                    self._unknown_providers.add(provider_name)
                    logger.warning("no provider %r configured to poll its runs", provider_name)
            else:
                report.providers_paused.add(provider_name)
            await asyncio.gather(
                *(self._settle(run, None, now, report) for run in runs), self._release(riders)
            )
            return
        if isinstance(provider, BatchStatus) and len(runs) + len(riders) > 1:
            states = await self._batch_states(provider, provider_name, application, runs, report)
            if states is None:  # the batch call failed: try again on the schedule
                await asyncio.gather(
                    *(self._settle(run, None, now, report) for run in runs),
                    self._release(riders),
                )
                return
            # Runs the listing did not reach are asked about one by one.
            missing = [run for run in runs if run.run_id not in states]
            found = [run for run in runs if run.run_id in states]
            # Riders not on the pages read keep their own turn, as it was planned.
            claimed = {run.run_id for run in runs} | {run.run_id for run in riders}
            await asyncio.gather(
                *(self._settle(run, states[run.run_id], now, report) for run in found),
                *(
                    self._settle(run, states[run.run_id], now, report, ride=True)
                    for run in riders
                    if run.run_id in states
                ),
                self._release([run for run in riders if run.run_id not in states]),
                self._record_seen_finished(provider_name, states, claimed, now, report),
                *(self._poll_one(provider, provider_name, run, now, report) for run in missing),
            )
            return
        await asyncio.gather(
            self._release(riders),
            *(self._poll_one(provider, provider_name, run, now, report) for run in runs),
        )

    async def _release(self, runs: Sequence[RunRecord]) -> None:
        await asyncio.gather(*(self.store.release_run(run.run_id, self.owner) for run in runs))

    async def _record_seen_finished(
        self,
        provider_name: str,
        states: Mapping[str, RunState],
        claimed: set[str],
        now: datetime,
        report: PollReport,
    ) -> None:
        """Record the end of watched runs a listing showed finished though none was due."""
        fresh: list[RunState] = []
        for run_id, state in states.items():
            if run_id in claimed or not state.status.is_terminal or run_id in self._seen_final:
                continue
            self._seen_final[run_id] = None
            if len(self._seen_final) > _SEEN_FINAL_LIMIT:
                # Oldest first: a run that ended long ago is not listed near the top again.
                del self._seen_final[next(iter(self._seen_final))]
            fresh.append(state)
        known = await asyncio.gather(*(self.store.get_run(state.run_id) for state in fresh))
        events = [
            self._poll_event(run, state, now)
            for run, state in zip(known, fresh, strict=True)
            # Not one of ours, or already known to have ended: nothing to record.
            if run is not None and run.provider == provider_name and not run.status.is_terminal
        ]
        await asyncio.gather(*(self.record(event) for event in events))
        report.learned += len(events)

    async def _batch_states(
        self,
        provider: BatchStatus,
        provider_name: str,
        application: str,
        runs: Sequence[RunRecord],
        report: PollReport,
    ) -> dict[str, RunState] | None:
        limiter = self._limiter(provider_name)

        async def pace() -> None:
            # A check may read several pages: each request takes its own token.
            await limiter.acquire()
            report.status_calls += 1

        try:
            return await provider.statuses(application, [run.run_id for run in runs], pace=pace)
        except ProviderError as exc:
            self._on_error(provider_name, exc, report)
            return None

    async def _poll_one(
        self,
        provider: Provider,
        provider_name: str,
        run: RunRecord,
        now: datetime,
        report: PollReport,
    ) -> None:
        state: RunState | None = None
        async with self._concurrency:
            await self._limiter(provider_name).acquire()
            report.status_calls += 1
            try:
                state = await provider.status(run.application, run.run_id)
            except ProviderError as exc:
                self._on_error(provider_name, exc, report)
        await self._settle(run, state, now, report)

    def _on_error(self, provider_name: str, exc: ProviderError, report: PollReport) -> None:
        report.errors += 1
        logger.warning(
            "status call to %s failed (%s%s)",
            provider_name,
            type(exc).__name__,
            f" {exc.status_code}" if exc.status_code else "",
        )
        if exc.retry_after is not None:
            # The platform asked every caller to hold off: pause the whole provider.
            pause = min(self.max_pause, max(0.0, exc.retry_after))
            self._paused_until[provider_name] = datetime.now(UTC) + timedelta(seconds=pause)

    async def _settle(
        self,
        run: RunRecord,
        state: RunState | None,
        now: datetime,
        report: PollReport,
        *,
        ride: bool = False,
        asked: bool = True,
    ) -> None:
        """Record what a poll learned about `run`, expire it, or schedule its next poll.

        A run that rode along on another run's listing read (`ride`) was looked at
        early: its next poll may move later than planned, never earlier. A run put off
        without asking its platform (`asked` False) counts no status call.
        """
        status = run.status
        if state is not None and next_status(run.status, state.status) is not None:
            result = await self.record(self._poll_event(run, state, now))
            report.learned += 1
            status = result.status
            if status.is_terminal:
                return
        if run.deadline is not None and run.deadline <= now:
            if self.settings.cancel_at_deadline:
                await self._cancel(run)
            await self.record(self._expiry_event(run, now))
            report.expired += 1
            return
        attempts = run.poll_attempts + 1
        next_poll = now + timedelta(seconds=self._next_delay(run, attempts, now))
        if ride and run.next_poll_at is not None and next_poll < run.next_poll_at:
            next_poll = run.next_poll_at
        paused_until = self._paused_until.get(run.provider)
        if paused_until is not None and next_poll < paused_until:
            next_poll = paused_until
        if run.deadline is not None and next_poll > run.deadline:
            # Look once more exactly at the deadline before declaring the run expired.
            next_poll = run.deadline
        await self.store.reschedule_poll(
            run.run_id, self.owner, next_poll_at=next_poll, attempts=attempts, status_call=asked
        )
        report.rescheduled += 1

    async def _cancel(self, run: RunRecord) -> None:
        provider = self.providers.get(run.provider)
        if provider is None:
            return
        await self._limiter(run.provider).acquire()
        try:
            await provider.cancel(run.application, run.run_id)
        except ProviderError as exc:
            logger.warning(
                "cancel of run %s at its deadline failed (%s%s)",
                run.run_id,
                type(exc).__name__,
                f" {exc.status_code}" if exc.status_code else "",
            )

    def _next_delay(self, run: RunRecord, attempts: int, now: datetime) -> float:
        expected = (
            None
            if self.durations is None
            else self.durations.expected(run.provider, run.application)
        )
        if expected is None:
            return self.schedule.delay(attempts, self.rng)
        assert self.durations is not None
        s = self.schedule
        age = (now - run.submitted_at).total_seconds()
        # Past the p99 of an application whose webhooks deliver, an open run is long
        # rather than lost: it backs off instead of being checked every cap.
        trusted_after = expected.p99 if self.durations.trusted(expected) else None
        return next_check(
            age, attempts, expected, s.interval, s.factor, s.cap, s.jitter, self.rng, trusted_after
        )

    @staticmethod
    def _poll_event(run: RunRecord, state: RunState, now: datetime) -> RunEvent:
        return RunEvent.from_poll(
            run.provider,
            run.application,
            run.run_id,
            state.status,
            occurred_at=state.updated_at or now,
            payload=state.raw,
        )

    @staticmethod
    def _expiry_event(run: RunRecord, now: datetime) -> RunEvent:
        return RunEvent.expired(
            run.provider, run.application, run.run_id, deadline=run.deadline, occurred_at=now
        )

    def _limiter(self, provider_name: str) -> SharedRateLimiter:
        limiter = self._limiters.get(provider_name)
        if limiter is None:
            # One budget per provider for every process on the store, so replicas
            # together keep to the provider's rate.
            limiter = SharedRateLimiter(
                self.store,
                f"poll:{provider_name}",
                self.rate_limit,
                burst=max(1, int(self.rate_limit)),
            )
            self._limiters[provider_name] = limiter
        return limiter
