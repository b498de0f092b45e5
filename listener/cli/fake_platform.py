"""`fake-platform nextmv` and `fake-platform noxus`: a fake platform served on its own,
until interrupted.

Any client of the platform's API (the official SDK, this listener's provider, the
examples) can be pointed at it to try the whole path offline. `--json` prints one line
with what a client needs before serving; the chaos knobs are those of
`listener.testing.FakePlatform` and `listener.testing.FakeNoxusEngine`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import json
import logging
import random
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, Protocol

import click

from listener.cli.stopping import stop_requested
from listener.errors import CommandError
from listener.testing import FakeNoxusEngine, FakePlatform, FakeRun, NoxusPlan, NoxusRun, RunPlan
from listener.testing.noxus_engine import DEFAULT_WORKFLOW

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

    def nextmv(self, run: FakeRun) -> RunPlan:
        failed = self.rng.random() < self.fail
        return RunPlan(status="failed" if failed else "succeeded", runs_for=self.runs_for)

    def noxus(self, run: NoxusRun) -> NoxusPlan:
        failed = self.rng.random() < self.fail
        return NoxusPlan(status="failed" if failed else "completed", runs_for=self.runs_for)


@dataclass(frozen=True, slots=True)
class _Knobs:
    """What both fakes are told: where to listen, the key, run outcomes, chaos."""

    host: str
    port: int
    api_key: str | None
    runs_for: float
    fail: float
    drop: float
    duplicate: float
    delay: tuple[float, float]
    http_errors: float
    seed: int
    as_json: bool

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def outcomes(self) -> _Outcomes:
        return _Outcomes(self.runs_for, self.fail, random.Random(self.seed))

    def fake_options(self) -> dict[str, Any]:
        """The keywords both fakes' constructors take for these knobs."""
        return {
            "api_key": self.api_key or f"fake-{secrets.token_urlsafe(18)}",
            "seed": self.seed,
            "drop_rate": self.drop,
            "duplicate_rate": self.duplicate,
            "delay": self.delay,
            "api_error_rate": self.http_errors,
            "host": self.host,
            "port": self.port,
        }


_KNOB_OPTIONS: Final = (
    click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind."),
    click.option(
        "--port", type=click.IntRange(0, 65535), default=0, show_default=True, help="0: any."
    ),
    click.option("--api-key", help="The key clients must send (default: a new random one)."),
    click.option(
        "--runs-for", type=click.FloatRange(min=0), default=1.0, show_default=True, help="Seconds."
    ),
    click.option(
        "--fail", type=RATE, default=0.0, show_default=True, help="Share of runs failing."
    ),
    click.option("--drop", type=RATE, default=0.0, show_default=True, help="Webhooks never sent."),
    click.option("--duplicate", type=RATE, default=0.0, show_default=True, help="Sent twice."),
    click.option(
        "--delay", type=DelayRange(), default="0", show_default=True, help="Before each webhook."
    ),
    click.option(
        "--http-errors", type=RATE, default=0.0, show_default=True, help="API calls answered 503."
    ),
    click.option("--seed", type=int, default=0, show_default=True, help="For every random draw."),
    click.option("--json", "as_json", is_flag=True, help="Print one JSON line, then serve."),
)


def _with_knobs(command: Callable[..., None]) -> Callable[..., None]:
    """Give `command` the options of `_Knobs`, handed to it as one `_Knobs` first."""
    names = [field.name for field in dataclasses.fields(_Knobs)]

    @functools.wraps(command)
    def with_knobs(**values: Any) -> None:
        knobs = _Knobs(**{name: values.pop(name) for name in names})
        command(knobs, **values)

    for option in reversed(_KNOB_OPTIONS):
        with_knobs = option(with_knobs)
    return with_knobs


@click.group("fake-platform")
def fake_platform() -> None:
    """Serve a fake platform on this machine, to try clients and the listener offline."""


@fake_platform.command("nextmv")
@_with_knobs
@click.option("--webhook", "webhook_url", help="Register an endpoint; its secret is printed.")
def nextmv(knobs: _Knobs, webhook_url: str | None) -> None:
    """Serve the fake Nextmv API (runs, uploads, webhooks) until Ctrl-C or SIGTERM."""
    platform = FakePlatform(plan=knobs.outcomes().nextmv, **knobs.fake_options())

    def announce() -> None:
        secret = platform.register_webhook(webhook_url) if webhook_url else None
        _announce(platform, secret, knobs.as_json)

    _serve(platform, knobs.address, announce)


@fake_platform.command("noxus")
@_with_knobs
@click.option(
    "--workflow",
    "workflows",
    multiple=True,
    help="A workflow id that exists (repeatable; default: wf-summarise).",
)
def noxus(knobs: _Knobs, workflows: tuple[str, ...]) -> None:
    """Serve the fake Noxus workflow engine (workflows, runs, run event streams) until
    Ctrl-C or SIGTERM. Each run posts its end to its own `callback_url`."""
    engine = FakeNoxusEngine(
        workflows=workflows or (DEFAULT_WORKFLOW,),
        plan=knobs.outcomes().noxus,
        **knobs.fake_options(),
    )

    def announce() -> None:
        if knobs.as_json:
            line = {
                "base_url": engine.base_url,
                "api_key": engine.api_key,
                "workflow_id": engine.workflow_id,
            }
            click.echo(json.dumps(line))
            return
        click.echo(f"fake Noxus engine at {engine.base_url}")
        click.echo(f"api key: {engine.api_key}")
        click.echo(f"workflows: {', '.join(engine.workflows)}")
        click.echo("stop with Ctrl-C or SIGTERM", err=True)

    _serve(engine, knobs.address, announce)


class _Served(Protocol):
    async def start(self) -> str: ...

    async def stop(self) -> None: ...


def _serve(served: _Served, address: str, announce: Callable[[], None]) -> None:
    """Serve until Ctrl-C or SIGTERM, announcing once serving."""
    # A bind failure is reported once, as this command's own error line.
    logging.getLogger("uvicorn.error").addHandler(logging.NullHandler())
    asyncio.run(_serve_until_stopped(served, address, announce))


async def _serve_until_stopped(served: _Served, address: str, announce: Callable[[], None]) -> None:
    with stop_requested() as stop:
        try:
            try:
                await served.start()
            except (OSError, SystemExit):
                # uvicorn exits when the address cannot be bound.
                raise CommandError(f"error: cannot serve on {address}") from None
            announce()
            await stop.wait()
        finally:
            await served.stop()


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
