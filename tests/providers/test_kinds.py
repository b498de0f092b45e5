"""Provider kinds: each platform's declaration, the registry, and kinds from other packages."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from listener.config import build_listener, build_provider, load_config
from listener.errors import ConfigError
from listener.events import RunStatus, UnknownStatus
from listener.providers import parser_for, provider_from_config
from listener.providers.flow_runner import status_from_flow_runner
from listener.providers.http import HttpProvider
from listener.providers.kinds import (
    ProviderKind,
    provider_kind,
    provider_kinds,
    reload_provider_kinds,
    status_from_platform,
)
from listener.providers.nextmv import NextmvProvider, status_from_nextmv
from listener.providers.workflow import status_from_workflow
from listener.testing import LoopbackServer

S = RunStatus
PACKAGE = Path(__file__).parent / "kind_package"


@pytest.mark.parametrize(
    ("word", "status"),
    [
        ("none", S.QUEUED),
        ("queued", S.QUEUED),
        ("running", S.RUNNING),
        ("succeeded", S.SUCCEEDED),
        ("failed", S.FAILED),
        ("canceled", S.CANCELED),
        ("Succeeded", S.SUCCEEDED),
    ],
)
def test_nextmv_words(word: str, status: RunStatus) -> None:
    assert status_from_nextmv(word) is status


@pytest.mark.parametrize(
    ("word", "status"),
    [
        ("queued", S.QUEUED),
        ("running", S.RUNNING),
        ("awaiting_human_feedback", S.RUNNING),
        ("completed", S.SUCCEEDED),
        ("failed", S.FAILED),
        ("stopped", S.CANCELED),
        ("cancelled", S.CANCELED),
    ],
)
def test_workflow_words(word: str, status: RunStatus) -> None:
    assert status_from_workflow(word) is status


@pytest.mark.parametrize(
    ("word", "status"),
    [
        ("running", S.RUNNING),
        ("successful", S.SUCCEEDED),
        ("failed", S.FAILED),
        ("timeout", S.FAILED),
    ],
)
def test_flow_runner_words(word: str, status: RunStatus) -> None:
    assert status_from_flow_runner(word) is status


@pytest.mark.parametrize("word", ["completed", "", "SUCCESS", None, 3, ["succeeded"]])
def test_unknown_nextmv_word_names_word_and_platform(word: object) -> None:
    with pytest.raises(UnknownStatus) as info:
        status_from_nextmv(word)
    assert "nextmv" in str(info.value)
    assert repr(word) in str(info.value)
    assert info.value.platform == "nextmv"
    assert info.value.word == word


def test_unknown_words_for_each_platform() -> None:
    with pytest.raises(UnknownStatus, match=r"workflow.*'successful'"):
        status_from_workflow("successful")
    with pytest.raises(UnknownStatus, match=r"flow-runner.*'completed'"):
        status_from_flow_runner("completed")


def test_status_from_platform() -> None:
    assert status_from_platform("nextmv", "none") is S.QUEUED
    assert status_from_platform("workflow", "stopped") is S.CANCELED
    assert status_from_platform("listener", "expired") is S.EXPIRED
    with pytest.raises(UnknownStatus):
        status_from_platform("listener", "none")
    with pytest.raises(ValueError, match="unknown status vocabulary 'jenkins'"):
        status_from_platform("jenkins", "ok")


# --- the registry ---------------------------------------------------------------------------


def test_built_in_kinds_are_declared_by_their_modules() -> None:
    kinds = provider_kinds()
    assert {"http", "local", "nextmv", "noxus", "workflow"} <= set(kinds)
    assert kinds["nextmv"].factory is NextmvProvider
    assert kinds["http"].factory is HttpProvider
    assert kinds["http"].parse_event is None  # each configured API reads its own bodies
    assert kinds["nextmv"].status("none") is S.QUEUED
    assert provider_kind("workflow").status("stopped") is S.CANCELED


def test_unknown_kind_names_the_known_ones() -> None:
    with pytest.raises(ValueError, match=r"unknown provider kind 'jenkins'; known: .*nextmv"):
        provider_kind("jenkins")


def test_kind_parameters_are_what_a_table_can_set() -> None:
    required, accepted = provider_kind("nextmv").parameters()
    assert required == ["api_key"]
    assert "base_url" in accepted
    # Objects a file cannot express, and the name the table itself sets, are left out.
    assert not {"sleep", "rng", "http_transport", "name"} & set(accepted)


def test_a_kind_checks_its_declaration() -> None:
    with pytest.raises(ValueError, match="needs a name"):
        ProviderKind(name="", factory=NextmvProvider)
    with pytest.raises(TypeError, match="factory is not callable"):
        ProviderKind(name="x", factory="NextmvProvider")  # type: ignore[arg-type]


def test_samples_are_read_back_by_their_own_parsers() -> None:
    for name, kind in provider_kinds().items():
        if kind.sample_payload is None or kind.parse_event is None:
            continue
        for status in (S.QUEUED, S.RUNNING, S.SUCCEEDED, S.FAILED, S.CANCELED):
            event = kind.parse_event(kind.sample_payload("r-1", "app", status), delivery_id="d")
            assert (event.run_id, event.status) == ("r-1", status), name


# --- a kind shipped by another package ------------------------------------------------------


@pytest.fixture
def acme_installed(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> Iterator[None]:
    """The test package on sys.path, as an installed distribution with entry points."""
    monkeypatch.syspath_prepend(str(PACKAGE))
    reload_provider_kinds()
    caplog.set_level(logging.WARNING, logger="listener.providers")
    yield
    reload_provider_kinds()


def test_an_installed_kind_is_found_and_bad_ones_are_skipped(
    acme_installed: None, caplog: pytest.LogCaptureFixture
) -> None:
    kinds = provider_kinds()
    assert "acme" in kinds
    assert kinds["acme"].status("done") is S.SUCCEEDED
    assert status_from_platform("acme", "dropped") is S.CANCELED
    # A package claiming a built-in name does not replace the built-in kind.
    assert kinds["nextmv"].factory is NextmvProvider
    assert {"not-a-kind", "missing", "misnamed"}.isdisjoint(kinds)
    warnings = caplog.text
    assert "'not-a-kind'" in warnings
    assert "is not a ProviderKind" in warnings
    assert "'missing'" in warnings
    assert "cannot be loaded" in warnings
    assert "'misnamed'" in warnings
    assert "calls itself 'acme'" in warnings
    assert "'nextmv'" in warnings
    assert "already defined" in warnings


def test_an_installed_kind_is_configured_like_a_built_in_one(
    acme_installed: None, tmp_path: Path
) -> None:
    path = tmp_path / "listener.toml"
    path.write_text(
        """
