"""The environment variables that tell a flow where to report its end.

The provider sets them on every run it starts; a flow deployed elsewhere (a scheduler,
another machine) sets them itself, and its exit hook
(:func:`listener.integrations.metaflow.notify`) reports the same way.

``LISTENER_WEBHOOK_URL``
    Where the hook POSTs: the listener's ``/hooks/{source}`` URL of a Standard Webhooks
    source that reads the ``metaflow`` provider. Unset: the hook sends nothing.
``LISTENER_WEBHOOK_SECRET``
    That source's secret (``whsec_...``); the hook signs with it.
``LISTENER_APPLICATION``
    The application the run is recorded under (the flow file as submitted); unset, the
    flow's name.
``LISTENER_WEBHOOK_TIMEOUT``
    Seconds the hook may spend delivering, retries included (default 3): the flow never
    waits on an unreachable listener longer than this.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

__all__ = [
    "APPLICATION_ENV",
    "DEFAULT_WEBHOOK_TIMEOUT",
    "WEBHOOK_SECRET_ENV",
    "WEBHOOK_TIMEOUT_ENV",
    "WEBHOOK_URL_ENV",
    "run_environment",
]

WEBHOOK_URL_ENV: Final = "LISTENER_WEBHOOK_URL"
WEBHOOK_SECRET_ENV: Final = "LISTENER_WEBHOOK_SECRET"  # noqa: S105 (a variable name)
APPLICATION_ENV: Final = "LISTENER_APPLICATION"
WEBHOOK_TIMEOUT_ENV: Final = "LISTENER_WEBHOOK_TIMEOUT"
DEFAULT_WEBHOOK_TIMEOUT: Final = 3.0


def run_environment(
    *, application: str, callback_url: str | None, secret: str | None
) -> dict[str, str]:
    """The variables for one run: the hook's target only when both URL and secret exist.

    The variables are always set, empty when there is nothing to report to, so a run
    never reports with a target inherited from the listener's own environment.
    """
    reporting = callback_url is not None and secret is not None
    return {
        APPLICATION_ENV: application,
        WEBHOOK_URL_ENV: callback_url if reporting and callback_url else "",
        WEBHOOK_SECRET_ENV: secret if reporting and secret else "",
    }


def webhook_timeout(env: Mapping[str, str]) -> float:
    """The hook's delivery budget from ``env``; the default for a missing or bad value."""
    try:
        value = float(env.get(WEBHOOK_TIMEOUT_ENV, DEFAULT_WEBHOOK_TIMEOUT))
    except ValueError:
        return DEFAULT_WEBHOOK_TIMEOUT
    return value if 0 < value <= 60 else DEFAULT_WEBHOOK_TIMEOUT
