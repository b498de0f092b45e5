"""Building the listener, its providers and sources from a `Config`."""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from listener.config.loading import handler_module
from listener.config.schema import _DAY, Config, ProviderConfig, SourceConfig
from listener.errors import ConfigError

if TYPE_CHECKING:
    from listener.app import Listener
    from listener.providers.base import Provider
    from listener.registry import Handlers
    from listener.signatures import SignatureScheme
    from listener.sources import Source


def build_provider(config: Config, name: str) -> Provider:
    """The provider of table `[providers.<name>]`; `ConfigError` when it cannot be built."""
    for provider in config.providers:
        if provider.name == name:
            return _build_provider(config, provider)
    known = ", ".join(provider.name for provider in config.providers) or "none"
    raise ConfigError(f"{config.label}: providers.{name}: not configured; configured: {known}")


def _build_provider(config: Config, provider: ProviderConfig) -> Provider:
    from listener.providers import provider_from_config

    settings = dict(provider.settings)
    settings["kind"] = provider.kind
    if isinstance(settings.get("signer"), Mapping):
        settings["signer"] = _signer(settings["signer"])
    try:
        return provider_from_config(provider.name, settings)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{config.label}: providers.{provider.name}: {exc}") from None


def _signer(table: Mapping[str, Any]) -> SignatureScheme:
    from listener.signatures import scheme_from_name

    return scheme_from_name(
        str(table.get("scheme", "standard-webhooks")),
        list(table["secrets"]),
        int(table.get("tolerance", 300)),
    )


def _build_source(config: Config, source: SourceConfig) -> Source:
    from listener.signatures import scheme_from_name
    from listener.sources import Source

    scheme = (
        None
        if source.scheme == "none"
        else scheme_from_name(source.scheme, list(source.secrets), source.tolerance)
    )
    try:
        return Source(
            name=source.name, provider=source.provider, scheme=scheme, options=source.options
        )
    except ValueError as exc:
        raise ConfigError(f"{config.label}: sources.{source.name}: {exc}") from None


def build_sources(config: Config) -> dict[str, Source]:
    """The webhook sources by name, as `serve` has them (their secrets resolved)."""
    return {source.name: _build_source(config, source) for source in config.sources}


def build_handlers(config: Config) -> Handlers:
    """The handlers the configured plugins (and entry points, when on) register, loaded
    as `serve` loads them, for commands that need the registry without a listener."""
    from listener.registry import Handlers, PluginError, load_entry_points, load_plugin

    handlers = Handlers()
    try:
        for plugin in config.plugins:
            for router in load_plugin(plugin):
                handlers.include(router)
        if config.entry_points:
            for router in load_entry_points():
                handlers.include(router)
    except PluginError as exc:
        raise ConfigError(f"{config.label}: listener.plugins: {exc}") from None
    return handlers


def configure_handlers(config: Config) -> None:
    """Hand each `[handlers.<plugin>]` table to that plugin module's `configure()`."""
    for plugin, settings in config.handlers.items():
        key = f"{config.label}: handlers.{plugin}"
        module_name = handler_module(plugin)
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise ConfigError(f"{key}: cannot import {module_name} ({exc})") from None
        configure = getattr(module, "configure", None)
        if not callable(configure):
            raise ConfigError(f"{key}: {module_name} has no configure(mapping) function")
        try:
            configure(dict(settings))
        except (ValueError, TypeError, KeyError) as exc:
            raise ConfigError(f"{key}: {module_name} rejected its settings ({exc})") from None


def build_listener(
    config: Config,
    *,
    dispatch: bool | None = None,
    poll: bool | None = None,
    retention: bool = True,
) -> Listener:
    """A `Listener` as `config` describes it (not started).

    `dispatch=False` records handler calls without running them (another process does);
    `dispatch` and `poll` override `config.dispatch.enabled` and `[poller] enabled`;
    `retention=False` leaves out the background pruning of `retention_days` (for
    short-lived commands).
    """
    from listener.app import Listener
    from listener.registry import PluginError

    providers = [_build_provider(config, provider) for provider in config.providers]
    names = [provider.name for provider in providers]
    for name in names:
        if names.count(name) > 1:
            raise ConfigError(
                f"{config.label}: providers: two tables make a provider named {name!r}; "
                "keep one per platform"
            )
    sources = [_build_source(config, source) for source in config.sources]
    configure_handlers(config)
    dispatch_settings = config.dispatch
    if dispatch is not None:
        dispatch_settings = dataclasses.replace(dispatch_settings, enabled=dispatch)
    poll_settings = config.poller
    if poll is not None:
        poll_settings = dataclasses.replace(poll_settings, enabled=poll)
    try:
        return Listener(
            store_url=config.store,
            sources=sources,
            plugins=config.plugins,
            entry_points=config.entry_points,
            providers=providers,
            callback_secret=config.callback_secret,
            public_url=config.public_url,
            dispatch=dispatch_settings,
            poll=poll_settings,
            streams=config.streams,
            receiver=config.receiver,
            health=config.health,
            retention=config.retention_days * _DAY if retention else None,
        )
    except PluginError as exc:
        raise ConfigError(f"{config.label}: listener.plugins: {exc}") from None
    except ValueError as exc:
        raise ConfigError(f"{config.label}: {exc}") from None
