"""`prune`: delete what is finished and old, and the durations it is given."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

import click

from listener.cli.access import existing_store, run_async
from listener.cli.output import iso, print_json, when
from listener.cli.root import State, json_option, pass_state
from listener.config import Config
from listener.durations import parse_duration
from listener.errors import EXIT_USAGE, CommandError

if TYPE_CHECKING:
    from listener.store.base import PruneCounts


def _duration_option(ctx: click.Context, param: click.Parameter, value: str) -> float:
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), ctx, param) from None


def _prune_json(counts: PruneCounts, before: datetime) -> dict[str, Any]:
    return {
        "runs": counts.runs,
        "events": counts.events,
        "transitions": counts.transitions,
        "handler_calls": counts.calls,
        "unroutable": counts.unroutable,
        "before": iso(before),
    }


async def _prune(config: Config, before: datetime, limit: int, as_json: bool) -> None:
    from listener.retention import describe_counts, prune_store

    async with existing_store(config) as store:
        counts = await prune_store(store, before=before, limit=limit)
    if as_json:
        print_json(_prune_json(counts, before))
    else:
        click.echo(f"pruned {describe_counts(counts)} older than {when(before)} UTC")


@click.command()
@click.option(
    "--older-than",
    "older_than",
    callback=_duration_option,
    required=True,
    metavar="DURATION",
    help="Age of what goes: 30d, 12h, 90m, 3600s or seconds; at least 1d.",
)
@click.option(
    "--limit",
    type=click.IntRange(1, 100_000),
    default=1000,
    show_default=True,
    help="Most rows of each kind deleted per transaction (each is sized to take about 50 ms).",
)
@json_option
@pass_state
def prune(state: State, older_than: float, limit: int, as_json: bool) -> None:
    """Delete what is finished and older than --older-than: done handler calls, finished
    runs with no other call left (with their events), unroutable deliveries.

    Runs in progress and dead letters stay. A delivery a sender retries after its event
    was pruned is taken as new: keep more than the senders' retry window.
    """
    from listener.retention import cutoff

    try:
        before = cutoff(older_than, name="--older-than")
    except ValueError as exc:
        raise CommandError(f"error: {exc}", EXIT_USAGE) from None
    run_async(_prune(state.config(secrets=False), before, limit, as_json))
