"""Reading the record: `runs`, `runs show` and `events`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import click

from listener.cli.access import existing_store, run_async
from listener.cli.output import (
    CALL_HEADERS,
    EVENT_HEADERS,
    EVENTS,
    RUNS,
    UNROUTABLE,
    call_json,
    call_row,
    event_row,
    print_json,
    print_page,
    run_json,
    table,
    when,
)
from listener.cli.root import STATUS_WORDS, State, json_option, limit_option, pass_state
from listener.config import Config
from listener.errors import EXIT_NOT_FOUND, CommandError
from listener.events import Origin, RunStatus


async def _list_runs(
    config: Config,
    statuses: Sequence[str],
    provider: str | None,
    application: str | None,
    limit: int,
    cursor: str | None,
    as_json: bool,
) -> None:
    async with existing_store(config) as store:
        page = await store.list_runs(
            status=[RunStatus(s) for s in statuses] or None,
            provider=provider,
            application=application,
            limit=limit,
            cursor=cursor,
        )
    print_page(page, RUNS, as_json)


@click.group(invoke_without_command=True)
@click.option(
    "--status", "statuses", multiple=True, type=click.Choice(STATUS_WORDS), help="Repeatable."
)
@click.option("--provider")
@click.option("--application")
@limit_option
@json_option
@pass_state
@click.pass_context
def runs(
    ctx: click.Context,
    state: State,
    statuses: tuple[str, ...],
    provider: str | None,
    application: str | None,
    limit: int,
    cursor: str | None,
    as_json: bool,
) -> None:
    """List runs, newest first; `runs show RUN_ID` tells one run's story."""
    if ctx.invoked_subcommand is not None:
        return
    run_async(
        _list_runs(
            state.config(secrets=False), statuses, provider, application, limit, cursor, as_json
        )
    )


async def _show_run(config: Config, run_id: str, as_json: bool) -> None:
    async with existing_store(config) as store:
        run = await store.get_run(run_id)
        if run is None:
            raise CommandError(f"error: no run {run_id!r} in the store", EXIT_NOT_FOUND)
        events = await store.list_events(run_id=run_id, limit=1000)
        calls = await store.list_calls(run_id=run_id, limit=1000)
    if as_json:
        print_json(
            {
                "run": run_json(run),
                "events": [event.to_dict() for event in events.items],
                "handler_calls": [call_json(call) for call in calls.items],
            }
        )
        return
    facts = [
        ["run", run.run_id],
        ["status", run.status.value],
        ["provider", run.provider],
        ["application", run.application or "-"],
        ["submitted", when(run.submitted_at)],
        ["last event", when(run.last_event_at)],
        ["deadline", when(run.deadline)],
        ["next poll", when(run.next_poll_at)],
        # Every status call made for the run; the poller's count since its last news
        # restarts with each one, so it would read 0 for a run found by polling.
        ["polls", f"{run.status_calls} ({run.poll_attempts} since the last news)"],
    ]
    click.echo("\n".join(f"{name:<12} {value}" for name, value in facts))
    click.echo("\nevents:")
    click.echo(
        table(EVENT_HEADERS, [event_row(e) for e in events.items]) if events.items else "none"
    )
    click.echo("\nhandler calls:")
    click.echo(table(CALL_HEADERS, [call_row(c) for c in calls.items]) if calls.items else "none")


@runs.command("show")
@click.argument("run_id")
@json_option
@pass_state
def runs_show(state: State, run_id: str, as_json: bool) -> None:
    """One run: its record, its events and its handler calls."""
    run_async(_show_run(state.config(secrets=False), run_id, as_json))


async def _list_events(
    config: Config, filters: Mapping[str, Any], limit: int, cursor: str | None, as_json: bool
) -> None:
    async with existing_store(config) as store:
        page = await store.list_events(limit=limit, cursor=cursor, **filters)
    print_page(page, EVENTS, as_json)


async def _list_unroutable(config: Config, limit: int, cursor: str | None, as_json: bool) -> None:
    async with existing_store(config) as store:
        page = await store.list_unroutable(limit=limit, cursor=cursor)
    print_page(page, UNROUTABLE, as_json)


@click.command()
@click.option("--run-id")
@click.option(
    "--status", "statuses", multiple=True, type=click.Choice(STATUS_WORDS), help="Repeatable."
)
@click.option("--provider")
@click.option("--application")
@click.option("--origin", type=click.Choice([origin.value for origin in Origin]))
@click.option("--unroutable", is_flag=True, help="Verified deliveries that were not understood.")
@limit_option
@json_option
@pass_state
def events(
    state: State,
    run_id: str | None,
    statuses: tuple[str, ...],
    provider: str | None,
    application: str | None,
    origin: str | None,
    unroutable: bool,
    limit: int,
    cursor: str | None,
    as_json: bool,
) -> None:
    """List recorded events, newest first."""
    config = state.config(secrets=False)
    if unroutable:
        run_async(_list_unroutable(config, limit, cursor, as_json))
        return
    filters = {
        "run_id": run_id,
        "status": [RunStatus(s) for s in statuses] or None,
        "provider": provider,
        "application": application,
        "origin": Origin(origin) if origin else None,
    }
    run_async(_list_events(config, filters, limit, cursor, as_json))
