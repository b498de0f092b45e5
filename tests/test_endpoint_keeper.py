"""Ensuring the account's webhook endpoint against the fake Nextmv platform on loopback,
and `serve`'s keeper repairing it at start and on a degraded notice."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from helpers import wait_for

from listener.app import Listener
from listener.dispatch import DispatchSettings
from listener.endpoint_keeper import (
    NOTICE_HANDLER_NAME,
    EndpointKeeper,
    EnsureMode,
    WebhookSettings,
    ensure_endpoint,
)
from listener.errors import ProviderError
from listener.events import Origin, RunStatus
from listener.notices import Notice
from listener.poller import PollSettings
from listener.providers.nextmv import NextmvProvider
from listener.signatures import scheme_from_name
from listener.sources import Source
from listener.testing import FakePlatform, LoopbackServer, RunPlan

URL = "https://hooks.example.com/hooks/nextmv"


@pytest.fixture
async def platform() -> AsyncIterator[FakePlatform]:
    async with FakePlatform(plan=RunPlan(), time_scale=0.001) as fake:
        yield fake


@pytest.fixture
async def provider(platform: FakePlatform) -> AsyncIterator[NextmvProvider]:
    provider = platform.nextmv_provider()
    yield provider
    await provider.aclose()


def listed(platform: FakePlatform) -> dict[str, tuple[str, bool]]:
    return {e.id: (e.url, e.enabled) for e in platform._endpoints.values()}


async def test_a_missing_endpoint_is_created_once(
    platform: FakePlatform, provider: NextmvProvider
) -> None:
    first = await ensure_endpoint(provider, endpoint_id="ep", url=URL, fetch_secret=True)
    assert (first.check.action, first.changed) == ("create", True)
    assert first.secret == platform.webhook_secret("ep")
    second = await ensure_endpoint(provider, endpoint_id="ep", url=URL, fetch_secret=True)
    assert (second.check.action, second.changed, second.secret) == ("ok", False, None)
    assert listed(platform) == {"ep": (URL, True)}


async def test_a_disabled_or_misdirected_endpoint_is_replaced(
    platform: FakePlatform, provider: NextmvProvider
) -> None:
    old_secret = platform.register_webhook("https://old.example/hooks/nextmv", endpoint_id="ep")
    moved = await ensure_endpoint(provider, endpoint_id="ep", url=URL)
    assert moved.check.action == "replace"
    assert moved.check.reasons == (f"it points at https://old.example/hooks/nextmv, not {URL}",)
    assert listed(platform) == {"ep": (URL, True)}
    assert platform.webhook_secret("ep") != old_secret

    platform.disable_webhook("ep")
    repaired = await ensure_endpoint(provider, endpoint_id="ep", url=URL)
    assert repaired.check.reasons == ("it is disabled",)
    assert listed(platform) == {"ep": (URL, True)}


async def test_an_endpoint_registered_by_hand_is_not_doubled(
    platform: FakePlatform, provider: NextmvProvider
) -> None:
    platform.register_webhook(URL, endpoint_id="by-hand")
    ensured = await ensure_endpoint(provider, endpoint_id="ep", url=URL)
    assert (ensured.check.action, ensured.check.endpoint_id, ensured.changed) == (
        "ok",
        "by-hand",
        False,
    )
    assert listed(platform) == {"by-hand": (URL, True)}


async def test_a_dry_run_changes_nothing(platform: FakePlatform, provider: NextmvProvider) -> None:
    platform.register_webhook(URL, endpoint_id="ep")
    platform.disable_webhook("ep")
    ensured = await ensure_endpoint(provider, endpoint_id="ep", url=URL, dry_run=True)
    assert (ensured.check.action, ensured.changed) == ("replace", False)
    assert listed(platform) == {"ep": (URL, False)}


class RacedProvider:
    """The real provider, with another replica registering the endpoint between this
    one's listing and its create."""

    def __init__(self, provider: NextmvProvider, platform: FakePlatform) -> None:
        self._provider = provider
        self._platform = platform

    def __getattr__(self, name: str) -> Any:
        return getattr(self._provider, name)

    async def register_webhook(self, endpoint_id: str, url: str, description: str = "") -> Any:
        if endpoint_id not in self._platform._endpoints:
            self._platform.register_webhook(url, endpoint_id=endpoint_id)
        return await self._provider.register_webhook(endpoint_id, url, description)


