"""The seeded plan: when each run starts and ends, and how it ends."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from listener.demo.constants import CANCELED_SHARE, FAILED_SHARE, GAP, LEAD, MAX_WINDOW
from listener.events import RunStatus


@dataclass(frozen=True, slots=True)
class PlannedRun:
    """When a run starts and ends (seconds after the first submission) and how it ends."""

    start: float
    end: float
    status: RunStatus


def plan_runs(runs: int, seed: int) -> list[PlannedRun]:
    """Give each run two distinct time slots (start, end) and a final status.

    The 2 * `runs` slots are `gap` apart and shuffled among the runs, so durations and
    queue times vary widely while no two status changes share a moment. Fixed shares of
    the runs fail or are canceled, which runs is up to the seed.
    """
    if runs < 1:
        raise ValueError("the demo needs at least one run")
    rng = random.Random(seed)
    gap = min(GAP, MAX_WINDOW / (2 * runs))
    slots = [LEAD + i * gap for i in range(2 * runs)]
    rng.shuffle(slots)
    failed, canceled = round(runs * FAILED_SHARE), round(runs * CANCELED_SHARE)
    statuses = [RunStatus.FAILED] * failed + [RunStatus.CANCELED] * canceled
    statuses += [RunStatus.SUCCEEDED] * (runs - len(statuses))
    rng.shuffle(statuses)
    plans = []
    for k in range(runs):
        start, end = sorted(slots[2 * k : 2 * k + 2])
        plans.append(PlannedRun(start, end, statuses[k]))
    return plans


def last_change(plans: Sequence[PlannedRun]) -> float:
    return max(plan.end for plan in plans)
