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

__all__ = [
    "EventParser",
    "PayloadNotUnderstood",
    "Provider",
    "ProviderError",
    "RunResult",
    "RunState",
    "Submission",
    "parser_for",
    "provider_from_config",
    "register_parser",
]


def _native_as(provider: str) -> EventParser:
    def parse(payload: Any, *, delivery_id: str) -> RunEvent:
        return native.parse_event(payload, delivery_id=delivery_id, provider=provider)

    return parse


def _nextmv_parser() -> EventParser:
    # Imported on use: reading payloads needs no HTTP client module.
    from listener.providers import nextmv

    return nextmv.parse_event


def _workflow_parser() -> EventParser:
    from listener.providers import workflow

    return workflow.parse_event


# Parsers by provider name, so a receiver source needs no API client to read payloads.
_PARSERS: dict[str, Callable[[], EventParser]] = {
    "listener": lambda: _native_as("listener"),
    "local": lambda: _native_as("local"),
    "nextmv": _nextmv_parser,
    "workflow": _workflow_parser,
}


def parser_for(provider: str) -> EventParser:
    """The payload parser for a provider name; ValueError naming the known ones."""
    factory = _PARSERS.get(provider)
    if factory is None:
        known = ", ".join(sorted(_PARSERS))
        raise ValueError(f"unknown provider {provider!r}; known: {known}")
    return factory()


def register_parser(provider: str, factory: Callable[[], EventParser]) -> None:
    """Make `parser_for(provider)` answer; for providers defined by configuration (`http`)."""
    _PARSERS[provider] = factory


_KINDS = ("http", "local", "nextmv", "workflow")


def provider_from_config(name: str, settings: Mapping[str, Any]) -> Provider:
    """Build a provider from a configuration table.

    ``settings["kind"]`` (default: ``name``) is one of ``nextmv``, ``workflow``, ``http``,
    ``local``; every other key is passed to that provider's constructor as a keyword, so the
    table spells the same names as the classes. An ``http`` provider is named ``name`` and
    its payload parser is registered under that name too, so a receiver source can use it.
    """
    options = dict(settings)
    kind = str(options.pop("kind", name))
    if kind == "nextmv":
        from listener.providers.nextmv import NextmvProvider

        return NextmvProvider(**options)
    if kind == "workflow":
        from listener.providers.workflow import WorkflowProvider

        return WorkflowProvider(**options)
    if kind == "http":
        from listener.providers.http import HttpProvider

        http = HttpProvider(name, **options)
        register_parser(name, lambda: http.parser)
        return http
    if kind == "local":
        from listener.providers.local import LocalProvider

        options.setdefault("name", name)
        return LocalProvider(**options)
    raise ValueError(f"unknown provider kind {kind!r}; known: {', '.join(_KINDS)}")
