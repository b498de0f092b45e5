"""Two `listener serve` replicas on one PostgreSQL database; one is killed mid-run.

Webhooks reach the replicas in turn through a balancer, some are dropped so both
pollers have overdue runs to claim, and both dispatch handler calls. After replica A is
killed with SIGKILL, replica B takes everything: nothing is lost, no handler runs twice
for one transition (except a call A had in flight, which B runs again once A's lease
runs out), no run is polled by both at once, and B finishes A's leased work.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from scenarios import ReplicaSettings, assert_held, run_replicas

from listener.providers.base import Submission
from listener.testing import FakePlatform, RunPlan


async def test_two_replicas_one_killed(pg_schema_url: str, tmp_path: Path) -> None:
    tally = await run_replicas(pg_schema_url, tmp_path, ReplicaSettings())
    assert_held(tally)
    assert tally.lost == 0
    assert tally.double_calls == 0
    assert tally.notes["status calls overlapping for one run"] == 0
    in_flight = tally.notes["calls in flight on A at the kill"]
    assert tally.reruns <= in_flight
    assert tally.notes["A's calls finished by B"] == in_flight
    # The scenario proves something only if both replicas worked, the kill cut into
    # A's work, and the pollers had runs to recover.
    assert tally.notes["deliveries to A before the kill"] > 0
    assert tally.notes["deliveries to B before the kill"] > 0
    assert tally.notes["deliveries to B after the kill"] > 0
    assert in_flight > 0
    assert tally.notes["webhooks dropped"] > 0
    assert tally.notes["runs learned by poll"] > 0
    assert tally.notes["status calls"] > 0


async def test_the_platform_sees_two_status_calls_of_one_run_at_once() -> None:
    """The overlap check above would see two pollers asking about one run together."""
    async with (
        FakePlatform(plan=RunPlan(queued_for=None), status_latency=0.3) as platform,
        platform.nextmv_provider() as provider,
    ):
        run_id = await provider.submit(Submission("routing", {"stops": 3}))
        other = await provider.submit(Submission("routing", {"stops": 4}))
        await provider.status("routing", run_id)
        await provider.status("routing", run_id)
        await asyncio.gather(provider.status("routing", run_id), provider.status("routing", other))
        assert platform.status_overlaps == {}
        await asyncio.gather(provider.status("routing", run_id), provider.status("routing", run_id))
        assert platform.status_overlaps == {run_id: 1}
        assert platform.status_calls == {run_id: 5, other: 1}
