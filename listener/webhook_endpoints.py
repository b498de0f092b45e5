"""Is a platform account's webhook endpoint right for this listener? Pure decisions.

An account-level endpoint (Nextmv's) is right when it exists, is enabled, points at this
listener's URL and subscribes to the run status events. `check_endpoint` says what to do
with the endpoints an account lists: nothing, create one, or replace the one with our
id (the API documents no update, so a repair deletes and creates it again, which gives it
a new signing secret). It never asks for a second endpoint at our URL: one already there,
under another id, is taken as ours.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

__all__ = ["ACTIONS", "Endpoint", "EndpointCheck", "check_endpoint", "parse_endpoints"]

Action = Literal["ok", "create", "replace"]
ACTIONS: Final[tuple[Action, ...]] = ("ok", "create", "replace")


@dataclass(frozen=True, slots=True)
class Endpoint:
    """An endpoint as the account lists it. `enabled` is None when the listing says
    nothing about it (then it counts as enabled)."""

    id: str
    url: str
    event_types: tuple[str, ...]
    enabled: bool | None = None
    description: str = ""


@dataclass(frozen=True, slots=True)
class EndpointCheck:
    """What to do: `ok` (the endpoint `endpoint_id` is right), `create` a new endpoint
    `endpoint_id`, or `replace` the endpoint `endpoint_id`; `reasons` say why."""

    action: Action
    endpoint_id: str
    reasons: tuple[str, ...] = ()


def _enabled(document: Mapping[str, Any]) -> bool | None:
    # Accounts differ in how they say it; a listing that says nothing counts as enabled.
    if isinstance(document.get("enabled"), bool):
        return bool(document["enabled"])
    if isinstance(document.get("disabled"), bool):
        return not document["disabled"]
    status = document.get("status")
    if isinstance(status, str) and status:
        return status.lower() in ("enabled", "active")
    return None


def parse_endpoints(answer: Any) -> list[Endpoint]:
    """The endpoints of a listing: a JSON array, or an object holding one under `items`,
    `webhooks` or `data`. Entries without an id are left out."""
    if isinstance(answer, Mapping):
        for key in ("items", "webhooks", "data"):
            if isinstance(answer.get(key), list):
                answer = answer[key]
                break
    if not isinstance(answer, list):
        raise ValueError("the webhook listing is not a list of endpoints")
    endpoints = []
    for document in answer:
        if not isinstance(document, Mapping):
            continue
        endpoint_id = document.get("id")
        if not isinstance(endpoint_id, str) or not endpoint_id:
            continue
        url = document.get("endpoint_url", document.get("url"))
        types = document.get("event_types")
        endpoints.append(
            Endpoint(
                id=endpoint_id,
                url=url if isinstance(url, str) else "",
                event_types=tuple(t for t in types if isinstance(t, str))
                if isinstance(types, list)
                else (),
                enabled=_enabled(document),
                description=str(document.get("description") or ""),
            )
        )
    return endpoints


def _problems(endpoint: Endpoint, url: str, event_types: Sequence[str]) -> list[str]:
    problems = []
    if endpoint.url != url:
        problems.append(f"it points at {endpoint.url or 'no URL'}, not {url}")
    missing = [t for t in event_types if t not in endpoint.event_types]
    if missing:
        problems.append(f"it does not subscribe to {', '.join(missing)}")
    if endpoint.enabled is False:
        problems.append("it is disabled")
    return problems


def check_endpoint(
    endpoints: Iterable[Endpoint], *, endpoint_id: str, url: str, event_types: Sequence[str]
) -> EndpointCheck:
    """What to do so that the account has one right endpoint for `url`."""
    listed = list(endpoints)
    ours = next((e for e in listed if e.id == endpoint_id), None)
    problems = _problems(ours, url, event_types) if ours is not None else []
    if ours is not None and not problems:
        return EndpointCheck("ok", endpoint_id)
    for endpoint in listed:
        if endpoint is not ours and not _problems(endpoint, url, event_types):
            # Registered by hand or under another id: a second one would double every
            # delivery, so this one is ours.
            return EndpointCheck(
                "ok", endpoint.id, (f"endpoint {endpoint.id} already receives them",)
            )
    if ours is not None:
        return EndpointCheck("replace", endpoint_id, tuple(problems))
    return EndpointCheck("create", endpoint_id, (f"no endpoint {endpoint_id}",))
