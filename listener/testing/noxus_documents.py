"""The documents the fake Noxus engine serves: workflows, its node catalog, runs, events.

Pure builders, so the engine, the provider's sample callback and the tests all read one
definition of each shape. The shapes are those the official client (`noxus-sdk`) validates:
its `WorkflowDefinition`, `NodeDefinition`, `ApiKey` and `Run` models, and the run event
stream's messages.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Final

from listener.testing.payloads import iso

__all__ = [
    "ENGINE_FINAL_STATUSES",
    "ENGINE_STATUSES",
    "NODE_CATALOG",
    "STREAM_END_STATUSES",
    "api_key_document",
    "run_document",
    "stream_message",
    "workflow_document",
]

# Every status word a run takes on the engine, and those it never leaves.
ENGINE_STATUSES: Final = frozenset(
    {"queued", "running", "awaiting_human_feedback", "completed", "failed", "stopped"}
)
ENGINE_FINAL_STATUSES: Final = frozenset({"completed", "failed", "stopped"})
# After an event with one of these the engine closes a run's event stream. The client
# itself treats only `completed` and `failed` as terminal events; a stopped run's stream
# simply ends.
STREAM_END_STATUSES: Final = ENGINE_FINAL_STATUSES


def _node_type(name: str, title: str, inputs: list[str], outputs: list[str]) -> dict[str, Any]:
    return {
        "type": name,
        "title": title,
        "description": f"{title} of a workflow",
        "category": "io",
        "integrations": [],
        "inputs": [{"name": port, "type": "input"} for port in inputs],
        "outputs": [{"name": port, "type": "output"} for port in outputs],
        "config": {},
        "is_available": True,
        "visible": True,
        "config_endpoint": None,
    }


# `GET /v1/nodes`: the node types the fake's workflows are made of.
NODE_CATALOG: Final = (
    _node_type("InputNode", "Input", [], ["output"]),
    _node_type("OutputNode", "Output", ["input"], []),
)


def workflow_document(workflow_id: str, name: str, group_id: str) -> dict[str, Any]:
    """`GET /v1/workflows/{id}`: a two-node flow, input to output."""
    return {
        "id": workflow_id,
        "group_id": group_id,
        "name": name,
        "type": "flow",
        "definition": {
            "flow_version": "v1",
            "nodes": [
                {"type": "InputNode", "id": "input", "node_config": {"label": "input"}},
                {"type": "OutputNode", "id": "output", "node_config": {}},
            ],
            "edges": [
                {
                    "from_id": {"node_id": "input", "connector_name": "output"},
                    "to_id": {"node_id": "output", "connector_name": "input"},
                }
            ],
        },
    }


def api_key_document(key_id: str) -> dict[str, Any]:
    """`GET /v1/admin/me`: the key making the call, its value masked."""
    return {
        "id": key_id,
        "name": "fake engine key",
        "tenant_admin": False,
        "value": "****",
        "permissions": ["workflow:run"],
    }


def run_document(
    *,
    run_id: str,
    workflow_id: str,
    group_id: str,
    input: dict[str, Any],
    status: str,
    progress: int,
    created_at: datetime,
    finished_at: datetime | None = None,
    output: dict[str, Any] | None = None,
    error: str | None = None,
) -> dict[str, Any]:
    """A run as the engine answers it (run create, get, stop) and posts it to a callback."""
    document: dict[str, Any] = {
        "id": run_id,
        "group_id": group_id,
        "workflow_id": workflow_id,
        "input": input,
        "node_ids": ["input", "output"],
        "status": status,
        "progress": progress,
        "progress_details": {"input": status, "output": status},
        "created_at": iso(created_at),
        "finished_at": iso(finished_at) if finished_at is not None else None,
        "output": output,
    }
    if error is not None:
        document["error"] = error
    return document


def stream_message(run_id: str, status: str, progress: int, redis_id: str) -> dict[str, Any]:
    """The JSON data of one `message` event on `GET /v1/runs/{id}/events`."""
    return {
        "type": "workflow_status",
        "data": {"run_id": run_id, "workflow_status": status, "progress": progress},
        "redisId": redis_id,
    }
