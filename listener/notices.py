"""Webhook health notices: `webhooks_degraded` when a provider's ends stop coming by
webhook, `webhooks_recovered` when they come back.

Pure: `window_counts` turns the store's recent run ends into one `WindowCounts` per
provider, and `assess` is the episode detector: given a window's counts and the previous
`Episode`, it says whether a notice is due. A quiet window (fewer than `min_ends` ends)
changes nothing, so a system with little traffic does not flap; a degraded episode ends
only once the share reaches `recover_share`, above `threshold` (hysteresis).

Each notice carries the key of its episode (`Notice.key`), unique per kind, provider and
episode start, for handlers to be idempotent on.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Final

from listener._checks import positive, whole
from listener.health import learned_by
from listener.registry import NOTICE_KINDS
from listener.store.base import RunEnd

__all__ = [
    "DEGRADED",
    "NOTICE_KINDS",
    "RECOVERED",
    "Episode",
    "Notice",
    "NoticeSettings",
    "WindowCounts",
    "assess",
    "window_counts",
]

DEGRADED: Final = "webhooks_degraded"
RECOVERED: Final = "webhooks_recovered"


@dataclass(frozen=True, slots=True)
class NoticeSettings:
    """When webhooks count as degraded: the share of a provider's run ends learned by
    webhook over the last `window` seconds is below `threshold`, with at least `min_ends`
    ends in the window; they recover at `recover_share`. The window is evaluated every
    `interval` seconds.

    At one end a second, ends learned by poll replace webhook ends in the window as
    webhooks stop, so the share falls below 0.5 about half a window (plus the poll's lag)
    after they stop: the defaults notice it within two minutes of the poll's lag.
    """

    enabled: bool = True
    window: float = 120.0
    threshold: float = 0.5
    recover_share: float = 0.8
    min_ends: int = 20
    interval: float = 15.0

    def __post_init__(self) -> None:
        positive("notices.window", self.window)
        positive("notices.interval", self.interval)
        whole("notices.min_ends", self.min_ends)
        for name, value in (("threshold", self.threshold), ("recover_share", self.recover_share)):
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"notices.{name} must be a number, got {value!r}")
            if not 0.0 < value <= 1.0:
                raise ValueError(f"notices.{name} must be above 0 and at most 1, got {value!r}")
        if self.recover_share < self.threshold:
            raise ValueError(
                f"notices.recover_share ({self.recover_share:g}) must be at least "
                f"notices.threshold ({self.threshold:g})"
            )


@dataclass(frozen=True, slots=True)
class WindowCounts:
    """One provider's run ends in a window, by how each was learned."""

    provider: str
    by: Mapping[str, int] = field(default_factory=dict)

    @property
    def ends(self) -> int:
        return sum(self.by.values())

    @property
    def webhook_share(self) -> float:
        return self.by.get("webhook", 0) / self.ends if self.ends else 0.0


@dataclass(frozen=True, slots=True)
class Episode:
    """A provider's webhook state between evaluations: degraded since `since`, or not."""

    degraded: bool = False
    since: datetime | None = None


@dataclass(frozen=True, slots=True)
class Notice:
    """Something the listener tells handlers about itself rather than about a run.

    `episode_start` is when the degraded episode began (for both of its notices), `at`
    when this notice was decided; `counts` and `share` describe the window that decided it.
    """

    kind: str
    provider: str
    window_seconds: float
    counts: Mapping[str, int]
    share: float
    threshold: float
    episode_start: datetime
    at: datetime

    @property
    def ends(self) -> int:
        return sum(self.counts.values())

    @property
    def key(self) -> str:
        """Unique per notice kind and episode: `kind:provider:episode start`."""
        return f"{self.kind}:{self.provider}:{self.episode_start.isoformat()}"

    def as_dict(self) -> dict[str, object]:
        return {
            "kind": self.kind,
            "key": self.key,
            "provider": self.provider,
            "window_seconds": self.window_seconds,
            "ends": self.ends,
            "counts": dict(self.counts),
            "webhook_share": self.share,
            "threshold": self.threshold,
            "episode_start": self.episode_start.isoformat(),
            "at": self.at.isoformat(),
        }


def window_counts(ends: Iterable[RunEnd], providers: Iterable[str]) -> dict[str, WindowCounts]:
    """Counts per provider in `providers` (those with webhooks), zero when none ended."""
    watched = set(providers)
    counts: dict[str, Counter[str]] = {provider: Counter() for provider in watched}
    for end in ends:
        if end.provider in watched:
            counts[end.provider][learned_by(end)] += 1
    return {provider: WindowCounts(provider, dict(c)) for provider, c in counts.items()}


def assess(
    previous: Episode, counts: WindowCounts, settings: NoticeSettings, now: datetime
) -> tuple[Episode, Notice | None]:
    """The episode after this window, and the notice it starts or ends (if any)."""
    if counts.ends < settings.min_ends:
        return previous, None
    share = counts.webhook_share
    if not previous.degraded and share < settings.threshold:
        kind, episode = DEGRADED, Episode(degraded=True, since=now)
    elif previous.degraded and share >= settings.recover_share:
        kind, episode = RECOVERED, Episode()
    else:
        return previous, None
    notice = Notice(
        kind=kind,
        provider=counts.provider,
        window_seconds=settings.window,
        counts=dict(counts.by),
        share=share,
        threshold=settings.threshold if kind == DEGRADED else settings.recover_share,
        episode_start=episode.since or previous.since or now,
        at=now,
    )
    return episode, notice
