"""The `listener` command: serve webhooks, poll, submit and inspect runs, manage keys.

Configuration comes from `--config`, else `$LISTENER_CONFIG`, else `./listener.toml` when
it exists, else the defaults (see `listener.config`). Every command that prints data
prints a table for people, or JSON with `--json`.

Exit codes: 0 ok; 1 the operation failed (a run that did not succeed under `--wait`, a
platform error, a delivery answered with an error); 2 usage or configuration error;
3 store unavailable; 4 not found; 124 timed out; 130 interrupted. Errors are one line on
stderr; `--debug` adds the traceback.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import importlib
import json
import logging
import math
import os
import re
import signal
import sys
import traceback
import uuid
from collections.abc import (
    AsyncIterator,
    Callable,
    Coroutine,
    Iterator,
    Mapping,
    Sequence,
)
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, NoReturn

import click

from listener import __version__
from listener.config import (
    CONFIG_ENV,
    LOG_LEVELS,
    SCHEMES,
    Config,
    ConfigError,
    ServerConfig,
    build_listener,
    build_provider,
    find_config,
    load_config,
    resolve_reference,
)
from listener.events import Origin, RunEvent, RunStatus

if TYPE_CHECKING:
    from starlette.applications import Starlette

    from listener.app import Listener
    from listener.store.base import (
        HandlerCall,
        PruneCounts,
        RunRecord,
        Store,
        UnroutableRecord,
    )

__all__ = ["CommandError", "create_app", "main"]

log = logging.getLogger("listener.cli")

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_STORE = 3
EXIT_NOT_FOUND = 4
EXIT_TIMEOUT = 124
EXIT_INTERRUPTED = 130

STATUS_WORDS = [status.value for status in RunStatus]
# What a platform can report; `expired` is only ever declared by the listener itself.
PLATFORM_STATUSES = ["queued", "running", "succeeded", "failed", "canceled"]
_WORKFLOW_WORDS = {"succeeded": "completed", "canceled": "stopped"}
_ERROR_WIDTH = 60


class CommandError(Exception):
    """An expected failure: its message is shown as is and `code` is the exit status."""

    def __init__(self, message: str, code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.code = code


@dataclasses.dataclass
class _State:
    """Global options, and the configuration read once on first use."""

    config_path: str | None
    debug: bool
    _config: Config | None = None

    def config(self) -> Config:
        if self._config is None:
            self._config = load_config(find_config(self.config_path))
        return self._config


def _classify(exc: Exception) -> tuple[int, str]:
    """The exit status and one-line message for an exception that ended a command."""
    from listener.client import RunNotFound, WaitTimeout
    from listener.providers.base import ProviderError
    from listener.store.base import StoreError

    if isinstance(exc, CommandError):
        return exc.code, str(exc)
    if isinstance(exc, ConfigError):
        return EXIT_USAGE, str(exc)
    if isinstance(exc, StoreError):
        return EXIT_STORE, f"error: store unavailable: {exc}"
    if isinstance(exc, RunNotFound):
        return EXIT_NOT_FOUND, f"error: {exc}"
    if isinstance(exc, WaitTimeout):
        return EXIT_TIMEOUT, f"error: {exc}"
    if isinstance(exc, ProviderError):
        return EXIT_FAILED, f"error: the platform call failed: {exc}"
    return EXIT_FAILED, f"error: {type(exc).__name__}: {exc}"


class _Group(click.Group):
    """The top-level group: turns exceptions into one-line messages and exit codes."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            ctx.exit(EXIT_INTERRUPTED)
        except Exception as exc:
            self._fail(ctx, exc)

    @staticmethod
    def _fail(ctx: click.Context, exc: Exception) -> NoReturn:
        code, message = _classify(exc)
        state = ctx.find_object(_State)
        if state is not None and state.debug:
            click.echo("".join(traceback.format_exception(exc)).rstrip(), err=True)
        click.echo(" ".join(message.split("\n")), err=True)
        ctx.exit(code)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="listener")
@click.option(
    "--config",
    "config_path",
    metavar="PATH",
    help=f"Config file (default: ${CONFIG_ENV}, else ./listener.toml if present).",
)
@click.option("--debug", is_flag=True, help="Show tracebacks of errors.")
@click.pass_context
def main(ctx: click.Context, config_path: str | None, debug: bool) -> None:
    """Learn when remote runs finish by signed webhook, and never miss one."""
    ctx.obj = _State(config_path, debug)


