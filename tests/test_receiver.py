"""The receiver contract, row by row, against a real uvicorn server and SQLite store."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from helpers import Recorder, payload, serve, serve_in_thread, signed, wait_for
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.applications import Starlette
from starlette.routing import Route

from listener import DispatchSettings, Listener, Source, callback_token
from listener.events import RunEvent, RunStatus
from listener.receiver import DEFAULT_MAX_BODY_BYTES, ReceiverSettings, delivery_id_for
from listener.registry import Handlers
from listener.signatures import (
    GitHubSignature,
    NextmvSignature,
    SignatureScheme,
    StandardWebhooks,
    Verified,
    generate_hmac_secret,
)
from listener.sources import check_token, new_nonce
from listener.store import CallState, NewRun, Store, open_store

SECRET = generate_hmac_secret()
CALLBACK_SECRET = "callback-secret-for-tests"
LIMIT = 4096


@dataclass
class Rig:
    listener: Listener
    client: httpx.AsyncClient
    recorder: Recorder
    std: StandardWebhooks
    nextmv: NextmvSignature
    github: GitHubSignature

    @property
    def store(self) -> Store:
        return self.listener.store

    async def post(
        self, source: str, body: bytes, headers: Mapping[str, str] | None = None
    ) -> httpx.Response:
        return await self.client.post(f"/hooks/{source}", content=body, headers=headers or {})

    async def deliver(
        self, msg_id: str, run_id: str = "run-1", status: str = "succeeded"
    ) -> httpx.Response:
        body = payload(run_id, status)
        return await self.post("std", body, signed(self.std, body, msg_id))

    async def stored_events(self) -> int:
        return (await self.store.counts()).events


def make_listener(
    store_url: str | None = None,
    store: Store | None = None,
    *,
    receiver: ReceiverSettings = ReceiverSettings(max_body_bytes=LIMIT),
    **kw: Any,
) -> Listener:
    return Listener(
        store_url=store_url,
        store=store,
        sources=[
            Source("std", "local", StandardWebhooks([SECRET])),
            Source("nx", "local", NextmvSignature([SECRET])),
            Source("gh", "local", GitHubSignature([SECRET])),
            Source("cb", "local"),
        ],
        callback_secret=CALLBACK_SECRET,
        dispatch=DispatchSettings(sweep_interval=0.05),
        receiver=receiver,
        **kw,
    )


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    listener = make_listener(f"sqlite:///{tmp_path / 'listener.db'}")
    recorder = Recorder()
    listener.on("succeeded", "failed", name="recorder")(recorder)
    async with serve(listener.asgi()) as url, httpx.AsyncClient(base_url=url) as client:
        yield Rig(
            listener,
            client,
            recorder,
            StandardWebhooks([SECRET]),
            NextmvSignature([SECRET]),
            GitHubSignature([SECRET]),
        )


# -- verified, new: 202 after the commit -------------------------------------------------


async def test_verified_new_delivery_is_stored_then_accepted(rig: Rig) -> None:
    response = await rig.deliver("msg-1")
    assert response.status_code == 202
    assert response.json() == {"status": "accepted", "delivery_id": "std:msg-1"}
    # The answer came after the commit: everything is readable now.
    stored = await rig.store.get_event("std:msg-1")
    assert stored is not None
    assert stored.run_id == "run-1"
    run = await rig.store.get_run("run-1")
    assert run is not None
    assert run.status.value == "succeeded"
    calls = await rig.store.list_calls(run_id="run-1")
    assert [c.handler for c in calls.items] == ["recorder"]
    delivered = await rig.recorder.next()
    assert delivered.delivery_id == "std:msg-1"


async def test_a_transition_without_subscribers_is_still_accepted(rig: Rig) -> None:
    response = await rig.deliver("msg-running", status="running")
    assert response.status_code == 202
    assert (await rig.store.list_calls(run_id="run-1")).items == []


# -- verified duplicate or known transition: 200 -----------------------------------------


async def test_duplicate_delivery_and_known_transition_answer_200(rig: Rig) -> None:
    assert (await rig.deliver("msg-1")).status_code == 202
    again = await rig.deliver("msg-1")
    assert again.status_code == 200
    assert again.json() == {"status": "duplicate"}
    other_id = await rig.deliver("msg-2")
    assert other_id.status_code == 200
    assert other_id.json() == {"status": "known"}
    await rig.recorder.next()
    await wait_for(lambda: rig.listener.dispatcher is not None, "dispatcher")
    calls = await rig.store.list_calls(run_id="run-1")
    assert len(calls.items) == 1
    await _settled(rig.store)
    assert len(rig.recorder.events) == 1


async def _settled(store: Store) -> None:
    async def idle() -> bool:
        counts = await store.counts()
        return not counts.calls_by_state.get("pending") and not counts.calls_by_state.get("running")

    await wait_for(idle, "no pending or running calls")


async def test_concurrent_duplicates_call_the_handler_once(rig: Rig) -> None:
    body = payload("run-c")
    headers = signed(rig.std, body, "msg-same")
    answers = await asyncio.gather(*(rig.post("std", body, headers) for _ in range(20)))
    codes = sorted(r.status_code for r in answers)
    assert codes == [200] * 19 + [202]
    # Different delivery ids for one transition: still one handler call.
    bodies = [(payload("run-d"), f"msg-d-{n}") for n in range(20)]
    answers = await asyncio.gather(*(rig.post("std", b, signed(rig.std, b, m)) for b, m in bodies))
    assert sorted(r.status_code for r in answers) == [200] * 19 + [202]
    await _settled(rig.store)
    assert sorted(e.run_id for e in rig.recorder.events) == ["run-c", "run-d"]


async def test_nextmv_retries_deduplicate_on_timestamp_and_body(rig: Rig) -> None:
    body = payload("run-n")
    headers = signed(rig.nextmv, body, "ignored")
    first = await rig.post("nx", body, headers)
    assert first.status_code == 202
    delivery_id = first.json()["delivery_id"]
    assert delivery_id.startswith("nx:t")
    assert (await rig.post("nx", body, headers)).json() == {"status": "duplicate"}


async def test_github_deliveries_are_keyed_by_their_signed_body(rig: Rig) -> None:
    body = payload("run-g")
    response = await rig.post("gh", body, signed(rig.github, body, "guid-1"))
    assert response.status_code == 202
    # The signature does not cover X-GitHub-Delivery: the signed body is the key.
    assert response.json()["delivery_id"].startswith("gh:b:")
    replayed = await rig.post("gh", body, signed(rig.github, body, "guid-2-fresh"))
    assert replayed.json() == {"status": "duplicate"}
    assert await rig.stored_events() == 1


def test_delivery_ids() -> None:
    assert delivery_id_for("s", Verified("m", 5), b"x") == "s:m"
    long_id = delivery_id_for("s", Verified("m" * 500, None), b"x")
    assert long_id.startswith("s:sha256:")
    assert len(long_id) < 100
    assert delivery_id_for("s", Verified(None, 7), b"x").startswith("s:t7:")
    assert delivery_id_for("s", Verified(None, None), b"x").startswith("s:b:")
    assert delivery_id_for("s", Verified(None, 7), b"x") != delivery_id_for(
        "s", Verified(None, 7), b"y"
    )


# -- verified but not understood: 202, kept as unroutable ---------------------------------


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"{not json", "not JSON"),
        (b'{"data": {"status": "succeeded"}}', "no run_id"),
        (b'{"data": {"run_id": "r", "status": "exploded"}}', "unknown"),
        (b"[1, 2, 3]", "not a JSON object"),
        # What some store cannot hold is refused the same on every backend: kept as
        # unroutable, not answered 503 (which the sender would retry forever).
        (b'{"data": {"run_id": "r\\u0000x", "status": "failed"}}', "NUL"),
        (b'{"data": {"run_id": "\\ud800", "status": "failed"}}', "lone surrogate"),
        (b'{"data": {"run_id": "r", "status": "failed", "n": {"\\u0000": 1}}}', "NUL"),
        (b'{"data": {"run_id": "r", "status": "failed", "score": NaN}}', "NaN"),
        (b'{"data": {"run_id": "r", "status": "failed", "score": -Infinity}}', "Infinity"),
        (b'{"data": {"run_id": "r", "status": "failed", "score": 1e400}}', "too large"),
        (b'{"data": {"run_id": "r", "status": "failed"}}\xff', "not UTF-8"),
        (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
    ],
)
async def test_verified_but_not_understood_is_kept_as_unroutable(
    store_url: str, body: bytes, reason: str
) -> None:
    listener = make_listener(store_url, receiver=ReceiverSettings(max_body_bytes=1 << 20))
    scheme = StandardWebhooks([SECRET])
    async with serve(listener.asgi()) as url, httpx.AsyncClient(base_url=url) as client:
        headers = signed(scheme, body, "msg-u")
        # Credentials under vendor names a deny-list would miss, sent by a proxy in front.
        credentials = {
            "X-Webhook-Password": "pw-1",
            "X-Shopify-Hmac-Sha256": "mac-1",
            "X-Auth": "a-1",
            "X-Credentials": "c-1",
            "X-Session": "s-1",
        }
        response = await client.post("/hooks/std", content=body, headers={**headers, **credentials})
        assert response.status_code == 202
        answer = response.json()
        assert answer["status"] == "unroutable"
        assert answer["delivery_id"] == "std:msg-u"
        assert reason in answer["detail"]
        [kept] = (await listener.store.list_unroutable()).items
        assert kept.body == body
        assert kept.source == "std"
        assert reason in kept.reason
        # Credentials are not kept with the body.
        assert "webhook-signature" not in {k.lower() for k in kept.headers}
        assert "webhook-id" in {k.lower() for k in kept.headers}
        assert not set(credentials.values()) & set(kept.headers.values())
        again = await client.post("/hooks/std", content=body, headers=headers)
        assert (again.status_code, again.json()) == (200, {"status": "duplicate"})
        assert (await listener.store.counts()).events == 0


async def _deliver_through(tmp_path: Path, parser: Any) -> tuple[httpx.Response, int]:
    """One signed delivery to a source read by `parser`: the answer, and events stored."""
    listener = Listener(
        store_url=f"sqlite:///{tmp_path / 'p.db'}",
        sources=[Source("odd", "local", StandardWebhooks([SECRET]), parser=parser)],
    )
    async with serve(listener.asgi()) as url, httpx.AsyncClient(base_url=url) as client:
        body = b'{"any": "thing"}'
        headers = signed(StandardWebhooks([SECRET]), body, "m")
        response = await client.post("/hooks/odd", content=body, headers=headers)
        return response, (await listener.store.counts()).events


async def test_a_crashing_parser_is_unroutable_not_an_error(tmp_path: Path) -> None:
    def parser(payload: Any, *, delivery_id: str) -> Any:
        raise KeyError("surprise")

    response, _ = await _deliver_through(tmp_path, parser)
    assert response.status_code == 202
    assert "KeyError" in response.json()["detail"]


async def test_a_parser_giving_a_time_no_store_can_hold_is_unroutable(tmp_path: Path) -> None:
    far = datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)

    def parser(payload: Any, *, delivery_id: str) -> RunEvent:
        return RunEvent(delivery_id, "local", "", "r", RunStatus.SUCCEEDED, occurred_at=far)

    response, events = await _deliver_through(tmp_path, parser)
    assert (response.status_code, response.json()["status"]) == (202, "unroutable")
    assert "occurred_at" in response.json()["detail"]
    assert events == 0


# -- missing or malformed signature headers: 400; bad signature or time: 401 --------------


def std_headers(body: bytes, **changes: str | None) -> dict[str, str]:
    headers = signed(StandardWebhooks([SECRET]), body, "msg-x")
    for name, value in changes.items():
        key = name.replace("_", "-")
        if value is None:
            del headers[key]
        else:
            headers[key] = value
    return headers


BODY = payload("run-x")
OTHER = StandardWebhooks([generate_hmac_secret()])
NOW = int(time.time())


@pytest.mark.parametrize(
    ("source", "headers", "status", "reason"),
    [
        ("std", {}, 400, "missing_header"),
        ("std", std_headers(BODY, webhook_id=None), 400, "missing_header"),
        ("std", std_headers(BODY, webhook_timestamp=None), 400, "missing_header"),
        ("std", std_headers(BODY, webhook_timestamp="soon"), 400, "malformed_header"),
        ("std", std_headers(BODY, webhook_signature="garbage"), 400, "malformed_header"),
        ("std", OTHER.sign(BODY, msg_id="msg-x"), 401, "bad_signature"),
        ("std", std_headers(BODY, webhook_id="msg-other"), 401, "bad_signature"),
        (
            "std",
            StandardWebhooks([SECRET]).sign(BODY, msg_id="m", timestamp=NOW - 3600),
            401,
            "timestamp_too_old",
        ),
        (
            "std",
            StandardWebhooks([SECRET]).sign(BODY, msg_id="m", timestamp=NOW + 3600),
            401,
            "timestamp_too_new",
        ),
        ("nx", {}, 400, "missing_header"),
        ("nx", {"Nextmv-Signature": "v1=abc"}, 400, "malformed_header"),
        (
            "nx",
            NextmvSignature(["a-wrong-secret-of-length"]).sign(BODY, msg_id="m"),
            401,
            "bad_signature",
        ),
        ("gh", {"X-Hub-Signature-256": "md5=00"}, 400, "malformed_header"),
        (
            "gh",
            GitHubSignature(["a-wrong-secret-of-length"]).sign(BODY, msg_id="m"),
            401,
            "bad_signature",
        ),
    ],
)
async def test_rejected_signatures_store_nothing(
    rig: Rig, source: str, headers: dict[str, str], status: int, reason: str
) -> None:
    response = await rig.post(source, BODY, headers)
    assert response.status_code == status
    answer = response.json()
    assert answer["error"] == reason
    assert set(answer) == {"error", "detail"}
    for value in headers.values():
        if len(value) > 20:
            assert value not in response.text
    assert SECRET not in response.text
    assert await rig.stored_events() == 0
    assert (await rig.store.list_unroutable()).items == []
    metrics = (await rig.client.get("/metrics")).text
    assert f'listener_verification_failures_total{{reason="{reason}",source="{source}"}} 1.0' in (
        metrics
    )


async def test_a_tampered_body_is_rejected(rig: Rig) -> None:
    headers = signed(rig.std, BODY, "msg-t")
    response = await rig.post("std", BODY.replace(b"succeeded", b"failed"), headers)
    assert response.status_code == 401
    assert await rig.stored_events() == 0


# -- unknown source: 404; body over the limit: 413 ---------------------------------------


async def test_unknown_source_is_404(rig: Rig) -> None:
    response = await rig.post("nope", BODY, signed(rig.std, BODY, "m"))
    assert response.status_code == 404
    assert response.json()["error"] == "unknown_source"
    metrics = (await rig.client.get("/metrics")).text
    assert 'listener_deliveries_total{outcome="unknown_source",source="(unknown)"} 1.0' in metrics
    assert "nope" not in metrics


async def test_a_trailing_slash_is_404_not_a_redirect(rig: Rig) -> None:
    response = await rig.client.post(
        "/hooks/std/", content=BODY, headers=signed(rig.std, BODY, "m")
    )
    assert response.status_code == 404
    assert "location" not in response.headers
    assert await rig.stored_events() == 0


async def test_body_over_the_limit_is_413_by_content_length(rig: Rig) -> None:
    body = b"x" * (LIMIT + 1)
    response = await rig.post("std", body, signed(rig.std, body, "big"))
    assert response.status_code == 413
    assert response.json()["error"] == "body_too_large"
    assert await rig.stored_events() == 0


async def test_body_over_the_limit_is_413_when_streamed_without_length(rig: Rig) -> None:
    sent: list[int] = []

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(64):
            sent.append(1)
            yield b"y" * 1024

    headers = signed(rig.std, b"irrelevant", "big-stream")
    response = await rig.client.post("/hooks/std", content=chunks(), headers=headers)
    assert response.status_code == 413
    assert await rig.stored_events() == 0


async def test_body_at_the_limit_is_read(rig: Rig) -> None:
    data = json.loads(payload("run-edge"))
    data["pad"] = ""
    raw = json.dumps(data).encode()
    data["pad"] = "p" * (LIMIT - len(raw))
    body = json.dumps(data).encode()
    assert len(body) == LIMIT
    response = await rig.post("std", body, signed(rig.std, body, "edge"))
    assert response.status_code == 202


# -- store unavailable: 503 --------------------------------------------------------------


async def test_store_unavailable_is_503_with_retry_after(tmp_path: Path) -> None:
    store = await open_store(f"sqlite:///{tmp_path / 'down.db'}")
    listener = make_listener(store=store, receiver=ReceiverSettings(LIMIT, retry_after=7))
    scheme = StandardWebhooks([SECRET])
    async with serve(listener.asgi()) as url, httpx.AsyncClient(base_url=url) as client:
        assert (await client.get("/readyz")).status_code == 200
        await store.close()
        response = await client.post(
            "/hooks/std", content=BODY, headers=signed(scheme, BODY, "m-down")
        )
        assert response.status_code == 503
        assert response.headers["retry-after"] == "7"
        assert response.json()["error"] == "store_unavailable"
        bad = b"{oops"
        response = await client.post("/hooks/std", content=bad, headers=signed(scheme, bad, "u"))
        assert response.status_code == 503
        ready = await client.get("/readyz")
        assert ready.status_code == 503
        metrics = await client.get("/metrics")
        assert metrics.status_code == 200
        assert "listener_store_up 0.0" in metrics.text
    reopened = await open_store(f"sqlite:///{tmp_path / 'down.db'}")
    try:
        assert (await reopened.counts()).events == 0
    finally:
        await reopened.close()


async def test_not_started_answers_503(tmp_path: Path) -> None:
    listener = make_listener(f"sqlite:///{tmp_path / 'n.db'}")
    async with (
        serve(listener.asgi(), lifespan="off") as url,
        httpx.AsyncClient(base_url=url) as client,
    ):
        response = await client.post("/hooks/std", content=BODY, headers=std_headers(BODY))
        assert response.status_code == 503
        assert response.json()["error"] == "not_started"
        assert (await client.get("/readyz")).status_code == 503
        assert (await client.get("/healthz")).status_code == 200


async def test_an_unexpected_error_is_503_and_logs_only_its_type(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    class BrokenScheme:
        name = "broken"

        def verify(
            self, body: bytes, headers: Mapping[str, str], *, now: float | None = None
        ) -> Verified:
            raise RuntimeError("secret-looking detail")

        def sign(self, body: bytes, *, msg_id: str, timestamp: int | None = None) -> dict[str, str]:
            return {}

    listener = Listener(
        store_url=f"sqlite:///{tmp_path / 'b.db'}",
        sources=[Source("b", "local", BrokenScheme())],
    )
    caplog.set_level(logging.INFO, logger="listener")
    async with serve(listener.asgi()) as url, httpx.AsyncClient(base_url=url) as client:
        response = await client.post("/hooks/b", content=BODY)
    assert response.status_code == 503
    assert response.json()["error"] == "internal_error"
    assert "RuntimeError" in caplog.text
    assert "secret-looking detail" not in caplog.text


# -- token callbacks ---------------------------------------------------------------------


async def test_token_callbacks(rig: Rig) -> None:
    body = payload("run-t", "failed")
    token = callback_token(CALLBACK_SECRET, "nonce1")
    # The callback beat the submission's record: refused for now, retried once it is in.
    early = await rig.client.post(f"/hooks/cb/{token}", content=body)
    assert (early.status_code, early.json()["error"]) == (409, "run_not_registered")
    assert early.headers["retry-after"] == "5"
    assert await rig.stored_events() == 0
    await rig.store.register_run(NewRun("run-t", "local", "app", callback={"nonce": "nonce1"}))
    ok = await rig.client.post(f"/hooks/cb/{token}", content=body)
    assert ok.status_code == 202
    again = await rig.client.post(f"/hooks/cb/{token}", content=body)
    assert again.json() == {"status": "duplicate"}

    missing = await rig.client.post("/hooks/cb", content=body)
    assert (missing.status_code, missing.json()["error"]) == (400, "missing_token")
    garbage = await rig.client.post(f"/hooks/cb/{token}", content=b"{nope")
    assert (garbage.status_code, garbage.json()["error"]) == (400, "unverifiable_payload")
    signed_source = await rig.client.post(f"/hooks/std/{token}", content=body)
    assert signed_source.status_code == 404
    assert await rig.stored_events() == 1
    assert (await rig.recorder.next()).run_id == "run-t"


async def test_a_callback_token_moves_only_the_run_it_was_issued_for(rig: Rig) -> None:
    """A valid token replayed against other runs: one from a signed source (no nonce),
    another token source's run, and a made-up id. None of them moves."""
    token = callback_token(CALLBACK_SECRET, "nonce1")
    await rig.store.register_run(NewRun("run-a", "local", "app", callback={"nonce": "nonce1"}))
    assert (await rig.deliver("msg-s", run_id="run-signed", status="running")).status_code == 202
    await rig.store.register_run(NewRun("run-other", "local", "app", callback={"nonce": "n2"}))
    for run_id, status, reason in [
        ("run-signed", 401, "bad_token"),
        ("run-other", 401, "bad_token"),
        ("made-up", 409, "run_not_registered"),
    ]:
        response = await rig.client.post(f"/hooks/cb/{token}", content=payload(run_id))
        assert (response.status_code, response.json()["error"]) == (status, reason), run_id
    assert await rig.stored_events() == 1  # the signed delivery only
    signed = await rig.store.get_run("run-signed")
    assert signed is not None
    assert signed.status.value == "running"
    assert await rig.store.get_run("made-up") is None


