"""Commands that act on runs: `submit` (and wait), `cancel`, `track`."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from listener.cli.access import check_store_exists, require_provider, run_async, running
from listener.cli.output import iso, print_json
from listener.cli.root import STATUS_WORDS, State, json_option, pass_state
from listener.config import Config
from listener.errors import (
    EXIT_FAILED,
    EXIT_NOT_FOUND,
    EXIT_OK,
    EXIT_TIMEOUT,
    EXIT_USAGE,
    CommandError,
)
from listener.events import RunEvent, RunStatus
from listener.sources import mask_token

if TYPE_CHECKING:
    from listener.app import Listener


def _read_data(path: str) -> Any:
    """A file's (or stdin's) content as JSON when it parses, else as text."""
    data = sys.stdin.buffer.read() if path == "-" else Path(path).read_bytes()
    try:
        return json.loads(data)
    except ValueError:
        pass
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise CommandError(f"error: {path} is neither JSON nor UTF-8 text", EXIT_USAGE) from None


def _parse_options(pairs: Sequence[str]) -> dict[str, str]:
    options: dict[str, str] = {}
    for pair in pairs:
        name, equals, value = pair.partition("=")
        if not equals or not name:
            raise click.BadParameter(f"expected NAME=VALUE, got {pair!r}", param_hint="--option")
        options[name] = value
    return options


class _Progress:
    """A run's status on stderr while waiting: one live line on a terminal, otherwise a
    line per change."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        self.live = sys.stderr.isatty()
        self.last: RunStatus | None = None
        self.started = asyncio.get_running_loop().time()

    def show(self, status: RunStatus | None) -> None:
        word = status.value if status is not None else "submitted"
        if self.live:
            elapsed = asyncio.get_running_loop().time() - self.started
            click.echo(f"\r{self.run_id}: {word} ({elapsed:.0f} s) ", nl=False, err=True)
        elif status != self.last:
            click.echo(f"{self.run_id}: {word}", err=True)
        self.last = status

    def close(self) -> None:
        if self.live:
            click.echo("", err=True)

    async def follow(self, listener: Listener) -> None:
        while True:
            run = await listener.store.get_run(self.run_id)
            self.show(run.status if run is not None else None)
            await asyncio.sleep(0.5)


async def _wait_with_progress(listener: Listener, run_id: str, timeout: float | None) -> RunEvent:
    from listener.client import WaitTimeout

    progress = _Progress(run_id)
    follower = asyncio.create_task(progress.follow(listener))
    try:
        event = await listener.wait(run_id, timeout=timeout)
    except WaitTimeout:
        raise CommandError(
            f"error: run {run_id} did not finish within {timeout:g} s; it is still recorded "
            f"and watched (listener runs show {run_id})",
            EXIT_TIMEOUT,
        ) from None
    finally:
        follower.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await follower
    progress.show(event.status)
    progress.close()
    return event


async def _submit(
    config: Config,
    provider: str,
    application: str,
    data: Any,
    *,
    options: Mapping[str, str],
    name: str | None,
    wait: bool,
    timeout: float | None,
    as_json: bool,
) -> int:
    # While waiting, this process polls too, so the end is learned even with no service.
    async with running(config, poll=wait) as listener:
        require_provider(listener, config, provider)
        handle = await listener.submit(provider, application, data, options=options, name=name)
        if not wait:
            if as_json:
                print_json(
                    {
                        "run_id": handle.run_id,
                        "provider": handle.provider,
                        "application": handle.application,
                        "submitted_at": iso(handle.submitted_at),
                        # The token in a callback URL is a credential: shown masked.
                        "callback_url": None
                        if handle.callback_url is None
                        else mask_token(handle.callback_url),
                    }
                )
            else:
                click.echo(handle.run_id)
            return EXIT_OK
        click.echo(f"submitted run {handle.run_id}; waiting for it to finish", err=True)
        event = await _wait_with_progress(listener, handle.run_id, timeout)
        result = await _result(listener, event) if as_json else None
    if as_json:
        print_json({**event.to_dict(), "result": result})
    else:
        click.echo(f"run {event.run_id} {event.status.value} (learned by {event.origin.value})")
    return EXIT_OK if event.status is RunStatus.SUCCEEDED else EXIT_FAILED


async def _result(listener: Listener, event: RunEvent) -> dict[str, Any] | None:
    """The finished run's output and error as its provider tells them; None (with a note)
    when the provider cannot say."""
    from listener.errors import ProviderError

    try:
        result = await listener.providers[event.provider].result(event.application, event.run_id)
    except ProviderError as exc:
        click.echo(f"warning: the run's result could not be read: {exc}", err=True)
        return None
    return {"output": result.output, "error": result.error}