pass_state = click.make_pass_decorator(_State)


def json_option(func: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")(func)


# --- output helpers ---------------------------------------------------------------------------


def _print_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, ensure_ascii=False, default=str))


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [len(header) for header in headers]
    for row in rows:
        widths = [max(width, len(cell)) for width, cell in zip(widths, row, strict=True)]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in (headers, *rows)
    ]
    return "\n".join(lines)


def _when(moment: datetime | None) -> str:
    if moment is None:
        return "-"
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()


def _short(text: str | None, width: int = _ERROR_WIDTH) -> str:
    if not text:
        return "-"
    line = " ".join(text.split())
    return line if len(line) <= width else line[: width - 3] + "..."


def _more(command: str, cursor: str | None) -> None:
    if cursor is not None:
        click.echo(f"more: listener {command} --cursor {cursor}", err=True)


def _run_json(run: RunRecord) -> dict[str, Any]:
    return {
        "run_id": run.run_id,
        "provider": run.provider,
        "application": run.application,
        "status": run.status.value,
        "submitted_at": _iso(run.submitted_at),
        "last_event_at": _iso(run.last_event_at),
        "deadline": _iso(run.deadline),
        "next_poll_at": _iso(run.next_poll_at),
        "poll_attempts": run.poll_attempts,
        "metadata": dict(run.metadata),
        "updated_at": _iso(run.updated_at),
    }


def _call_json(call: HandlerCall) -> dict[str, Any]:
    return {
        "id": call.id,
        "handler": call.handler,
        "run_id": call.run_id,
        "status": call.status.value,
        "state": call.state.value,
        "attempts": call.attempts,
        "replays": call.replays,
        "last_error": call.last_error,
        "next_attempt_at": _iso(call.next_attempt_at),
        "event_key": call.event.key,
        "created_at": _iso(call.created_at),
        "updated_at": _iso(call.updated_at),
    }


def _unroutable_json(record: UnroutableRecord) -> dict[str, Any]:
    # Headers are left out: a sender may put credentials there.
    return {
        "id": record.id,
        "source": record.source,
        "delivery_id": record.delivery_id,
        "reason": record.reason,
        "received_at": _iso(record.received_at),
        "body": record.body.decode("utf-8", "replace"),
    }


def _event_row(event: RunEvent) -> list[str]:
    return [
        _when(event.occurred_at),
        event.run_id,
        event.status.value,
        event.origin.value,
        event.provider,
        event.application or "-",
        event.delivery_id,
    ]


def _call_row(call: HandlerCall) -> list[str]:
    return [
        str(call.id),
        call.handler,
        call.run_id,
        call.status.value,
        call.state.value,
        str(call.attempts),
        _when(call.updated_at),
        _short(call.last_error),
    ]


_EVENT_HEADERS = ("OCCURRED", "RUN ID", "STATUS", "ORIGIN", "PROVIDER", "APPLICATION", "DELIVERY")
_CALL_HEADERS = ("ID", "HANDLER", "RUN ID", "STATUS", "STATE", "ATTEMPTS", "UPDATED", "LAST ERROR")


# --- store and listener access --------------------------------------------------------------


def _check_store_exists(url: str) -> None:
    """Reading commands must not create an empty database where none was meant to be."""
    if not url.startswith("sqlite:"):
        return
    from listener.store.sqlite import parse_sqlite_url

    path = parse_sqlite_url(url)
    if path is not None and not Path(path).exists():
        raise CommandError(
            f"error: no store at {path}: nothing has been recorded there yet "
            "(check listener.store, or run from the service's directory)",
            EXIT_STORE,
        )


@contextlib.asynccontextmanager
async def _open_store(config: Config) -> AsyncIterator[Store]:
    from listener.store import open_store

    _check_store_exists(config.store)
    store = await open_store(config.store)
    try:
        yield store
    finally:
        await store.close()


@contextlib.asynccontextmanager
async def _running(
    config: Config, *, dispatch: bool = False, poll: bool = False, retention: bool = False
) -> AsyncIterator[Listener]:
    """A started listener. Commands record and poll; by default the service runs handlers
    (and prunes, with `retention_days`)."""
    listener = build_listener(config, dispatch=dispatch, poll=poll, retention=retention)
    try:
        async with listener:
            yield listener
    finally:
        # The listener does not own its providers' HTTP clients; close them here.
        for provider in listener.providers.values():
            await provider.aclose()


