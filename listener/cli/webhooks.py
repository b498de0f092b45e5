"""`webhooks`: the platform account's webhook endpoints (register one, ensure it is right,
print its secret)."""

from __future__ import annotations

from typing import Any

import click

from listener.cli.access import run_async
from listener.cli.output import print_json
from listener.cli.root import State, json_option, pass_state
from listener.config import Config, build_provider
from listener.endpoint_keeper import endpoint_id_for, endpoint_url_for, ensure_endpoint
from listener.errors import EXIT_USAGE, CommandError


@click.group()
def webhooks() -> None:
    """The platform account's webhook endpoints (Nextmv)."""


def _account_source(config: Config, provider: str) -> str | None:
    """The first signed source reading `provider`'s webhooks."""
    for source in config.sources:
        if source.provider == provider and source.scheme != "none":
            return source.name
    return None


def _default_endpoint_url(config: Config, provider: str) -> str:
    source = _account_source(config, provider)
    if source is not None and config.public_url:
        return endpoint_url_for(config.public_url, source)
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


async def _ensure(
    config: Config,
    provider_name: str,
    endpoint_id: str,
    url: str,
    dry_run: bool,
    show_secret: bool,
    as_json: bool,
) -> None:
    provider = _account_provider(config, provider_name)
    try:
        ensured = await ensure_endpoint(
            provider,
            endpoint_id=endpoint_id,
            url=url,
            description=config.webhooks.description,
            dry_run=dry_run,
            fetch_secret=show_secret,
        )
    finally:
        await provider.aclose()
    check = ensured.check
    if as_json:
        document = ensured.as_dict()
        document["url"] = url
        document["dry_run"] = dry_run
        if ensured.secret is not None:
            document["secret"] = ensured.secret
        print_json(document)
    else:
        done = {"create": "created", "replace": "replaced"}.get(check.action, "")
        if check.action == "ok":
            click.echo(f"endpoint {check.endpoint_id} is right: {url} (run.status)")
        elif dry_run:
            click.echo(f"would {check.action} endpoint {check.endpoint_id}: {url} (run.status)")
        else:
            click.echo(f"{done} endpoint {check.endpoint_id}: {url} (run.status)")
        for reason in check.reasons:
            click.echo(f"  {reason}")
        if ensured.secret is not None:
            click.echo(f"signing secret: {ensured.secret}")
    if ensured.changed and ensured.secret is None:
        click.echo(
            "the endpoint signs with a new secret; print it with `listener webhooks secret "
            f"--provider {provider_name} --endpoint-id {check.endpoint_id}` and update the "
            "source's secrets",
            err=True,
        )


@webhooks.command("ensure")
@click.option("--provider", "provider_name", default="nextmv", show_default=True)
@click.option(
    "--endpoint-id", help="Default: <[webhooks] endpoint_prefix>-<source of this provider>."
)
@click.option("--url", help="Default: listener.public_url + /hooks/<source of this provider>.")
@click.option("--dry-run", is_flag=True, help="Only say what would be done.")
@click.option("--show-secret", is_flag=True, help="Print the secret of a new endpoint.")
@json_option
@pass_state
def webhooks_ensure(
    state: State,
    provider_name: str,
    endpoint_id: str | None,
    url: str | None,
    dry_run: bool,
    show_secret: bool,
    as_json: bool,
) -> None:
    """Check that the account's endpoint exists, is enabled, points here and subscribes to
    run.status; create or repair it. Idempotent: never a second endpoint for this URL.

    A repaired endpoint is deleted and registered again (the platform has no update), so
    it signs with a new secret."""
    config = state.config()
    url = url or _default_endpoint_url(config, provider_name)
    if endpoint_id is None:
        source = _account_source(config, provider_name)
        if source is None:
            raise CommandError(
                f"error: give --endpoint-id, or configure a [sources.<name>] with "
                f'provider = "{provider_name}"',
                EXIT_USAGE,
            )
        endpoint_id = endpoint_id_for(source, config.webhooks.endpoint_prefix)
    run_async(_ensure(config, provider_name, endpoint_id, url, dry_run, show_secret, as_json))
