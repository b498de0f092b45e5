"""Handler calls: `dead-letters` lists the calls that failed every attempt, `replay`
queues one again (or, with filters, many: `cli.recovery`)."""

from __future__ import annotations

import click

from listener.cli.access import existing_store, run_async
from listener.cli.output import (
    DEAD_LETTERS,
    call_json,
    print_json,
    print_page,
)
from listener.cli.recovery import bulk_replay, chunk_size_option, dry_run_option
from listener.cli.root import State, json_option, limit_option, pass_state
from listener.config import Config
from listener.errors import EXIT_NOT_FOUND, EXIT_USAGE, CommandError


async def _dead_letters(
    config: Config,
    handler: str | None,
    run_id: str | None,
    limit: int,
    cursor: str | None,
    as_json: bool,
) -> None:
    from listener.store.base import CallState

    async with existing_store(config) as store:
        page = await store.list_calls(
            state=CallState.DEAD, handler=handler, run_id=run_id, limit=limit, cursor=cursor
        )
    print_page(page, DEAD_LETTERS, as_json)


@click.command("dead-letters")
@click.option("--handler")
@click.option("--run-id")
@limit_option
@json_option
@pass_state
def dead_letters(
    state: State,
    handler: str | None,
    run_id: str | None,
    limit: int,
    cursor: str | None,
    as_json: bool,
) -> None:
    """List handler calls that failed every attempt (replay them with `replay`)."""
    run_async(_dead_letters(state.config(secrets=False), handler, run_id, limit, cursor, as_json))


async def _replay(config: Config, call_id: int, as_json: bool) -> None:
    async with existing_store(config) as store:
        replayed = await store.replay_call(call_id)
        call = await store.get_call(call_id)
    if call is None:
        raise CommandError(f"error: no handler call {call_id}", EXIT_NOT_FOUND)
    if not replayed:
        raise CommandError(
            f"error: handler call {call_id} is {call.state.value}; only dead or done calls "
            "can be replayed"
        )
    if as_json:
        print_json(call_json(call))
    else:
        click.echo(
            f"handler call {call_id} ({call.handler}, run {call.run_id}) is pending again; "
            "a running listener (serve or poll) will call it"
        )


@click.command()
@click.argument("call_id", type=int, required=False)
@click.option(
    "--state",
    "states",
    multiple=True,
    metavar="STATE",
    help="Calls in this state: dead (the default) or done; repeat for both.",
)
@click.option("--handler", "handlers", multiple=True, help="Calls of this handler; repeatable.")
@click.option("--provider", help="Calls for runs of this provider.")
@click.option("--application", help="Calls for runs of this application.")
@click.option(
    "--since", metavar="WHEN", help="Calls last changed since: a duration ago (2h) or a time."
)
@click.option("--until", metavar="WHEN", help="And before (default: now).")
@chunk_size_option
@dry_run_option
@json_option
@pass_state
def replay(
    state: State,
    call_id: int | None,
    states: tuple[str, ...],
    handlers: tuple[str, ...],
    provider: str | None,
    application: str | None,
    since: str | None,
    until: str | None,
    chunk_size: int,
    dry_run: bool,
    as_json: bool,
) -> None:
    """Queue a dead (or done) handler call again: CALL_ID, or every call the options pick.

    With options, calls are replayed in chunks, a line per chunk on stderr; --dry-run
    counts them first. A call already pending or running is left alone. Ctrl-C stops
    between chunks; the command it prints goes on from there.
    """
    filtered = bool(states or handlers or provider or application or since or until)
    if call_id is not None:
        if filtered or dry_run:
            raise CommandError("error: give a CALL_ID or filter options, not both", EXIT_USAGE)
        run_async(_replay(state.config(secrets=False), call_id, as_json))
        return
    if not filtered:
        raise CommandError(
            "error: give a CALL_ID, or pick calls with --state, --handler, --provider, "
            "--application, --since or --until",
            EXIT_USAGE,
        )
    from listener.recovery import CallFilter

    call_filter = CallFilter.parse(
        states=states or ("dead",),
        handlers=handlers,
        provider=provider,
        application=application,
        since=since,
        until=until,
    )
    bulk_replay(state, call_filter, chunk_size=chunk_size, dry_run=dry_run, as_json=as_json)
