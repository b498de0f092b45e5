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

from collections.abc import Mapping
from typing import Any

from handlers._settings import Settings
from listener.errors import HandlerFailed
from listener.events import RunEvent
from listener.providers.native import build_payload
from listener.redaction import bare_url
from listener.registry import Handlers
from listener.sending import WebhookSender, compact_json
from listener.signatures import StandardWebhooks

__all__ = ["ForwardError", "configure", "forward", "handlers"]

handlers = Handlers()
settings = Settings("forward")


class ForwardError(HandlerFailed):
    """The target answered something other than 2xx."""


def configure(values: Mapping[str, Any]) -> None:
    settings.configure(values)


@handlers.on_any
async def forward(event: RunEvent) -> None:
    url = settings.require("url")
    scheme = StandardWebhooks([settings.require("secret")])
    # One attempt: a failure raises, and the dispatcher's retries and dead letters take over.
    async with WebhookSender(scheme, timeout=settings.number("timeout", 10.0)) as sender:
        response = await sender.post(url, compact_json(build_payload(event)), msg_id=event.key)
    if not response.is_success:
        # Credentials in the URL must not end up in error messages and logs.
        raise ForwardError(f"{bare_url(url)} answered {response.status_code}")
