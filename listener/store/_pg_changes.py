"""What one PostgreSQL replica's commits tell the others: new handler calls, ended runs.

A transaction that records events sends one `NOTIFY` on the schema's channel (delivered
only if it commits), saying whether it enqueued handler calls and which runs it ended.
Each replica follows the channel on a connection of its own: a dispatcher claims at once
instead of at its next sweep, and `wait()` for a run ended elsewhere resolves at once
instead of at its next read. The sweeps and reads stay: a notification lost while the
following connection was down is only a delay.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import psycopg

from listener.events import Transition
from listener.store.base import Change, RecordResult

__all__ = ["channel_for", "follow", "notices_for", "parse_notice"]

log = logging.getLogger("listener.store")

# PostgreSQL refuses a NOTIFY payload of 8,000 bytes or more; runs ended by one
# transaction go out in as many notices as it takes.
MAX_PAYLOAD_CHARS = 7_000
# How long the follower waits before connecting again after its connection failed,
# doubling from the first to the last.
RECONNECT_DELAYS = (0.5, 1.0, 2.0, 5.0, 10.0, 30.0)


def channel_for(schema: str) -> str:
    """The channel of the store in `schema`: stores in other schemas of one database
    neither hear nor wake each other. A digest keeps it a short, plain identifier."""
    return "listener_" + hashlib.sha256(schema.encode()).hexdigest()[:24]


def _ended(transition: Transition | None) -> str | None:
    if transition is not None and transition.status.is_terminal:
        return transition.run_id
    return None


def notices_for(results: Iterable[Any]) -> list[str]:
    """The payloads to send for the `RecordResult`s among `results` (other values are
    ignored); none when they enqueued nothing and ended nothing."""
    calls = False
    ended: list[str] = []
    for result in results:
        if not isinstance(result, RecordResult):
            continue
        calls = calls or bool(result.call_ids)
        run_id = _ended(result.transition)
        if run_id is not None:
            ended.append(run_id)
    if not calls and not ended:
        return []
    return list(_payloads(calls, ended))


def _encode(calls: bool, ended: list[str]) -> str:
    # ASCII only (the default), so the length in characters is the length in bytes.
    return json.dumps({"calls": calls, "ended": ended}, separators=(",", ":"))


def _payloads(calls: bool, ended: list[str]) -> Iterator[str]:
    chunk: list[str] = []
    size = 0
    for run_id in ended:
        encoded = len(json.dumps(run_id)) + 1
        if chunk and size + encoded > MAX_PAYLOAD_CHARS:
            yield _encode(calls, chunk)
            chunk, size = [], 0
        if encoded > MAX_PAYLOAD_CHARS:
            continue  # a run id this long is only found by the waiters' own reads
        chunk.append(run_id)
        size += encoded
    yield _encode(calls, chunk)


def parse_notice(payload: str) -> Change | None:
    """The change a payload reports; None for one this version cannot read."""
    try:
        data = json.loads(payload)
        ended = tuple(str(run_id) for run_id in data.get("ended", ()))
        return Change(calls=bool(data.get("calls")), ended=ended)
    except (ValueError, TypeError, AttributeError):
        return None


async def follow(
    conninfo: str,
    channel: str,
    on_change: Callable[[Change], None],
    *,
    connect_timeout: float,
) -> None:
    """Report the channel's changes to `on_change` until cancelled, connecting again
    after a failure. After each (re)connection it reports that calls may be waiting, as
    notices sent while it was away are lost."""
    failures = 0
    while True:
        try:
            conn = await psycopg.AsyncConnection.connect(
                conninfo,
                autocommit=True,
                connect_timeout=max(1, round(connect_timeout)),
                application_name="listener-changes",
            )
        except psycopg.OperationalError as exc:
            failures += 1
            await _pause(failures, exc)
            continue
        try:
            await conn.execute(f'LISTEN "{channel}"')
            failures = 0
            on_change(Change(calls=True))
            async for notice in conn.notifies():
                change = parse_notice(notice.payload)
                if change is not None:
                    on_change(change)
        except psycopg.OperationalError as exc:
            failures += 1
            await _pause(failures, exc)
        finally:
            with contextlib.suppress(Exception):
                await conn.close()


async def _pause(failures: int, exc: Exception) -> None:
    delay = RECONNECT_DELAYS[min(failures, len(RECONNECT_DELAYS)) - 1]
    # The type only: a driver's message can quote the connection string.
    log.warning(
        "following store changes failed (%s); connecting again in %.1f s",
        type(exc).__name__,
        delay,
    )
    await asyncio.sleep(delay)
