"""Store backends by URL scheme: the one table `open_store` and the config loader read.

Adding a backend is one row here and one module with a class taking
``(url, *, default_grace_seconds)`` and implementing `Store`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from listener.errors import ConfigError

if TYPE_CHECKING:
    from listener.store.base import Store

__all__ = ["EXAMPLES", "Backend", "backend_for", "check_store_url"]


def _check_sqlite(url: str) -> None:
    from listener.store.sqlite import parse_sqlite_url

    parse_sqlite_url(url)


def _check_postgres(url: str) -> None:
    # The server checks the rest when the store opens; the URL may name any host.
    if "://" not in url:
        raise ValueError("a PostgreSQL store URL looks like postgresql://user@host/db")


@dataclass(frozen=True, slots=True)
class Backend:
    """One backend: the URL schemes it serves, where its class lives, how to check a URL.

    The class is named, not imported, so a backend whose driver is an optional extra
    (PostgreSQL's psycopg) costs nothing until a URL of its scheme is opened.
    """

    schemes: tuple[str, ...]
    module: str
    class_name: str
    example: str
    check: Callable[[str], None]
    # The package extra that installs the driver, named when the driver is missing.
    extra: str | None = None

    def store_class(self) -> Callable[..., Store]:
        try:
            module = importlib.import_module(self.module)
        except ModuleNotFoundError as exc:
            if self.extra is None or (exc.name or "").startswith("listener"):
                raise
            raise ConfigError(
                f"the {self.schemes[0]} store needs the {exc.name} package, which is not "
                f"installed; install the listener with its {self.extra!r} extra: "
                f"pip install 'listener[{self.extra}]'"
            ) from None
        store_class: Callable[..., Store] = getattr(module, self.class_name)
        return store_class


_BACKENDS: Final = (
    Backend(
        ("sqlite",),
        "listener.store.sqlite",
        "SQLiteStore",
        "sqlite:///path/to/listener.db",
        _check_sqlite,
    ),
    Backend(
        ("postgresql", "postgres"),
        "listener.store.postgres",
        "PostgresStore",
        "postgresql://user@host/db",
        _check_postgres,
        extra="postgres",
    ),
)

EXAMPLES: Final = " or ".join(backend.example for backend in _BACKENDS)


def backend_for(url: str) -> Backend:
    """The backend serving `url`'s scheme; ValueError with the URLs that would work."""
    scheme = url.partition(":")[0].lower()
    for backend in _BACKENDS:
        if scheme in backend.schemes:
            return backend
    raise ValueError(f"unsupported store URL scheme; use {EXAMPLES}")


def check_store_url(url: str) -> None:
    """ValueError unless some backend serves `url` and accepts its form."""
    backend_for(url).check(url)
