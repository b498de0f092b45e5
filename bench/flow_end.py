"""Flow end to handler call: Metaflow flows learned by their exit hook, and by polling.

    python bench/flow_end.py [--runs 20] [--poll-runs 10] [--poll-interval 1.0]

Runs a real two-step flow (tests/flows/hello_flow.py) offline, with Metaflow's local
metadata and datastore in a temporary directory, one run at a time:

1. hook: a served listener with a Standard Webhooks source; each run's exit hook
   reports its end. No polling.
2. poll only: no source, so runs get no hook target; the poller asks the Metaflow client
   every `--poll-interval` seconds from submission on.

The delay is from the flow's end (the client's `finished_at` of the run: its end task's
last write) to the handler's call (wall clock in this process), in milliseconds; p50
and p95 over the runs. The hook's share includes starting the hook's own Python process
(Metaflow runs each hook in one), importing the listener and signing.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FLOW = str(ROOT / "tests" / "flows" / "hello_flow.py")
sys.path.insert(0, str(ROOT / "tests"))


def _configure_metaflow(root: str) -> None:
    # Before Metaflow is first imported: it reads its configuration then.
    os.environ.update(
        METAFLOW_HOME=os.path.join(root, "home"),
        METAFLOW_DEFAULT_METADATA="local",
        METAFLOW_DEFAULT_DATASTORE="local",
        METAFLOW_DATASTORE_SYSROOT_LOCAL=os.path.join(root, "datastore"),
        USERNAME=os.environ.get("USERNAME", "bench"),
    )


async def _measure(root: Path, runs: int, *, hook: bool, poll_interval: float) -> list[float]:
    from helpers import serve

    from listener import Listener, PollSchedule, PollSettings, RunEvent
    from listener.providers.metaflow import MetaflowProvider
    from listener.providers.metaflow.reading import read_run
    from listener.signatures import StandardWebhooks, generate_hmac_secret
    from listener.sources import Source

    secret = generate_hmac_secret()
    provider = MetaflowProvider(webhook_secret=secret if hook else None)
    poll = (
        PollSettings(enabled=False)
        if hook
        else PollSettings(
            grace=poll_interval,
            first_poll=poll_interval,
            interval=0.05,
            schedule=PollSchedule(interval=poll_interval, factor=1.0, cap=poll_interval),
        )
    )
    listener = Listener(
        store_url=f"sqlite:///{root / ('hook' if hook else 'poll')}.db",
        sources=[Source("metaflow", "metaflow", StandardWebhooks([secret]))] if hook else [],
        providers=[provider],
        poll=poll,
    )
    called: dict[str, float] = {}
    ended = asyncio.Event()

    @listener.on_any
    def record(event: RunEvent) -> None:
        if event.status.is_terminal:
            called[event.run_id] = time.time()
            ended.set()

    delays: list[float] = []
    async with serve(listener.asgi()) as base_url:
        listener.public_url = base_url
        for _ in range(runs):
            ended.clear()
            handle = await listener.submit("metaflow", FLOW, {"n": 1})
            await asyncio.wait_for(ended.wait(), 60)
            view = await asyncio.to_thread(read_run, handle.run_id)
            assert view.finished_at is not None
            delays.append((called[handle.run_id] - view.finished_at.timestamp()) * 1000)
            await provider.runs[handle.run_id].ended.wait()
    await provider.aclose()
    return delays


def _report(name: str, delays: list[float]) -> None:
    ordered = sorted(delays)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    print(
        f"{name:<10} runs={len(delays):<3} p50={statistics.median(ordered):7.0f} ms"
        f"  p95={p95:7.0f} ms  max={ordered[-1]:7.0f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--poll-runs", type=int, default=10)
    parser.add_argument("--poll-interval", type=float, default=1.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-metaflow-") as root:
        _configure_metaflow(root)
        hook = asyncio.run(_measure(Path(root), args.runs, hook=True, poll_interval=0))
        polled = asyncio.run(
            _measure(Path(root), args.poll_runs, hook=False, poll_interval=args.poll_interval)
        )
    print("flow end -> handler call")
    _report("hook", hook)
    _report(f"poll {args.poll_interval:g}s", polled)


if __name__ == "__main__":
    main()