@pytest.mark.parametrize(
    "token",
    [
        "nonce1",  # no MAC at all
        "nonce1.",
        "nonce1." + "0" * 32,  # a MAC, but not ours
        callback_token("another-secret", "nonce1"),
        callback_token(CALLBACK_SECRET, "nonce1")[:-1],
        "bad nonce." + "0" * 32,
    ],
)
async def test_token_callbacks_reject_urls_never_issued(rig: Rig, token: str) -> None:
    response = await rig.client.post(f"/hooks/cb/{quote(token)}", content=payload("run-x"))
    assert (response.status_code, response.json()["error"]) == (401, "bad_token")
    assert await rig.stored_events() == 0


async def test_token_callbacks_are_tied_to_their_run(rig: Rig) -> None:
    await rig.store.register_run(NewRun("run-b", "local", "app", callback={"nonce": "mine"}))
    stolen = callback_token(CALLBACK_SECRET, "someone-elses")
    response = await rig.client.post(f"/hooks/cb/{stolen}", content=payload("run-b"))
    assert (response.status_code, response.json()["error"]) == (401, "bad_token")
    own = callback_token(CALLBACK_SECRET, "mine")
    accepted = await rig.client.post(f"/hooks/cb/{own}", content=payload("run-b"))
    assert accepted.status_code == 202
    assert await rig.stored_events() == 1


