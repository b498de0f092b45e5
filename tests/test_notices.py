"""Webhook health notices (`listener/notices.py`): the window's counts and the episode
detector, tested directly with made-up times."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from listener.events import Origin, RunStatus
from listener.notices import (
    DEGRADED,
    RECOVERED,
    Episode,
    NoticeSettings,
    WindowCounts,
    assess,
    window_counts,
)
from listener.store import RunEnd

NOW = datetime(2026, 12, 1, 12, tzinfo=UTC)
SETTINGS = NoticeSettings(window=60, threshold=0.5, recover_share=0.8, min_ends=10)


def counts(webhook: int, poll: int) -> WindowCounts:
    return WindowCounts("nextmv", {"webhook": webhook, "poll": poll})


def test_window_counts_each_watched_provider_by_how_ends_were_learned() -> None:
    def end(provider: str, origin: Origin, status: RunStatus = RunStatus.SUCCEEDED) -> RunEnd:
        return RunEnd(provider, "app", status, origin, NOW, NOW)

    ends = [
        end("nextmv", Origin.WEBHOOK),
        end("nextmv", Origin.POLL),
        end("nextmv", Origin.POLL, RunStatus.EXPIRED),
        end("local", Origin.POLL),  # not watched: it takes no webhooks
    ]
    found = window_counts(ends, ["nextmv", "quiet"])
    assert found["nextmv"].by == {"webhook": 1, "poll": 1, "expiry": 1}
    assert found["nextmv"].ends == 3
    assert found["nextmv"].webhook_share == pytest.approx(1 / 3)
    assert (found["quiet"].ends, found["quiet"].webhook_share) == (0, 0.0)
    assert set(found) == {"nextmv", "quiet"}


def test_a_share_below_the_threshold_starts_one_degraded_episode() -> None:
    episode, notice = assess(Episode(), counts(4, 6), SETTINGS, NOW)
    assert notice is not None
    assert notice.kind == DEGRADED
    assert (notice.provider, notice.ends, notice.share) == ("nextmv", 10, 0.4)
    assert notice.episode_start == NOW
    assert episode == Episode(degraded=True, since=NOW)
    assert notice.key == f"webhooks_degraded:nextmv:{NOW.isoformat()}"
    # Still degraded, or worse, later: no second notice in the same episode.
    later = NOW + timedelta(seconds=15)
    assert assess(episode, counts(0, 10), SETTINGS, later) == (episode, None)


def test_recovery_needs_the_higher_share_then_ends_the_episode_once() -> None:
    degraded = Episode(degraded=True, since=NOW)
    later = NOW + timedelta(minutes=5)
    # Back above the threshold but below the recovery share: still degraded (hysteresis).
    assert assess(degraded, counts(7, 3), SETTINGS, later) == (degraded, None)
    episode, notice = assess(degraded, counts(8, 2), SETTINGS, later)
    assert notice is not None
    assert notice.kind == RECOVERED
    assert episode == Episode()
    assert (notice.episode_start, notice.at, notice.threshold) == (NOW, later, 0.8)
    assert assess(episode, counts(10, 0), SETTINGS, later) == (episode, None)


def test_a_quiet_window_changes_nothing() -> None:
    # Nine ends, all by poll: too few to judge, either way.
    assert assess(Episode(), counts(0, 9), SETTINGS, NOW) == (Episode(), None)
    degraded = Episode(degraded=True, since=NOW)
    assert assess(degraded, counts(9, 0), SETTINGS, NOW) == (degraded, None)


def test_a_healthy_window_says_nothing() -> None:
    assert assess(Episode(), counts(5, 5), SETTINGS, NOW) == (Episode(), None)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"window": 0}, "notices.window must be positive"),
        ({"threshold": 1.5}, "notices.threshold must be above 0 and at most 1"),
        ({"threshold": True}, "notices.threshold must be a number"),
        ({"min_ends": 0}, "notices.min_ends must be at least 1"),
        ({"threshold": 0.9, "recover_share": 0.8}, "must be at least notices.threshold"),
    ],
)
def test_bad_settings_are_refused_by_name(options: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        NoticeSettings(**options)  # type: ignore[arg-type]
