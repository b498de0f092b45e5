"""The shared HTTP layer: backoff, Retry-After, idempotency-aware retries."""

from __future__ import annotations

from email.utils import formatdate

import pytest
from helpers import Script, Sleeps

from listener.providers._transport import Transport, parse_retry_after
from listener.providers.base import ProviderError
from listener.testing import LoopbackServer


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


def test_retry_after_parsing() -> None:
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after(" 0 ") == 0.0
    now = 1_700_000_000.0
    assert parse_retry_after(formatdate(now + 30, usegmt=True), now=now) == 30.0
    assert parse_retry_after(formatdate(now - 30, usegmt=True), now=now) == 0.0
    for bad in (None, "", "soon", "-5", "1.5", "1e3", "٣"):
        assert parse_retry_after(bad) is None


def test_configuration_is_checked() -> None:
    with pytest.raises(ValueError, match="base_url"):
        Transport("api.example.com")
    with pytest.raises(ValueError, match="max_attempts"):
        Transport("https://api.example.com", max_attempts=0)


async def test_auth_headers_go_only_to_api_calls(sleeps: Sleeps) -> None:
    script = Script()
    async with LoopbackServer(script.app) as server:
        transport = Transport(
            server.base_url + "/api/",
            auth_headers={"Authorization": "Bearer k-123"},
            headers={"User-Agent": "ua"},
            sleep=sleeps,
        )
        answer = await transport.request_json("GET", "v1/things", idempotent=True)
        await transport.request(
            "PUT", server.base_url + "/bucket/x", content=b"d", auth=False, idempotent=True
        )
        await transport.aclose()
    assert answer == {"ok": True, "path": "/api/v1/things"}
    (_, _, api_headers, _), (_, _, storage_headers, body) = script.calls
    assert api_headers["authorization"] == "Bearer k-123"
    assert api_headers["user-agent"] == "ua"
    assert "authorization" not in storage_headers
    assert body == b"d"


async def test_idempotent_calls_retry_5xx_and_429(sleeps: Sleeps) -> None:
    script = Script(500, 502, 503, 504, 429)
    async with LoopbackServer(script.app) as server:
        transport = Transport(server.base_url, max_attempts=6, sleep=sleeps)
        await transport.request("PUT", "x", content=b"1", idempotent=True)
        await transport.aclose()
    assert len(script.calls) == 6
    assert len(sleeps.delays) == 5


async def test_client_errors_are_not_retried(sleeps: Sleeps) -> None:
    script = Script(400, 404)
    async with LoopbackServer(script.app) as server:
        transport = Transport(server.base_url, sleep=sleeps)
        with pytest.raises(ProviderError) as caught:
            await transport.request("GET", "x", idempotent=True)
        assert caught.value.status_code == 400
        assert "scripted" in str(caught.value)
        await transport.aclose()
    assert len(script.calls) == 1
    assert sleeps.delays == []


async def test_non_idempotent_calls_are_not_retried_on_5xx(sleeps: Sleeps) -> None:
    script = Script(503)
    async with LoopbackServer(script.app) as server:
        transport = Transport(server.base_url, sleep=sleeps)
        with pytest.raises(ProviderError) as caught:
            await transport.request("POST", "runs", json_body={"a": 1}, idempotent=False)
        await transport.aclose()
    assert caught.value.status_code == 503
    assert len(script.calls) == 1


async def test_http_date_retry_after(sleeps: Sleeps) -> None:
    script = Script(503, retry_after=formatdate(usegmt=True))
    async with LoopbackServer(script.app) as server:
        transport = Transport(server.base_url, sleep=sleeps, retry_after_cap=10)
        await transport.request("GET", "x", idempotent=True)
        await transport.aclose()
    assert len(sleeps.delays) == 1
    assert 0.0 <= sleeps.delays[0] <= 10.0


async def test_an_answer_that_is_not_json(sleeps: Sleeps) -> None:
    script = Script()
    async with LoopbackServer(script.app) as server:
        transport = Transport(server.base_url, sleep=sleeps)
        with pytest.raises(ProviderError, match="not JSON") as caught:
            await transport.request_json("GET", "text", idempotent=True)
        await transport.aclose()
    assert caught.value.status_code == 200