def test_callback_url_and_token_shape() -> None:
    listener = make_listener("sqlite://:memory:", public_url="https://example.test/listener/")
    url = listener.callback_url("cb", "n-1")
    token = callback_token(CALLBACK_SECRET, "n-1")
    assert url == f"https://example.test/listener/hooks/cb/{token}"
    nonce, mac = token.split(".")
    assert nonce == "n-1"
    assert len(mac) == 32
    assert int(mac, 16) >= 0
    assert check_token(CALLBACK_SECRET, token) == "n-1"
    assert len(new_nonce()) == 16
    assert new_nonce() != new_nonce()
    with pytest.raises(ValueError, match="nonce"):
        callback_token(CALLBACK_SECRET, "run/1")
    with pytest.raises(ValueError, match="not a configured token source"):
        listener.callback_url("std", "n-1")
    with pytest.raises(ValueError, match="callback_secret"):
        Listener(store_url="sqlite://:memory:", sources=[Source("cb", "local")])


async def test_the_endpoint_mounted_by_hand_answers_as_the_routes_do(rig: Rig) -> None:
    """`Receiver.endpoint` mounted by hand in another app, under another path, gives the
    answers of the listener's own routes, byte for byte: there is one delivery path."""
    endpoint = rig.listener.receiver.endpoint
    hook_app = Starlette(
        routes=[
            Route("/in/{source}/{token}", endpoint, methods=["POST"]),
            Route("/in/{source}", endpoint, methods=["POST"]),
        ]
    )
    cases: list[tuple[str, bytes, dict[str, str]]] = [
        ("std", payload("run-h1"), signed(rig.std, payload("run-h1"), "hook-1")),
        ("std", BODY, OTHER.sign(BODY, msg_id="hook-bad")),
        ("std", b"{not json", signed(rig.std, b"{not json", "hook-junk")),
        ("nope", BODY, {}),
        ("std", b"x" * (LIMIT + 1), {}),
        ("cb", BODY, {}),
    ]
    async with serve(hook_app, lifespan="off") as url, httpx.AsyncClient(base_url=url) as other:
        for source, body, headers in cases:
            direct = await other.post(f"/in/{source}", content=body, headers=headers)
            # The same delivery again through the routes: a duplicate where the first was
            # stored, otherwise the same answer.
            routed = await rig.post(source, body, headers)
            if direct.status_code == 202:
                assert routed.status_code == 200
                assert routed.json() == {"status": "duplicate"}
                continue
            assert (routed.status_code, routed.content) == (direct.status_code, direct.content)
            assert routed.headers["content-type"] == direct.headers["content-type"]
            assert routed.headers.get("retry-after") == direct.headers.get("retry-after")


