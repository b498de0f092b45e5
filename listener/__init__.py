"""listener: learn when remote runs finish by signed webhook, and never miss one."""

from __future__ import annotations

from listener.events import Origin, RunEvent, RunStatus, Transition

__version__ = "0.1.0"

__all__ = ["Origin", "RunEvent", "RunStatus", "Transition", "__version__"]
