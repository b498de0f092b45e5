"""Forwarding to a real listener on loopback, which verifies the signature."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from helpers import Recorder, event, payload, serve, signed

from handlers import forward
from listener import DispatchSettings, Listener, Source
from listener.signatures import StandardWebhooks, generate_hmac_secret
from listener.store import CallState

SECRET = generate_hmac_secret()


@pytest.fixture(autouse=True)
def fresh_settings(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for key in ("URL", "SECRET", "TIMEOUT"):
        monkeypatch.delenv(f"LISTENER_HANDLER_FORWARD_{key}", raising=False)
    forward.configure({})
    yield
    forward.configure({})


@dataclass
class Target:
    url: str
    listener: Listener
    recorder: Recorder


@pytest.fixture
async def target(tmp_path: Path) -> AsyncIterator[Target]:
    listener = Listener(
        store_url=f"sqlite:///{tmp_path / 'target.db'}",
        sources=[Source("in", "listener", StandardWebhooks([SECRET]))],
        dispatch=DispatchSettings(sweep_interval=0.02),
    )
    recorder = Recorder()
    listener.on_any(name="received")(recorder)
    async with serve(listener.asgi()) as url:
        yield Target(url, listener, recorder)


async def test_forwards_a_verified_delivery(target: Target) -> None:
    forward.configure({"url": f"{target.url}/hooks/in", "secret": SECRET})
    sent = event("run-f", "failed", application="packing")
    await forward.forward(sent)
    received = await target.recorder.next()
    assert (received.run_id, received.status, received.application) == (
        "run-f",
        sent.status,
        "packing",
    )
    assert received.provider == "local"
    assert received.key == sent.key
    assert received.delivery_id == f"in:{sent.key}"
    # A retry carries the same id: the target answers 200 and nothing repeats.
    await forward.forward(sent)
    assert (await target.listener.store.counts()).events == 1


async def test_settings_from_the_environment(
    target: Target, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LISTENER_HANDLER_FORWARD_URL", f"{target.url}/hooks/in")
    monkeypatch.setenv("LISTENER_HANDLER_FORWARD_SECRET", SECRET)
    monkeypatch.setenv("LISTENER_HANDLER_FORWARD_TIMEOUT", "5")
    await forward.forward(event("run-env"))
    assert (await target.recorder.next()).run_id == "run-env"


async def test_a_non_2xx_answer_raises_without_credentials(target: Target) -> None:
    base = target.url.replace("http://", "http://user:hunter2@")
    forward.configure({"url": f"{base}/hooks/nowhere?token=abc", "secret": SECRET})
    with pytest.raises(forward.ForwardError, match="answered 404") as info:
        await forward.forward(event())
    assert "hunter2" not in str(info.value)
    assert "token=abc" not in str(info.value)

    forward.configure({"url": f"{target.url}/hooks/in", "secret": generate_hmac_secret()})
    with pytest.raises(forward.ForwardError, match="answered 401"):
        await forward.forward(event())


async def test_missing_settings_name_the_variable() -> None:
    with pytest.raises(RuntimeError, match="LISTENER_HANDLER_FORWARD_URL"):
        await forward.forward(event())


async def test_listener_to_listener(target: Target, tmp_path: Path) -> None:
    """One listener's dispatcher forwards what it receives to another listener."""
    inbound = StandardWebhooks([generate_hmac_secret()])
    forward.configure({"url": f"{target.url}/hooks/in", "secret": SECRET})
    relay = Listener(
        store_url=f"sqlite:///{tmp_path / 'relay.db'}",
        sources=[Source("std", "local", inbound)],
        plugins=["handlers.forward"],
        dispatch=DispatchSettings(sweep_interval=0.02),
    )
    async with serve(relay.asgi()) as url, httpx.AsyncClient(base_url=url) as client:
        body = payload("run-relay")
        answer = await client.post("/hooks/std", content=body, headers=signed(inbound, body, "r"))
        assert answer.status_code == 202
        assert (await target.recorder.next()).run_id == "run-relay"
        [call] = (await relay.store.list_calls(handler="handlers.forward.forward")).items
        assert call.state in (CallState.RUNNING, CallState.DONE)
