"""How commands reach the store and a listener, and run their async part."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any

from listener.config import Config, build_listener
from listener.errors import EXIT_OK, EXIT_STORE, EXIT_USAGE, CommandError

if TYPE_CHECKING:
    from listener.app import Listener
    from listener.store.base import Store


def check_store_exists(url: str) -> None:
    """Reading commands must not create an empty database where none was meant to be."""
    if not url.startswith("sqlite:"):
        return
    from listener.store.sqlite import parse_sqlite_url

    path = parse_sqlite_url(url)
    if path is not None and not Path(path).exists():
        raise CommandError(
            f"error: no store at {path}: nothing has been recorded there yet "
            "(check listener.store, or run from the service's directory)",
            EXIT_STORE,
        )


@contextlib.asynccontextmanager
async def existing_store(config: Config) -> AsyncIterator[Store]:
    from listener.store import open_store

    check_store_exists(config.store)
    store = await open_store(config.store)
    try:
        yield store
    finally:
        await store.close()


@contextlib.asynccontextmanager
async def running(
    config: Config, *, dispatch: bool = False, poll: bool = False, retention: bool = False
) -> AsyncIterator[Listener]:
    """A started listener. Commands record and poll; by default the service runs handlers
    (and prunes, with `retention_days`)."""
    listener = build_listener(config, dispatch=dispatch, poll=poll, retention=retention)
    try:
        async with listener:
            yield listener
    finally:
        # The listener does not own its providers' HTTP clients; close them here.
        for provider in listener.providers.values():
            await provider.aclose()


def require_provider(listener: Listener, config: Config, name: str) -> None:
    if name not in listener.providers:
        known = ", ".join(sorted(listener.providers)) or "none"
        raise CommandError(
            f"{config.label}: no provider {name!r} configured (add [providers.{name}]); "
            f"configured: {known}",
            EXIT_USAGE,
        )


def run_async(coroutine: Coroutine[Any, Any, int | None]) -> int:
    return asyncio.run(coroutine) or EXIT_OK
