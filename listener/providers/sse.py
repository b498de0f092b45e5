"""Server-sent events: the `text/event-stream` format read line by line. Pure, no I/O.

Only what run streams need: `event`, `data` (several lines joined by newlines) and `id`
fields; comments (lines starting with ``:``) and `retry` are skipped. An event is
complete at its blank line; one without data is not dispatched, as the format says.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass

__all__ = ["ServerSentEvent", "read_events"]


@dataclass(frozen=True, slots=True)
class ServerSentEvent:
    event: str
    data: str
    id: str | None = None


async def read_events(lines: AsyncIterable[str]) -> AsyncIterator[ServerSentEvent]:
    """The events in a stream of lines (without their line endings)."""
    event, data, last_id = "", list[str](), None
    async for line in lines:
        if not line:
            if data:
                yield ServerSentEvent(event or "message", "\n".join(data), last_id)
            event, data = "", []
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            event = value
        elif name == "data":
            data.append(value)
        elif name == "id" and "\x00" not in value:
            last_id = value