@click.command()
@click.argument("provider")
@click.argument("application")
@click.argument(
    "input_file", required=False, type=click.Path(exists=True, dir_okay=False, allow_dash=True)
)
@click.option("--wait", is_flag=True, help="Wait for the end; exit 1 unless it succeeded.")
@click.option("--timeout", type=click.FloatRange(min=0), help="Seconds to wait (exit 124).")
@click.option("--option", "-o", "option_pairs", multiple=True, metavar="NAME=VALUE")
@click.option("--name", help="A name for the run.")
@json_option
@pass_state
def submit(
    state: State,
    provider: str,
    application: str,
    input_file: str | None,
    wait: bool,
    timeout: float | None,
    option_pairs: tuple[str, ...],
    name: str | None,
    as_json: bool,
) -> None:
    """Start a run of APPLICATION on PROVIDER with INPUT_FILE (JSON or text; - for stdin;
    none: {}). Prints the run id."""
    options = _parse_options(option_pairs)
    data = _read_data(input_file) if input_file is not None else {}
    config = state.config()
    code = run_async(
        _submit(
            config,
            provider,
            application,
            data,
            options=options,
            name=name,
            wait=wait,
            timeout=timeout,
            as_json=as_json,
        )
    )
    click.get_current_context().exit(code)


async def _cancel(config: Config, run_id: str, as_json: bool) -> None:
    check_store_exists(config.store)
    async with running(config) as listener:
        run = await listener.store.get_run(run_id)
        if run is None:
            raise CommandError(f"error: no run {run_id!r} in the store", EXIT_NOT_FOUND)
        require_provider(listener, config, run.provider)
        status = await listener.cancel(run_id)
    if as_json:
        print_json({"run_id": run_id, "status": status.value})
    elif status.is_terminal:
        click.echo(f"run {run_id} {status.value}")
    else:
        click.echo(f"cancel requested; run {run_id} is still {status.value}")


@click.command()
@click.argument("run_id")
@json_option
@pass_state
def cancel(state: State, run_id: str, as_json: bool) -> None:
    """Ask the platform to cancel a run, and record what it then reports."""
    run_async(_cancel(state.config(), run_id, as_json))


async def _track(
    config: Config,
    provider: str,
    application: str,
    run_id: str,
    status: str | None,
    details: Mapping[str, Any],
    as_json: bool,
) -> None:
    async with running(config) as listener:
        if status is None:
            require_provider(listener, config, provider)
        result = await listener.track(provider, application, run_id, status, **details)
    if as_json:
        print_json(
            {
                "run_id": run_id,
                "status": result.status.value,
                "duplicate": result.duplicate,
                "moved": result.transition is not None,
                "handler_calls": list(result.call_ids),
            }
        )
    elif result.duplicate or result.transition is None:
        click.echo(f"nothing new: run {run_id} is {result.status.value}")
    else:
        calls = len(result.call_ids)
        click.echo(f"recorded run {run_id} {result.status.value}; {calls} handler call(s) queued")


def _track_arguments(words: Sequence[str]) -> tuple[str, str, str | None]:
    """(application, run id, status) from `[APPLICATION] RUN_ID [STATUS]`: one word is a
    run id, two an application and a run id (both asked of the provider), three all."""
    if len(words) == 1:
        return "", words[0], None
    if len(words) == 2:
        return words[0], words[1], None
    if len(words) == 3:
        status = words[2].lower()
        if status not in STATUS_WORDS:
            raise click.BadParameter(
                f"{words[2]!r} is not one of {', '.join(STATUS_WORDS)}", param_hint="STATUS"
            )
        return words[0], words[1], status
    raise click.UsageError("expected [APPLICATION] RUN_ID [STATUS]")


@click.command()
@click.argument("provider")
@click.argument("words", nargs=-1, required=True, metavar="[APPLICATION] RUN_ID [STATUS]")
@click.option(
    "--output-file",
    type=click.Path(exists=True, dir_okay=False, allow_dash=True),
    help="The run's output (JSON or text).",
)
@click.option("--error", "error_text", help="The run's error message.")
@click.option("--duration", type=click.FloatRange(min=0), help="How long it ran, in seconds.")
@json_option
@pass_state
def track(
    state: State,
    provider: str,
    words: tuple[str, ...],
    output_file: str | None,
    error_text: str | None,
    duration: float | None,
    as_json: bool,
) -> None:
    """Record a run that happened elsewhere; its handlers are called as for any run.

    With STATUS the run is recorded as told; without it the configured PROVIDER is asked
    (`listener track metaflow HelloFlow/1796410078633618`), and a run still going is
    watched until its end."""
    application, run_id, status = _track_arguments(words)
    details: dict[str, Any] = {"error": error_text, "duration": duration}
    if output_file is not None:
        details["output"] = _read_data(output_file)
    run_async(_track(state.config(), provider, application, run_id, status, details, as_json))
