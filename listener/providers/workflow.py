"""The kind `workflow`: the Noxus engine under the name configurations used before `noxus`.

A `[providers.<name>]` table of kind `workflow`, and a source reading `workflow` payloads,
keep working as they did: the provider is a `NoxusProvider` that calls itself `workflow`
(so runs, sources and handler filters keep that name) and still needs its ``base_url``.
"""

from __future__ import annotations

import random
from typing import Any, Final

import httpx

from listener.events import RunEvent, RunStatus
from listener.providers.kinds import ProviderKind
from listener.providers.noxus import STATUS_WORDS, NoxusProvider, read_callback, status_from_noxus
from listener.sending import Sleep

__all__ = ["KIND", "STATUS_WORDS", "WorkflowProvider", "parse_event", "status_from_workflow"]

# Our words the engine spells differently, for the sample callback `send-test` sends.
_ENGINE_WORDS: Final = {"succeeded": "completed", "canceled": "stopped"}


def status_from_workflow(word: object) -> RunStatus:
    """Map an engine run status word (`completed`, `stopped`, ...) for the `workflow` kind."""
    return status_from_noxus(word, platform="workflow")


class WorkflowProvider(NoxusProvider):
    """A `NoxusProvider` named `workflow`; ``base_url`` is required, as it always was."""

    name = "workflow"

    def __init__(
        self,
        api_key: str,
        base_url: str,
        *,
        timeout: float = 30.0,
        max_attempts: int = 5,
        backoff_base: float = 1.0,
        backoff_cap: float = 60.0,
        retry_after_cap: float = 60.0,
        stream_idle: float = 300.0,
        sleep: Sleep | None = None,
        rng: random.Random | None = None,
        http_transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        super().__init__(
            api_key,
            base_url=base_url,
            timeout=timeout,
            max_attempts=max_attempts,
            backoff_base=backoff_base,
            backoff_cap=backoff_cap,
            retry_after_cap=retry_after_cap,
            stream_idle=stream_idle,
            sleep=sleep,
            rng=rng,
            http_transport=http_transport,
        )


def parse_event(payload: Any, *, delivery_id: str) -> RunEvent:
    """An engine callback body as a `RunEvent` of provider `workflow`."""
    return read_callback(payload, delivery_id=delivery_id, provider="workflow")


def _sample_payload(run_id: str, application: str, status: RunStatus) -> dict[str, Any]:
    word = _ENGINE_WORDS.get(status.value, status.value)
    return {"run_id": run_id, "workflow_id": application, "status": word}


KIND: Final = ProviderKind(
    name="workflow",
    factory=WorkflowProvider,
    parse_event=parse_event,
    status_words=STATUS_WORDS,
    sample_payload=_sample_payload,
    streams=True,
)
