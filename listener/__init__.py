"""listener: learn when remote runs finish by signed webhook, and never miss one."""

from __future__ import annotations

from listener._version import __version__
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
