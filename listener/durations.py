"""Durations and moments as operators write them: `30d`, `12h`, `90m`, `3600s`, or an
ISO 8601 time. Pure functions, for the commands and the library alike."""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime, timedelta

__all__ = ["parse_duration", "parse_moment"]

_DURATION = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\s*([smhd]?)")
_UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> float:
    """Seconds in `30d`, `12h`, `90m`, `3600s` or `3600` (a number may have a fraction);
    `ValueError` for anything else."""
    found = _DURATION.fullmatch(text.strip().lower())
    seconds = float(found[1]) * _UNIT_SECONDS[found[2]] if found else math.nan
    if not math.isfinite(seconds):
        raise ValueError(
            f"{text!r} is not a duration; write a number with d, h, m or s (30d, 12h, 90m, "
            "3600s), or a number of seconds"
        )
    return seconds


def parse_moment(text: str, *, now: datetime) -> datetime:
    """A moment: a duration before `now` (`2h`: two hours ago), or an ISO 8601 time
    (`2026-12-07T04:00:00Z`; one without a zone is UTC). `ValueError` for anything else."""
    try:
        seconds = parse_duration(text)
    except ValueError:
        pass
    else:
        try:
            return now - timedelta(seconds=seconds)
        except OverflowError:
            return datetime.min.replace(tzinfo=UTC)
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(
            f"{text!r} is neither a duration (30d, 12h, 90m, 3600s) nor an ISO 8601 time "
            "(2026-12-07T04:00:00Z)"
        ) from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
