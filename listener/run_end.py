"""Per-run end callbacks: a function named at submission, called once when the run ends.

`submit(..., on_end="package.module:function", context={...})` keeps the function's name
and the context with the run. The store adds a call for it in the same commit as the
run's terminal transition, under the handler name `on_end:package.module:function`, and
any dispatcher on that store runs it like a handler call (timeout, retries, dead letters):
the submitting process may be long gone. The function takes the final event and the
context, `def done(event: RunEvent, context: dict) -> None` (or `async def`).

Only a function importable by name qualifies (not a lambda, a nested function or one in
`__main__`): another process must find it from the name alone.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable, Mapping
from typing import Any

from listener.events import RunEvent
from listener.registry import Handler, is_async_function
from listener.store.base import ON_END_HANDLER_PREFIX

__all__ = ["ON_END_HANDLER_PREFIX", "OnEndFunc", "handler_for", "resolve", "target_of"]

OnEndFunc = Callable[[RunEvent, dict[str, Any]], Any]

# `package.module:function` or `package.module:Class.method`.
_TARGET = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")
_resolved: dict[str, OnEndFunc] = {}


def target_of(on_end: str | OnEndFunc) -> str:
    """The name `on_end` is stored under, checked to import as the same function, so a
    typo fails at submission rather than when the run ends."""
    if isinstance(on_end, str):
        target = on_end
        if not _TARGET.fullmatch(target):
            raise ValueError(f"on_end must be 'package.module:function', not {target!r}")
        resolve(target)
        return target
    module = getattr(on_end, "__module__", None)
    qualname = getattr(on_end, "__qualname__", None)
    if not callable(on_end) or not module or not qualname:
        raise ValueError("on_end must be a function or 'package.module:function'")
    if module == "__main__" or "<" in qualname:
        raise ValueError(
            f"on_end {qualname!r} cannot be imported by name from another process; "
            "define it at the top level of an importable module"
        )
    target = f"{module}:{qualname}"
    if resolve(target) is not on_end:
        raise ValueError(f"on_end {target!r} does not import as the function given")
    return target


def resolve(target: str) -> OnEndFunc:
    """The function `target` names; raises ValueError with the reason when it is not one."""
    found = _resolved.get(target)
    if found is not None:
        return found
    module_name, _, qualname = target.partition(":")
    try:
        value: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"on_end {target!r}: cannot import {module_name!r}: {exc}") from None
    for part in qualname.split("."):
        try:
            value = getattr(value, part)
        except AttributeError:
            raise ValueError(f"on_end {target!r}: {module_name!r} has no {qualname!r}") from None
    if not callable(value):
        raise ValueError(f"on_end {target!r} is not callable")
    _resolved[target] = value
    return value  # type: ignore[no-any-return]


def handler_for(name: str, context: Mapping[str, Any]) -> Handler:
    """The handler that runs the stored call `name` (`on_end:<target>`) with `context`."""
    func = resolve(name.removeprefix(ON_END_HANDLER_PREFIX))
    given = dict(context)
    if is_async_function(func):

        async def call_async(event: RunEvent) -> Any:
            return await func(event, dict(given))

        return Handler(name, call_async)

    def call(event: RunEvent) -> Any:
        # A fresh copy per attempt: a retry sees the context as stored.
        return func(event, dict(given))

    return Handler(name, call)
