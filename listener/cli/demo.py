"""`demo`: a fake platform, lost webhooks, and the poller recovering them."""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import Callable, Coroutine
from typing import Any

import click

from listener.errors import CommandError


@click.command()
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
