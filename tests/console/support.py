"""What the console tests share: the tokens, and a served listener with its knobs."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from listener import Listener, RunEvent, RunStatus
from listener.signatures import StandardWebhooks, generate_hmac_secret

READ_TOKEN = "read-token-0123456789abcdef"
ADMIN_TOKEN = "admin-token-0123456789abcdef"
SCHEME = StandardWebhooks([generate_hmac_secret()])


@dataclass
class Served:
    listener: Listener
    url: str
    # The handler `flaky` fails while this is set.
    failing: dict[str, bool] = field(default_factory=lambda: {"on": True})

    async def record(
        self,
        run_id: str,
        status: RunStatus,
        *,
        delivery_id: str,
        provider: str = "local",
        application: str = "routing",
        payload: dict[str, Any] | None = None,
    ) -> None:
        await self.listener.record(
            RunEvent(
                delivery_id=delivery_id,
                provider=provider,
                application=application,
                run_id=run_id,
                status=status,
                payload=payload if payload is not None else {"id": run_id},
            )
        )
