"""What commands print: tables for people, JSON for scripts, and the rows of both."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import click

if TYPE_CHECKING:
    from listener.events import RunEvent
    from listener.store.base import HandlerCall, Page, RunRecord, UnroutableRecord

T = TypeVar("T")

_ERROR_WIDTH = 60


def print_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, ensure_ascii=False, default=str))


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [len(header) for header in headers]
    for row in rows:
        widths = [max(width, len(cell)) for width, cell in zip(widths, row, strict=True)]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in (headers, *rows)
    ]
    return "\n".join(lines)


def when(moment: datetime | None) -> str:
    if moment is None:
        return "-"
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()


def short(text: str | None, width: int = _ERROR_WIDTH) -> str:
    if not text:
        return "-"
    line = " ".join(text.split())
    return line if len(line) <= width else line[: width - 3] + "..."


def more(command: str, cursor: str | None) -> None:
    if cursor is not None:
        click.echo(f"more: listener {command} --cursor {cursor}", err=True)


@dataclass(frozen=True)
class Listing(Generic[T]):
    """How one kind of listing prints: its JSON form, its table row, and what to say when empty."""

    command: str
    headers: Sequence[str]
    to_json: Callable[[T], Any]
    to_row: Callable[[T], list[str]]
    empty: str


def print_page(page: Page[T], listing: Listing[T], as_json: bool) -> None:
    """Print one page of a listing: JSON with its cursor, or a table and a hint for the next."""
    if as_json:
        items = [listing.to_json(item) for item in page.items]
        print_json({"items": items, "next_cursor": page.next_cursor})
        return
    rows = [listing.to_row(item) for item in page.items]
    click.echo(table(listing.headers, rows) if rows else listing.empty)
    more(listing.command, page.next_cursor)


def run_json(run: RunRecord) -> dict[str, Any]:
    return {
        "run_id": run.run_id,
        "provider": run.provider,
        "application": run.application,
        "status": run.status.value,
        "submitted_at": iso(run.submitted_at),
        "last_event_at": iso(run.last_event_at),
        "deadline": iso(run.deadline),
        "next_poll_at": iso(run.next_poll_at),
        "poll_attempts": run.poll_attempts,
        "status_calls": run.status_calls,
        "metadata": dict(run.metadata),
        "updated_at": iso(run.updated_at),
    }


def call_json(call: HandlerCall) -> dict[str, Any]:
    return {
        "id": call.id,
        "handler": call.handler,
        "run_id": call.run_id,
        "status": call.status.value,
        "state": call.state.value,
        "attempts": call.attempts,
        "replays": call.replays,
        "last_error": call.last_error,
        "next_attempt_at": iso(call.next_attempt_at),
        "event_key": call.event.key,
        "created_at": iso(call.created_at),
        "updated_at": iso(call.updated_at),
    }


def unroutable_json(record: UnroutableRecord) -> dict[str, Any]:
    # Headers are left out: a sender may put credentials there.
    return {
        "id": record.id,
        "source": record.source,
        "delivery_id": record.delivery_id,
        "reason": record.reason,
        "received_at": iso(record.received_at),
        "body": record.body.decode("utf-8", "replace"),
    }


def run_row(run: RunRecord) -> list[str]:
    return [
        run.run_id,
        run.status.value,
        run.provider,
        run.application or "-",
        when(run.submitted_at),
        when(run.last_event_at),
    ]


def unroutable_row(record: UnroutableRecord) -> list[str]:
    return [
        str(record.id),
        when(record.received_at),
        record.source,
        record.delivery_id or "-",
        short(record.reason),
    ]


def event_row(event: RunEvent) -> list[str]:
    return [
        when(event.occurred_at),
        event.run_id,
        event.status.value,
        event.origin.value,
        event.provider,
        event.application or "-",
        event.delivery_id,
    ]


def call_row(call: HandlerCall) -> list[str]:
    return [
        str(call.id),
        call.handler,
        call.run_id,
        call.status.value,
        call.state.value,
        str(call.attempts),
        when(call.updated_at),
        short(call.last_error),
    ]


RUN_HEADERS = ("RUN ID", "STATUS", "PROVIDER", "APPLICATION", "SUBMITTED", "LAST EVENT")
UNROUTABLE_HEADERS = ("ID", "RECEIVED", "SOURCE", "DELIVERY", "REASON")
EVENT_HEADERS = ("OCCURRED", "RUN ID", "STATUS", "ORIGIN", "PROVIDER", "APPLICATION", "DELIVERY")
CALL_HEADERS = ("ID", "HANDLER", "RUN ID", "STATUS", "STATE", "ATTEMPTS", "UPDATED", "LAST ERROR")


RUNS: Listing[RunRecord] = Listing("runs", RUN_HEADERS, run_json, run_row, "no runs")
EVENTS: Listing[RunEvent] = Listing(
    "events", EVENT_HEADERS, lambda event: event.to_dict(), event_row, "no events"
)
UNROUTABLE: Listing[UnroutableRecord] = Listing(
    "events --unroutable",
    UNROUTABLE_HEADERS,
    unroutable_json,
    unroutable_row,
    "no unroutable deliveries",
)
DEAD_LETTERS: Listing[HandlerCall] = Listing(
    "dead-letters", CALL_HEADERS, call_json, call_row, "no dead letters"
)
