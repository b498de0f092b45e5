"""listener: learn when remote runs finish by signed webhook, and never miss one."""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from listener._version import __version__

if TYPE_CHECKING:
    from listener.app import Listener
    from listener.dispatch import DispatchSettings
    from listener.errors import ListenerError
    from listener.events import Origin, RunEvent, RunStatus, Transition
    from listener.notices import Notice, NoticeSettings
    from listener.poller import PollSchedule, PollSettings
    from listener.receiver import ReceiverSettings
    from listener.registry import Handlers, PluginError
    from listener.sources import Source, callback_token, callback_url

__all__ = [
    "DispatchSettings",
    "Handlers",
    "Listener",
    "ListenerError",
    "Notice",
    "NoticeSettings",
    "Origin",
    "PluginError",
    "PollSchedule",
    "PollSettings",
    "ReceiverSettings",
    "RunEvent",
    "RunStatus",
    "Source",
    "Transition",
    "__version__",
    "callback_token",
    "callback_url",
]

# Imported on first use, so code that needs one small module (a flow's exit hook, in a
# process of its own per run end) does not pay for the service's whole import.
_HOMES = {
    "DispatchSettings": "listener.dispatch",
    "Handlers": "listener.registry",
    "Listener": "listener.app",
    "ListenerError": "listener.errors",
    "Notice": "listener.notices",
    "NoticeSettings": "listener.notices",
    "Origin": "listener.events",
    "PluginError": "listener.registry",
    "PollSchedule": "listener.poller",
    "PollSettings": "listener.poller",
    "ReceiverSettings": "listener.receiver",
    "RunEvent": "listener.events",
    "RunStatus": "listener.events",
    "Source": "listener.sources",
    "Transition": "listener.events",
    "callback_token": "listener.sources",
    "callback_url": "listener.sources",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'listener' has no attribute {name!r}")
    value = getattr(import_module(home), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
