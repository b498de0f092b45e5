"""The top-level `listener` group, its global options, and the options commands share."""

from __future__ import annotations

import dataclasses
import traceback
from collections.abc import Callable
from typing import Any, NoReturn

import click

from listener import __version__
from listener.cli.exits import classify
from listener.cli.output import print_json
from listener.config import CONFIG_ENV, Config, find_config, load_config
from listener.errors import EXIT_INTERRUPTED
from listener.events import RunStatus

STATUS_WORDS = [status.value for status in RunStatus]


@dataclasses.dataclass
class State:
    """Global options, and the configuration read once on first use."""

    config_path: str | None
    debug: bool
    _configs: dict[bool, Config] = dataclasses.field(default_factory=dict)

    def config(self, *, secrets: bool = True) -> Config:
        """The configuration; `secrets=False` for commands that only read the store, so
        they run where a webhook secret's variable is not set (see `load_config`)."""
        if secrets not in self._configs:
            config = load_config(find_config(self.config_path), secrets=secrets)
            if not self._configs:
                for notice in config.notices:
                    click.echo(f"warning: {notice}", err=True)
            self._configs[secrets] = config
        return self._configs[secrets]


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
        code, message = classify(exc)
        state = ctx.find_object(State)
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
    ctx.obj = State(config_path, debug)


pass_state = click.make_pass_decorator(State)


def json_option(func: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")(func)


def limit_option(func: Callable[..., Any]) -> Callable[..., Any]:
    func = click.option("--cursor", help="Continue a listing where the last one stopped.")(func)
    return click.option(
        "--limit", type=click.IntRange(1, 1000), default=20, show_default=True, help="How many."
    )(func)


@click.command()
@json_option
def version(as_json: bool) -> None:
    """Print the version."""
    if as_json:
        print_json({"version": __version__})
    else:
        click.echo(__version__)
