"""Handler registration: routers, decorators, filters and plugin discovery.

A `Handlers` router needs no running service, so plugin modules create one at import
time and decorate their functions with it::

    handlers = Handlers()

    @handlers.on("succeeded", provider="nextmv", application="routing")
    async def publish(event: RunEvent) -> None: ...

Every handler has a unique, stable name because the store keeps handler calls by name:
a call enqueued before a restart must find the same function after it.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.metadata
import importlib.util
import inspect
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, TypeVar, overload

from listener.errors import DuplicateHandler, PluginError
from listener.events import RunEvent, RunStatus

__all__ = [
    "ENTRY_POINT_GROUP",
    "DuplicateHandler",
    "Handler",
    "HandlerFunc",
    "Handlers",
    "NoticeHandler",
    "PluginError",
    "load_entry_points",
    "load_plugin",
]

ENTRY_POINT_GROUP = "listener.handlers"
# Modules loaded from files get names under this prefix, so they cannot shadow real ones.
FILE_MODULE_PREFIX = "listener_plugins"
# Each such module's name -> the name its handlers are known by: the file's stem, readable
# and the same wherever the file lives (`my_handlers.report`).
_FILE_MODULE_NAMES: dict[str, str] = {}

HandlerFunc = Callable[[RunEvent], Any]
F = TypeVar("F", bound=HandlerFunc)
# A notice handler takes a `listener.notices.Notice`.
NoticeFunc = Callable[[Any], Any]
N = TypeVar("N", bound=NoticeFunc)
# The notices a handler can ask for (`listener.notices.NOTICE_KINDS`, kept here so the
# registry imports nothing beyond the vocabulary).
NOTICE_KINDS = frozenset({"webhooks_degraded", "webhooks_recovered", "run_overdue"})


@dataclass(frozen=True, slots=True)
class Handler:
    """One registered function and what it subscribes to (None means any)."""

    name: str
    func: HandlerFunc
    statuses: frozenset[RunStatus] | None = None
    providers: frozenset[str] | None = None
    applications: frozenset[str] | None = None
    # Seconds before a call counts as failed; None uses the dispatcher's default.
    timeout: float | None = None
    # Names this handler was stored under before, so calls recorded then still find it.
    aliases: tuple[str, ...] = ()

    @property
    def is_async(self) -> bool:
        return is_async_function(self.func)

    def matches(self, event: RunEvent) -> bool:
        return (
            (self.statuses is None or event.status in self.statuses)
            and (self.providers is None or event.provider in self.providers)
            and (self.applications is None or event.application in self.applications)
        )


@dataclass(frozen=True, slots=True)
class NoticeHandler:
    """One function called with the listener's notices of `kinds` (for `providers`)."""

    name: str
    func: NoticeFunc
    kinds: frozenset[str]
    providers: frozenset[str] | None = None

    @property
    def is_async(self) -> bool:
        return is_async_function(self.func)

    def matches(self, kind: str, provider: str) -> bool:
        return kind in self.kinds and (self.providers is None or provider in self.providers)


def is_async_function(func: object) -> bool:
    """Whether calling `func` gives a coroutine: an `async def`, or an object whose
    `__call__` is one."""
    if inspect.iscoroutinefunction(func):
        return True
    # A callable object with an `async def __call__`.
    call = getattr(func, "__call__", None)  # noqa: B004
    return inspect.iscoroutinefunction(call)


def _names(value: str | Iterable[str] | None, what: str) -> frozenset[str] | None:
    if value is None:
        return None
    items = frozenset([value] if isinstance(value, str) else value)
    if not items or not all(isinstance(item, str) and item for item in items):
        raise ValueError(f"{what} must be a non-empty string or list of strings")
    return items


def _statuses(values: Sequence[RunStatus | str]) -> frozenset[RunStatus] | None:
    if not values:
        return None
    statuses: set[RunStatus] = set()
    for value in values:
        try:
            statuses.add(RunStatus(value))
        except ValueError:
            known = ", ".join(s.value for s in RunStatus)
            raise ValueError(f"unknown run status {value!r}; known: {known}") from None
    return frozenset(statuses)


