"""Phase 5 of `bench/poller.py`: run event streams, with every callback dropped.

    python bench/poller.py --phases 5 --scale 0.1 [--stream-runs 100] [--seed 7]

On the fake Noxus engine (in this process), with every callback dropped, two ways to
learn each run's end:

* sdk wait: the official client's own `Run.a_wait()`, one per run, at its default
  `interval` of 5 s, on an engine without streams, so that it polls: after its stream
  call is refused it sleeps that long between `arefresh()` calls until the run ends,
  then refreshes once more;
* listener streams: the listener with no public URL, so it follows each run's event
  stream (`[streams] enabled = "auto"`), its poller running with the same settings as
  phases 2-4.

Workload: `--stream-runs` runs submitted at uniformly random times over 300 platform s,
each queued 0-2 s, then running for a log-uniform 5 s to 30 min. Platform time is real
time times `--scale`, the SDK's interval and the poll settings scaled alike.

Measured: status calls per run (the engine's run reads), stream connections per run,
and the detection delay from the engine's end of the run to the moment the listener's
`wait` (or the SDK's poll) saw it, in platform seconds. Numbers only, no targets.

Everything runs in this one process (engine, the client's polls, the listener), so at a
small scale many runs make it the bottleneck: every delay then stretches and the client
polls less often than its interval, its polls most (each of its runs asks every 50 ms
real at scale 0.01, each answer validated into its `Run` model). At 100 runs, scale 0.1
stays clear of it (the client's delays then spread over its 5 s interval, as on paper);
0.01 does not.
"""

from __future__ import annotations

import asyncio
import math
import random
import statistics
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from noxus_sdk.client import Client
from noxus_sdk.workflows import WorkflowDefinition

from listener import Listener, PollSchedule, PollSettings
from listener.streaming import StreamSettings
from listener.testing import FakeNoxusEngine, NoxusPlan, NoxusRun

__all__ = ["run_streams_phase"]

SDK_INTERVAL = 5.0  # noxus-sdk Run.wait(interval=5)
WINDOW = 300.0


@dataclass(frozen=True, slots=True)
class _Planned:
    submit_at: float
    queued_for: float
    runs_for: float


def _workload(runs: int, seed: int) -> list[_Planned]:
    rng = random.Random(seed)
    low, high = math.log(5.0), math.log(1800.0)
    return sorted(
        (
            _Planned(rng.uniform(0, WINDOW), rng.uniform(0, 2), math.exp(rng.uniform(low, high)))
            for _ in range(runs)
        ),
        key=lambda planned: planned.submit_at,
    )


@dataclass
class _Outcome:
    name: str
    runs: int
    status_calls: int
    connections: int
    delays: list[float]


@dataclass(frozen=True, slots=True)
class _Plans:
    """Each run's plan, by the workload index its input carries."""

    workload: list[_Planned]

    def __call__(self, run: NoxusRun) -> NoxusPlan:
        planned = self.workload[int(run.input["n"])]
        return NoxusPlan(queued_for=planned.queued_for, runs_for=planned.runs_for)


async def _sdk(engine: FakeNoxusEngine, workload: list[_Planned], scale: float) -> list[float]:
    # The official client itself; with no stream on this engine its `a_wait` polls.
    client = await asyncio.to_thread(
        Client, engine.api_key, base_url=engine.base_url, load_nodes=False, load_me=False
    )
    workflow = WorkflowDefinition(client=client, id=engine.workflow_id)

    async def one(index: int, planned: _Planned) -> float:
        await asyncio.sleep(planned.submit_at * scale)
        run = await workflow.arun({"n": index})
        # The interval is typed as whole seconds; scaled, it is a fraction of one.
        await run.a_wait(interval=SDK_INTERVAL * scale)  # type: ignore[arg-type]
        return _delay(engine.runs[run.id], scale)

    try:
        return list(await asyncio.gather(*(one(i, p) for i, p in enumerate(workload))))
    finally:
        await client.aclose()


async def _listener(
    engine: FakeNoxusEngine, workload: list[_Planned], scale: float, db: Path
) -> list[float]:
    provider = engine.noxus_provider()
    listener = Listener(
        store_url=f"sqlite:///{db}",
        providers=[provider],
        poll=PollSettings(
            first_poll=15.0 * scale,
            grace=3600.0 * scale,
            interval=1.0 * scale,
            schedule=PollSchedule(interval=2.0 * scale, cap=15.0 * scale, jitter=0.1),
        ),
        streams=StreamSettings(max_streams=len(workload), interval=1.0),
    )

    async def one(index: int, planned: _Planned) -> float:
        await asyncio.sleep(planned.submit_at * scale)
        handle = await listener.submit("noxus", engine.workflow_id, {"n": index})
        await listener.wait(handle.run_id, timeout=3600)
        return _delay(engine.runs[handle.run_id], scale)

    async with provider, listener:
        return list(await asyncio.gather(*(one(i, p) for i, p in enumerate(workload))))


def _delay(run: NoxusRun, scale: float) -> float:
    assert run.finished_at is not None
    return (datetime.now(UTC) - run.finished_at).total_seconds() / scale


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1))]


async def run_streams_phase(runs: int, scale: float, seed: int) -> None:
    """Run both halves of the phase and print their numbers."""
    workload = _workload(runs, seed)
    outcomes: list[_Outcome] = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in ("sdk wait (5 s)", "listener streams"):
            engine = FakeNoxusEngine(
                plan=_Plans(workload),
                time_scale=scale,
                drop_rate=1.0,
                seed=seed,
                # The client's wait would follow a stream: measured is its polling.
                streams=not name.startswith("sdk"),
            )
            async with engine:
                if name.startswith("sdk"):
                    delays = await _sdk(engine, workload, scale)
                else:
                    delays = await _listener(engine, workload, scale, Path(tmp) / "streams.db")
                outcomes.append(
                    _Outcome(
                        name,
                        runs,
                        sum(engine.status_calls.values()),
                        sum(engine.stream_connections.values()),
                        delays,
                    )
                )
    print(f"\nphase 5: {runs} Noxus runs over {WINDOW:.0f} platform s, every callback dropped")
    print(f"{'':18} {'calls/run':>10} {'streams/run':>12} {'delay p50':>10} {'p95':>8} {'max':>8}")
    for outcome in outcomes:
        print(
            f"{outcome.name:18} {outcome.status_calls / runs:>10.2f}"
            f" {outcome.connections / runs:>12.2f}"
            f" {statistics.median(outcome.delays):>9.2f}s"
            f" {_percentile(outcome.delays, 0.95):>7.2f}s {max(outcome.delays):>7.2f}s"
        )
    print("(delays in platform seconds: from the engine's end of a run to its detection)")
