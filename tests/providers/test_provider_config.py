"""Building providers from configuration tables, and the parser registry."""

from __future__ import annotations

import pytest

from listener import providers
from listener.events import RunStatus
from listener.providers import parser_for, provider_from_config, register_parser
from listener.providers.local import LocalProvider
from listener.providers.nextmv import NextmvProvider
from listener.providers.workflow import WorkflowProvider
from listener.signatures import StandardWebhooks, generate_hmac_secret


async def test_each_kind() -> None:
    nextmv = provider_from_config("nextmv", {"api_key": "k", "instance_id": "prod"})
    assert isinstance(nextmv, NextmvProvider)
    assert nextmv.instance_id == "prod"
    workflow = provider_from_config(
        "engine", {"kind": "workflow", "api_key": "k", "base_url": "https://wf.example"}
    )
    assert isinstance(workflow, WorkflowProvider)
    signer = StandardWebhooks([generate_hmac_secret()])
    local = provider_from_config(
        "flows", {"kind": "local", "targets": {"a": ["true"]}, "signer": signer}
    )
    assert isinstance(local, LocalProvider)
    assert local.name == "flows"
    for provider in (nextmv, workflow, local):
        await provider.aclose()


@pytest.mark.parametrize("kind", ["noxus", "workflow"])
async def test_both_engine_kinds_take_how_long_a_quiet_stream_may_last(kind: str) -> None:
    table = {"kind": kind, "api_key": "k", "base_url": "https://wf.example"}
    provider = provider_from_config("engine", {**table, "stream_idle": 5.0})
    try:
        assert getattr(provider, "stream_idle", None) == 5.0
    finally:
        await provider.aclose()
    with pytest.raises(ValueError, match="stream_idle must be positive"):
        provider_from_config("engine", {**table, "stream_idle": 0})


def test_unknown_kind_and_settings() -> None:
    with pytest.raises(ValueError, match="unknown provider kind"):
        provider_from_config("carrier", {})
    with pytest.raises(TypeError):
        provider_from_config("nextmv", {"api_key": "k", "colour": "blue"})


def test_parsers_by_name() -> None:
    nextmv = parser_for("nextmv")({"data": {"run_id": "r", "status_v2": "failed"}}, delivery_id="d")
    assert (nextmv.provider, nextmv.status) == ("nextmv", RunStatus.FAILED)
    workflow = parser_for("workflow")({"id": "r", "status": "completed"}, delivery_id="d")
    assert (workflow.provider, workflow.status) == ("workflow", RunStatus.SUCCEEDED)
    local = parser_for("local")({"data": {"run_id": "r", "status": "canceled"}}, delivery_id="d")
    assert (local.provider, local.status) == ("local", RunStatus.CANCELED)
    with pytest.raises(ValueError, match=r"known: .*nextmv.*workflow"):
        parser_for("carrier-pigeon")


def test_register_parser(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(providers, "_CONFIGURED", dict(providers._CONFIGURED))
    register_parser("mirror", lambda: parser_for("workflow"))
    event = parser_for("mirror")({"id": "r", "status": "queued"}, delivery_id="d")
    assert event.status is RunStatus.QUEUED
