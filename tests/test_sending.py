"""The one sender: signed deliveries, one attempt, and the retry policy over many."""

from __future__ import annotations

import pytest
from helpers import Script, Sleeps

from listener import __version__
from listener.sending import WebhookSender, compact_json, signed_delivery
from listener.signatures import GitHubSignature, StandardWebhooks, generate_hmac_secret
from listener.testing import LoopbackServer


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


def test_a_signed_delivery_is_compact_json_with_the_scheme_headers() -> None:
    scheme = StandardWebhooks([generate_hmac_secret()])
    body, headers = signed_delivery(
        scheme, {"b": "é", "a": [1, 2]}, "msg_1", timestamp=1_700_000_000
    )
    assert body == '{"b":"é","a":[1,2]}'.encode()
    assert headers["Content-Type"] == "application/json"
    assert headers["User-Agent"] == f"listener/{__version__}"
    assert headers["webhook-timestamp"] == "1700000000"
    verified = scheme.verify(body, headers, now=1_700_000_000)
    assert verified.msg_id == "msg_1"


def test_bytes_go_as_they_are_and_without_a_scheme_unsigned() -> None:
    body, headers = signed_delivery(None, b"{ }", headers={"X-Extra": "1"})
    assert body == b"{ }"
    assert set(headers) == {"Content-Type", "User-Agent", "X-Extra"}


def test_each_delivery_gets_a_fresh_message_id() -> None:
    scheme = StandardWebhooks([generate_hmac_secret()])
    first = signed_delivery(scheme, {})[1]["webhook-id"]
    second = signed_delivery(scheme, {})[1]["webhook-id"]
    assert first.startswith("msg_")
    assert second.startswith("msg_")
    assert first != second


def test_compact_json_has_no_spaces_and_keeps_unicode() -> None:
    assert compact_json({"k": ["ü", None]}) == '{"k":["ü",null]}'.encode()


def test_the_policy_is_checked() -> None:
    with pytest.raises(ValueError, match="attempts"):
        WebhookSender(StandardWebhooks([generate_hmac_secret()]), attempts=0)


async def test_one_post_returns_the_answer_whatever_its_status() -> None:
    secret = "It's a Secret to Everybody"
    script = Script(418)
    sender = WebhookSender(GitHubSignature([secret]))
    async with LoopbackServer(script.app) as server, sender:
        refused = await sender.post(server.base_url + "/hook", b"{}", msg_id="d-1")
        accepted = await sender.post(server.base_url + "/hook", b"{}", msg_id="d-2")
    assert (refused.status_code, accepted.status_code) == (418, 200)
    method, path, headers, body = script.calls[1]
    assert (method, path, body) == ("POST", "/hook", b"{}")
    assert headers["x-github-delivery"] == "d-2"
    GitHubSignature([secret]).verify(body, headers)


async def test_webhook_sender_keeps_the_message_id_on_every_retry(sleeps: Sleeps) -> None:
    scheme = StandardWebhooks([generate_hmac_secret()])
    script = Script(500, 503)
    async with LoopbackServer(script.app) as server:
        sender = WebhookSender(scheme, attempts=5, sleep=sleeps)
        attempts: list[tuple[int, int | None]] = []
        result = await sender.deliver(
            server.base_url + "/hook",
            b'{"a":1}',
            msg_id="msg_1",
            on_attempt=lambda n, status: attempts.append((n, status)),
        )
        await sender.aclose()
    assert result.delivered
    assert result.attempts == 3
    assert result.status_code == 200
    assert attempts == [(1, 500), (2, 503), (3, 200)]
    assert len(sleeps.delays) == 2
    for _, _, headers, body in script.calls:
        assert headers["webhook-id"] == "msg_1"
        assert scheme.verify(body, headers).msg_id == "msg_1"


async def test_webhook_sender_gives_up(sleeps: Sleeps) -> None:
    scheme = StandardWebhooks([generate_hmac_secret()])
    script = Script(500, 500, 500)
    async with LoopbackServer(script.app) as server:
        sender = WebhookSender(scheme, attempts=2, sleep=sleeps)
        result = await sender.deliver(server.base_url + "/hook", b"{}", msg_id="m")
        url = server.base_url
        await sender.aclose()
    assert (result.delivered, result.attempts, result.status_code) == (False, 2, 500)
    # A receiver that is gone: connection errors count as failed attempts too.
    sender = WebhookSender(scheme, attempts=2, sleep=sleeps)
    result = await sender.deliver(url + "/hook", b"{}", msg_id="m")
    await sender.aclose()
    assert (result.delivered, result.status_code, result.error) == (False, None, "ConnectError")
