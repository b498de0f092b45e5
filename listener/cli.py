"""The `listener` command."""

from __future__ import annotations

import click

from listener import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="listener")
def main() -> None:
    """Learn when remote runs finish by signed webhook, and never miss one."""


@main.command()
def version() -> None:
    """Print the version."""
    click.echo(__version__)
