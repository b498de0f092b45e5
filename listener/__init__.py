"""listener: learn when remote runs finish by signed webhook, and never miss one."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from listener.events import Origin, RunEvent, RunStatus, Transition

if TYPE_CHECKING:
    from listener.app import Listener
    from listener.registry import Handlers, PluginError
    from listener.sources import Source, callback_token, callback_url

__version__ = "0.1.0"

__all__ = [
    "Handlers",
    "Listener",
    "Origin",
    "PluginError",
    "RunEvent",
    "RunStatus",
    "Source",
    "Transition",
    "__version__",
    "callback_token",
    "callback_url",
]

# Loaded on first use, so `import listener.events` (or the CLI's --version) does not pull
# in Starlette, the store and the dispatcher.
_LAZY = {
    "Listener": "listener.app",
    "Handlers": "listener.registry",
    "PluginError": "listener.registry",
    "Source": "listener.sources",
    "callback_token": "listener.sources",
    "callback_url": "listener.sources",
}


def __getattr__(name: str) -> Any:
    module_name = _LAZY.get(name)
    if module_name is None:
        raise AttributeError(f"module 'listener' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module_name), name)
    globals()[name] = value
    return value
