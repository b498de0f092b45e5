"""Keeping a platform account's webhook endpoint right: `listener webhooks ensure`, and
`serve` doing the same at start and when webhooks are degraded (`[webhooks] ensure`).

`ensure_endpoint` lists the account's endpoints, decides with
`listener.webhook_endpoints.check_endpoint`, and creates or replaces the endpoint. A
replaced endpoint has a new signing secret: `serve` adds it to the running source's keys
at once (so deliveries verify without a restart) and warns that the configured secret is
out of date; the command prints how to read it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal, Protocol, runtime_checkable

from listener.errors import ProviderError
from listener.notices import Notice
from listener.sources import Source
from listener.webhook_endpoints import EndpointCheck, check_endpoint, parse_endpoints

__all__ = [
    "ENSURE_MODES",
    "AccountWebhooks",
    "EndpointKeeper",
    "EnsureMode",
    "Ensured",
    "WebhookSettings",
    "endpoint_id_for",
    "endpoint_url_for",
    "ensure_endpoint",
]

log = logging.getLogger("listener.webhooks")

EnsureMode = Literal["off", "start", "degraded"]
ENSURE_MODES: Final[tuple[EnsureMode, ...]] = ("off", "start", "degraded")
# The name the keeper's own notice handler is registered under.
NOTICE_HANDLER_NAME: Final = "listener.webhooks.ensure"


@runtime_checkable
class AccountWebhooks(Protocol):
    """A provider whose platform has account-level webhook endpoints (Nextmv)."""

    async def list_webhooks(self) -> Any: ...

    async def register_webhook(
        self, endpoint_id: str, endpoint_url: str, description: str = ""
    ) -> Mapping[str, Any]: ...

    async def delete_webhook(self, endpoint_id: str) -> None: ...

    async def webhook_secret(self, endpoint_id: str) -> str: ...


@dataclass(frozen=True, slots=True)
class WebhookSettings:
    """`ensure`: `off`, `start` (check and repair each account source's endpoint when
    `serve` starts) or `degraded` (at start, and again on each `webhooks_degraded`
    notice). Endpoints are named `<endpoint_prefix>-<source name>`."""

    ensure: EnsureMode = "off"
    endpoint_prefix: str = "listener"
    description: str = "listener"

    def __post_init__(self) -> None:
        if self.ensure not in ENSURE_MODES:
            raise ValueError(
                f"webhooks.ensure must be one of {', '.join(ENSURE_MODES)}, got {self.ensure!r}"
            )
        if not self.endpoint_prefix:
            raise ValueError("webhooks.endpoint_prefix must not be empty")


def endpoint_id_for(source: str, prefix: str = "listener") -> str:
    return f"{prefix}-{source}"


def endpoint_url_for(public_url: str, source: str) -> str:
    return f"{public_url.rstrip('/')}/hooks/{source}"


@dataclass(frozen=True, slots=True)
class Ensured:
    """What `ensure_endpoint` found (`check`) and whether it acted on it (`changed`);
    `secret` is the signing secret of an endpoint it created or replaced, when asked for."""

    check: EndpointCheck
    changed: bool
    secret: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "action": self.check.action,
            "endpoint_id": self.check.endpoint_id,
            "reasons": list(self.check.reasons),
            "changed": self.changed,
        }


async def _decide(
    provider: AccountWebhooks, endpoint_id: str, url: str, event_types: tuple[str, ...]
) -> EndpointCheck:
    try:
        endpoints = parse_endpoints(await provider.list_webhooks())
    except ValueError as exc:
        raise ProviderError(f"the platform's webhook listing could not be read: {exc}") from None
    return check_endpoint(endpoints, endpoint_id=endpoint_id, url=url, event_types=event_types)


async def ensure_endpoint(
    provider: AccountWebhooks,
    *,
    endpoint_id: str,
    url: str,
    description: str = "listener",
    event_types: tuple[str, ...] = ("run.status",),
    dry_run: bool = False,
    fetch_secret: bool = False,
) -> Ensured:
    """Make the account have one right endpoint for `url`; idempotent. `dry_run` only
    says what it would do. Raises `ProviderError` when the platform cannot be asked."""
    check = await _decide(provider, endpoint_id, url, event_types)
    if check.action == "ok" or dry_run:
        return Ensured(check, changed=False)
    if check.action == "replace":
        await provider.delete_webhook(endpoint_id)
    try:
        await provider.register_webhook(endpoint_id, url, description)
    except ProviderError as exc:
        if exc.status_code != 409:
            raise
        # Another replica created it meanwhile: take what is there now.
        again = await _decide(provider, endpoint_id, url, event_types)
        if again.action != "ok":
            raise
        return Ensured(again, changed=False)
    secret = await provider.webhook_secret(endpoint_id) if fetch_secret else None
    return Ensured(check, changed=True, secret=secret)


class EndpointKeeper:
    """`serve`'s part: ensures the endpoint of each source whose provider has account
    webhooks and whose scheme takes more keys, at start (in the background: a platform
    that cannot be reached delays nothing) and on `on_degraded`."""

    def __init__(
        self,
        sources: Mapping[str, Source],
        providers: Mapping[str, Any],
        public_url: str | None,
        settings: WebhookSettings,
    ) -> None:
        self.sources = sources
        self.providers = providers
        self.public_url = public_url
        self.settings = settings
        self.results: dict[str, Ensured] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._lock = asyncio.Lock()

    def _kept(self, provider_name: str | None = None) -> list[tuple[Source, AccountWebhooks]]:
        kept = []
        for source in self.sources.values():
            if provider_name is not None and source.provider != provider_name:
                continue
            provider = self.providers.get(source.provider)
            if isinstance(provider, AccountWebhooks) and hasattr(source.scheme, "add_secret"):
                kept.append((source, provider))
        return kept

    async def start(self) -> None:
        if self.public_url is None:
            if self._kept():
                log.warning(
                    "webhooks.ensure is on but listener.public_url is not set: "
                    "endpoints are not checked"
                )
            return
        self._spawn(None)

    async def stop(self) -> None:
        tasks, self._tasks = list(self._tasks), set()
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def on_degraded(self, notice: Notice) -> None:
        """The `webhooks_degraded` notice handler: check that provider's endpoints now."""
        if self.public_url is not None:
            await self.ensure(notice.provider)

    def _spawn(self, provider_name: str | None) -> None:
        task = asyncio.create_task(self.ensure(provider_name), name="listener-webhooks-ensure")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def ensure(self, provider_name: str | None = None) -> None:
        """Ensure the endpoints of the kept sources (of one provider, if named)."""
        assert self.public_url is not None
        async with self._lock:  # a notice during the start check waits for it
            for source, provider in self._kept(provider_name):
                endpoint_id = endpoint_id_for(source.name, self.settings.endpoint_prefix)
                try:
                    ensured = await ensure_endpoint(
                        provider,
                        endpoint_id=endpoint_id,
                        url=endpoint_url_for(self.public_url, source.name),
                        description=self.settings.description,
                        fetch_secret=True,
                    )
                except ProviderError as exc:
                    log.warning("checking webhook endpoint %s failed: %s", endpoint_id, exc)
                    continue
                self.results[source.name] = ensured
                self._report(source, ensured)

    def _report(self, source: Source, ensured: Ensured) -> None:
        check = ensured.check
        if not ensured.changed:
            log.info("webhook endpoint %s of source %s is right", check.endpoint_id, source.name)
            return
        if ensured.secret is not None:
            # Verify the new endpoint's deliveries now; the old keys stay for deliveries
            # still on their way.
            source.scheme.add_secret(ensured.secret)  # type: ignore[union-attr]
        what = "created" if check.action == "create" else "replaced"
        log.warning(
            "webhook endpoint %s of source %s %s (%s); it signs with a new secret, which "
            "this process now accepts: store it in the source's secrets before the next "
            "start (`listener webhooks secret --endpoint-id %s`)",
            check.endpoint_id,
            source.name,
            what,
            "; ".join(check.reasons),
            check.endpoint_id,
        )
