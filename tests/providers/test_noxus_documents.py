"""One recording of what the fake Noxus engine serves: the official client's own models
accept it, the provider reads it, and the fake still serves exactly it."""

from __future__ import annotations

from typing import Any

import pytest
from noxus_recording import record, recorded
from noxus_sdk.client import Client
from noxus_sdk.resources.admin import ApiKey
from noxus_sdk.resources.runs import Run, RunEvent
from noxus_sdk.workflows import WorkflowDefinition, parse_node_types, set_node_types

from listener.events import RunStatus
from listener.providers import parser_for
from listener.providers.base import PayloadNotUnderstood
from listener.providers.noxus import parse_event, status_from_noxus
from listener.testing.noxus_documents import ENGINE_STATUSES

DOCUMENTS = recorded()
# A client that makes no call: the models only need one to hold.
OFFLINE = Client("k", base_url="http://127.0.0.1:9", load_nodes=False, load_me=False)
ENDS = {"completed": RunStatus.SUCCEEDED, "failed": RunStatus.FAILED, "stopped": RunStatus.CANCELED}


async def test_the_fake_still_serves_the_recording() -> None:
    assert await record() == DOCUMENTS


def test_the_client_models_accept_every_document() -> None:
    set_node_types(parse_node_types(DOCUMENTS["nodes"]))
    workflow = WorkflowDefinition.model_validate({"client": OFFLINE, **DOCUMENTS["workflow"]})
    assert [node.type for node in workflow.nodes] == ["InputNode", "OutputNode"]
    assert ApiKey(client=OFFLINE, **DOCUMENTS["me"]).tenant_admin is False
    for word, document in DOCUMENTS["runs"].items():
        assert Run(client=OFFLINE, **document).status == word
    for document in DOCUMENTS["callbacks"].values():
        Run(client=OFFLINE, **document)
    events = [
        RunEvent(type=e["type"], data=e["data"], redis_id=e["redisId"]) for e in DOCUMENTS["events"]
    ]
    assert [event.is_terminal for event in events] == [False, False, False, True]


def test_the_recording_covers_every_engine_status() -> None:
    assert set(DOCUMENTS["runs"]) == ENGINE_STATUSES
    assert set(DOCUMENTS["callbacks"]) == set(ENDS)


@pytest.mark.parametrize("word", sorted(ENGINE_STATUSES))
def test_every_engine_status_maps(word: str) -> None:
    expected = ENDS.get(word, RunStatus.QUEUED if word == "queued" else RunStatus.RUNNING)
    assert status_from_noxus(DOCUMENTS["runs"][word]["status"]) is expected


@pytest.mark.parametrize("word", sorted(ENDS))
def test_each_callback_is_read(word: str) -> None:
    body = DOCUMENTS["callbacks"][word]
    event = parser_for("noxus")(body, delivery_id="d-1")
    assert (event.provider, event.run_id, event.application, event.status) == (
        "noxus",
        body["id"],
        DOCUMENTS["workflow"]["id"],
        ENDS[word],
    )
    assert event.occurred_at.isoformat() == "2026-01-02T03:04:05+00:00"
    workflow = parser_for("workflow")(body, delivery_id="d-1")
    assert (workflow.provider, workflow.status) == ("workflow", ENDS[word])


@pytest.mark.parametrize(
    "payload",
    [
        None,
        [],
        {},
        {"id": "r"},
        {**DOCUMENTS["callbacks"]["completed"], "status": "exploded"},
        {"status": "completed"},
    ],
)
def test_what_is_not_a_callback(payload: Any) -> None:
    with pytest.raises(PayloadNotUnderstood):
        parse_event(payload, delivery_id="d")
