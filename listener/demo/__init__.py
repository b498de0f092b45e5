"""`listener demo`: the whole path on one machine, with webhooks lost on purpose.

A fake Nextmv-compatible platform runs on loopback and drops a quarter of its webhooks
and sends a tenth twice. The listener receives the rest on its own loopback receiver
(embedded SQLite store in a temporary directory), calls two example handlers, and its
fallback poller recovers the runs whose final webhook never came. At the end a summary
shows how each run's end was learned, and the demo checks what it promises: every run
reached its true final status and every transition's handlers ran exactly once.

Timing is laid out so one seed gives one outcome: every status change the platform makes
has its own time slot (so webhooks go out, and are dropped or not, in a fixed order),
and the poller's grace period outlasts the last slot (so its status calls, which also
draw from the platform's random generator, all come after the last webhook).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from listener.demo.constants import COUNT_HANDLER as COUNT_HANDLER
from listener.demo.constants import LOG_HANDLER as LOG_HANDLER
from listener.demo.plan import PlannedRun, plan_runs
from listener.demo.results import DemoResult, RunReport, check
from listener.demo.run import demo, run_demo

__all__ = [
    "DemoResult",
    "PlannedRun",
    "RunReport",
    "check",
    "demo",
    "main",
    "plan_runs",
    "run_demo",
]


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m listener.demo [--runs N] [--seed S] [--store URL] [--verbose]`."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m listener.demo", description=__doc__)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--store", default=None, help="a store URL (default: a temporary one)")
    parser.add_argument("--verbose", action="store_true", help="print every handler log line")
    args = parser.parse_args(argv)
    return asyncio.run(
        run_demo(runs=args.runs, seed=args.seed, store_url=args.store, verbose=args.verbose)
    )