# -- probes, methods, logs ---------------------------------------------------------------


async def test_probes(rig: Rig) -> None:
    assert (await rig.client.get("/healthz")).json() == {"status": "ok"}
    assert (await rig.client.get("/readyz")).json() == {"status": "ready"}
    assert (await rig.client.get("/hooks/std")).status_code == 405


async def test_metrics_are_open_by_default(rig: Rig) -> None:
    response = await rig.client.get("/metrics")
    assert response.status_code == 200
    assert "listener_" in response.text


async def test_metrics_ask_for_their_token_when_one_is_set(tmp_path: Path) -> None:
    token = "metrics-token-123"
    listener = make_listener(
        f"sqlite:///{tmp_path / 'm.db'}",
        receiver=ReceiverSettings(max_body_bytes=LIMIT, metrics_token=token),
    )
    async with serve(listener.asgi()) as url, httpx.AsyncClient(base_url=url) as client:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": token},
                        {"Authorization": f"Basic {token}"}):  # fmt: skip
            refused = await client.get("/metrics", headers=headers)
            assert refused.status_code == 401
            assert refused.headers["www-authenticate"].startswith("Bearer")
            assert token not in refused.text
        allowed = await client.get("/metrics", headers={"Authorization": f"Bearer {token}"})
        assert allowed.status_code == 200
        assert "listener_" in allowed.text
        # The probes stay open: orchestrators call them without credentials.
        assert (await client.get("/readyz")).status_code == 200
    assert token not in repr(listener.receiver.settings)


