"""Provider kinds: what each platform integration declares once, and the registry of them.

A provider module ends with one `ProviderKind`, named `KIND`. Everything that varies by
platform reads it from here: the config loader (which keys a `[providers.<name>]` table
takes, and how to build one), the receiver's payload parsers, the status mapping and
`send-test`'s sample payload. Kinds shipped by other packages are found through the
entry-point group `listener.providers`, each entry point naming a `ProviderKind`::

    [project.entry-points."listener.providers"]
    acme = "acme_listener:KIND"

An entry point's name is the kind's name. A kind whose name is already taken (a built-in
one, or an earlier package's) is skipped with a warning rather than replacing it, so
installing a package cannot silently change how an existing configuration behaves.
"""

from __future__ import annotations

import importlib
import inspect
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from types import MappingProxyType
from typing import Any, Final

from listener.events import LISTENER_WORDS, RunStatus, status_from_words
from listener.providers.base import EventParser, Provider

__all__ = [
    "ENTRY_POINT_GROUP",
    "ProviderKind",
    "SamplePayload",
    "provider_kind",
    "provider_kinds",
    "reload_provider_kinds",
    "status_from_platform",
]

ENTRY_POINT_GROUP: Final = "listener.providers"

# The modules shipped with the listener, each with a `KIND`; imported when first needed.
_BUILT_IN: Final = (
    "listener.providers.http",
    "listener.providers.local",
    "listener.providers.metaflow",
    "listener.providers.nextmv",
    "listener.providers.noxus",
    "listener.providers.workflow",
)
# Constructor parameters a file cannot express (objects) or that the table's name sets.
_NOT_SETTINGS: Final = frozenset({"self", "name", "sleep", "rng", "http_transport"})

log = logging.getLogger("listener.providers")

# (run_id, application, status) -> a completion webhook body as the platform sends it.
SamplePayload = Callable[[str, str, RunStatus], dict[str, Any]]


@dataclass(frozen=True, slots=True)
class ProviderKind:
    """One kind of platform: how to build its provider and how to read what it sends.

    `factory` is called with the keys of a `[providers.<name>]` table as keywords (plus
    `name=` when `named`). `parse_event` reads its webhook bodies; None means each built
    provider reads its own (``provider.parse_event``, as for `http`, whose body layout is
    configured). `status_words` maps the platform's status words to ours; `sample_payload`
    makes the body `send-test` sends (None: the listener's own payload). `streams` says
    whether its providers follow a run's event stream (`RunStream`), a third way to learn
    a run's end beside webhooks and polls.
    """

    name: str
    factory: Callable[..., Provider]
    parse_event: EventParser | None = None
    status_words: Mapping[str, RunStatus] = field(default_factory=lambda: LISTENER_WORDS)
    sample_payload: SamplePayload | None = None
    named: bool = False
    streams: bool = False

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("a provider kind needs a name")
        if not callable(self.factory):
            raise TypeError(f"provider kind {self.name!r}: factory is not callable")
        object.__setattr__(self, "status_words", MappingProxyType(dict(self.status_words)))

    def status(self, word: object) -> RunStatus:
        """Map one of the platform's status words; `UnknownStatus` for any other."""
        return status_from_words(self.name, self.status_words, word)

    def parameters(self) -> tuple[list[str], list[str]]:
        """The factory's keywords a configuration table can set: (required, all)."""
        required: list[str] = []
        accepted: list[str] = []
        for parameter in inspect.signature(self.factory).parameters.values():
            if parameter.name in _NOT_SETTINGS or parameter.kind in (
                inspect.Parameter.VAR_POSITIONAL,
                inspect.Parameter.VAR_KEYWORD,
            ):
                continue
            accepted.append(parameter.name)
            if parameter.default is inspect.Parameter.empty:
                required.append(parameter.name)
        return required, accepted

    def build(self, name: str, settings: Mapping[str, Any]) -> Provider:
        """The provider a configuration table called `name` describes."""
        options = dict(settings)
        if self.named:
            options["name"] = name
        return self.factory(**options)


_kinds: dict[str, ProviderKind] | None = None


def provider_kinds() -> Mapping[str, ProviderKind]:
    """Every known kind by name: the built-in ones, then those of installed packages."""
    global _kinds
    if _kinds is None:
        kinds: dict[str, ProviderKind] = {}
        for module_name in _BUILT_IN:
            kind = importlib.import_module(module_name).KIND
            kinds[kind.name] = kind
        _add_installed(kinds)
        _kinds = kinds
    return MappingProxyType(_kinds)


def _add_installed(kinds: dict[str, ProviderKind]) -> None:
    for point in entry_points(group=ENTRY_POINT_GROUP):
        try:
            kind = point.load()
        except Exception as exc:  # a broken package must not stop the listener
            log.warning("provider kind %r (%s) cannot be loaded: %s", point.name, point.value, exc)
            continue
        if not isinstance(kind, ProviderKind):
            log.warning(
                "provider kind %r (%s) is not a ProviderKind; skipped", point.name, point.value
            )
            continue
        if kind.name != point.name:
            log.warning(
                "provider kind %r (%s) calls itself %r; skipped", point.name, point.value, kind.name
            )
            continue
        if kind.name in kinds:
            log.warning(
                "provider kind %r from %s is already defined; skipped", kind.name, point.value
            )
            continue
        kinds[kind.name] = kind


def reload_provider_kinds() -> None:
    """Forget the registry, so the next lookup finds packages installed since."""
    global _kinds
    _kinds = None


def provider_kind(name: str) -> ProviderKind:
    """The kind called `name`; ValueError naming the known ones."""
    kinds = provider_kinds()
    kind = kinds.get(name)
    if kind is None:
        raise ValueError(f"unknown provider kind {name!r}; known: {', '.join(sorted(kinds))}")
    return kind


def status_from_platform(platform: str, word: object) -> RunStatus:
    """Map a status word of a provider kind's platform, or our own words for `listener`."""
    if platform == "listener":
        return status_from_words(platform, LISTENER_WORDS, word)
    kinds = provider_kinds()
    kind = kinds.get(platform)
    if kind is None:
        known = ", ".join(sorted([*kinds, "listener"]))
        raise ValueError(f"unknown status vocabulary {platform!r}; known: {known}")
    return kind.status(word)
