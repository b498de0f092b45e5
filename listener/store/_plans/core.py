"""What every statement plan is made of: the plan type, the dialect a backend supplies, the
query builder, shared SQL fragments, and `drive`, which runs a plan synchronously."""

from __future__ import annotations

from collections.abc import Callable, Generator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from listener.events import RunStatus
from listener.store._common import (
    CursorValue,
    JsonDecoder,
    Row,
    T,
    TimeDecoder,
    as_utc,
    decode_cursor,
    encode_cursor,
)
from listener.store._rows import (
    CALL_COLUMNS,
    EVENT_COLUMNS_FOR_CALL,
)
from listener.store.base import Page

Stmt = tuple[str, list[Any]]
Plan = Generator[Stmt, list[Row], T]


@dataclass(frozen=True, slots=True)
class Dialect:
    """How a backend keeps times and JSON, and how it locks rows it claims."""

    time_param: Callable[[datetime], Any]  # a UTC datetime as a query parameter
    time_value: TimeDecoder  # a time column's value as a UTC datetime
    json_param: Callable[[Mapping[str, Any]], Any]  # a mapping as a query parameter
    json_value: JsonDecoder  # a JSON column's value as Python data
    key_to_cursor: Callable[[Any], CursorValue]  # a time column's value, for a cursor
    cursor_to_key: Callable[[Any], Any]  # back from a cursor, as a query parameter
    cursor_time_type: type
    for_update: str  # appended to a SELECT of the row a write is about to change
    skip_locked: str  # appended to the SELECT that picks rows to claim
    # After `handler_calls c` in the SELECTs that pick calls to claim: the partial index
    # to walk (SQLite, without statistics, would rather read every call in the state).
    due_calls_index: str = ""
    leased_calls_index: str = ""
    # After `handler_calls` in retention's pick of done calls: calls_done, in age order
    # (SQLite would rather read every done call through calls_by_state, then sort them).
    done_calls_index: str = ""
    # PostgreSQL: the rows a write picks come as an array built once (`= ANY(ARRAY(...))`);
    # `IN (SELECT ...)` lets its planner hash-join the picked rows against a scan of the
    # whole table, a cost that grows with the table rather than with the rows picked.
    arrays: bool = False
    # Appended to a correlated EXISTS that must stay a lookup per row in its index:
    # PostgreSQL would otherwise join it by hashing the other table, read in full.
    probe: str = ""
    # PostgreSQL: a row of another table looked up per row by key is a LATERAL subquery
    # (with `probe`), which its planner cannot turn into a hash join.
    lateral: bool = False

    def pick(self, column: str, select: str) -> str:
        """`column` is one of the values `select` returns (see `arrays`)."""
        if self.arrays:
            return f"{column} = ANY(ARRAY({select}))"
        return f"{column} IN ({select})"

    def t(self, value: datetime) -> Any:
        return self.time_param(as_utc(value))

    def opt_t(self, value: datetime | None) -> Any:
        return None if value is None else self.time_param(as_utc(value))


class Query:
    """A SELECT with its filters and parameters gathered as they are added."""

    def __init__(self, head: str) -> None:
        self.head = head
        self.clauses: list[str] = []
        self.params: list[Any] = []

    def where(self, clause: str, *params: Any) -> None:
        self.clauses.append(clause)
        self.params.extend(params)

    def where_in(self, column: str, values: Sequence[Any]) -> None:
        if not values:
            self.clauses.append("1 = 0")
            return
        self.clauses.append(f"{column} IN ({', '.join('?' * len(values))})")
        self.params.extend(values)

    def run_filters(
        self,
        status: Sequence[RunStatus] | None,
        provider: str | None,
        application: str | None,
    ) -> None:
        """The filters runs and events share: status, provider, application."""
        if status is not None:
            # Written out, in the vocabulary's order: the open statuses then read as the
            # predicate of runs_open, so both databases can walk that index.
            wanted = {RunStatus(s) for s in status}
            listed = ", ".join(f"'{s.value}'" for s in RunStatus if s in wanted)
            self.clauses.append(f"status IN ({listed})" if listed else "1 = 0")
        if provider is not None:
            self.where("provider = ?", provider)
        if application is not None:
            self.where("application = ?", application)

    def window(self, column: str, since: Any, until: Any) -> None:
        """`since <= column < until`, either bound optional (values already converted)."""
        if since is not None:
            self.where(f"{column} >= ?", since)
        if until is not None:
            self.where(f"{column} < ?", until)

    def stmt(self, tail: str, limit: int) -> Stmt:
        """The SELECT for a page of `limit`: one row more, to tell whether there is more."""
        return self.exact(tail, limit + 1)

    def exact(self, tail: str, limit: int) -> Stmt:
        """The SELECT of at most `limit` rows."""
        where = f" WHERE {' AND '.join(self.clauses)}" if self.clauses else ""
        return f"{self.head}{where} {tail} LIMIT ?", [*self.params, limit]


