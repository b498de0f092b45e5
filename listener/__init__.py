"""listener: learn when remote runs finish by signed webhook, and never miss one."""

from __future__ import annotations

from listener._version import __version__
from listener.app import Listener
from listener.errors import ListenerError
from listener.events import Origin, RunEvent, RunStatus, Transition
from listener.registry import Handlers, PluginError
from listener.sources import Source, callback_token, callback_url

__all__ = [
    "Handlers",
    "Listener",
    "ListenerError",
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