def _require_provider(listener: Listener, config: Config, name: str) -> None:
    if name not in listener.providers:
        known = ", ".join(sorted(listener.providers)) or "none"
        raise CommandError(
            f"{config.label}: no provider {name!r} configured (add [providers.{name}]); "
            f"configured: {known}",
            EXIT_USAGE,
        )


def _run_async(coroutine: Coroutine[Any, Any, int | None]) -> int:
    return asyncio.run(coroutine) or EXIT_OK


# --- serve and poll ---------------------------------------------------------------------------


def _setup_logging(level: str) -> None:
    numeric = logging.DEBUG if level == "trace" else logging.getLevelName(level.upper())
    logging.basicConfig(
        level=numeric, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )


def create_app() -> Starlette:
    """The ASGI app for `uvicorn --factory listener.cli:create_app` (one per worker);
    the configuration comes from `$LISTENER_CONFIG` or `./listener.toml`."""
    config = load_config(find_config(None))
    _setup_logging(config.server.log_level)
    return build_listener(config).asgi()


def _do_nothing(signum: int, frame: FrameType | None) -> None:
    """Stands in for the default handler once uvicorn has shut down gracefully."""


@contextlib.contextmanager
def _exit_cleanly_on_signals() -> Iterator[None]:
    # uvicorn raises the stop signal again after its graceful shutdown so the default
    # action runs; under this handler it does nothing and the command exits 0.
    previous = {sig: signal.signal(sig, _do_nothing) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


async def _check_store(config: Config) -> None:
    from listener.store import open_store

    store = await open_store(config.store)
    await store.close()


def _serve_one(app: Starlette, server: ServerConfig) -> None:
    import uvicorn

    class Server(uvicorn.Server):
        async def startup(self, sockets: list[Any] | None = None) -> None:
            await super().startup(sockets=sockets)
            if self.started and self.servers:
                port = self.servers[0].sockets[0].getsockname()[1]
                host = f"[{server.host}]" if ":" in server.host else server.host
                click.echo(f"listening on http://{host}:{port}", err=True)

    uv_config = uvicorn.Config(
        app, host=server.host, port=server.port, log_level=server.log_level, lifespan="on"
    )
    instance = Server(uv_config)
    with _exit_cleanly_on_signals():
        instance.run()
    if not instance.started:
        raise CommandError("error: the service did not start; see the log above")


def _serve_workers(config: Config, server: ServerConfig, reload: bool) -> None:
    import uvicorn

    # Worker processes read the configuration themselves, from the same file.
    if config.path is not None:
        os.environ[CONFIG_ENV] = str(config.path.resolve())
    with _exit_cleanly_on_signals():
        uvicorn.run(
            "listener.cli:create_app",
            factory=True,
            host=server.host,
            port=server.port,
            workers=None if reload else server.workers,
            reload=reload,
            log_level=server.log_level,
        )


@main.command()
@click.option("--host", help="Address to bind (default: [server] host).")
@click.option("--port", type=click.IntRange(0, 65535), help="Port; 0 picks a free one.")
@click.option("--workers", type=click.IntRange(min=1), help="Worker processes.")
@click.option("--log-level", type=click.Choice(LOG_LEVELS), help="Log level.")
@click.option("--reload", is_flag=True, help="Restart on code changes (development).")
@pass_state
def serve(
    state: _State,
    host: str | None,
    port: int | None,
    workers: int | None,
    log_level: str | None,
    reload: bool,
) -> None:
    """Run the webhook service (receiver, dispatcher and fallback poller)."""
    config = state.config()
    default = config.server
    server = ServerConfig(
        host=default.host if host is None else host,
        port=default.port if port is None else port,
        workers=default.workers if workers is None else workers,
        log_level=default.log_level if log_level is None else log_level,
    )
    _setup_logging(server.log_level)
    if server.workers > 1 and config.store.startswith("sqlite:"):
        # Each worker has its own writer; on one SQLite file they take turns at its one
        # write lock, so more workers mean fewer deliveries a second and long stalls.
        log.warning(
            "%d workers share one SQLite file and its single write lock: expect lower "
            "throughput than one worker; use a PostgreSQL store for several workers",
            server.workers,
        )
    if server.workers > 1 or reload:
        # Fail here with the real message rather than once per worker.
        build_listener(config)
        asyncio.run(_check_store(config))
        _serve_workers(config, server, reload)
        return
    app = build_listener(config).asgi()
    asyncio.run(_check_store(config))
    _serve_one(app, server)


async def _poll_until_stopped(config: Config) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    stop_signals = (signal.SIGINT, signal.SIGTERM)
    for sig in stop_signals:
        loop.add_signal_handler(sig, stop.set)
    try:
        async with _running(config, dispatch=True, poll=True, retention=True) as listener:
            if not listener.providers:
                click.echo("warning: no providers configured; nothing can be polled", err=True)
            names = ", ".join(sorted(listener.providers)) or "none"
            click.echo(f"polling (providers: {names}); stop with Ctrl-C or SIGTERM", err=True)
            await stop.wait()
            click.echo("stopping", err=True)
    finally:
        for sig in stop_signals:
            loop.remove_signal_handler(sig)


@main.command()
@pass_state
def poll(state: _State) -> None:
    """Poll-only mode: learn run ends by polling and run handlers; no HTTP receiver."""
    config = state.config()
    _setup_logging(config.server.log_level)
    asyncio.run(_poll_until_stopped(config))


# --- submit, cancel, track ------------------------------------------------------------------


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
    async with _running(config, poll=wait) as listener:
        _require_provider(listener, config, provider)
        handle = await listener.submit(provider, application, data, options=options, name=name)
        if not wait:
            if as_json:
                _print_json(
                    {
                        "run_id": handle.run_id,
                        "provider": handle.provider,
                        "application": handle.application,
                        "submitted_at": _iso(handle.submitted_at),
                        "callback_url": handle.callback_url is not None,
                    }
                )
            else:
                click.echo(handle.run_id)
            return EXIT_OK
        click.echo(f"submitted run {handle.run_id}; waiting for it to finish", err=True)
        event = await _wait_with_progress(listener, handle.run_id, timeout)
    if as_json:
        _print_json(event.to_dict())
    else:
        click.echo(f"run {event.run_id} {event.status.value} (learned by {event.origin.value})")
    return EXIT_OK if event.status is RunStatus.SUCCEEDED else EXIT_FAILED


@main.command()
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
    state: _State,
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
    code = _run_async(
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
    _check_store_exists(config.store)
    async with _running(config) as listener:
        run = await listener.store.get_run(run_id)
        if run is None:
            raise CommandError(f"error: no run {run_id!r} in the store", EXIT_NOT_FOUND)
        _require_provider(listener, config, run.provider)
        status = await listener.cancel(run_id)
    if as_json:
        _print_json({"run_id": run_id, "status": status.value})
    elif status.is_terminal:
        click.echo(f"run {run_id} {status.value}")
    else:
        click.echo(f"cancel requested; run {run_id} is still {status.value}")


@main.command()
@click.argument("run_id")
@json_option
@pass_state
def cancel(state: _State, run_id: str, as_json: bool) -> None:
    """Ask the platform to cancel a run, and record what it then reports."""
    _run_async(_cancel(state.config(), run_id, as_json))


async def _track(
    config: Config,
    provider: str,
    application: str,
    run_id: str,
    status: str,
    details: Mapping[str, Any],
    as_json: bool,
) -> None:
    async with _running(config) as listener:
        result = await listener.track(provider, application, run_id, status, **details)
    if as_json:
        _print_json(
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


@main.command()
@click.argument("provider")
@click.argument("application")
@click.argument("run_id")
@click.argument("status", type=click.Choice(STATUS_WORDS, case_sensitive=False))
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
    state: _State,
    provider: str,
    application: str,
    run_id: str,
    status: str,
    output_file: str | None,
    error_text: str | None,
    duration: float | None,
    as_json: bool,
) -> None:
    """Record a run that happened elsewhere; its handlers are called as for any run."""
    details: dict[str, Any] = {"error": error_text, "duration": duration}
    if output_file is not None:
        details["output"] = _read_data(output_file)
    _run_async(
        _track(state.config(), provider, application, run_id, status.lower(), details, as_json)
    )


# --- runs, events, dead letters, replay -----------------------------------------------------


def _limit_option(func: Callable[..., Any]) -> Callable[..., Any]:
    func = click.option("--cursor", help="Continue a listing where the last one stopped.")(func)
    return click.option(
        "--limit", type=click.IntRange(1, 1000), default=20, show_default=True, help="How many."
    )(func)


async def _list_runs(
    config: Config,
    statuses: Sequence[str],
    provider: str | None,
    application: str | None,
    limit: int,
    cursor: str | None,
    as_json: bool,
) -> None:
    async with _open_store(config) as store:
        page = await store.list_runs(
            status=[RunStatus(s) for s in statuses] or None,
            provider=provider,
            application=application,
            limit=limit,
            cursor=cursor,
        )
    if as_json:
        _print_json({"items": [_run_json(r) for r in page.items], "next_cursor": page.next_cursor})
        return
    if not page.items:
        click.echo("no runs")
        return
    rows = [
        [
            r.run_id,
            r.status.value,
            r.provider,
            r.application or "-",
            _when(r.submitted_at),
            _when(r.last_event_at),
        ]
        for r in page.items
    ]
    headers = ("RUN ID", "STATUS", "PROVIDER", "APPLICATION", "SUBMITTED", "LAST EVENT")
    click.echo(_table(headers, rows))
    _more("runs", page.next_cursor)


@main.group(invoke_without_command=True)
@click.option(
    "--status", "statuses", multiple=True, type=click.Choice(STATUS_WORDS), help="Repeatable."
)
@click.option("--provider")
@click.option("--application")
@_limit_option
@json_option
@pass_state
@click.pass_context
def runs(
    ctx: click.Context,
    state: _State,
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
    _run_async(_list_runs(state.config(), statuses, provider, application, limit, cursor, as_json))


async def _show_run(config: Config, run_id: str, as_json: bool) -> None:
    async with _open_store(config) as store:
        run = await store.get_run(run_id)
        if run is None:
            raise CommandError(f"error: no run {run_id!r} in the store", EXIT_NOT_FOUND)
        events = await store.list_events(run_id=run_id, limit=1000)
        calls = await store.list_calls(run_id=run_id, limit=1000)
    if as_json:
        _print_json(
            {
                "run": _run_json(run),
                "events": [event.to_dict() for event in events.items],
                "handler_calls": [_call_json(call) for call in calls.items],
            }
        )
        return
    facts = [
        ["run", run.run_id],
        ["status", run.status.value],
        ["provider", run.provider],
        ["application", run.application or "-"],
        ["submitted", _when(run.submitted_at)],
        ["last event", _when(run.last_event_at)],
        ["deadline", _when(run.deadline)],
        ["next poll", _when(run.next_poll_at)],
        ["polls", str(run.poll_attempts)],
    ]
    click.echo("\n".join(f"{name:<12} {value}" for name, value in facts))
    click.echo("\nevents:")
    click.echo(
        _table(_EVENT_HEADERS, [_event_row(e) for e in events.items]) if events.items else "none"
    )
    click.echo("\nhandler calls:")
    click.echo(
        _table(_CALL_HEADERS, [_call_row(c) for c in calls.items]) if calls.items else "none"
    )


@runs.command("show")
@click.argument("run_id")
@json_option
@pass_state
def runs_show(state: _State, run_id: str, as_json: bool) -> None:
    """One run: its record, its events and its handler calls."""
    _run_async(_show_run(state.config(), run_id, as_json))


async def _list_events(
    config: Config, filters: Mapping[str, Any], limit: int, cursor: str | None, as_json: bool
) -> None:
    async with _open_store(config) as store:
        page = await store.list_events(limit=limit, cursor=cursor, **filters)
    if as_json:
        _print_json({"items": [e.to_dict() for e in page.items], "next_cursor": page.next_cursor})
        return
    click.echo(
        _table(_EVENT_HEADERS, [_event_row(e) for e in page.items]) if page.items else "no events"
    )
    _more("events", page.next_cursor)


async def _list_unroutable(config: Config, limit: int, cursor: str | None, as_json: bool) -> None:
    async with _open_store(config) as store:
        page = await store.list_unroutable(limit=limit, cursor=cursor)
    if as_json:
        _print_json(
            {"items": [_unroutable_json(r) for r in page.items], "next_cursor": page.next_cursor}
        )
        return
    if not page.items:
        click.echo("no unroutable deliveries")
        return
    rows = [
        [str(r.id), _when(r.received_at), r.source, r.delivery_id or "-", _short(r.reason)]
        for r in page.items
    ]
    click.echo(_table(("ID", "RECEIVED", "SOURCE", "DELIVERY", "REASON"), rows))
    _more("events --unroutable", page.next_cursor)


@main.command()
@click.option("--run-id")
@click.option(
    "--status", "statuses", multiple=True, type=click.Choice(STATUS_WORDS), help="Repeatable."
)
@click.option("--provider")
@click.option("--application")
@click.option("--origin", type=click.Choice([origin.value for origin in Origin]))
@click.option("--unroutable", is_flag=True, help="Verified deliveries that were not understood.")
@_limit_option
@json_option
@pass_state
def events(
    state: _State,
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
    config = state.config()
    if unroutable:
        _run_async(_list_unroutable(config, limit, cursor, as_json))
        return
    filters = {
        "run_id": run_id,
        "status": [RunStatus(s) for s in statuses] or None,
        "provider": provider,
        "application": application,
        "origin": Origin(origin) if origin else None,
    }
    _run_async(_list_events(config, filters, limit, cursor, as_json))


async def _dead_letters(
    config: Config,
    handler: str | None,
    run_id: str | None,
    limit: int,
    cursor: str | None,
    as_json: bool,
) -> None:
    from listener.store.base import CallState

    async with _open_store(config) as store:
        page = await store.list_calls(
            state=CallState.DEAD, handler=handler, run_id=run_id, limit=limit, cursor=cursor
        )
    if as_json:
        _print_json({"items": [_call_json(c) for c in page.items], "next_cursor": page.next_cursor})
        return
    click.echo(
        _table(_CALL_HEADERS, [_call_row(c) for c in page.items])
        if page.items
        else "no dead letters"
    )
    _more("dead-letters", page.next_cursor)


@main.command("dead-letters")
@click.option("--handler")
@click.option("--run-id")
@_limit_option
@json_option
@pass_state
def dead_letters(
    state: _State,
    handler: str | None,
    run_id: str | None,
    limit: int,
    cursor: str | None,
    as_json: bool,
) -> None:
    """List handler calls that failed every attempt (replay them with `replay`)."""
    _run_async(_dead_letters(state.config(), handler, run_id, limit, cursor, as_json))


async def _replay(config: Config, call_id: int, as_json: bool) -> None:
    async with _open_store(config) as store:
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
        _print_json(_call_json(call))
    else:
        click.echo(
            f"handler call {call_id} ({call.handler}, run {call.run_id}) is pending again; "
            "a running listener (serve or poll) will call it"
        )


@main.command()
@click.argument("call_id", type=int)
@json_option
@pass_state
def replay(state: _State, call_id: int, as_json: bool) -> None:
    """Queue a dead (or done) handler call again."""
    _run_async(_replay(state.config(), call_id, as_json))


# --- prune ------------------------------------------------------------------------------------

_DURATION = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\s*([smhd]?)")
_UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> float:
    """Seconds in `30d`, `12h`, `90m`, `3600s` or `3600` (a number may have a fraction);
    `ValueError` for anything else."""
    found = _DURATION.fullmatch(text.strip().lower())
    seconds = float(found[1]) * _UNIT_SECONDS[found[2]] if found else math.nan
    if not math.isfinite(seconds):
        raise ValueError(
            f"{text!r} is not a duration; write a number with d, h, m or s (30d, 12h, 90m, "
            "3600s), or a number of seconds"
        )
    return seconds


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
        "before": _iso(before),
    }


async def _prune(config: Config, before: datetime, limit: int, as_json: bool) -> None:
    from listener.retention import describe_counts, prune_store

    async with _open_store(config) as store:
        counts = await prune_store(store, before=before, limit=limit)
    if as_json:
        _print_json(_prune_json(counts, before))
    else:
        click.echo(f"pruned {describe_counts(counts)} older than {_when(before)} UTC")


@main.command()
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
    help="Rows of each kind deleted per transaction.",
)
@json_option
@pass_state
def prune(state: _State, older_than: float, limit: int, as_json: bool) -> None:
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
    _run_async(_prune(state.config(), before, limit, as_json))


# --- webhooks, send-test, keys ----------------------------------------------------------------


@main.group()
def webhooks() -> None:
    """The platform account's webhook endpoints (Nextmv)."""


def _default_endpoint_url(config: Config, provider: str) -> str:
    for source in config.sources:
        if source.provider == provider and source.scheme != "none" and config.public_url:
            return f"{config.public_url.rstrip('/')}/hooks/{source.name}"
    raise CommandError(
        f"error: give --url, or set listener.public_url and a [sources.<name>] with "
        f'provider = "{provider}"',
        EXIT_USAGE,
    )


def _account_provider(config: Config, name: str) -> Any:
    provider = build_provider(config, name)
    if not hasattr(provider, "register_webhook"):
        raise CommandError(
            f"error: provider {name!r} has no account webhooks (only nextmv providers do)",
            EXIT_USAGE,
        )
    return provider


async def _register(
    config: Config,
    provider_name: str,
    endpoint_id: str,
    url: str,
    description: str,
    show_secret: bool,
    as_json: bool,
) -> None:
    provider = _account_provider(config, provider_name)
    try:
        endpoint = dict(await provider.register_webhook(endpoint_id, url, description))
        secret = await provider.webhook_secret(endpoint_id) if show_secret else None
    finally:
        await provider.aclose()
    if as_json:
        document: dict[str, Any] = {"endpoint": endpoint}
        if secret is not None:
            document["secret"] = secret
        _print_json(document)
    else:
        click.echo(f"registered endpoint {endpoint_id}: {url} (run.status)")
        if secret is not None:
            click.echo(f"signing secret: {secret}")
    if secret is None:
        click.echo(
            "the signing secret is not shown; print it with `listener webhooks secret "
            f"--provider {provider_name} --endpoint-id {endpoint_id}` and make the source's "
            "secrets refer to it (e.g. env:NEXTMV_WEBHOOK_SECRET)",
            err=True,
        )


@webhooks.command("register")
@click.option("--provider", "provider_name", default="nextmv", show_default=True)
@click.option("--endpoint-id", required=True, help="Your id for the endpoint.")
@click.option("--url", help="Default: listener.public_url + /hooks/<source of this provider>.")
@click.option("--description", default="listener", show_default=True)
@click.option("--show-secret", is_flag=True, help="Also print the signing secret.")
@json_option
@pass_state
def webhooks_register(
    state: _State,
    provider_name: str,
    endpoint_id: str,
    url: str | None,
    description: str,
    show_secret: bool,
    as_json: bool,
) -> None:
    """Register this service as the account's run.status webhook endpoint."""
    config = state.config()
    url = url or _default_endpoint_url(config, provider_name)
    _run_async(
        _register(config, provider_name, endpoint_id, url, description, show_secret, as_json)
    )


async def _secret(config: Config, provider_name: str, endpoint_id: str) -> None:
    provider = _account_provider(config, provider_name)
    try:
        click.echo(await provider.webhook_secret(endpoint_id))
    finally:
        await provider.aclose()


@webhooks.command("secret")
@click.option("--provider", "provider_name", default="nextmv", show_default=True)
@click.option("--endpoint-id", required=True)
@pass_state
def webhooks_secret(state: _State, provider_name: str, endpoint_id: str) -> None:
    """Print an endpoint's signing secret (for a secret store, not for a terminal log)."""
    _run_async(_secret(state.config(), provider_name, endpoint_id))


def _test_payload(provider: str, run_id: str, application: str, status: str) -> dict[str, Any]:
    """A completion event as `provider`'s platform would send it."""
    if provider == "nextmv":
        from listener.testing import nextmv_run_status_payload

        return nextmv_run_status_payload(run_id, application, status)
    if provider == "workflow":
        word = _WORKFLOW_WORDS.get(status, status)
        return {"run_id": run_id, "workflow_id": application, "status": word}
    from listener.providers.native import build_payload

    event = RunEvent(
        delivery_id="send-test",
        provider=provider,
        application=application,
        run_id=run_id,
        status=RunStatus(status),
    )
    return build_payload(event)


def _signed_headers(
    scheme_name: str, secret: str | None, body: bytes, msg_id: str
) -> dict[str, str]:
    headers = {"Content-Type": "application/json", "User-Agent": f"listener/{__version__}"}
    if scheme_name == "none":
        return headers
    from listener.signatures import scheme_from_name

    if secret is None:
        raise click.UsageError(f"--scheme {scheme_name} needs --secret")
    try:
        scheme = scheme_from_name(scheme_name, [secret])
    except (ValueError, TypeError) as exc:
        raise CommandError(f"error: --secret: {exc}", EXIT_USAGE) from None
    headers.update(scheme.sign(body, msg_id=msg_id))
    return headers


@main.command("send-test")
@click.argument("url")
@click.option("--scheme", "scheme_name", type=click.Choice(SCHEMES), required=True)
@click.option("--secret", "secret_ref", help="env:NAME, file:PATH (or the secret itself).")
@click.option("--run-id", help="Default: a new test-... id.")
@click.option(
    "--status", type=click.Choice(PLATFORM_STATUSES), default="succeeded", show_default=True
)
@click.option("--provider", default="nextmv", show_default=True, help="Whose payload to send.")
@click.option("--application", default="send-test", show_default=True)
@click.option("--timeout", type=click.FloatRange(min=0), default=10.0, show_default=True)
@json_option
def send_test(
    url: str,
    scheme_name: str,
    secret_ref: str | None,
    run_id: str | None,
    status: str,
    provider: str,
    application: str,
    timeout: float,
    as_json: bool,
) -> None:
    """Send one signed test delivery to URL and print the answer (checks a deployment)."""
    import httpx

    secret = resolve_reference(secret_ref, key="--secret") if secret_ref else None
    run_id = run_id or f"test-{uuid.uuid4().hex[:12]}"
    msg_id = f"msg_test_{uuid.uuid4().hex}"
    body = json.dumps(
        _test_payload(provider, run_id, application, status), separators=(",", ":")
    ).encode()
    headers = _signed_headers(scheme_name, secret, body, msg_id)
    try:
        response = httpx.post(url, content=body, headers=headers, timeout=timeout)
    except httpx.HTTPError as exc:
        raise CommandError(f"error: cannot deliver to {url}: {exc}") from None
    if as_json:
        try:
            answer: Any = response.json()
        except ValueError:
            answer = response.text
        _print_json(
            {
                "status_code": response.status_code,
                "body": answer,
                "run_id": run_id,
                "msg_id": msg_id,
            }
        )
    else:
        click.echo(f"HTTP {response.status_code} {response.reason_phrase}")
        if response.text:
            click.echo(_short(response.text, 2000))
    click.get_current_context().exit(EXIT_OK if response.is_success else EXIT_FAILED)


@main.group()
def keys() -> None:
    """Signing keys for webhook sources."""


@keys.command("generate")
@click.option("--kind", type=click.Choice(["hmac", "ed25519"]), default="hmac", show_default=True)
@json_option
def keys_generate(kind: str, as_json: bool) -> None:
    """A new whsec_ HMAC secret, or an Ed25519 whsk_ (signing) / whpk_ (verifying) pair."""
    from listener.signatures import generate_ed25519_keypair, generate_hmac_secret

    if kind == "hmac":
        secret = generate_hmac_secret()
        if as_json:
            _print_json({"secret": secret})
        else:
            click.echo(secret)
        return
    signing, public = generate_ed25519_keypair()
    if as_json:
        _print_json({"signing_key": signing, "public_key": public})
        return
    click.echo(f"signing key (sender only): {signing}")
    click.echo(f"public key (receiver's secrets): {public}")


# --- demo and version -------------------------------------------------------------------------


@main.command()
@click.option("--runs", "run_count", type=click.IntRange(min=1), default=20, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
def demo(run_count: int, seed: int) -> None:
    """Run the demo: a fake platform, lost webhooks, and the poller recovering them."""
    try:
        module = importlib.import_module("listener.demo")
    except ModuleNotFoundError as exc:
        if exc.name != "listener.demo":
            raise
        raise CommandError("error: the demo is not part of this installation") from None
    run_demo: Callable[..., Coroutine[Any, Any, int]] = module.run_demo
    code = asyncio.run(run_demo(runs=run_count, seed=seed, out=click.echo))
    click.get_current_context().exit(code)


@main.command()
@json_option
def version(as_json: bool) -> None:
    """Print the version."""
    if as_json:
        _print_json({"version": __version__})
    else:
        click.echo(__version__)