def _module_and_qualname(func: object) -> tuple[str, str]:
    module = getattr(func, "__module__", None) or "__main__"
    qualname = getattr(func, "__qualname__", None) or type(func).__qualname__
    return module, qualname


def default_name(func: object) -> str:
    module, qualname = _module_and_qualname(func)
    return f"{_FILE_MODULE_NAMES.get(module, module)}.{qualname}"


def _earlier_names(func: object) -> tuple[str, ...]:
    # Handlers of file plugins were once named by their unique module name.
    module, qualname = _module_and_qualname(func)
    return (f"{module}.{qualname}",) if module in _FILE_MODULE_NAMES else ()


class Handlers:
    """A router of handler functions; routers can include other routers.

    Included routers are kept by reference, so handlers a module registers after
    `include` are still seen.
    """

    # Bumped by every change to any router, so flattened views can be cached safely.
    _generation = 0

    def __init__(self) -> None:
        self._own: dict[str, Handler] = {}
        self._notices: dict[str, NoticeHandler] = {}
        self._included: list[Handlers] = []
        # Every handler of this router and those it includes, in order, and by name (the
        # first of a name wins, as in `get`), as of the registry generation they were built.
        self._flat: tuple[int, list[Handler], dict[str, Handler]] | None = None

    def __repr__(self) -> str:
        return f"Handlers({len(self)} handlers)"

    # -- registration --------------------------------------------------------------------

    def add(
        self,
        func: HandlerFunc,
        *statuses: RunStatus | str,
        provider: str | Iterable[str] | None = None,
        application: str | Iterable[str] | None = None,
        name: str | None = None,
        timeout: float | None = None,
    ) -> Handler:
        """Register `func` for `statuses` (all of them when none are given)."""
        if not callable(func):
            raise TypeError(f"handler {func!r} is not callable")
        if timeout is not None and timeout <= 0:
            raise ValueError("timeout must be positive")
        handler = Handler(
            name=name or default_name(func),
            func=func,
            statuses=_statuses(statuses),
            providers=_names(provider, "provider"),
            applications=_names(application, "application"),
            timeout=timeout,
            aliases=() if name else _earlier_names(func),
        )
        self._check_free(handler.name)
        self._own[handler.name] = handler
        Handlers._generation += 1
        return handler

    def _check_free(self, name: str) -> None:
        # Run and notice handlers share one namespace, so logs name one function each.
        if self.get(name) is not None or self._notice_named(name):
            raise DuplicateHandler(
                f"a handler named {name!r} is already registered; pass name= to tell them apart"
            )

    def on(
        self,
        *statuses: RunStatus | str,
        provider: str | Iterable[str] | None = None,
        application: str | Iterable[str] | None = None,
        name: str | None = None,
        timeout: float | None = None,
    ) -> Callable[[F], F]:
        """Decorator: call the function for runs reaching any of `statuses`."""
        # Validate now, so a typo fails at import rather than at the first event.
        _statuses(statuses)

        def decorate(func: F) -> F:
            self.add(
                func,
                *statuses,
                provider=provider,
                application=application,
                name=name,
                timeout=timeout,
            )
            return func

        return decorate

    @overload
    def on_any(
        self,
        func: F,
        *,
        provider: str | Iterable[str] | None = None,
        application: str | Iterable[str] | None = None,
        name: str | None = None,
        timeout: float | None = None,
    ) -> F: ...

    @overload
    def on_any(
        self,
        func: None = None,
        *,
        provider: str | Iterable[str] | None = None,
        application: str | Iterable[str] | None = None,
        name: str | None = None,
        timeout: float | None = None,
    ) -> Callable[[F], F]: ...

    def on_any(
        self,
        func: F | None = None,
        *,
        provider: str | Iterable[str] | None = None,
        application: str | Iterable[str] | None = None,
        name: str | None = None,
        timeout: float | None = None,
    ) -> F | Callable[[F], F]:
        """Decorator for every status; usable bare (`@on_any`) or with filters."""
        decorate = self.on(provider=provider, application=application, name=name, timeout=timeout)
        if func is not None:
            return decorate(func)
        return decorate

    def on_notice(
        self,
        *kinds: str,
        provider: str | Iterable[str] | None = None,
        name: str | None = None,
    ) -> Callable[[N], N]:
        """Decorator: call the function with the listener's notices of `kinds`
        (`webhooks_degraded`, `webhooks_recovered`: a `listener.notices.Notice`;
        `run_overdue`: a `listener.overdue.OverdueNotice`)."""
        if not kinds:
            raise ValueError("on_notice needs at least one notice kind")
        unknown = sorted(set(kinds) - NOTICE_KINDS)
        if unknown:
            known = ", ".join(sorted(NOTICE_KINDS))
            raise ValueError(f"unknown notice kind {unknown[0]!r}; known: {known}")
        providers = _names(provider, "provider")

        def decorate(func: N) -> N:
            if not callable(func):
                raise TypeError(f"notice handler {func!r} is not callable")
            handler = NoticeHandler(name or default_name(func), func, frozenset(kinds), providers)
            self._check_free(handler.name)
            self._notices[handler.name] = handler
            Handlers._generation += 1
            return func

        return decorate

    def include(self, router: Handlers) -> None:
        """Route to `router`'s handlers too. Including the same router twice is a no-op."""
        if router is self or self in router._routers():
            raise ValueError("including this router would make a cycle")
        if any(existing is router for existing in self._routers()):
            return
        clash = set(self.names()) & set(router.names())
        clash |= {n for r in self._routers() for n in r._notices} & {
            n for r in router._routers() for n in r._notices
        }
        if clash:
            raise DuplicateHandler(f"handler names registered twice: {', '.join(sorted(clash))}")
        self._included.append(router)
        Handlers._generation += 1

    # -- lookup --------------------------------------------------------------------------

    def _routers(self) -> list[Handlers]:
        seen: list[Handlers] = []
        stack: list[Handlers] = [self]
        while stack:
            router = stack.pop()
            if any(router is known for known in seen):
                continue
            seen.append(router)
            stack.extend(reversed(router._included))
        return seen

    def _built(self) -> tuple[int, list[Handler], dict[str, Handler]]:
        flat = self._flat
        if flat is None or flat[0] != Handlers._generation:
            handlers = [h for router in self._routers() for h in router._own.values()]
            by_name: dict[str, Handler] = {}
            for handler in handlers:
                by_name.setdefault(handler.name, handler)
            for handler in handlers:
                for alias in handler.aliases:
                    by_name.setdefault(alias, handler)
            flat = self._flat = (Handlers._generation, handlers, by_name)
        return flat

    def _handlers(self) -> list[Handler]:
        return self._built()[1]

    def __iter__(self) -> Iterator[Handler]:
        return iter(self._handlers())

    def __len__(self) -> int:
        return sum(len(router._own) for router in self._routers())

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.get(name) is not None

    def names(self) -> list[str]:
        return [handler.name for handler in self]

    def get(self, name: str) -> Handler | None:
        # Looked up for every handler call the dispatcher runs: from the cached index.
        return self._built()[2].get(name)

    def _notice_named(self, name: str) -> bool:
        return any(name in router._notices for router in self._routers())

    def has_notice_handlers(self) -> bool:
        return any(router._notices for router in self._routers())

    def notice_handlers(self, kind: str, provider: str) -> list[NoticeHandler]:
        """The notice handlers asking for notices of `kind` about `provider`, in order."""
        return [
            handler
            for router in self._routers()
            for handler in router._notices.values()
            if handler.matches(kind, provider)
        ]

    def match(self, event: RunEvent) -> list[str]:
        """Names of the handlers subscribed to `event`, in registration order."""
        return [handler.name for handler in self._handlers() if handler.matches(event)]

    def check(self) -> None:
        """Raise `DuplicateHandler` if two routers registered the same name after inclusion."""
        seen: set[str] = set()
        for handler in self:
            if handler.name in seen:
                raise DuplicateHandler(f"a handler named {handler.name!r} is registered twice")
            seen.add(handler.name)


