"""Handlers for the Metaflow example: a line per finished flow, with its result."""

from __future__ import annotations

from listener import Handlers, RunEvent

handlers = Handlers()


@handlers.on("succeeded", provider="metaflow")
async def report_success(event: RunEvent) -> None:
    result = await event.fetch_result()
    total = (result.output or {}).get("total")
    print(f"flow {event.run_id} succeeded: total={total} (learned by {event.origin})", flush=True)


@handlers.on("failed", provider="metaflow")
async def report_failure(event: RunEvent) -> None:
    result = await event.fetch_result()
    print(f"flow {event.run_id} failed: {result.error} (learned by {event.origin})", flush=True)
