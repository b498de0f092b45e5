"""The fake platform's knobs and records, and the signed-event builders."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from listener.events import RunStatus
from listener.providers import parser_for
from listener.providers.base import Submission
from listener.signatures import (
    GitHubSignature,
    NextmvSignature,
    SignatureError,
    SignatureScheme,
    StandardWebhooks,
    StripeSignature,
    generate_hmac_secret,
    scheme_from_name,
)
from listener.testing import (
    FakePlatform,
    FakeRun,
    LoopbackServer,
    RunPlan,
    nextmv_run_status_payload,
    signed_delivery,
)

SCHEMES = ["nextmv", "standard-webhooks", "stripe", "github"]


@dataclass
class Received:
    msg_id: str | None
    payload: dict[str, Any]
    headers: dict[str, str]


@dataclass
class Receiver:
    """A tiny webhook receiver: verifies each delivery, then records it or fails on purpose."""

    scheme: SignatureScheme | None = None
    fail_first: int = 0
    received: list[Received] = field(default_factory=list)
    rejected: int = 0
    failed: int = 0

    def app(self) -> Starlette:
        return Starlette(routes=[Route("/hooks", self.hook, methods=["POST"])])

    async def hook(self, request: Request) -> Response:
        body = await request.body()
        assert self.scheme is not None
        try:
            verified = self.scheme.verify(body, request.headers)
        except SignatureError as exc:
            self.rejected += 1
            return JSONResponse({"reason": exc.reason}, exc.status_code)
        if self.fail_first > 0:
            self.fail_first -= 1
            self.failed += 1
            return JSONResponse({"reason": "busy"}, 503)
        self.received.append(Received(verified.msg_id, json.loads(body), dict(request.headers)))
        return Response(status_code=204)

    def statuses(self) -> list[tuple[str, str]]:
        return [
            (r.payload["data"]["run_id"], r.payload["data"]["status_v2"]) for r in self.received
        ]


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[Receiver, str]]:
    hooks = Receiver()
    async with LoopbackServer(hooks.app()) as server:
        yield hooks, f"{server.base_url}/hooks"


async def connect(
    platform: FakePlatform, hooks: Receiver, url: str, scheme: str | None = None
) -> None:
    secret = platform.register_webhook(url, scheme=scheme)
    hooks.scheme = scheme_from_name(scheme or platform.webhook_scheme, [secret])


async def submit_many(platform: FakePlatform, count: int, app: str = "routing") -> list[str]:
    async with platform.nextmv_provider() as client:
        return [await client.submit(Submission(app, {"n": n})) for n in range(count)]


# --- deliveries and schemes -----------------------------------------------------------------


@pytest.mark.parametrize("scheme", SCHEMES)
async def test_deliveries_are_signed_with_each_scheme(
    scheme: str, receiver: tuple[Receiver, str]
) -> None:
    hooks, url = receiver
    async with FakePlatform(time_scale=0.0, webhook_scheme=scheme) as platform:
        await connect(platform, hooks, url)
        [run_id] = await submit_many(platform, 1)
        await platform.drain()
    assert hooks.rejected == 0
    assert hooks.statuses() == [(run_id, "succeeded")]
    event = parser_for("nextmv")(hooks.received[0].payload, delivery_id="d")
    assert (event.run_id, event.status, event.application) == (
        run_id,
        RunStatus.SUCCEEDED,
        "routing",
    )
    assert platform.stats.sent == 1
    assert platform.deliveries[0].delivered


async def test_a_wrong_secret_is_rejected_by_the_receiver(receiver: tuple[Receiver, str]) -> None:
    hooks, url = receiver
    async with FakePlatform(time_scale=0.0, webhook_attempts=2) as platform:
        platform.register_webhook(url)
        hooks.scheme = NextmvSignature([generate_hmac_secret()])
        await submit_many(platform, 1)
        await platform.drain()
    assert hooks.rejected == 2  # the sender retried the 401 once
    assert hooks.received == []
    assert platform.stats.failed == 1
    assert platform.deliveries[0].status_codes == [401, 401]


async def test_running_is_reported_on_request(receiver: tuple[Receiver, str]) -> None:
    hooks, url = receiver
    async with FakePlatform(time_scale=0.0, notify_running=True) as platform:
        await connect(platform, hooks, url)
        [run_id] = await submit_many(platform, 1)
        await platform.drain()
    assert sorted(hooks.statuses()) == [(run_id, "running"), (run_id, "succeeded")]


async def test_plans_decide_outcomes(receiver: tuple[Receiver, str]) -> None:
    hooks, url = receiver

    def plan(run: FakeRun) -> RunPlan:
        return RunPlan(status="failed" if run.input["n"] % 2 else "succeeded", runs_for=5.0)

    async with FakePlatform(time_scale=0.0, plan=plan) as platform:
        await connect(platform, hooks, url)
        ids = await submit_many(platform, 4)
        await platform.drain()
    assert sorted(hooks.statuses()) == sorted(
        [(ids[0], "succeeded"), (ids[1], "failed"), (ids[2], "succeeded"), (ids[3], "failed")]
    )
    assert platform.runs[ids[1]].error == "the model failed"


async def test_non_2xx_answers_are_retried_with_the_same_message(
    receiver: tuple[Receiver, str],
) -> None:
    hooks, url = receiver
    hooks.fail_first = 2
    async with FakePlatform(
        time_scale=0.0, webhook_scheme="standard-webhooks", webhook_attempts=3
    ) as platform:
        await connect(platform, hooks, url)
        await submit_many(platform, 1)
        await platform.drain()
    record = platform.deliveries[0]
    assert record.status_codes == [503, 503, 204]
    assert platform.stats.attempts == 3
    assert platform.stats.sent == 1
    assert [r.msg_id for r in hooks.received] == [record.msg_id]


async def test_drop(receiver: tuple[Receiver, str]) -> None:
    hooks, url = receiver
    async with FakePlatform(time_scale=0.0, drop_rate=1.0) as platform:
        await connect(platform, hooks, url)
        await submit_many(platform, 3)
        await platform.drain()
    assert hooks.received == []
    assert platform.stats.dropped == 3
    assert platform.stats.scheduled == 3
    assert platform.stats.attempts == 0
    assert all(record.dropped for record in platform.deliveries)


async def test_duplicate(receiver: tuple[Receiver, str]) -> None:
    hooks, url = receiver
    async with FakePlatform(
        time_scale=0.0, duplicate_rate=1.0, webhook_scheme="standard-webhooks"
    ) as platform:
        await connect(platform, hooks, url)
        [run_id] = await submit_many(platform, 1)
        await platform.drain()
    assert hooks.statuses() == [(run_id, "succeeded")] * 2
    first, second = hooks.received
    assert first.msg_id == second.msg_id == platform.deliveries[0].msg_id
    assert platform.stats.duplicated == 1
    assert platform.stats.sent == 2


async def test_reorder_sends_a_held_delivery_after_the_next(
    receiver: tuple[Receiver, str],
) -> None:
    hooks, url = receiver
    async with FakePlatform(
        time_scale=1.0, notify_running=True, reorder_rate=1.0, reorder_hold=3600
    ) as platform:
        platform.plan = RunPlan(runs_for=None)
        await connect(platform, hooks, url)
        [run_id] = await submit_many(platform, 1)
        platform.finish(run_id)  # `running` was held back; `succeeded` goes first
        await platform.drain()
    assert hooks.statuses() == [(run_id, "succeeded"), (run_id, "running")]
    assert platform.stats.reordered == 1


async def test_drain_releases_a_held_delivery(receiver: tuple[Receiver, str]) -> None:
    hooks, url = receiver
    async with FakePlatform(time_scale=1.0, reorder_rate=1.0, reorder_hold=3600) as platform:
        await connect(platform, hooks, url)
        [run_id] = await submit_many(platform, 1)
        await platform.drain()
    assert hooks.statuses() == [(run_id, "succeeded")]


async def test_delay_is_drawn_from_the_range_and_scaled(receiver: tuple[Receiver, str]) -> None:
    hooks, url = receiver
    async with FakePlatform(time_scale=0.001, delay=(1.0, 2.0)) as platform:
        await connect(platform, hooks, url)
        await submit_many(platform, 5)
        await platform.drain()
    assert len(hooks.received) == 5
    for record in platform.deliveries:
        assert 0.001 <= record.delay <= 0.002


async def test_a_seed_replays_the_same_decisions(receiver: tuple[Receiver, str]) -> None:
    hooks, url = receiver

    async def decisions(seed: int) -> list[tuple[bool, bool, float]]:
        async with FakePlatform(
            time_scale=0.0, seed=seed, drop_rate=0.5, duplicate_rate=0.3, delay=(0.0, 1.0)
        ) as platform:
            await connect(platform, hooks, url)
            await submit_many(platform, 12)
            await platform.drain()
            return [(d.dropped, d.duplicated, d.delay) for d in platform.deliveries]

    first = await decisions(11)
    assert first == await decisions(11)
    assert first != await decisions(12)
    assert any(dropped for dropped, _, _ in first)
    assert not all(dropped for dropped, _, _ in first)


async def test_every_endpoint_gets_every_event(receiver: tuple[Receiver, str]) -> None:
    hooks, url = receiver
    other = Receiver()
    async with LoopbackServer(other.app()) as server, FakePlatform(time_scale=0.0) as platform:
        await connect(platform, hooks, url)
        secret = platform.register_webhook(
            f"{server.base_url}/hooks", endpoint_id="second", scheme="github"
        )
        other.scheme = GitHubSignature([secret])
        [run_id] = await submit_many(platform, 1)
        await platform.drain()
    assert hooks.statuses() == other.statuses() == [(run_id, "succeeded")]
    with pytest.raises(ValueError, match="already registered"):
        platform.register_webhook(url, endpoint_id="second")


# --- API surface and failure injection --------------------------------------------------


@pytest.fixture
async def platform() -> AsyncIterator[FakePlatform]:
    async with FakePlatform(time_scale=0.0) as fake:
        yield fake


def auth(platform: FakePlatform) -> dict[str, str]:
    return {"Authorization": f"Bearer {platform.api_key}"}


async def test_the_api_needs_the_key(platform: FakePlatform) -> None:
    async with httpx.AsyncClient(base_url=platform.base_url) as http:
        response = await http.get("/v1/applications/a/runs")
        assert response.status_code == 401
        response = await http.get("/v1/applications/a/runs", headers=auth(platform))
        assert response.json() == {"runs": []}


async def test_new_run_requests_are_validated(platform: FakePlatform) -> None:
    url = "/v1/applications/a/runs"
    async with httpx.AsyncClient(base_url=platform.base_url, headers=auth(platform)) as http:
        for body in (
            b"not json",
            b"[]",
            b"{}",
            json.dumps({"input": {}, "upload_id": "u"}).encode(),
            json.dumps({"upload_id": "never-uploaded"}).encode(),
            json.dumps({"input_id": "i"}).encode(),
            json.dumps({"input": {}, "options": {"a": 1}}).encode(),
            json.dumps({"input": {}, "configuration": "json"}).encode(),
        ):
            response = await http.post(url, content=body)
            assert response.status_code == 400, body
    assert platform.runs == {}


async def test_storage_urls_refuse_the_api_key(platform: FakePlatform) -> None:
    async with httpx.AsyncClient(base_url=platform.base_url, headers=auth(platform)) as http:
        upload = (await http.post("/v1/applications/a/runs/uploadurl")).json()
        response = await http.put(upload["upload_url"], content=b"{}")
        assert response.status_code == 400
        assert upload["upload_id"] not in platform.uploads
        async with httpx.AsyncClient() as storage:
            forged = upload["upload_url"].replace("signature=", "signature=x")
            assert (await storage.put(forged, content=b"{}")).status_code == 403
            assert (await storage.put(upload["upload_url"], content=b"{}")).status_code == 200
    assert platform.uploads[upload["upload_id"]] == b"{}"


async def test_run_information_has_what_the_official_client_needs(
    platform: FakePlatform,
) -> None:
    [run_id] = await submit_many(platform, 1)
    await platform.drain()
    async with httpx.AsyncClient(base_url=platform.base_url, headers=auth(platform)) as http:
        info = (await http.get(f"/v1/applications/routing/runs/{run_id}/metadata")).json()
        other_app = await http.get(f"/v1/applications/other/runs/{run_id}/metadata")
    metadata = info["metadata"]
    assert info["id"] == run_id
    assert metadata["status_v2"] == "succeeded"
    assert metadata["format"]["output"] == {"type": "json"}
    assert isinstance(metadata["run_type"], dict)
    assert set(metadata) >= {"application_id", "created_at", "duration", "input_size", "error"}
    assert other_app.status_code == 404


async def test_counters(platform: FakePlatform) -> None:
    [run_id] = await submit_many(platform, 1)
    async with platform.nextmv_provider() as client:
        for _ in range(3):
            await client.status("routing", run_id)
        await client.result("routing", run_id)
    assert platform.status_calls == {run_id: 3}
    assert platform.api_calls["runs.metadata"] == 3
    assert platform.api_calls["runs.get"] == 1
    assert platform.calls_by_path[f"GET /v1/applications/routing/runs/{run_id}/metadata"] == 3
    assert platform.calls_by_path["POST /v1/applications/routing/runs"] == 1


async def test_injected_api_failures() -> None:
    async with (
        FakePlatform(time_scale=0.0, api_error_rate=1.0) as platform,
        httpx.AsyncClient(base_url=platform.base_url, headers=auth(platform)) as http,
    ):
        assert (await http.get("/v1/applications/a/runs")).status_code == 503
    assert platform.injected == {503: 1}
    async with (
        FakePlatform(time_scale=0.0, rate_limit_rate=1.0, retry_after="9") as platform,
        httpx.AsyncClient(base_url=platform.base_url, headers=auth(platform)) as http,
    ):
        response = await http.get("/v1/applications/a/runs")
        assert response.status_code == 429
        assert response.headers["retry-after"] == "9"
    assert platform.injected == {429: 1}


async def test_scripted_failures_match_routes_and_run_out(platform: FakePlatform) -> None:
    platform.fail_next(500, route="runs.list", times=2)
    async with httpx.AsyncClient(base_url=platform.base_url, headers=auth(platform)) as http:
        codes = [(await http.get("/v1/applications/a/runs")).status_code for _ in range(3)]
        assert (await http.get("/v1/webhooks")).status_code == 200
    assert codes == [500, 500, 200]
    assert platform.injected == {500: 2}


async def test_webhooks_go_through_a_given_transport(receiver: tuple[Receiver, str]) -> None:
    hooks, url = receiver

    class Counting(httpx.AsyncHTTPTransport):
        requests = 0

        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            Counting.requests += 1
            return await super().handle_async_request(request)

    async with FakePlatform(time_scale=0.0, webhook_transport=Counting()) as platform:
        await connect(platform, hooks, url)
        await submit_many(platform, 2)
        await platform.drain()
    assert len(hooks.received) == 2
    assert Counting.requests == 2


async def test_finish_and_start_by_hand(platform: FakePlatform) -> None:
    platform.plan = RunPlan(queued_for=None, runs_for=None)
    [run_id] = await submit_many(platform, 1)
    assert platform.runs[run_id].status == "queued"
    platform.start_run(run_id)
    assert platform.runs[run_id].status == "running"
    platform.finish(run_id, "succeeded", output={"best": 1})
    assert platform.runs[run_id].output == {"best": 1}
    with pytest.raises(ValueError, match="already ended"):
        platform.finish(run_id)
    with pytest.raises(ValueError, match="succeeded, failed or canceled"):
        RunPlan(status="running")


async def test_webhook_endpoints_over_the_api(platform: FakePlatform) -> None:
    body = {"id": "e1", "event_types": ["run.status"], "endpoint_url": "http://127.0.0.1:9/h"}
    async with httpx.AsyncClient(base_url=platform.base_url, headers=auth(platform)) as http:
        assert (await http.post("/v1/webhooks", json=body)).status_code == 201
        assert (await http.post("/v1/webhooks", json=body)).status_code == 409
        bad = {**body, "id": "e2", "event_types": ["run.created"]}
        assert (await http.post("/v1/webhooks", json=bad)).status_code == 400
        listed = (await http.get("/v1/webhooks")).json()
        assert [e["id"] for e in listed] == ["e1"]
        secret = (await http.get("/v1/webhooks/e1/secret")).json()["secret"]
        assert secret == platform.webhook_secret("e1")
        assert (await http.delete("/v1/webhooks/e1")).status_code == 204
        assert (await http.get("/v1/webhooks/e1/secret")).status_code == 404


# --- builders ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "scheme",
    [
        NextmvSignature(["s3cret-of-sixteen-bytes"]),
        StandardWebhooks([generate_hmac_secret()]),
        StripeSignature(["whsec_abcdefghijklmnop"]),
        GitHubSignature(["It's a Secret to Everybody"]),
    ],
    ids=SCHEMES,
)
def test_signed_delivery_verifies(scheme: SignatureScheme) -> None:
    payload = nextmv_run_status_payload("r1", "routing", "succeeded")
    body, headers = signed_delivery(scheme, payload, msg_id="msg_42")
    assert json.loads(body) == payload
    assert headers["Content-Type"] == "application/json"
    verified = scheme.verify(body, headers)
    if isinstance(scheme, StandardWebhooks):  # the one scheme whose id is signed
        assert verified.msg_id == "msg_42"
    with pytest.raises(SignatureError):
        scheme.verify(body + b" ", headers)


def test_signed_delivery_with_raw_bytes_and_a_fixed_time() -> None:
    scheme = StandardWebhooks([generate_hmac_secret()])
    body, headers = signed_delivery(scheme, b'{"x":1}', timestamp=1_700_000_000)
    assert body == b'{"x":1}'
    assert headers["webhook-timestamp"] == "1700000000"
    assert headers["webhook-id"].startswith("msg_")
    scheme.verify(body, headers, now=1_700_000_000)


def test_bad_scheme_name_fails_early() -> None:
    with pytest.raises(ValueError, match="unknown signature scheme"):
        FakePlatform(webhook_scheme="carrier-pigeon")


async def test_loopback_server_reports_its_url() -> None:
    async def hello(request: Request) -> Response:
        return JSONResponse({"hello": "world"})

    server = LoopbackServer(Starlette(routes=[Route("/", hello)]))
    with pytest.raises(RuntimeError):
        _ = server.base_url
    async with server:
        assert server.base_url.startswith("http://127.0.0.1:")
        async with httpx.AsyncClient() as http:
            assert (await http.get(server.base_url + "/")).json() == {"hello": "world"}
    await server.stop()  # stopping twice is harmless


async def test_loopback_server_url_brackets_an_ipv6_host() -> None:
    async def hello(request: Request) -> Response:
        return JSONResponse({"hello": "world"})

    async with LoopbackServer(Starlette(routes=[Route("/", hello)]), host="::1") as server:
        assert server.base_url.startswith("http://[::1]:")
        async with httpx.AsyncClient() as http:
            assert (await http.get(server.base_url + "/")).json() == {"hello": "world"}
