"""Nothing lost, nothing handled twice, under a platform that misbehaves in every way.

A fake Nextmv platform drops 30% of its webhooks, sends 20% twice, delays and reorders
them, and fails about 10% of API calls with 503 or 429 (Retry-After); runs succeed, fail,
are canceled by the platform or by the listener. Each run must end in the status the
platform really gave it, with its terminal handler called exactly once, whichever of
webhook, poll or cancel reported it first.
"""

from __future__ import annotations

from pathlib import Path

from scenarios import ChaosSettings, Tally, assert_held, run_chaos


def _exercised(tally: Tally) -> None:
    # The scenario proves something only if the misbehaviour really happened.
    for note in (
        "webhooks dropped",
        "webhooks duplicated",
        "webhooks reordered",
        "runs learned by poll",
        "canceled by the listener",
        "API calls answered 503",
        "API calls answered 429",
    ):
        assert tally.notes[note] > 0, note
    assert tally.duplicates_suppressed > 0


async def test_chaos_on_sqlite(tmp_path: Path) -> None:
    tally = await run_chaos(f"sqlite:///{tmp_path / 'chaos.db'}", ChaosSettings(runs=300))
    assert_held(tally)
    assert tally.lost == 0
    assert tally.double_calls == 0
    _exercised(tally)


async def test_chaos_on_postgres(pg_schema_url: str) -> None:
    tally = await run_chaos(pg_schema_url, ChaosSettings(runs=150, seed=8))
    assert_held(tally)
    assert tally.lost == 0
    assert tally.double_calls == 0
    _exercised(tally)
