"""Platform integrations: one module per platform, and the payload parsers sources use."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from listener.events import RunEvent
from listener.providers import native
from listener.providers.base import (
    EventParser,
    PayloadNotUnderstood,
    Provider,
    ProviderError,
    RunResult,
    RunState,
    Submission,
)
from listener.providers.kinds import ProviderKind, provider_kind, provider_kinds

__all__ = [
    "EventParser",
    "PayloadNotUnderstood",
    "Provider",
    "ProviderError",
    "ProviderKind",
    "RunResult",
    "RunState",
    "Submission",
    "parser_for",
    "provider_from_config",
    "register_parser",
]


def _native(payload: Any, *, delivery_id: str) -> RunEvent:
    return native.parse_event(payload, delivery_id=delivery_id, provider="listener")


# Parsers of providers built from configuration, by the provider's name (`http` ones).
_CONFIGURED: dict[str, Callable[[], EventParser]] = {}


def parser_for(provider: str) -> EventParser:
    """The payload parser for a provider name; ValueError naming the known ones.

    A name is a configured provider's (see `register_parser`), a provider kind's
    (`listener.providers.kinds`), or `listener` for the listener's own payload.
    """
    factory = _CONFIGURED.get(provider)
    if factory is not None:
        return factory()
    if provider == "listener":
        return _native
    kinds = provider_kinds()
    kind = kinds.get(provider)
    if kind is not None and kind.parse_event is not None:
        return kind.parse_event
    readable = {name for name, kind in kinds.items() if kind.parse_event is not None}
    known = ", ".join(sorted({"listener", *readable, *_CONFIGURED}))
    raise ValueError(f"unknown provider {provider!r}; known: {known}")


def register_parser(provider: str, factory: Callable[[], EventParser]) -> None:
    """Make `parser_for(provider)` answer; for providers defined by configuration (`http`)."""
    _CONFIGURED[provider] = factory


def provider_from_config(name: str, settings: Mapping[str, Any]) -> Provider:
    """Build a provider from a configuration table.

    ``settings["kind"]`` (default: ``name``) names a provider kind (`nextmv`, `workflow`,
    `http`, `local`, or one an installed package adds); every other key is passed to that
    kind's constructor as a keyword, so the table spells the same names as the classes. A
    kind whose providers read their own payloads (`http`) has the built provider's parser
    registered under ``name``, so a receiver source can use it.
    """
    options = dict(settings)
    kind = provider_kind(str(options.pop("kind", name)))
    provider = kind.build(name, options)
    if kind.parse_event is None:
        parser = provider.parse_event
        register_parser(name, lambda: parser)
    return provider
