"""Durable storage: the `Store` protocol, SQLite (default) and PostgreSQL backends."""

from __future__ import annotations

from listener.store.base import (
    CallState,
    Change,
    HandlerCall,
    NewRun,
    Page,
    PruneCounts,
    RecordResult,
    RunEnd,
    RunRecord,
    SchemaTooNew,
    Store,
    StoreCounts,
    StoreError,
    StoreUnavailable,
    UnroutableRecord,
    WebhookEpisode,
)

__all__ = [
    "DEFAULT_STORE_URL",
    "CallState",
    "Change",
    "HandlerCall",
    "NewRun",
    "Page",
    "PruneCounts",
    "RecordResult",
    "RunEnd",
    "RunRecord",
    "SchemaTooNew",
    "Store",
    "StoreCounts",
    "StoreError",
    "StoreUnavailable",
    "UnroutableRecord",
    "WebhookEpisode",
    "open_store",
]

DEFAULT_STORE_URL = "sqlite:///listener.db"


async def open_store(url: str = DEFAULT_STORE_URL, *, default_grace_seconds: float = 60.0) -> Store:
    """Open (and create or migrate) the store at `url`.

    `sqlite:///relative/path.db`, `sqlite:////absolute/path.db` or `sqlite://:memory:`;
    `postgresql://user@host:port/db` (needs the `postgres` extra).
    """
    from listener.store.backends import backend_for

    store: Store = backend_for(url).store_class()(url, default_grace_seconds=default_grace_seconds)
    await store.open()
    return store