async def test_a_create_raced_by_another_replica_takes_its_endpoint(
    platform: FakePlatform, provider: NextmvProvider
) -> None:
    raced = RacedProvider(provider, platform)
    ensured = await ensure_endpoint(raced, endpoint_id="ep", url=URL)
    assert (ensured.check.action, ensured.changed) == ("ok", False)
    assert listed(platform) == {"ep": (URL, True)}


async def test_platform_failures_surface_as_provider_errors(
    platform: FakePlatform, provider: NextmvProvider
) -> None:
    platform.fail_next(401, route="webhooks.list")
    with pytest.raises(ProviderError) as failed:
        await ensure_endpoint(provider, endpoint_id="ep", url=URL)
    assert failed.value.status_code == 401
    assert listed(platform) == {}


def notice(provider: str = "nextmv") -> Notice:
    now = datetime.now(UTC)
    return Notice(
        kind="webhooks_degraded",
        provider=provider,
        window_seconds=120.0,
        counts={"webhook": 2, "poll": 18},
        share=0.1,
        threshold=0.5,
        episode_start=now,
        at=now,
    )


def keeping_listener(tmp_path: Path, platform: FakePlatform, ensure: EnsureMode) -> Listener:
    return Listener(
        store_url=f"sqlite:///{tmp_path / 'listener.db'}",
        # The configured secret is an old endpoint's: an endpoint made at start signs
        # with another, which the keeper adds.
        sources=[
            Source("nextmv", "nextmv", scheme_from_name("nextmv", ["an-old-endpoint-secret"]))
        ],
        providers=[platform.nextmv_provider()],
        dispatch=DispatchSettings(sweep_interval=0.05),
        poll=PollSettings(enabled=False),
        webhooks=WebhookSettings(ensure=ensure),
    )


async def test_serve_keeps_the_endpoint_right_and_verifies_its_new_secret(
    tmp_path: Path, platform: FakePlatform
) -> None:
    listener = keeping_listener(tmp_path, platform, "degraded")
    [handler] = listener.handlers.notice_handlers("webhooks_degraded", "nextmv")
    assert handler.name == NOTICE_HANDLER_NAME
    async with LoopbackServer(listener.asgi()) as server:
        listener.public_url = server.base_url
        async with listener:
            keeper = listener.endpoint_keeper
            assert isinstance(keeper, EndpointKeeper)
            await wait_for(lambda: "nextmv" in keeper.results, "the start check")
            assert keeper.results["nextmv"].check.action == "create"
            url = f"{server.base_url}/hooks/nextmv"
            assert listed(platform) == {"listener-nextmv": (url, True)}

            handle = await listener.submit("nextmv", "app", {"x": 1})
            ended = await listener.wait(handle.run_id, timeout=30)
            assert (ended.status, ended.origin) == (RunStatus.SUCCEEDED, Origin.WEBHOOK)

            platform.disable_webhook("listener-nextmv")
            await handler.func(notice())
            assert keeper.results["nextmv"].check.reasons == ("it is disabled",)
            assert listed(platform) == {"listener-nextmv": (url, True)}
            again = await listener.submit("nextmv", "app", {"x": 2})
            ended = await listener.wait(again.run_id, timeout=30)
            assert ended.origin is Origin.WEBHOOK

            # A notice about another provider checks nothing of this one.
            platform.disable_webhook("listener-nextmv")
            await handler.func(notice("other"))
            assert listed(platform) == {"listener-nextmv": (url, False)}


async def test_serve_without_a_public_url_checks_nothing(
    tmp_path: Path, platform: FakePlatform, caplog: pytest.LogCaptureFixture
) -> None:
    listener = keeping_listener(tmp_path, platform, "start")
    assert listener.handlers.notice_handlers("webhooks_degraded", "nextmv") == []
    async with listener:
        assert listener.endpoint_keeper is not None
        assert listener.endpoint_keeper.results == {}
    assert listed(platform) == {}
    assert "listener.public_url is not set" in caplog.text


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match=r"webhooks\.ensure must be one of off, start, degraded"):
        WebhookSettings(ensure="always")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="endpoint_prefix"):
        WebhookSettings(endpoint_prefix="")
