"""The request budget every process on a store shares (`listener/budget.py`): the bucket's
arithmetic, tested directly, then the budget on each backend and across processes."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import WAIT_LIMIT

from listener.budget import SharedRateLimiter, slice_size, take_from_bucket
from listener.store import Store

WORKER = str(Path(__file__).with_name("store") / "_store_worker.py")


def test_a_full_bucket_grants_what_is_asked_up_to_what_it_holds() -> None:
    assert take_from_bucket(5.0, 0.0, rate=2.0, burst=5, want=3) == (3, 2.0)
    assert take_from_bucket(2.0, 0.0, rate=2.0, burst=5, want=3) == (2, 0.0)


def test_an_empty_bucket_refills_at_the_rate_up_to_the_burst() -> None:
    assert take_from_bucket(0.0, 0.25, rate=2.0, burst=5, want=3) == (0, 0.5)
    assert take_from_bucket(0.5, 0.25, rate=2.0, burst=5, want=3) == (1, 0.0)
    # A long quiet spell saves up no more than the burst.
    assert take_from_bucket(0.0, 3600.0, rate=2.0, burst=5, want=9) == (5, 0.0)


def test_clocks_that_disagree_refill_nothing() -> None:
    assert take_from_bucket(0.5, -10.0, rate=2.0, burst=5, want=1) == (0, 0.5)


def test_a_slice_is_about_a_quarter_second_and_at_least_one_token() -> None:
    assert [slice_size(rate) for rate in (0.1, 1.0, 3.0, 4.0, 10.0, 180 / 60)] == [1, 1, 1, 1, 2, 1]


@pytest.mark.parametrize(("rate", "burst"), [(0.0, 1), (-1.0, 1), (1.0, 0)])
async def test_nonsense_is_refused(store: Store, rate: float, burst: int) -> None:
    with pytest.raises(ValueError, match="must"):
        SharedRateLimiter(store, "x", rate, burst=burst)


async def test_the_store_keeps_one_bucket_per_name(store: Store) -> None:
    assert await store.take_budget("a", rate=0.001, burst=3, want=2) == 2
    assert await store.take_budget("a", rate=0.001, burst=3, want=2) == 1
    assert await store.take_budget("a", rate=0.001, burst=3, want=2) == 0
    assert await store.take_budget("b", rate=0.001, burst=3, want=5) == 3


async def test_acquire_waits_for_the_bucket_to_refill(store: Store) -> None:
    limiter = SharedRateLimiter(store, "poll:x", 50.0, burst=2)
    async with asyncio.timeout(WAIT_LIMIT):
        for _ in range(6):  # two saved up, four more as the bucket refills
            await limiter.acquire()


def test_processes_sharing_a_store_stay_within_one_rate_together(store_url: str) -> None:
    """Three processes take tokens as fast as they can for a while: together they get no
    more than the rate allows over the time they took, plus the burst."""
    rate, burst, seconds = 20.0, 5, 2.0
    started = time.monotonic()
    workers = [
        subprocess.Popen(
            [sys.executable, WORKER, "budget", store_url, str(rate), str(burst), str(seconds)],
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    taken = []
    for worker in workers:
        out, _ = worker.communicate(timeout=WAIT_LIMIT + seconds)
        assert worker.returncode == 0
        taken.append(json.loads(out)["taken"])
    elapsed = time.monotonic() - started
    assert all(count > 0 for count in taken)
    assert sum(taken) <= rate * elapsed + burst
