"""Shared pytest fixtures."""

from __future__ import annotations

import os
import urllib.parse
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

# ======================================================================================
# Store backends: SQLite in tmp_path, and the real PostgreSQL in a throwaway schema.
#
# PostgreSQL comes from LISTENER_TEST_POSTGRES_URL, else the local default when it
# answers. Unreachable, its tests are skipped, except under CI=true where they fail.
# ======================================================================================

DEFAULT_TEST_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"
_pg_probe: dict[str, str | None] = {}


def postgres_base_url() -> str:
    """The PostgreSQL server for tests, or skip (fail under CI=true) when there is none."""
    if "url" not in _pg_probe:
        import psycopg

        candidate = os.environ.get("LISTENER_TEST_POSTGRES_URL") or DEFAULT_TEST_POSTGRES_URL
        try:
            with psycopg.connect(candidate, connect_timeout=3) as conn:
                conn.execute("SELECT 1")
            _pg_probe["url"] = candidate
        except psycopg.Error as exc:
            _pg_probe["url"] = None
            _pg_probe["why"] = f"{type(exc).__name__}: {exc}".strip()
    url = _pg_probe["url"]
    if url is None:
        message = f"PostgreSQL is not reachable for the store tests ({_pg_probe['why']})"
        if os.environ.get("CI") == "true":
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    return url


def with_search_path(url: str, schema: str) -> str:
    """`url` with libpq `options` that put `schema` first on the search path."""
    parts = urllib.parse.urlsplit(url)
    query = [*urllib.parse.parse_qsl(parts.query), ("options", f"-csearch_path={schema}")]
    return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query)))


@pytest.fixture
def pg_base_url() -> str:
    """The test PostgreSQL server itself (for setup and inspection), not a fresh schema."""
    return postgres_base_url()


@pytest.fixture
def pg_schema_url() -> Iterator[str]:
    """A PostgreSQL URL whose connections work in a fresh schema, dropped afterwards."""
    import psycopg

    base = postgres_base_url()
    schema = f"t_{uuid.uuid4().hex}"
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    try:
        yield with_search_path(base, schema)
    finally:
        with psycopg.connect(base, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """One database per test, for each backend in turn."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store' / 'listener.db'}"
    url: str = request.getfixturevalue("pg_schema_url")
    return url


StoreFactory = Callable[..., Awaitable[Any]]


@pytest.fixture
async def store_factory(store_url: str) -> AsyncIterator[StoreFactory]:
    """Opens stores on the test's database (several share it); closes them all after."""
    opened: list[Any] = []

    async def make(*, open_store: bool = True, **options: Any) -> Any:
        store: Any
        if store_url.startswith("sqlite:"):
            from listener.store.sqlite import SQLiteStore

            store = SQLiteStore(store_url, **options)
        else:
            from listener.store.postgres import PostgresStore

            options.setdefault("max_size", 4)
            store = PostgresStore(store_url, **options)
        opened.append(store)
        if open_store:
            await store.open()
        return store

    yield make
    for store in opened:
        await store.close()


@pytest.fixture
async def store(store_factory: StoreFactory) -> Any:
    return await store_factory()


# ======================================================================================
# Receiver, dispatcher and handler plugin tests.
#
# The project root goes on sys.path so `import handlers` finds the ready plugins package
# and not the `tests/handlers` directory (which has no __init__.py and would otherwise be
# taken for a namespace package); `tests/` goes there so every test directory can
# `import helpers`.
# ======================================================================================

import sys  # noqa: E402

for _path in (Path(__file__).resolve().parent, Path(__file__).resolve().parent.parent):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))


# ======================================================================================
# Metaflow: real flows, offline, with the local metadata and datastore in a temporary
# directory. Metaflow reads its configuration once, when first imported, so the directory
# is the session's and the variables are set before any test imports it; the flows the
# tests start inherit them.
# ======================================================================================

METAFLOW_FLOWS = Path(__file__).resolve().parent / "flows"


@pytest.fixture(scope="session")
def metaflow_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    root = tmp_path_factory.mktemp("metaflow")
    settings = {
        "METAFLOW_HOME": str(root / "home"),
        "METAFLOW_DEFAULT_METADATA": "local",
        "METAFLOW_DEFAULT_DATASTORE": "local",
        "METAFLOW_DATASTORE_SYSROOT_LOCAL": str(root / "datastore"),
        "USERNAME": "listener-tests",
    }
    config = sys.modules.get("metaflow.metaflow_config")
    if config is not None and getattr(config, "DATASTORE_SYSROOT_LOCAL", None) != str(
        root / "datastore"
    ):
        pytest.fail("metaflow was imported before its test configuration was set")
    saved = {name: os.environ.get(name) for name in settings}
    os.environ.update(settings)
    try:
        yield root
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
