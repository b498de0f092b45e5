"""`send-test`: one signed test delivery, with the sample payload of each provider."""

from __future__ import annotations

import asyncio
import uuid
from typing import TYPE_CHECKING, Any

import click

from listener.cli.output import print_json, short
from listener.cli.root import json_option
from listener.config import SCHEMES, resolve_reference
from listener.errors import EXIT_FAILED, EXIT_OK, EXIT_USAGE, CommandError
from listener.events import RunEvent, RunStatus
from listener.providers.kinds import provider_kinds

if TYPE_CHECKING:
    import httpx

    from listener.signatures import SignatureScheme

# What a platform can report; `expired` is only ever declared by the listener itself.
PLATFORM_STATUSES = ["queued", "running", "succeeded", "failed", "canceled"]


def _test_payload(provider: str, run_id: str, application: str, status: str) -> dict[str, Any]:
    """A completion event as `provider`'s platform would send it (its kind's sample)."""
    kind = provider_kinds().get(provider)
    if kind is not None and kind.sample_payload is not None:
        return kind.sample_payload(run_id, application, RunStatus(status))
    from listener.providers.native import build_payload

    event = RunEvent(
        delivery_id="send-test",
        provider=provider,
        application=application,
        run_id=run_id,
        status=RunStatus(status),
    )
    return build_payload(event)


def _scheme(scheme_name: str, secret: str | None) -> SignatureScheme | None:
    if scheme_name == "none":
        return None
    from listener.signatures import scheme_from_name

    if secret is None:
        raise click.UsageError(f"--scheme {scheme_name} needs --secret")
    try:
        return scheme_from_name(scheme_name, [secret])
    except (ValueError, TypeError) as exc:
        raise CommandError(f"error: --secret: {exc}", EXIT_USAGE) from None


async def _post(
    scheme: SignatureScheme | None, url: str, body: bytes, msg_id: str, timeout: float
) -> httpx.Response:
    from listener.sending import WebhookSender

    async with WebhookSender(scheme, timeout=timeout) as sender:
        return await sender.post(url, body, msg_id=msg_id)


@click.command("send-test")
@click.argument("url")
@click.option("--scheme", "scheme_name", type=click.Choice(SCHEMES), required=True)
@click.option(
    "--secret",
    "secret_ref",
    help="env:NAME or file:PATH (the secret itself also works, but stays in your shell history).",
)
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

    from listener.sending import compact_json

    secret = resolve_reference(secret_ref, key="--secret") if secret_ref else None
    scheme = _scheme(scheme_name, secret)
    run_id = run_id or f"test-{uuid.uuid4().hex[:12]}"
    msg_id = f"msg_test_{uuid.uuid4().hex}"
    body = compact_json(_test_payload(provider, run_id, application, status))
    try:
        response = asyncio.run(_post(scheme, url, body, msg_id, timeout))
    except httpx.HTTPError as exc:
        raise CommandError(f"error: cannot deliver to {url}: {exc}") from None
    if as_json:
        try:
            answer: Any = response.json()
        except ValueError:
            answer = response.text
        print_json(
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
            click.echo(short(response.text, 2000))
    click.get_current_context().exit(EXIT_OK if response.is_success else EXIT_FAILED)