async def test_one_log_line_per_delivery_without_secrets(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="listener.receiver")
    body = payload("run-log")
    good = signed(rig.std, body, "msg-log")
    bad = OTHER.sign(body, msg_id="msg-bad")
    await rig.post("std", body, good)
    await rig.post("std", body, bad)
    lines = [r for r in caplog.records if r.name == "listener.receiver"]
    assert len(lines) == 2
    assert "source=std id=std:msg-log run=run-log status=succeeded outcome=accepted" in (
        lines[0].getMessage()
    )
    assert getattr(lines[1], "outcome", None) == "rejected"
    text = caplog.text
    for secret in (SECRET, good["webhook-signature"], bad["webhook-signature"]):
        assert secret not in text
        assert secret.split(",", 1)[-1] not in text


# -- never 5xx, whatever arrives ----------------------------------------------------------

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
# What a client can send: printable ASCII without surrounding blanks.
HEADER_TEXT = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=80).map(
    str.strip
)
HEADER_NAMES = st.sampled_from(
    [
        "webhook-id",
        "webhook-timestamp",
        "webhook-signature",
        "svix-signature",
        "nextmv-signature",
        "x-hub-signature-256",
        "content-type",
        "x-other",
    ]
)


@st.composite
def bodies(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["bytes", "json", "native"]))
    if kind == "bytes":
        return draw(st.binary(max_size=LIMIT + 200))
    if kind == "json":
        return json.dumps(draw(JSON)).encode()
    data = {
        "run_id": draw(st.text(max_size=30)),
        "status": draw(st.sampled_from(["queued", "running", "succeeded", "failed", "weird"])),
        "application": draw(st.text(max_size=10) | st.integers()),
        "occurred_at": draw(st.text(max_size=30) | st.integers() | st.floats()),
    }
    return json.dumps({"type": "run.status", "data": data}).encode()


