"""Submit one run to Nextmv and wait for it to end.

    NEXTMV_API_KEY=... python examples/submit_and_wait.py [input.json] [--timeout 3600] [--debug]

Run it next to a `listener serve` that receives the account's webhooks and shares its
store (`LISTENER_STORE`): the script learns the end as soon as the service records the
webhook. Should the webhook never come, the script's own poller asks the platform after
`LISTENER_POLLER_GRACE` seconds of silence, so the wait ends either way.

Offline, in three terminals: `listener serve` with a `[sources.nextmv]` whose secret is
the one `listener fake-platform nextmv --json --webhook http://127.0.0.1:8000/hooks/nextmv`
prints, then this script with `NEXTMV_BASE_URL` and `NEXTMV_API_KEY` from that line.
Without a network or a fake platform, it stops at once with one line saying so.

Environment:

- `NEXTMV_API_KEY` (required) and `NEXTMV_BASE_URL` (default: Nextmv Cloud);
- `NEXTMV_APPLICATION`: the application id (default `routing`);
- `LISTENER_STORE`: the store URL (default `sqlite:///listener.db`);
- `LISTENER_POLLER_GRACE`: seconds before polling (default 60).

Prints the final status; exits 0 when the run succeeded, 1 when it ended otherwise.
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

from listener import DispatchSettings, Listener, PollSettings, RunStatus
from listener.client import WaitTimeout
from listener.providers.nextmv import DEFAULT_BASE_URL, NextmvProvider
from listener.script import run_script

EXAMPLE_INPUT: dict[str, Any] = {
    "vehicles": [{"id": "van-1", "capacity": 10}],
    "stops": [{"id": f"stop-{i}", "quantity": 1} for i in range(1, 6)],
}


async def submit_and_wait(run_input: Any, *, timeout: float) -> int:
    api_key = os.environ.get("NEXTMV_API_KEY")
    if not api_key:
        print("set NEXTMV_API_KEY", file=sys.stderr)
        return 2
    application = os.environ.get("NEXTMV_APPLICATION", "routing")
    grace = float(os.environ.get("LISTENER_POLLER_GRACE", "60"))
    provider = NextmvProvider(api_key, base_url=os.environ.get("NEXTMV_BASE_URL", DEFAULT_BASE_URL))
    listener = Listener(
        store_url=os.environ.get("LISTENER_STORE", "sqlite:///listener.db"),
        providers=[provider],
        # The service sharing the store calls the handlers; a script that dispatched
        # too would claim calls for handlers it does not have.
        dispatch=DispatchSettings(enabled=False),
        poll=PollSettings(grace=grace),
    )
    async with provider, listener:
        # This script has no webhook source (the service does), so it would otherwise
        # check the run at the poll schedule's first step; the webhook is expected.
        handle = await listener.submit("nextmv", application, run_input, first_poll=grace)
        print(f"submitted {handle.run_id} to {application}; waiting", flush=True)
        try:
            event = await listener.wait(handle.run_id, timeout=timeout)
        except WaitTimeout:
            print(f"run {handle.run_id} did not end within {timeout:g} s", file=sys.stderr)
            return 1
    print(f"run {event.run_id} {event.status.value} (learned by {event.origin.value})")
    return 0 if event.status is RunStatus.SUCCEEDED else 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Submit one Nextmv run and wait for its end.")
    parser.add_argument("input", nargs="?", type=Path, help="a JSON input file")
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds to wait")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")
    args = parser.parse_args(argv)
    run_input = json.loads(args.input.read_text()) if args.input else EXAMPLE_INPUT
    # The platform is asked once first: offline, the script says so at once, in one line.
    return run_script(
        lambda: asyncio.run(submit_and_wait(run_input, timeout=args.timeout)),
        platform_url=os.environ.get("NEXTMV_BASE_URL", DEFAULT_BASE_URL),
        debug=args.debug,
    )


if __name__ == "__main__":
    raise SystemExit(main())
