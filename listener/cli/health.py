"""`health`: how the runs that ended lately were learned, per provider."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import click

from listener.cli.access import existing_store, run_async
from listener.cli.output import print_json, table
from listener.cli.root import State, json_option, pass_state
from listener.config import Config
from listener.durations import parse_duration
from listener.health import WAYS, ProviderHealth, summarize

# Run ends read at most: the report is of the latest ones within the window.
READ_LIMIT = 10_000


def _duration(ctx: click.Context, param: click.Parameter, value: str) -> float:
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), ctx, param) from None


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _row_json(row: ProviderHealth) -> dict[str, Any]:
    return {
        "provider": row.provider,
        "ends": row.ends,
        "learned_by": {way: row.by.get(way, 0) for way in WAYS if row.by.get(way)},
        "webhook_share": round(row.share("webhook"), 4),
        "lag_seconds": {"p50": row.lag_p50, "p95": row.lag_p95},
    }


async def _health(config: Config, since: datetime, as_json: bool) -> None:
    async with existing_store(config) as store:
        ends = await store.list_run_ends(since=since, limit=READ_LIMIT)
    rows = summarize(ends)
    if as_json:
        print_json({"since": since.isoformat(), "providers": [_row_json(r) for r in rows]})
        return
    if not rows:
        click.echo(f"no run ended since {since:%Y-%m-%d %H:%M:%S} UTC")
        return
    headers = ["PROVIDER", "ENDS", *(f"{way.upper()} %" for way in WAYS), "LAG P50 S", "P95 S"]
    lines = [
        [
            row.provider,
            str(row.ends),
            *(f"{100 * row.share(way):.0f}" for way in WAYS),
            _seconds(row.lag_p50),
            _seconds(row.lag_p95),
        ]
        for row in rows
    ]
    click.echo(table(headers, lines))


@click.command()
@click.option(
    "--since",
    "window",
    callback=_duration,
    default="24h",
    show_default=True,
    metavar="DURATION",
    help="How far back: 24h, 90m, 7d or seconds.",
)
@json_option
@pass_state
def health(state: State, window: float, as_json: bool) -> None:
    """How the runs that ended within --since were learned, per provider: the share by
    webhook, stream, poll, expiry, track and replay, and the lag from the platform's end
    time to the record. A falling webhook share means webhooks are being lost."""
    since = datetime.now(UTC) - timedelta(seconds=window)
    run_async(_health(state.config(secrets=False), since, as_json))
