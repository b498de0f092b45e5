"""Server-sent events read line by line, as run streams send them."""

from __future__ import annotations

from collections.abc import AsyncIterator

from listener.providers.sse import ServerSentEvent, read_events


async def lines(*items: str) -> AsyncIterator[str]:
    for item in items:
        yield item


async def test_events_end_at_blank_lines_and_join_their_data() -> None:
    stream = lines(": a comment", "retry: 5", "id: 7", "data: a", "data:b", "", "event: x", "")
    found = [event async for event in read_events(stream)]
    # The second has no data, so it is not dispatched; an unfinished one neither.
    assert found == [ServerSentEvent("message", "a\nb", "7")]
    tail = [e async for e in read_events(lines("event: done", "data: {}", "", "data: cut"))]
    assert tail == [ServerSentEvent("done", "{}", None)]