@st.composite
def requests(draw: st.DrawFn) -> tuple[str, str, bytes, dict[str, str]]:
    body = draw(bodies())
    method = draw(st.sampled_from(["POST"] * 8 + ["GET", "PUT"]))
    target = draw(st.sampled_from(["std", "nx", "gh", "cb", "cb-token", "unknown", "random"]))
    headers = draw(st.dictionaries(HEADER_NAMES, HEADER_TEXT, max_size=5))
    if target in ("std", "nx", "gh") and draw(st.booleans()):
        schemes: dict[str, SignatureScheme] = {
            "std": StandardWebhooks([SECRET]),
            "nx": NextmvSignature([SECRET]),
            "gh": GitHubSignature([SECRET]),
        }
        scheme = schemes[target]
        headers.update(scheme.sign(body, msg_id=draw(HEADER_TEXT.filter(bool))))
    if target == "cb-token":
        path = f"/hooks/cb/{draw(st.text(max_size=40))}"
    elif target == "random":
        path = "/hooks/" + "/".join(draw(st.lists(st.text(max_size=12), min_size=1, max_size=3)))
    else:
        path = f"/hooks/{target}"
    return method, quote(path, safe="/"), body, headers


def test_never_5xx_for_any_request(tmp_path: Path) -> None:
    listener = make_listener(f"sqlite:///{tmp_path / 'fuzz.db'}")
    with serve_in_thread(listener.asgi()) as url, httpx.Client(base_url=url) as client:

        @settings(
            max_examples=300,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        )
        @given(requests())
        def check(request: tuple[str, str, bytes, dict[str, str]]) -> None:
            method, path, body, headers = request
            response = client.request(method, path, content=body, headers=headers)
            assert response.status_code < 500, (response.status_code, response.text)

        check()


