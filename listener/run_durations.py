"""What the listener learns of each application's run durations, and when to check a run.

`DurationBook` keeps, per (provider, application), the durations of the last `window`
ended runs (submission to the platform's end time) and the share of those ends that
came by webhook (or stream): bounded memory, fed from the store's recent ends in small increments
(`Store.list_run_ends`), never a scan per poll. `Expected` is its summary for one
application, and `next_check` the pure schedule built on it. No I/O, no clock.
"""

from __future__ import annotations

import math
import random
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from listener._checks import at_least, positive, whole
from listener.events import Origin, RunStatus
from listener.store.base import RunEnd

__all__ = ["DurationBook", "Expected", "LearnSettings", "next_check", "quantile"]

# Ends that say how long a run takes: a canceled or expired run was cut short.
_DURATION_ENDS = frozenset({RunStatus.SUCCEEDED, RunStatus.FAILED})
# Ends the platform pushed: silence before them was rightly trusted.
_PUSHED = frozenset({Origin.WEBHOOK, Origin.STREAM})
# A run past its trusted silence, checked and found open while webhooks deliver, is
# checked again after this share of its age: it is long, not lost.
_LATE_SHARE = 0.1
# Run ids remembered so an end read twice (refreshes overlap) counts once.
_SEEN_LIMIT = 100_000


@dataclass(frozen=True, slots=True)
class LearnSettings:
    """How the poller learns run durations and uses them.

    Each application's last `window` ended runs are kept; with at least `min_samples`,
    a run the poller checks and finds still open is checked next at the
    `start_quantile` of its application's durations (before that: the fixed schedule).

    A run whose news came by webhook is not polled within its grace. While at least
    `trust_share` of the application's recent ends came by webhook, that silence is
    trusted up to `trusted_factor` times the p99 (early samples are the shortest runs,
    so the p99 starts low: the factor keeps healthy runs free of polls); below it, the
    run is checked from the `silent_quantile` on, since its final webhook may be the
    one lost (by default from the shortest duration seen: a lost end is then learned
    about within about a cap, however early the run ended); for that, which costs
    nothing while webhooks deliver, `silent_min_samples` ended runs suffice. The book
    is refreshed from the store every `refresh` seconds.
    """

    window: int = 200
    min_samples: int = 20
    silent_min_samples: int = 5
    start_quantile: float = 0.04
    silent_quantile: float = 0.0
    trust_share: float = 0.95
    trusted_factor: float = 3.0
    refresh: float = 30.0

    def __post_init__(self) -> None:
        whole("window", self.window)
        whole("min_samples", self.min_samples)
        whole("silent_min_samples", self.silent_min_samples)
        if max(self.min_samples, self.silent_min_samples) > self.window:
            raise ValueError("min_samples must not exceed window")
        if not 0 <= self.start_quantile < 0.5:
            raise ValueError("start_quantile must be in [0, 0.5)")
        if not 0 <= self.silent_quantile < 0.5:
            raise ValueError("silent_quantile must be in [0, 0.5)")
        if not 0 <= self.trust_share <= 1:
            raise ValueError("trust_share must be in [0, 1]")
        at_least("trusted_factor", self.trusted_factor, 1)
        positive("refresh", self.refresh)


@dataclass(frozen=True, slots=True)
class Expected:
    """One application's durations in seconds: where checks start (`start` for a run
    polled before, `silent` for one trusted by its grace), its p50/p95/p99, and the
    share of its recent ends that came by webhook."""

    start: float
    silent: float
    p50: float
    p95: float
    p99: float
    samples: int
    webhook_share: float


def quantile(ordered: Sequence[float], q: float) -> float:
    """The `q` quantile of sorted values, by linear interpolation between ranks."""
    if not ordered:
        raise ValueError("no values")
    position = q * (len(ordered) - 1)
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def next_check(
    age: float,
    attempt: int,
    expected: Expected | None,
    interval: float,
    factor: float,
    cap: float,
    jitter: float,
    rng: random.Random,
    trusted_after: float | None = None,
) -> float:
    """Seconds until the next check of a run `age` seconds old that is still open after
    `attempt` checks since its last news.

    Without enough samples (`expected` None) this is the fixed schedule: `interval`
    growing by `factor` to `cap`. With them, a run younger than its application's start
    quantile waits until then (a check before it would most likely find it running);
    from there on it is checked every `cap` seconds, the tightest spacing of the fixed
    schedule, until it ends: past the p99 too, so a run running late is never left
    silent. While its application's webhooks deliver, a run older than `trusted_after`
    (the poller gives the p99) found open is long rather than lost: it is checked again
    after a tenth of its age (at least `cap`).
    +/- `jitter` spreads runs that would otherwise be checked in lockstep.
    """
    spread = 1.0 + jitter * rng.uniform(-1.0, 1.0)
    if expected is None:
        ceiling = min(cap, interval * factor ** min(attempt - 1, 62))
        return ceiling * spread
    if trusted_after is not None and age >= trusted_after:
        return max(cap, age * _LATE_SHARE) * spread
    wait = expected.start - age
    if wait > cap:
        # Jitter on the cap only: the start itself is what the application teaches.
        return wait + cap * (spread - 1.0)
    return cap * spread


