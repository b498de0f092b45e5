"""Metaflow's exit hook that reports a run's end to the listener, signed.

Add it to a flow (``pip install 'listener[metaflow]'`` where the flow runs)::

    from metaflow import FlowSpec, exit_hook, step

    @exit_hook(
        on_success=["listener.integrations.metaflow.notify"],
        on_error=["listener.integrations.metaflow.notify"],
    )
    class TrainFlow(FlowSpec):
        ...

When the flow ends, Metaflow calls :func:`notify` with the run; it POSTs the listener's
own payload (status ``succeeded`` or ``failed``, with the failing step's exception as
``error``) as a Standard Webhooks delivery to ``$LISTENER_WEBHOOK_URL``, signed with
``$LISTENER_WEBHOOK_SECRET``. The metaflow provider sets both on runs it starts; a flow
deployed elsewhere sets them itself (see :mod:`listener.providers.metaflow.environment`).

The hook never fails the flow and never holds it longer than ``$LISTENER_WEBHOOK_TIMEOUT``
seconds (3 by default), retries included: when the listener cannot be reached the
delivery is given up and the listener's poller learns the end through the client. The
delivery id is derived from the run and its status, so a hook that runs twice sends the
same delivery and the receiver keeps it once.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from listener.events import RunEvent, RunStatus
from listener.providers import native
from listener.providers.metaflow.environment import (
    APPLICATION_ENV,
    WEBHOOK_SECRET_ENV,
    WEBHOOK_URL_ENV,
    webhook_timeout,
)
from listener.providers.metaflow.reading import view_of
from listener.redaction import bare_url
from listener.sending import DeliveryResult, WebhookSender, compact_json
from listener.signatures import StandardWebhooks

__all__ = ["end_payload", "notify"]

_PROVIDER = "metaflow"


def notify(run: Any = None) -> None:
    """Report `run`'s end to the listener; prints one line on how it went, never raises."""
    try:
        print(f"[listener] {_notify(run, os.environ)}", flush=True)
    except Exception as exc:  # a reporting problem must never fail the flow
        print(f"[listener] the run's end was not reported ({type(exc).__name__})", flush=True)


def _notify(run: Any, env: Mapping[str, str]) -> str:
    url = env.get(WEBHOOK_URL_ENV, "")
    secret = env.get(WEBHOOK_SECRET_ENV, "")
    if not url or not secret:
        return (
            f"{WEBHOOK_URL_ENV} or {WEBHOOK_SECRET_ENV} is not set: nothing reported "
            "(the listener learns the end by polling)"
        )
    if run is None:
        return "Metaflow handed the hook no run: nothing reported"
    msg_id, payload = end_payload(run, application=env.get(APPLICATION_ENV) or None)
    budget = webhook_timeout(env)
    result = asyncio.run(_deliver(url, secret, msg_id, compact_json(payload), budget))
    what = f"{payload['data']['run_id']} {payload['data']['status']}"
    if result is not None and result.delivered:
        return f"reported {what} to {bare_url(url)} (HTTP {result.status_code})"
    return (
        f"could not report {what} to {bare_url(url)} within {budget:g} s; "
        "the listener's poller will learn it"
    )


def end_payload(run: Any, *, application: str | None = None) -> tuple[str, dict[str, Any]]:
    """The delivery id and payload that report a finished `run` (a client `Run`).

    A run that did not succeed is reported `failed`, whether a task raised (its exception
    is the ``error``) or the runtime stopped it.
    """
    view = view_of(run)
    status = RunStatus.SUCCEEDED if view.status is RunStatus.SUCCEEDED else RunStatus.FAILED
    error = view.error
    if status is RunStatus.FAILED and error is None:
        error = "the run ended before its end step succeeded"
    digest = hashlib.sha256(f"{view.pathspec}\n{status.value}".encode()).hexdigest()
    msg_id = f"msg_metaflow_{digest[:32]}"
    event = RunEvent(
        delivery_id=msg_id,
        provider=_PROVIDER,
        application=application or view.flow,
        run_id=view.pathspec,
        status=status,
        occurred_at=view.finished_at or datetime.now(UTC),
    )
    payload = native.build_payload(event)
    if error is not None:
        payload["data"]["error"] = error
    return msg_id, payload


async def _deliver(
    url: str, secret: str, msg_id: str, body: bytes, budget: float
) -> DeliveryResult | None:
    """Deliver with retries until `budget` seconds have passed; None when time ran out."""
    sender = WebhookSender(
        StandardWebhooks([secret]),
        attempts=20,
        backoff_base=0.1,
        backoff_cap=1.0,
        timeout=budget,
    )
    async with sender:
        try:
            return await asyncio.wait_for(sender.deliver(url, body, msg_id=msg_id), budget)
        except TimeoutError:
            return None
