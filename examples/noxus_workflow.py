"""Run a Noxus workflow and handle its end, learned from the run's event stream.

    NOXUS_API_KEY=... NOXUS_WORKFLOW_ID=... python examples/noxus_workflow.py [input.json]

Offline, serve the fake engine in another terminal and use what it prints:

    listener fake-platform noxus --json
    NOXUS_BASE_URL=http://127.0.0.1:PORT NOXUS_API_KEY=fake-... \\
        NOXUS_WORKFLOW_ID=wf-summarise python examples/noxus_workflow.py

Nothing here has a public URL, so no callback from the engine can reach this machine.
The listener follows each run's event stream instead (`[streams] enabled = "auto"`, the
default): the end arrives the moment the engine reports it, with no polling. Were the
stream to fail, the poller would take the run over and still find its end.

Environment: `NOXUS_API_KEY` and `NOXUS_WORKFLOW_ID` (required), `NOXUS_BASE_URL`,
`LISTENER_STORE` (default: a store in memory).

Prints the handler's line and the run's end; exits 0 when the run completed.
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

from listener import Listener, RunEvent, RunStatus
from listener.providers.noxus import DEFAULT_BASE_URL, NoxusProvider
from listener.script import handlers_done, run_script

EXAMPLE_INPUT: dict[str, Any] = {"doc": "quarterly-report.pdf"}
OFFLINE_HINT = (
    "this needs the network; to try it offline, start `listener fake-platform noxus --json` "
    "and set NOXUS_BASE_URL, NOXUS_API_KEY and NOXUS_WORKFLOW_ID from what it prints"
)


def build_listener(provider: NoxusProvider, store_url: str) -> Listener:
    listener = Listener(store_url=store_url, providers=[provider])

    @listener.on("succeeded", provider="noxus")
    async def completed(event: RunEvent) -> None:
        result = await event.fetch_result()
        print(f"handler: run {event.run_id} output {json.dumps(result.output)}", flush=True)

    @listener.on("failed", "canceled", "expired", provider="noxus")
    async def not_completed(event: RunEvent) -> None:
        print(f"handler: run {event.run_id} {event.status.value}", flush=True)

    return listener


async def run_one(workflow_input: Any, *, timeout: float) -> int:
    api_key, workflow_id = os.environ.get("NOXUS_API_KEY"), os.environ.get("NOXUS_WORKFLOW_ID")
    if not api_key or not workflow_id:
        print("set NOXUS_API_KEY and NOXUS_WORKFLOW_ID", file=sys.stderr)
        return 2
    provider = NoxusProvider(api_key, base_url=os.environ.get("NOXUS_BASE_URL", DEFAULT_BASE_URL))
    listener = build_listener(provider, os.environ.get("LISTENER_STORE", "sqlite://:memory:"))
    async with provider, listener:
        handle = await listener.submit("noxus", workflow_id, workflow_input)
        print(f"submitted run {handle.run_id} of {workflow_id}", flush=True)
        event = await listener.wait(handle.run_id, timeout=timeout)
        print(f"run {event.run_id} {event.status.value} (learned by {event.origin.value})")
        await handlers_done(listener)
    return 0 if event.status is RunStatus.SUCCEEDED else 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run a Noxus workflow and handle its end.")
    parser.add_argument("input", nargs="?", type=Path, help="a JSON file: the run's input")
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds to wait")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")
    args = parser.parse_args(argv)
    workflow_input = json.loads(args.input.read_text()) if args.input else EXAMPLE_INPUT
    return run_script(
        lambda: asyncio.run(run_one(workflow_input, timeout=args.timeout)),
        platform_url=os.environ.get("NOXUS_BASE_URL", DEFAULT_BASE_URL),
        debug=args.debug,
        hint=OFFLINE_HINT,
    )


if __name__ == "__main__":
    raise SystemExit(main())
