"""Bulk recovery: `replay` by filter (the one-call `replay CALL_ID` is in `calls`),
`backfill` and `unroutable reprocess`. The work is `listener.recovery`'s; this module
reads the options, prints a line per chunk on stderr and a summary at the end, and turns
Ctrl-C into a clean stop between chunks (exit 130, with what was done)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import click

from listener.cli.access import existing_store, run_async
from listener.cli.output import print_json
from listener.cli.root import State, json_option, pass_state
from listener.cli.stopping import stop_requested
from listener.config import Config, build_handlers, build_sources
from listener.errors import EXIT_INTERRUPTED, CommandError
from listener.recovery import DEFAULT_CHUNK_SIZE, MAX_CHUNK_SIZE, counts_dict

if TYPE_CHECKING:
    from listener.recovery import BackfillCounts, CallFilter, ReplayCounts, ReprocessCounts


def chunk_size_option(func: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--chunk-size",
        type=click.IntRange(1, MAX_CHUNK_SIZE),
        default=DEFAULT_CHUNK_SIZE,
        show_default=True,
        help="Rows per chunk; each chunk is one short transaction.",
    )(func)


def dry_run_option(func: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--dry-run", is_flag=True, help="Count what would be done; change nothing."
    )(func)


def _progress(operation: str, describe: Callable[[Any], str]) -> Callable[[Any], None]:
    def report(counts: Any) -> None:
        click.echo(f"{operation}: chunk {counts.chunks}: {describe(counts)}", err=True)

    return report


def _finish(as_json: bool, operation: str, counts: Any, summary: str, resume: str) -> None:
    """Print the summary; an interrupted operation then exits 130, saying how to go on."""
    data = {"operation": operation, **counts_dict(counts)}
    if as_json:
        print_json(data)
    else:
        click.echo(summary)
    if data["interrupted"]:
        chunks = data["chunks"]
        done = f"{chunks} chunk" if chunks == 1 else f"{chunks} chunks"
        raise CommandError(f"interrupted after {done}; {resume}", EXIT_INTERRUPTED)


# -- replay by filter -----------------------------------------------------------------------


def _replay_summary(counts: ReplayCounts) -> str:
    if counts.dry_run:
        return f"{counts.matched} handler calls would be replayed (dry run)"
    skipped = f", {counts.skipped} already pending or running" if counts.skipped else ""
    return (
        f"{counts.replayed} of {counts.matched} handler calls pending again{skipped}; "
        "a running listener (serve or poll) will call them"
    )


def replay_command_line(f: CallFilter) -> str:
    """The `listener replay` that takes the same calls: fixed times, so a rerun continues."""
    words = ["listener", "replay"]
    for state in f.states:
        words += ["--state", state.value]
    for name in f.handlers or ():
        words += ["--handler", name]
    if f.provider is not None:
        words += ["--provider", f.provider]
    if f.application is not None:
        words += ["--application", f.application]
    if f.since is not None:
        words += ["--since", f.since.isoformat()]
    if f.until is not None:
        words += ["--until", f.until.isoformat()]
    return " ".join(words)


async def _bulk_replay(
    config: Config, call_filter: CallFilter, chunk_size: int, dry_run: bool, as_json: bool
) -> None:
    from listener.recovery import check_handler_names, replay_calls

    handlers = build_handlers(config) if call_filter.handlers else None
    async with existing_store(config) as store:
        if handlers is not None and call_filter.handlers is not None:
            await check_handler_names(store, handlers, call_filter.handlers)
        with stop_requested() as stop:
            counts = await replay_calls(
                store,
                call_filter,
                chunk_size=chunk_size,
                dry_run=dry_run,
                progress=_progress(
                    "replay",
                    lambda c: f"{c.matched} matched, {c.replayed} replayed",
                ),
                should_stop=stop.is_set,
            )
    resume = f"to continue: {replay_command_line(counts.filter)}"
    _finish(as_json, "replay", counts, _replay_summary(counts), resume)


def bulk_replay(
    state: State, call_filter: CallFilter, *, chunk_size: int, dry_run: bool, as_json: bool
) -> None:
    """`listener replay` with filters instead of a call id."""
    run_async(_bulk_replay(state.config(secrets=False), call_filter, chunk_size, dry_run, as_json))


# -- backfill ----------------------------------------------------------------------------------


def _backfill_summary(counts: BackfillCounts) -> str:
    head = f"{counts.handler}: {counts.matched} of {counts.scanned} transitions match"
    if counts.dry_run:
        return f"{head} (dry run: calls for those without one would be enqueued)"
    return (
        f"{head}; {counts.enqueued} calls enqueued, {counts.already} had one already; "
        "a running listener (serve or poll) will call them"
    )


async def _backfill(
    config: Config,
    handler: str,
    since: str,
    until: str | None,
    chunk_size: int,
    dry_run: bool,
    as_json: bool,
) -> None:
    from listener.recovery import backfill, find_handler, parse_when

    now = datetime.now(UTC)
    start = parse_when(since, "--since", now)
    assert start is not None
    end = parse_when(until, "--until", now) or now
    handlers = build_handlers(config)
    name = find_handler(handlers, handler).name
    async with existing_store(config) as store:
        with stop_requested() as stop:
            counts = await backfill(
                store,
                handlers,
                name,
                since=start,
                until=end,
                chunk_size=chunk_size,
                dry_run=dry_run,
                progress=_progress(
                    "backfill",
                    lambda c: (
                        f"{c.scanned} transitions read, {c.matched} match, {c.enqueued} enqueued"
                    ),
                ),
                should_stop=stop.is_set,
            )
    resume = (
        f"to continue: listener backfill {name} --since {start.isoformat()}"
        f" --until {end.isoformat()}"
    )
    _finish(as_json, "backfill", counts, _backfill_summary(counts), resume)


@click.command()
@click.argument("handler")
@click.option(
    "--since",
    required=True,
    metavar="WHEN",
    help="Transitions made since: a duration ago (7d, 12h) or an ISO 8601 time.",
)
@click.option("--until", metavar="WHEN", help="And before (default: now).")
@chunk_size_option
@dry_run_option
@json_option
@pass_state
def backfill(
    state: State,
    handler: str,
    since: str,
    until: str | None,
    chunk_size: int,
    dry_run: bool,
    as_json: bool,
) -> None:
    """Call HANDLER, a handler added later, for the past transitions it subscribes to.

    HANDLER must be registered by the configured plugins; its filters pick the
    transitions. Each transition gets at most one call of it however often this runs,
    so an interrupted backfill is simply run again.
    """
    run_async(
        _backfill(state.config(secrets=False), handler, since, until, chunk_size, dry_run, as_json)
    )


# -- unroutable deliveries -----------------------------------------------------------------------


def _reprocess_summary(counts: ReprocessCounts) -> str:
    kept = f"{counts.unroutable} still unroutable, {counts.skipped} skipped"
    if counts.dry_run:
        return f"{counts.recorded} of {counts.scanned} deliveries now read (dry run); {kept}"
    return (
        f"{counts.recorded} of {counts.scanned} deliveries recorded ({counts.calls} handler "
        f"calls), {counts.duplicate} were recorded already; {kept}"
    )


async def _reprocess(config: Config, chunk_size: int, dry_run: bool, as_json: bool) -> None:
    from listener.recording import EventRecorder
    from listener.recovery import reprocess_unroutable

    sources = build_sources(config)
    recorder = EventRecorder(build_handlers(config))
    async with existing_store(config) as store:
        with stop_requested() as stop:
            counts = await reprocess_unroutable(
                store,
                recorder,
                sources,
                chunk_size=chunk_size,
                dry_run=dry_run,
                progress=_progress(
                    "unroutable reprocess",
                    lambda c: f"{c.scanned} read, {c.readable} now understood",
                ),
                should_stop=stop.is_set,
            )
    resume = "to continue: listener unroutable reprocess"
    _finish(as_json, "unroutable-reprocess", counts, _reprocess_summary(counts), resume)


@click.group()
def unroutable() -> None:
    """Verified deliveries that were not understood (list them with `events --unroutable`)."""


@unroutable.command()
@chunk_size_option
@dry_run_option
@json_option
@pass_state
def reprocess(state: State, chunk_size: int, dry_run: bool, as_json: bool) -> None:
    """Read the unroutable deliveries again with their sources' current parsers.

    What now reads as an event is recorded as a delivery is (deduplicated, handlers
    called) and leaves the list; what still does not stays, with its new reason.
    Deliveries of a source no longer configured, or of a token source, stay as they are.
    Reads the sources as `serve` does, so their secrets must resolve.
    """
    run_async(_reprocess(state.config(), chunk_size, dry_run, as_json))
