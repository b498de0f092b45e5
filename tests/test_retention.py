"""Retention's pacing: the chunk sizes `next_chunk` picks, and `prune_store` asking a real
SQLite store for them."""

from __future__ import annotations

import asyncio
from datetime import datetime
from pathlib import Path

import pytest
from helpers import age_sqlite_store
from helpers import event as event_of

from listener.retention import (
    FIRST_CHUNK,
    MIN_CHUNK,
    Pruner,
    cutoff,
    next_chunk,
    prune_store,
)
from listener.store import open_store
from listener.store.base import PruneCounts
from listener.store.sqlite import SQLiteStore

DAY = 86400.0
RUNS = 300


def test_a_quick_chunk_lets_the_next_one_double_and_no_more() -> None:
    assert next_chunk(100, 0.001, target=0.05, largest=1000) == 200
    assert next_chunk(100, 0.0, target=0.05, largest=1000) == 200
    assert next_chunk(100, 0.04, target=0.05, largest=1000) == 125


def test_a_slow_chunk_shrinks_the_next_one_to_fit_the_target_at_once() -> None:
    assert next_chunk(1000, 0.2, target=0.05, largest=1000) == 250
    assert next_chunk(1000, 0.05, target=0.05, largest=1000) == 1000


def test_chunks_stay_between_the_least_and_the_largest() -> None:
    assert next_chunk(600, 0.001, target=0.05, largest=1000) == 1000
    assert next_chunk(100, 10.0, target=0.05, largest=1000) == MIN_CHUNK
    # A largest under the least wins: the caller's limit is never exceeded.
    assert next_chunk(3, 10.0, target=0.05, largest=3) == 3


class LimitsSeen(SQLiteStore):
    """A SQLite store that keeps the `limit` of each prune it is asked for."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.limits: list[int] = []

    async def prune(self, *, before: datetime, limit: int = 1000) -> PruneCounts:
        self.limits.append(limit)
        return await super().prune(before=before, limit=limit)


async def old_store(tmp_path: Path) -> LimitsSeen:
    """A store holding `RUNS` finished runs of an event each, all three days old."""
    db = tmp_path / "old.db"
    store = await open_store(f"sqlite:///{db}")
    try:
        await asyncio.gather(
            *(store.record(event_of(f"run-{i}", delivery_id=f"d-{i}")) for i in range(RUNS))
        )
    finally:
        await store.close()
    age_sqlite_store(db, 3 * DAY)
    seen = LimitsSeen(f"sqlite:///{db}")
    await seen.open()
    return seen


async def test_a_paced_pass_grows_its_chunks_while_they_are_quick(tmp_path: Path) -> None:
    store = await old_store(tmp_path)
    try:
        counts = await prune_store(store, before=cutoff(2 * DAY), limit=250, chunk_seconds=1000.0)
        assert (counts.runs, counts.events, counts.more) == (RUNS, RUNS, False)
        assert store.limits == [FIRST_CHUNK, 2 * FIRST_CHUNK, 250]
    finally:
        await store.close()


async def test_a_paced_pass_takes_small_chunks_when_each_is_over_its_time(
    tmp_path: Path,
) -> None:
    store = await old_store(tmp_path)
    try:
        # No chunk can be this quick: every one after the first asks for the least.
        counts = await prune_store(store, before=cutoff(2 * DAY), limit=1000, chunk_seconds=1e-9)
        assert (counts.runs, counts.events, counts.transitions) == (RUNS, RUNS, RUNS)
        assert store.limits[0] == FIRST_CHUNK
        assert set(store.limits[1:]) == {MIN_CHUNK}
        assert len(store.limits) == 1 + (RUNS - FIRST_CHUNK) // MIN_CHUNK + 1
        assert (await store.list_runs()).items == []
    finally:
        await store.close()


async def test_an_unpaced_pass_asks_for_its_limit_every_time(tmp_path: Path) -> None:
    store = await old_store(tmp_path)
    try:
        counts = await prune_store(store, before=cutoff(2 * DAY), limit=120, chunk_seconds=None)
        assert counts.runs == RUNS
        assert store.limits == [120, 120, 120]
    finally:
        await store.close()


async def test_the_pruner_paces_its_passes(tmp_path: Path) -> None:
    store = await old_store(tmp_path)
    try:
        pruner = Pruner(store, 2 * DAY, limit=500, chunk_seconds=1000.0)
        counts = await pruner.prune_once()
        assert counts.runs == RUNS
        assert store.limits == [FIRST_CHUNK, 2 * FIRST_CHUNK, 400]
    finally:
        await store.close()


@pytest.mark.parametrize("seconds", [0.0, -1.0, float("nan")])
async def test_a_chunk_time_that_is_not_positive_is_refused(tmp_path: Path, seconds: float) -> None:
    store = await open_store(f"sqlite:///{tmp_path / 'x.db'}")
    try:
        with pytest.raises(ValueError, match="chunk_seconds must be positive"):
            await prune_store(store, before=cutoff(2 * DAY), chunk_seconds=seconds)
        with pytest.raises(ValueError, match="chunk_seconds must be positive"):
            Pruner(store, 2 * DAY, chunk_seconds=seconds)
    finally:
        await store.close()
