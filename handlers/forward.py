"""Forward each run transition to another service as a Standard Webhooks delivery.

The body is the listener's native payload (`listener.providers.native.build_payload`),
signed with `StandardWebhooks`; the `webhook-id` is the transition's `event.key`, so the
receiving end can deduplicate retries. Any answer but 2xx raises, and the dispatcher
retries with backoff.

Settings (`configure({...})` or environment):

- `url` / `LISTENER_HANDLER_FORWARD_URL`: where to POST (required);
- `secret` / `LISTENER_HANDLER_FORWARD_SECRET`: a `whsec_` or `whsk_` secret (required);
- `timeout` / `LISTENER_HANDLER_FORWARD_TIMEOUT`: seconds per request, default 10.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import httpx

from handlers._settings import Settings
from listener.events import RunEvent
from listener.providers.native import build_payload
from listener.registry import Handlers
from listener.signatures import StandardWebhooks

__all__ = ["ForwardError", "configure", "forward", "handlers"]

handlers = Handlers()
settings = Settings("forward")


class ForwardError(RuntimeError):
    """The target answered something other than 2xx."""


def configure(values: Mapping[str, Any]) -> None:
    settings.configure(values)


def _shown(url: httpx.URL) -> str:
    # Credentials in the URL must not end up in error messages and logs.
    return str(url.copy_with(username=None, password=None, query=None))


@handlers.on_any
async def forward(event: RunEvent) -> None:
    url = httpx.URL(settings.require("url"))
    scheme = StandardWebhooks([settings.require("secret")])
    body = json.dumps(build_payload(event), separators=(",", ":")).encode()
    headers = scheme.sign(body, msg_id=event.key)
    headers["content-type"] = "application/json"
    async with httpx.AsyncClient(timeout=settings.number("timeout", 10.0)) as client:
        response = await client.post(url, content=body, headers=headers)
    if not response.is_success:
        raise ForwardError(f"{_shown(url)} answered {response.status_code}")
