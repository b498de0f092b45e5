"""Poll-only mode: no public URL, no receiver, no webhooks; the poller finds every end.

    NEXTMV_API_KEY=... python examples/poll_only.py [input.json ...] [--debug]

Offline, serve the fake platform in another terminal and use what it prints:

    listener fake-platform nextmv --json
    NEXTMV_BASE_URL=http://127.0.0.1:PORT NEXTMV_API_KEY=fake-... python examples/poll_only.py

Where nothing can reach this machine (a laptop, a batch job behind a firewall) the
listener still gives one way to submit, wait and route runs to handlers: with no
webhook source, a run is first checked at the poll schedule's first step, and with a
grace of zero it stays "overdue", so the poller asks the platform about it on a backoff
schedule (1 s, then doubling up to 20 s, with jitter) until it ends. The handlers below
run exactly as they would for a webhook.

Environment: `NEXTMV_API_KEY` (required), `NEXTMV_BASE_URL`, `NEXTMV_APPLICATION`
(default `routing`), `LISTENER_STORE` (default: a store in memory, as nothing here
needs to outlive the process).

Prints one line per finished run; exits 0 when every run succeeded.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from listener import Listener, PollSchedule, PollSettings, RunEvent, RunStatus
from listener.providers.nextmv import DEFAULT_BASE_URL, NextmvProvider
from listener.script import handlers_done, run_script

EXAMPLE_INPUTS: list[Any] = [{"stops": n, "vehicles": 2} for n in (5, 10, 20)]


def build_listener(provider: NextmvProvider, store_url: str) -> Listener:
    listener = Listener(
        store_url=store_url,
        providers=[provider],
        poll=PollSettings(
            grace=0.0,
            interval=0.5,
            # No source here, so the first question comes at the schedule's first step, a
            # second after submission; most short runs are done by then.
            schedule=PollSchedule(interval=1.0, factor=2.0, cap=20.0, jitter=0.2),
        ),
    )

    @listener.on("succeeded", "failed", "canceled", "expired")
    async def finished(event: RunEvent) -> None:
        print(f"handler: run {event.run_id} {event.status.value}", flush=True)

    return listener


async def run_all(inputs: Sequence[Any], *, timeout: float) -> int:
    api_key = os.environ.get("NEXTMV_API_KEY")
    if not api_key:
        print("set NEXTMV_API_KEY", file=sys.stderr)
        return 2
    application = os.environ.get("NEXTMV_APPLICATION", "routing")
    provider = NextmvProvider(api_key, base_url=os.environ.get("NEXTMV_BASE_URL", DEFAULT_BASE_URL))
    listener = build_listener(provider, os.environ.get("LISTENER_STORE", "sqlite://:memory:"))
    async with provider, listener:
        handles = [await listener.submit("nextmv", application, item) for item in inputs]
        print(f"submitted {len(handles)} runs; polling for their ends", flush=True)
        events = await asyncio.gather(
            *(listener.wait(handle.run_id, timeout=timeout) for handle in handles)
        )
        for event in events:
            print(f"run {event.run_id} {event.status.value} (learned by {event.origin.value})")
        # Give the handler calls for the last transitions a moment to finish.
        await handlers_done(listener)
    return 0 if all(event.status is RunStatus.SUCCEEDED for event in events) else 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Submit Nextmv runs and poll for their ends.")
    parser.add_argument("inputs", nargs="*", type=Path, help="JSON input files, one per run")
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds to wait")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")
    args = parser.parse_args(argv)
    inputs = [json.loads(path.read_text()) for path in args.inputs] or EXAMPLE_INPUTS
    # The platform is asked once first: offline, the script says so at once, in one line.
    return run_script(
        lambda: asyncio.run(run_all(inputs, timeout=args.timeout)),
        platform_url=os.environ.get("NEXTMV_BASE_URL", DEFAULT_BASE_URL),
        debug=args.debug,
    )


if __name__ == "__main__":
    raise SystemExit(main())