# -- settings ----------------------------------------------------------------------------


def test_receiver_settings_defaults() -> None:
    settings = ReceiverSettings()
    assert settings.max_body_bytes == DEFAULT_MAX_BODY_BYTES == 1024 * 1024
    assert settings.retry_after == 5
    assert ReceiverSettings(retry_after=0).retry_after == 0  # "retry at once" is allowed


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"max_body_bytes": 0}, "max_body_bytes must be at least 1, got 0"),
        ({"max_body_bytes": 1.5}, "max_body_bytes must be a whole number, got 1.5"),
        ({"max_body_bytes": True}, "max_body_bytes must be a whole number, got True"),
        ({"retry_after": -1}, "retry_after must be at least 0, got -1"),
        ({"retry_after": "5"}, "retry_after must be a whole number, got '5'"),
        (
            {"metrics_token": ""},
            "metrics_token must not be empty; leave it out to serve /metrics openly",
        ),
    ],
)
def test_receiver_settings_are_checked_when_made(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        ReceiverSettings(**changes)


def test_receiver_settings_are_frozen() -> None:
    settings = ReceiverSettings()
    with pytest.raises(AttributeError):
        settings.max_body_bytes = 1  # type: ignore[misc]


# -- log lines -----------------------------------------------------------------------------


async def test_sender_chosen_text_cannot_forge_or_flood_log_lines(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Run ids with a newline, or 200 kB long, reach three log lines: the receiver's, the
    `handlers.log` plugin's and the dispatcher's failure line. Each stays one short line."""
    from handlers import log as log_plugin

    failing = Handlers()

    @failing.on_any
    async def explode(event: RunEvent) -> None:
        raise RuntimeError(f"cannot handle {event.run_id}")

    listener = Listener(
        store_url=f"sqlite:///{tmp_path / 'logs.db'}",
        sources=[Source("std", "local", StandardWebhooks([SECRET]))],
        handlers=[log_plugin.handlers, failing],
        dispatch=DispatchSettings(sweep_interval=0.05, max_attempts=1),
        receiver=ReceiverSettings(max_body_bytes=1_000_000),
    )
    forged = "run-1\n2026-12-06 00:00:00 INFO listener: FORGED admin login"
    long_id = "r" * 200_000
    caplog.set_level(logging.INFO)
    scheme = StandardWebhooks([SECRET])
    async with serve(listener.asgi()) as url, httpx.AsyncClient(base_url=url) as client:
        for n, run_id in enumerate([forged, long_id]):
            body = payload(run_id, "failed")
            answer = await client.post(
                "/hooks/std", content=body, headers=signed(scheme, body, f"m{n}")
            )
            assert answer.status_code == 202

        async def all_dead() -> bool:
            return len((await listener.store.list_calls(state=CallState.DEAD)).items) == 2

        await wait_for(all_dead, "both failing calls dead-lettered")
    lines = [r.getMessage() for r in caplog.records]
    about_runs = [line for line in lines if "FORGED" in line or "rrrrrrrrrr" in line]
    assert {"delivery", "run", "handler"} <= {line.split(" ", 1)[0] for line in about_runs}
    for line in about_runs:
        assert "\n" not in line
        assert len(line) < 2_000
    assert not any(line.startswith("2026-12-06") for line in "\n".join(lines).splitlines()[1:])


# -- what a store cannot hold: the same answer on every backend ---------------------------


@pytest.mark.parametrize(
    "occurred_at",
    [
        "9999-12-31T23:59:59.999999+00:00",  # reads back as year 10000 from seconds
        "9999-12-31T23:59:59-23:59",  # overflows once moved to UTC
        "0001-01-01T00:00:00+23:59",
        1e18,
    ],
)
async def test_times_no_store_can_hold_are_read_as_now_and_stop_nothing(
    store_url: str, occurred_at: Any
) -> None:
    listener = make_listener(store_url)
    recorder = Recorder()
    listener.on("succeeded", name="recorder")(recorder)
    std = StandardWebhooks([SECRET])
    before = time.time()
    async with serve(listener.asgi()) as url, httpx.AsyncClient(base_url=url) as client:
        body = json.dumps(
            {"type": "run.status", "data": {"run_id": "far", "status": "succeeded",
                                            "occurred_at": occurred_at}}
        ).encode()  # fmt: skip
        response = await client.post("/hooks/std", content=body, headers=signed(std, body, "m-far"))
        assert (response.status_code, response.json()["status"]) == (202, "accepted")
        ordinary = payload("next")
        response = await client.post(
            "/hooks/std", content=ordinary, headers=signed(std, ordinary, "m-2")
        )
        assert response.status_code == 202
        seen = {(await recorder.next()).run_id, (await recorder.next()).run_id}
        assert seen == {"far", "next"}
        stored = await listener.store.get_event("std:m-far")
        assert stored is not None
        assert before - 1 <= stored.occurred_at.timestamp() <= time.time() + 1
        assert len((await listener.store.list_events()).items) == 2


async def test_a_non_ascii_webhook_id_signed_by_the_reference_library_verifies(rig: Rig) -> None:
    from standardwebhooks.webhooks import Webhook

    body = payload("run-u")
    msg_id = "msg_é☃"
    when = datetime.now(UTC)
    signature = Webhook(SECRET).sign(msg_id, when, body.decode())
    # On the wire the id is its UTF-8 bytes; the server decodes header bytes as Latin-1.
    headers = [
        (b"webhook-id", msg_id.encode()),
        (b"webhook-timestamp", str(int(when.timestamp())).encode()),
        (b"webhook-signature", signature.encode()),
        (b"content-type", b"application/json"),
    ]
    response = await rig.client.post("/hooks/std", content=body, headers=headers)
    assert response.status_code == 202, response.text
    assert response.json()["delivery_id"].startswith("std:sha256:")
    again = await rig.client.post("/hooks/std", content=body, headers=headers)
    assert again.json() == {"status": "duplicate"}


async def test_thousands_of_bogus_signature_entries_are_refused_unexamined(rig: Rig) -> None:
    body = payload("run-flood")
    headers = signed(rig.std, body, "msg-flood")
    headers["webhook-signature"] = " ".join(["v1a," + "A" * 86 + "=="] * 45_000)
    response = await rig.post("std", body, headers)
    assert response.status_code == 400
    assert "longer than 2048" in response.json()["detail"]
    # A valid delivery after it is taken as ever.
    assert (await rig.deliver("msg-after")).status_code == 202


async def test_a_source_cannot_move_a_run_of_another_provider(rig: Rig) -> None:
    await rig.store.register_run(NewRun("nx-run", "nextmv", "routing"))
    # The std source reports for "local"; its payload claiming "nextmv" changes nothing.
    for claimed in ("local", "nextmv"):
        body = payload("nx-run", "failed", provider=claimed)
        response = await rig.post("std", body, signed(rig.std, body, f"m-{claimed}"))
        assert (response.status_code, response.json()["status"]) == (202, "unroutable")
        assert "another provider" in response.json()["detail"]
    run = await rig.store.get_run("nx-run")
    assert run is not None
    assert run.status.value == "queued"
    assert (await rig.store.list_calls(run_id="nx-run")).items == []
    assert len((await rig.store.list_unroutable()).items) == 2
    # Runs of its own provider, and runs it creates, it reports as ever.
    assert (await rig.deliver("m-own", run_id="fresh-run")).status_code == 202