def resume_newest_first(
    d: Dialect,
    q: Query,
    cursor: str | None,
    *,
    kind: str,
    time_column: str,
    id_column: str,
    id_type: type,
) -> None:
    """Narrow `q` to the rows after `cursor` (from `newest_first_page`), if there is one."""
    if cursor is not None:
        key, row_id = decode_cursor(kind, cursor, (d.cursor_time_type, id_type))
        q.where(f"({time_column}, {id_column}) < (?, ?)", d.cursor_to_key(key), row_id)


def newest_first_page(
    d: Dialect,
    rows: list[Row],
    limit: int,
    *,
    kind: str,
    time_column: str,
    id_column: str,
    item: Callable[[Row], T],
) -> Page[T]:
    """A page of `limit` rows fetched newest first with one extra row (`Query.stmt`): the
    cursor, when there is more, holds the last row's time and id."""
    next_cursor = None
    if len(rows) > limit:
        last = rows[limit - 1]
        next_cursor = encode_cursor(kind, d.key_to_cursor(last[time_column]), last[id_column])
    return Page(items=[item(row) for row in rows[:limit]], next_cursor=next_cursor)


def _marks(values: Sequence[Any]) -> str:
    return ", ".join("?" * len(values))


CALL_SELECT = (
    f"SELECT {CALL_COLUMNS}, {EVENT_COLUMNS_FOR_CALL} "
    "FROM handler_calls c JOIN events e ON e.delivery_id = c.delivery_id"
)

OPEN_STATUSES = tuple(s.value for s in RunStatus if not s.is_terminal)
_OPEN = ", ".join(f"'{s}'" for s in OPEN_STATUSES)
TERMINAL_STATUSES = tuple(s.value for s in RunStatus if s.is_terminal)
_TERMINAL = ", ".join(f"'{s}'" for s in TERMINAL_STATUSES)

# When a run is due for a poll: its next poll time or its deadline, whichever is sooner.
_RUN_DUE = (
    "CASE WHEN next_poll_at IS NULL THEN deadline"
    " WHEN deadline IS NULL OR next_poll_at <= deadline THEN next_poll_at"
    " ELSE deadline END"
)


def in_step_waves(keys: Sequence[tuple[str, ...]]) -> list[list[int]]:
    """The indexes of `keys` in waves that may each be applied at once: an item goes in the wave
    after the last one holding any of its keys, so items sharing a key keep their order
    and never share a wave."""
    waves: list[list[int]] = []
    last: dict[str, int] = {}
    for index, item_keys in enumerate(keys):
        wave = max((last.get(key, -1) for key in item_keys), default=-1) + 1
        if wave == len(waves):
            waves.append([])
        waves[wave].append(index)
        for key in item_keys:
            last[key] = wave
    return waves


def drive(plan: Plan[T], run: Callable[[str, list[Any]], list[Row]]) -> T:
    """Run a plan to its end with `run` executing each statement (synchronous backends)."""
    try:
        stmt = next(plan)
        while True:
            stmt = plan.send(run(*stmt))
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
