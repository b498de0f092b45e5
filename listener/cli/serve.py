"""`serve` (the webhook service) and `poll` (poll-only mode), and the ASGI app factory."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Iterator
from dataclasses import replace
from types import FrameType
from typing import TYPE_CHECKING, Any

import click

from listener import access_log
from listener.cli.access import running
from listener.cli.root import State, pass_state
from listener.cli.stopping import stop_requested
from listener.config import (
    CONFIG_ENV,
    LOG_FORMATS,
    LOG_LEVELS,
    Config,
    ServerConfig,
    build_listener,
    find_config,
    load_config,
)
from listener.errors import CommandError

if TYPE_CHECKING:
    from starlette.applications import Starlette

# Named for the command as a whole, as log lines have always been.
log = logging.getLogger("listener.cli")


log_format_option = click.option(
    "--log-format",
    type=click.Choice(LOG_FORMATS),
    help="text, or json: one object a line (default: [server] log_format).",
)


# Whether the command's own lines go out as JSON log lines (see `_setup_logging`).
_json_lines = False


def announce(message: str) -> None:
    """A line the command always shows on stderr (where it listens, that it stops): as
    text, or in JSON mode as a log line whatever the log level, so stderr stays JSON."""
    if not _json_lines:
        click.echo(message, err=True)
        return
    record = log.makeRecord(log.name, logging.INFO, __file__, 0, message, (), None)
    log.handle(record)  # past the level check, through the handlers


def _setup_logging(level: str, log_format: str = "text") -> None:
    global _json_lines
    numeric = logging.DEBUG if level == "trace" else logging.getLevelName(level.upper())
    _json_lines = log_format == "json"
    if log_format == "json":
        from listener.json_logs import JsonFormatter

        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(JsonFormatter())
        logging.basicConfig(level=numeric, handlers=[handler], force=True)
        return
    logging.basicConfig(
        level=numeric, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )


def service_app(config: Config) -> Starlette:
    """The service's ASGI app as `config` describes it: the listener's routes, and the
    operator console under `/ui` when `[console]` names a token (imported only then)."""
    listener = build_listener(config)
    app = listener.asgi()
    if config.console.enabled:
        from starlette.routing import Mount

        from listener.console.app import console_app

        app.router.routes.append(Mount("/ui", app=console_app(listener, config.console)))
    return app


def create_app() -> Starlette:
    """The ASGI app for `uvicorn --factory listener.cli:create_app` (one per worker);
    the configuration comes from `$LISTENER_CONFIG` or `./listener.toml`."""
    config = load_config(find_config(None))
    _setup_logging(config.server.log_level, config.server.log_format)
    access_log.install()
    return service_app(config)


def uvicorn_options(server: ServerConfig) -> dict[str, Any]:
    """uvicorn's settings for `server`, the same for one process and for workers."""
    from listener.http_limits import protocol

    return {
        "host": server.host,
        "port": server.port,
        "log_level": server.log_level,
        # JSON: uvicorn's own loggers (startup, access) go to the root handler as well,
        # so every line is an object; text keeps uvicorn's own formats.
        **({"log_config": None} if server.log_format == "json" else {}),
        # The header size limit and the request read timeout (see `listener.http_limits`).
        "http": protocol(
            max_header_bytes=server.max_header_bytes, read_timeout=server.read_timeout
        ),
        # The service takes no WebSocket; an upgrade request is served as plain HTTP,
        # under the same limits.
        "ws": "none",
        "timeout_keep_alive": server.keep_alive_timeout,
        "limit_concurrency": server.limit_concurrency,
    }


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
                announce(f"listening on http://{host}:{port}")

    uv_config = uvicorn.Config(app, lifespan="on", **uvicorn_options(server))
    access_log.install()
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
            workers=None if reload else server.workers,
            reload=reload,
            **uvicorn_options(server),
        )


@click.command()
@click.option("--host", help="Address to bind (default: [server] host).")
@click.option("--port", type=click.IntRange(0, 65535), help="Port; 0 picks a free one.")
@click.option("--workers", type=click.IntRange(min=1), help="Worker processes.")
@click.option("--log-level", type=click.Choice(LOG_LEVELS), help="Log level.")
@log_format_option
@click.option("--reload", is_flag=True, help="Restart on code changes (development).")
@pass_state
def serve(
    state: State,
    host: str | None,
    port: int | None,
    workers: int | None,
    log_level: str | None,
    log_format: str | None,
    reload: bool,
) -> None:
    """Run the webhook service (receiver, dispatcher and fallback poller)."""
    config = state.config()
    given: dict[str, Any] = {
        "host": host,
        "port": port,
        "workers": workers,
        "log_level": log_level,
        "log_format": log_format,
    }
    server = replace(
        config.server, **{name: value for name, value in given.items() if value is not None}
    )
    if log_format is not None:
        # Worker processes read the configuration themselves: the override goes with it.
        os.environ["LISTENER_SERVER_LOG_FORMAT"] = log_format
    _setup_logging(server.log_level, server.log_format)
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
    app = service_app(config)
    asyncio.run(_check_store(config))
    _serve_one(app, server)


async def _poll_until_stopped(config: Config) -> None:
    with stop_requested() as stop:
        async with running(config, dispatch=True, poll=True, retention=True) as listener:
            if not listener.providers:
                announce("warning: no providers configured; nothing can be polled")
            names = ", ".join(sorted(listener.providers)) or "none"
            announce(f"polling (providers: {names}); stop with Ctrl-C or SIGTERM")
            await stop.wait()
            announce("stopping")


@click.command()
@log_format_option
@pass_state
def poll(state: State, log_format: str | None) -> None:
    """Poll-only mode: learn run ends by polling and run handlers; no HTTP receiver."""
    config = state.config()
    _setup_logging(config.server.log_level, log_format or config.server.log_format)
    asyncio.run(_poll_until_stopped(config))
