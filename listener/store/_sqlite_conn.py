"""SQLite connections' shared parts: which errors mean 'unavailable', running a plan's
statements on a connection, and the dialect the shared plans use."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from datetime import datetime
from typing import Any, cast

from listener.store import _common as c
from listener.store import _plans as plans
from listener.store.base import (
    StoreUnavailable,
)

# Primary result codes that mean "the database cannot serve right now", as opposed to a
# mistake in a statement (SQLITE_ERROR, constraint violations), which is left as it is.
_UNAVAILABLE_CODES = frozenset(
    {
        sqlite3.SQLITE_PERM,
        sqlite3.SQLITE_BUSY,
        sqlite3.SQLITE_LOCKED,
        sqlite3.SQLITE_NOMEM,
        sqlite3.SQLITE_READONLY,
        sqlite3.SQLITE_IOERR,
        sqlite3.SQLITE_CORRUPT,
        sqlite3.SQLITE_FULL,
        sqlite3.SQLITE_CANTOPEN,
        sqlite3.SQLITE_PROTOCOL,
        sqlite3.SQLITE_NOTADB,
    }
)


def is_unavailable(exc: BaseException) -> bool:
    if isinstance(exc, StoreUnavailable | OSError):
        return True
    if type(exc) not in (sqlite3.OperationalError, sqlite3.DatabaseError):
        return False
    code = getattr(exc, "sqlite_errorcode", None)
    if code is None:
        return isinstance(exc, sqlite3.OperationalError)
    return (int(code) & 0xFF) in _UNAVAILABLE_CODES


def execute_on(conn: sqlite3.Connection) -> Callable[[str, list[Any]], list[c.Row]]:
    def run(sql: str, params: list[Any]) -> list[c.Row]:
        return cast(list[c.Row], conn.execute(sql, params).fetchall())

    return run


DIALECT = plans.Dialect(
    time_param=datetime.timestamp,  # Dialect.t has made it UTC already
    time_value=c.from_epoch,
    json_param=c.dump_json,
    json_value=c.load_json,
    key_to_cursor=float,
    cursor_to_key=float,
    cursor_time_type=float,
    for_update="",  # the writer holds SQLite's one write lock for the whole transaction
    skip_locked="",
    due_calls_index=" INDEXED BY calls_due",
    leased_calls_index=" INDEXED BY calls_leased",
    done_calls_index=" INDEXED BY calls_done",
)
