"""How a script built on the listener starts and ends: a reachable platform, one-line errors.

`require_reachable` asks a platform's base URL once, without retries, so a script with no
network (or no fake platform started) stops at once instead of after its client's
retries. `run_script` runs a script's body: an error the listener raises on purpose ends
it with one line on stderr and its exit code; with `debug`, the traceback is shown.
`handlers_done` waits, before a script stops its listener, for the handler calls of
the last transitions.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

import httpx

from listener.errors import ListenerError, ProviderError
from listener.redaction import redact_url

if TYPE_CHECKING:
    from listener.app import Listener

__all__ = ["OFFLINE_HINT", "handlers_done", "require_reachable", "run_script"]

OFFLINE_HINT = (
    "this needs the network; to try it offline, start `listener fake-platform nextmv --json` "
    "and set NEXTMV_BASE_URL and NEXTMV_API_KEY from what it prints"
)


def require_reachable(base_url: str, *, timeout: float = 5.0, hint: str = OFFLINE_HINT) -> None:
    """Raise `ProviderError` unless something answers HTTP at `base_url`."""
    try:
        httpx.get(base_url, timeout=timeout)
    except httpx.TransportError as exc:
        where = redact_url(base_url)
        raise ProviderError(f"nothing answers at {where} ({type(exc).__name__}); {hint}") from None


def run_script(
    body: Callable[[], int],
    *,
    platform_url: str | None = None,
    debug: bool = False,
    hint: str = OFFLINE_HINT,
) -> int:
    """`body()`'s exit code; a `ListenerError` is one line on stderr unless `debug`.

    With `platform_url`, the platform is asked once first (`require_reachable`, its error
    ending with `hint`).
    """
    try:
        if platform_url is not None:
            require_reachable(platform_url, hint=hint)
        return body()
    except ListenerError as exc:
        if debug:
            raise
        print(exc.describe(), file=sys.stderr)
        return exc.exit_code


async def handlers_done(listener: Listener, *, limit: float = 10.0) -> None:
    """Until no handler call of `listener`'s store is pending or running (TimeoutError
    after `limit` seconds)."""
    async with asyncio.timeout(limit):
        while True:
            calls = (await listener.store.counts()).calls_by_state
            if not calls.get("pending") and not calls.get("running"):
                return
            await asyncio.sleep(0.05)
