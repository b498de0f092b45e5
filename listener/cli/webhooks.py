"""`webhooks`: the platform account's webhook endpoints (register one, print its secret)."""

from __future__ import annotations

from typing import Any

import click

from listener.cli.access import run_async
from listener.cli.output import print_json
from listener.cli.root import State, json_option, pass_state
from listener.config import Config, build_provider
from listener.errors import EXIT_USAGE, CommandError


@click.group()
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
        print_json(document)
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
    state: State,
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
    run_async(_register(config, provider_name, endpoint_id, url, description, show_secret, as_json))


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
def webhooks_secret(state: State, provider_name: str, endpoint_id: str) -> None:
    """Print an endpoint's signing secret (for a secret store, not for a terminal log)."""
    run_async(_secret(state.config(), provider_name, endpoint_id))
