"""`fake-platform nextmv`: the fake Nextmv platform served on its own, until interrupted.

Any client of the Nextmv API (the official SDK, this listener's provider, the examples)
can be pointed at it to try the whole path offline. `--json` prints one line with what a
client needs before serving; the chaos knobs are those of `listener.testing.FakePlatform`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import secrets
from dataclasses import dataclass

import click

from listener.cli.stopping import stop_requested
from listener.errors import CommandError
from listener.testing import FakePlatform, FakeRun, RunPlan

__all__ = ["fake_platform"]

RATE = click.FloatRange(0.0, 1.0)


class DelayRange(click.ParamType):  # type: ignore[type-arg]
    """Seconds as `S` (always that long) or `MIN:MAX` (uniform in between)."""

    name = "seconds"

    def convert(
        self, value: object, param: click.Parameter | None, ctx: click.Context | None
    ) -> tuple[float, float]:
        if isinstance(value, tuple):
            return value  # the default, already converted
        low_text, _, high_text = str(value).partition(":")
        try:
            low = float(low_text)
            high = float(high_text) if high_text else low
        except ValueError:
            self.fail(f"{value!r} is not S or MIN:MAX seconds", param, ctx)
        if not 0 <= low <= high:
            self.fail(f"{value!r} needs 0 <= MIN <= MAX", param, ctx)
        return low, high


@dataclass(frozen=True, slots=True)
class _Outcomes:
    """Each new run's plan: running for `runs_for` seconds, then failed at rate `fail`."""

    runs_for: float
    fail: float
    rng: random.Random

    def __call__(self, run: FakeRun) -> RunPlan:
        failed = self.rng.random() < self.fail
        return RunPlan(status="failed" if failed else "succeeded", runs_for=self.runs_for)


@click.group("fake-platform")
def fake_platform() -> None:
    """Serve a fake platform on this machine, to try clients and the listener offline."""


@fake_platform.command("nextmv")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option("--port", type=click.IntRange(0, 65535), default=0, show_default=True, help="0: any.")
@click.option("--api-key", help="The key clients must send (default: a new random one).")
@click.option(
    "--runs-for", type=click.FloatRange(min=0), default=1.0, show_default=True, help="Seconds."
)
@click.option("--fail", type=RATE, default=0.0, show_default=True, help="Share of runs failing.")
@click.option("--drop", type=RATE, default=0.0, show_default=True, help="Webhooks never sent.")
@click.option("--duplicate", type=RATE, default=0.0, show_default=True, help="Sent twice.")
@click.option(
    "--delay", type=DelayRange(), default="0", show_default=True, help="Before each webhook."
)
@click.option(
    "--http-errors", type=RATE, default=0.0, show_default=True, help="API calls answered 503."
)
@click.option("--seed", type=int, default=0, show_default=True, help="For every random draw.")
@click.option("--webhook", "webhook_url", help="Register an endpoint; its secret is printed.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON line, then serve.")
def nextmv(
    host: str,
    port: int,
    api_key: str | None,
    runs_for: float,
    fail: float,
    drop: float,
    duplicate: float,
    delay: tuple[float, float],
    http_errors: float,
    seed: int,
    webhook_url: str | None,
    as_json: bool,
) -> None:
    """Serve the fake Nextmv API (runs, uploads, webhooks) until Ctrl-C or SIGTERM."""
    # A bind failure is reported once, as this command's own error line.
    logging.getLogger("uvicorn.error").addHandler(logging.NullHandler())
    platform = FakePlatform(
        api_key=api_key or f"fake-{secrets.token_urlsafe(18)}",
        plan=_Outcomes(runs_for, fail, random.Random(seed)),
        seed=seed,
        drop_rate=drop,
        duplicate_rate=duplicate,
        delay=delay,
        api_error_rate=http_errors,
        host=host,
        port=port,
    )
    asyncio.run(_serve(platform, f"{host}:{port}", webhook_url, as_json))


async def _serve(
    platform: FakePlatform, address: str, webhook_url: str | None, as_json: bool
) -> None:
    with stop_requested() as stop:
        try:
            try:
                await platform.start()
            except (OSError, SystemExit):
                # uvicorn exits when the address cannot be bound.
                raise CommandError(f"error: cannot serve on {address}") from None
            secret = platform.register_webhook(webhook_url) if webhook_url else None
            _announce(platform, secret, as_json)
            await stop.wait()
        finally:
            await platform.stop()


def _announce(platform: FakePlatform, secret: str | None, as_json: bool) -> None:
    if as_json:
        line = {
            "base_url": platform.base_url,
            "api_key": platform.api_key,
            "webhook_secret": secret,
        }
        click.echo(json.dumps(line))
        return
    click.echo(f"fake Nextmv platform at {platform.base_url}")
    click.echo(f"api key: {platform.api_key}")
    if secret is not None:
        click.echo(f"webhook secret: {secret}")
    click.echo("stop with Ctrl-C or SIGTERM", err=True)
