from __future__ import annotations

import random

import pytest

from listener.backoff import ceiling, delay


def test_ceiling_doubles_from_base_up_to_cap() -> None:
    assert [ceiling(n, base=1.0, cap=10.0) for n in range(1, 7)] == [1, 2, 4, 8, 10, 10]


def test_ceiling_stays_finite_for_huge_attempts() -> None:
    assert ceiling(10_000, base=0.5, cap=300.0) == 300.0


def test_delay_is_full_jitter_within_bounds() -> None:
    rng = random.Random(7)
    for attempt in range(1, 12):
        top = ceiling(attempt, 1.0, 60.0)
        samples = [delay(attempt, 1.0, 60.0, rng) for _ in range(200)]
        assert all(0.0 <= s <= top for s in samples)
        # Full jitter: samples spread over the whole range, not bunched near the top.
        assert min(samples) < top * 0.2
        assert max(samples) > top * 0.8


def test_delay_is_reproducible_with_a_seeded_rng() -> None:
    first = [delay(n, 2.0, 100.0, random.Random(42)) for n in range(1, 6)]
    second = [delay(n, 2.0, 100.0, random.Random(42)) for n in range(1, 6)]
    assert first == second


def test_delay_without_rng_uses_module_random() -> None:
    assert 0.0 <= delay(3) <= 4.0


def test_zero_cap_means_no_wait() -> None:
    assert delay(5, 1.0, 0.0, random.Random(1)) == 0.0


@pytest.mark.parametrize(("attempt", "base", "cap"), [(0, 1.0, 1.0), (1, -1.0, 1.0), (1, 1.0, -1)])
def test_bad_arguments_are_refused(attempt: int, base: float, cap: float) -> None:
    with pytest.raises(ValueError):  # noqa: PT011
        delay(attempt, base, cap)


def test_ceiling_grows_by_any_factor_of_at_least_one() -> None:
    assert [ceiling(n, base=2.0, cap=100.0, factor=3.0) for n in range(1, 6)] == [2, 6, 18, 54, 100]
    assert ceiling(50, base=5.0, cap=60.0, factor=1.0) == 5.0
    with pytest.raises(ValueError, match="factor"):
        ceiling(1, factor=0.5)