# -- plugin discovery --------------------------------------------------------------------


def routers_in(module: ModuleType) -> list[Handlers]:
    """Every distinct `Handlers` object a module defines at top level."""
    found: list[Handlers] = []
    for value in vars(module).values():
        if isinstance(value, Handlers) and not any(value is known for known in found):
            found.append(value)
    return found


def _import(plugin: str, module_name: str) -> ModuleType:
    try:
        return importlib.import_module(module_name)
    except Exception as exc:
        raise PluginError(plugin, f"import failed: {type(exc).__name__}: {exc}") from exc


def _load_file(plugin: str, path: Path) -> ModuleType:
    resolved = path.resolve()
    # A stable name for a stable path, so handler names survive restarts.
    digest = hashlib.sha256(str(resolved.parent).encode()).hexdigest()[:8]
    module_name = f"{FILE_MODULE_PREFIX}.{resolved.stem}_{digest}"
    loaded = sys.modules.get(module_name)
    if loaded is not None and getattr(loaded, "__file__", None) == str(resolved):
        return loaded
    spec = importlib.util.spec_from_file_location(module_name, resolved)
    if spec is None or spec.loader is None:
        raise PluginError(plugin, f"cannot load {resolved}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    _FILE_MODULE_NAMES[module_name] = resolved.stem
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        del sys.modules[module_name]
        del _FILE_MODULE_NAMES[module_name]
        raise PluginError(plugin, f"import failed: {type(exc).__name__}: {exc}") from exc
    return module


def _from_module(plugin: str, module: ModuleType) -> list[Handlers]:
    routers = routers_in(module)
    if not routers:
        raise PluginError(plugin, "defines no Handlers router")
    return routers


def load_plugin(plugin: str) -> list[Handlers]:
    """The routers a plugin spec names.

    - `package.module:attribute`: that attribute, which must be a `Handlers`;
    - `package.module`: every `Handlers` defined in the module;
    - a path to a `.py` file, or a directory: every `Handlers` in the file, or in each
      `.py` file of the directory not starting with `_` (in name order).

    Raises `PluginError` naming the plugin when anything goes wrong.
    """
    path = Path(plugin)
    if plugin.endswith(".py") or path.is_dir():
        if path.is_dir():
            files = sorted(p for p in path.glob("*.py") if not p.name.startswith("_"))
            routers: list[Handlers] = []
            for file in files:
                routers.extend(routers_in(_load_file(plugin, file)))
            if not routers:
                raise PluginError(plugin, "the directory holds no module with a Handlers router")
            return routers
        if not path.is_file():
            raise PluginError(plugin, "no such file")
        return _from_module(plugin, _load_file(plugin, path))

    module_name, colon, attribute = plugin.partition(":")
    if not module_name:
        raise PluginError(plugin, "expected module, module:attribute, a .py file or a directory")
    module = _import(plugin, module_name)
    if not colon:
        return _from_module(plugin, module)
    value: object = module
    for part in attribute.split("."):
        try:
            value = getattr(value, part)
        except AttributeError:
            raise PluginError(plugin, f"module {module_name!r} has no {attribute!r}") from None
    if not isinstance(value, Handlers):
        raise PluginError(plugin, f"{attribute!r} is a {type(value).__name__}, not Handlers")
    return [value]


def load_entry_points(group: str = ENTRY_POINT_GROUP) -> list[Handlers]:
    """Routers from installed packages' entry points in `group`.

    An entry point may name a module (every router in it) or a `module:attribute` router.
    """
    routers: list[Handlers] = []
    for entry in importlib.metadata.entry_points(group=group):
        plugin = f"{entry.name} = {entry.value}"
        try:
            value = entry.load()
        except Exception as exc:
            raise PluginError(plugin, f"import failed: {type(exc).__name__}: {exc}") from exc
        if isinstance(value, Handlers):
            routers.append(value)
        elif isinstance(value, ModuleType):
            routers.extend(_from_module(plugin, value))
        else:
            raise PluginError(plugin, f"names a {type(value).__name__}, not Handlers or a module")
    return routers
