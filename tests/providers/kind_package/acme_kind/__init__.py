"""A provider kind shipped by another package: Acme's job runner, as a third party writes it.

It is installed for the tests by putting this directory (with its dist-info) on sys.path, the
way pip leaves an installed package, and found through the `listener.providers` group.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from listener.events import Origin, RunEvent, RunStatus, status_from_words
from listener.providers import PayloadNotUnderstood, ProviderKind, RunResult, RunState, Submission

STATUS_WORDS: Mapping[str, RunStatus] = {
    "waiting": RunStatus.QUEUED,
    "busy": RunStatus.RUNNING,
    "done": RunStatus.SUCCEEDED,
    "broken": RunStatus.FAILED,
    "dropped": RunStatus.CANCELED,
}
_ACME_WORDS = {status: word for word, status in STATUS_WORDS.items()}


def parse_event(payload: Any, *, delivery_id: str) -> RunEvent:
    if not isinstance(payload, Mapping) or not isinstance(payload.get("job"), str):
        raise PayloadNotUnderstood("no job in the payload")
    return RunEvent(
        delivery_id=delivery_id,
        provider="acme",
        application=str(payload.get("queue", "")),
        run_id=payload["job"],
        status=status_from_words("acme", STATUS_WORDS, payload.get("state")),
        origin=Origin.WEBHOOK,
        payload=payload,
    )


def sample_payload(run_id: str, application: str, status: RunStatus) -> dict[str, Any]:
    return {"job": run_id, "queue": application, "state": _ACME_WORDS.get(status, "broken")}


class AcmeProvider:
    """Knows its settings; the tests never reach a real Acme."""

    name = "acme"

    def __init__(self, token: str, *, region: str = "eu") -> None:
        self.token = token
        self.region = region

    def parse_event(self, payload: Any, *, delivery_id: str) -> RunEvent:
        return parse_event(payload, delivery_id=delivery_id)

    async def submit(self, submission: Submission, *, callback_url: str | None) -> str:
        raise NotImplementedError

    async def status(self, application: str, run_id: str) -> RunState:
        raise NotImplementedError

    async def result(self, application: str, run_id: str) -> RunResult:
        raise NotImplementedError

    async def cancel(self, application: str, run_id: str) -> None:
        raise NotImplementedError

    async def aclose(self) -> None:
        return None


KIND = ProviderKind(
    name="acme",
    factory=AcmeProvider,
    parse_event=parse_event,
    status_words=STATUS_WORDS,
    sample_payload=sample_payload,
)
NOT_A_KIND = "acme"
# Claims a built-in kind's name: the registry keeps the built-in one.
SHADOW = ProviderKind(name="nextmv", factory=AcmeProvider, parse_event=parse_event)