class DurationBook:
    """Recent durations and end origins per (provider, application); see the module."""

    def __init__(self, settings: LearnSettings = LearnSettings()) -> None:
        self.settings = settings
        self._durations: dict[tuple[str, str], deque[float]] = {}
        self._webhook: dict[tuple[str, str], deque[bool]] = {}
        self._provider_webhook: dict[str, deque[bool]] = {}
        self._expected: dict[tuple[str, str], Expected | None] = {}
        self._seen: dict[str, None] = {}

    def add(self, ends: Iterable[RunEnd]) -> int:
        """Take in ended runs (any order); returns how many were new."""
        added = 0
        for end in ends:
            if end.run_id is not None:
                if end.run_id in self._seen:
                    continue
                self._seen[end.run_id] = None
                if len(self._seen) > _SEEN_LIMIT:
                    del self._seen[next(iter(self._seen))]
            key = (end.provider, end.application)
            window = self.settings.window
            pushed = end.origin in _PUSHED
            self._webhook.setdefault(key, deque(maxlen=window)).append(pushed)
            self._provider_webhook.setdefault(end.provider, deque(maxlen=window)).append(pushed)
            if end.status in _DURATION_ENDS and end.submitted_at is not None:
                seconds = (end.occurred_at - end.submitted_at).total_seconds()
                if seconds >= 0:
                    self._durations.setdefault(key, deque(maxlen=window)).append(seconds)
            self._expected.pop(key, None)
            added += 1
        return added

    def expected(self, provider: str, application: str) -> Expected | None:
        """The application's learned durations, or None while too few runs ended."""
        summary = self._summary((provider, application))
        if summary is None or summary.samples < self.settings.min_samples:
            return None
        return summary

    def _summary(self, key: tuple[str, str]) -> Expected | None:
        if key in self._expected:
            return self._expected[key]
        durations = self._durations.get(key, ())
        result: Expected | None = None
        if durations:
            ordered = sorted(durations)
            origins = self._webhook[key]
            result = Expected(
                start=quantile(ordered, self.settings.start_quantile),
                silent=quantile(ordered, self.settings.silent_quantile),
                p50=quantile(ordered, 0.5),
                p95=quantile(ordered, 0.95),
                p99=quantile(ordered, 0.99),
                samples=len(ordered),
                webhook_share=sum(origins) / len(origins),
            )
        self._expected[key] = result
        return result

    def applications(self) -> list[tuple[str, str]]:
        return sorted(self._durations)

    def losing_providers(self) -> list[tuple[str, list[str]]]:
        """Providers whose recent ends (at least `silent_min_samples`) came by webhook
        less often than `trust_share`, each with its applications that have a bound
        of their own (`silent_check_after`). The others' silent runs have nothing to be
        checked by yet but the fixed schedule: a lost end would cost a whole grace."""
        settings = self.settings
        losing = []
        for provider, origins in sorted(self._provider_webhook.items()):
            if len(origins) < settings.silent_min_samples:
                continue
            if sum(origins) / len(origins) >= settings.trust_share:
                continue
            known = [
                application
                for p, application in self.applications()
                if p == provider and self.silent_check_after(p, application) is not None
            ]
            losing.append((provider, known))
        return losing

    def trusted(self, expected: Expected) -> bool:
        """Whether webhooks of that application report ends well enough to trust silence."""
        return expected.webhook_share >= self.settings.trust_share

    def silent_check_after(self, provider: str, application: str) -> float | None:
        """The age past which a run trusted by its grace is checked all the same, or
        None (trust its grace) while too few of its application's runs ended.

        While webhooks lose ends, `silent_min_samples` ended runs are enough: before
        the schedule has its samples, a lost final webhook would otherwise cost the
        whole grace.
        """
        summary = self._summary((provider, application))
        if summary is None:
            return None
        trusted = self.trusted(summary)
        if summary.samples >= self.settings.min_samples:
            return summary.p99 * self.settings.trusted_factor if trusted else summary.silent
        if summary.samples >= self.settings.silent_min_samples and not trusted:
            return summary.silent
        return None