[sources.acme]
scheme = "standard-webhooks"
secrets = ["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"]

[providers.acme]
token = "env:ACME_TOKEN"
region = "us"
"""
    )
    config = load_config(path, env={"ACME_TOKEN": "acme-token-value"})
    provider = build_provider(config, "acme")
    assert (provider.token, provider.region) == ("acme-token-value", "us")  # type: ignore[attr-defined]
    event = parser_for("acme")({"job": "j-1", "state": "busy"}, delivery_id="d")
    assert (event.provider, event.run_id, event.status) == ("acme", "j-1", S.RUNNING)

    path.write_text('[providers.acme]\nregion = "us"\n')
    with pytest.raises(ConfigError, match=r"providers\.acme\.token: missing"):
        load_config(path, env={})
    path.write_text('[providers.acme]\ntoken = "t"\ncolour = "red"\n')
    with pytest.raises(ConfigError, match="colour"):
        load_config(path, env={})


def test_provider_from_config_builds_an_installed_kind(acme_installed: None) -> None:
    provider = provider_from_config("jobs", {"kind": "acme", "token": "t"})
    assert provider.name == "acme"


async def test_send_test_sends_an_installed_kinds_sample(acme_installed: None) -> None:
    from cli.support import invoke_async

    bodies: list[bytes] = []

    async def hook(request: Request) -> JSONResponse:
        bodies.append(await request.body())
        return JSONResponse({"ok": True})

    app = Starlette(routes=[Route("/hook", hook, methods=["POST"])])
    async with LoopbackServer(app) as server:
        result = await invoke_async(
            "send-test", f"{server.base_url}/hook", "--scheme", "none", "--provider", "acme",
            "--status", "succeeded", "--run-id", "j-9", "--application", "nightly",
        )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert json.loads(bodies[-1]) == {"job": "j-9", "queue": "nightly", "state": "done"}


async def test_a_listener_configured_with_an_installed_kind_receives_its_webhooks(
    acme_installed: None, tmp_path: Path
) -> None:
    """Config, the receiver, the status mapping and send-test, with no line of the listener
    knowing the kind."""
    from cli.support import invoke_async

    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    path = tmp_path / "listener.toml"
    path.write_text(
        f"""
[listener]
store = "sqlite:///{tmp_path}/listener.db"

[sources.acme]
scheme = "standard-webhooks"
secrets = ["{secret}"]

[providers.acme]
token = "t"

[poller]
enabled = false
"""
    )
    listener = build_listener(load_config(path, env={}))
    await listener.start()
    try:
        async with LoopbackServer(listener.asgi()) as server:
            result = await invoke_async(
                "send-test", f"{server.base_url}/hooks/acme", "--scheme", "standard-webhooks",
                "--secret", secret, "--provider", "acme", "--status", "failed", "--run-id", "j-3",
            )  # fmt: skip
        assert result.exit_code == 0, result.output
        events = (await listener.store.list_events(run_id="j-3")).items
        assert [(event.provider, event.status) for event in events] == [("acme", S.FAILED)]
    finally:
        await listener.stop()
