"""NextmvProvider against the fake platform over real loopback HTTP."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator

import httpx
import pytest
from helpers import Sleeps
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from listener.events import RunStatus
from listener.providers import parser_for
from listener.providers.base import Provider, ProviderError, Submission
from listener.providers.nextmv import NextmvProvider
from listener.signatures import NextmvSignature, SignatureError
from listener.testing import FakePlatform, LoopbackServer, RunPlan

API_KEY = "nxmv-secret-key-0123456789"
STAYS_RUNNING = RunPlan(runs_for=None)
STAYS_QUEUED = RunPlan(queued_for=None, runs_for=None)


class FailFirstConnects(httpx.AsyncBaseTransport):
    """Real loopback HTTP, except that the first `count` requests fail as `error` does."""

    def __init__(self, count: int, error: type[httpx.TransportError]) -> None:
        self.count = count
        self.error = error
        self.failed = 0
        self._inner = httpx.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self.failed < self.count:
            self.failed += 1
            raise self.error("injected", request=request)
        return await self._inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self._inner.aclose()


@pytest.fixture
async def platform() -> AsyncIterator[FakePlatform]:
    async with FakePlatform(api_key=API_KEY, time_scale=0.0) as fake:
        yield fake


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


@pytest.fixture
async def provider(platform: FakePlatform, sleeps: Sleeps) -> AsyncIterator[NextmvProvider]:
    async with NextmvProvider(API_KEY, base_url=platform.base_url, sleep=sleeps) as client:
        yield client


def test_is_a_provider() -> None:
    assert isinstance(NextmvProvider("k"), Provider)


def test_needs_a_key() -> None:
    with pytest.raises(ValueError, match="API key"):
        NextmvProvider("")


def test_repr_hides_the_key() -> None:
    assert API_KEY not in repr(NextmvProvider(API_KEY))


# --- submit -------------------------------------------------------------------------------


async def test_submit_json_input(platform: FakePlatform, provider: NextmvProvider) -> None:
    submission = Submission(
        "routing",
        {"stops": [1, 2, 3]},
        options={"solve.duration": "10s", "limit": 5},  # type: ignore[dict-item]
        name="nightly",
        description="the nightly plan",
    )
    # Nextmv webhooks are per account: the callback URL is not sent anywhere.
    run_id = await provider.submit(submission, callback_url="http://ignored.example/hook")
    run = platform.runs[run_id]
    assert run.application == "routing"
    assert run.input == {"stops": [1, 2, 3]}
    assert run.options == {"solve.duration": "10s", "limit": "5"}
    assert (run.name, run.description) == ("nightly", "the nightly plan")
    assert run.configuration == {"format": {"input": {"type": "json"}, "output": {"type": "json"}}}
    assert run.instance_id is None
    assert run.upload_id is None
    assert platform.api_calls["runs.uploadurl"] == 0
    assert platform.api_calls["runs.create"] == 1


async def test_submit_instance_id(platform: FakePlatform) -> None:
    async with platform.nextmv_provider(instance_id="prod") as client:
        first = await client.submit(Submission("routing", {}))
        second = await client.submit(Submission("routing", {}, extra={"instance_id": "staging"}))
    assert platform.runs[first].instance_id == "prod"
    assert platform.runs[second].instance_id == "staging"


async def test_submit_custom_configuration(
    platform: FakePlatform, provider: NextmvProvider
) -> None:
    configuration = {"format": {"input": {"type": "json"}, "output": {"type": "json"}}, "x": 1}
    run_id = await provider.submit(
        Submission("routing", {"a": 1}, extra={"configuration": configuration})
    )
    assert platform.runs[run_id].configuration == configuration


async def test_string_input_goes_through_the_upload_url(
    platform: FakePlatform, provider: NextmvProvider
) -> None:
    run_id = await provider.submit(Submission("routing", "stop A\nstop B\n"))
    run = platform.runs[run_id]
    assert run.upload_id is not None
    assert platform.uploads[run.upload_id] == b"stop A\nstop B\n"
    assert run.input == "stop A\nstop B\n"
    assert run.configuration["format"]["input"] == {"type": "text"}
    # The fake's storage rejects any Authorization header, as a pre-signed URL does.
    assert platform.api_calls["runs.uploadurl"] == 1
    assert platform.api_calls["upload.put"] == 1


async def test_large_json_input_goes_through_the_upload_url(platform: FakePlatform) -> None:
    data = {"stops": list(range(200))}
    async with platform.nextmv_provider(upload_threshold=100) as client:
        run_id = await client.submit(Submission("routing", data))
        small_id = await client.submit(Submission("routing", {"stops": [1]}))
    assert platform.runs[run_id].upload_id is not None
    assert platform.runs[run_id].input == data
    assert platform.runs[small_id].upload_id is None
    assert platform.api_calls["upload.put"] == 1


async def test_submit_rejects_what_is_not_json(provider: NextmvProvider) -> None:
    with pytest.raises(TypeError, match="JSON"):
        await provider.submit(Submission("routing", {"when": object()}))


# --- status and results -------------------------------------------------------------------


async def test_status_follows_the_run(platform: FakePlatform, provider: NextmvProvider) -> None:
    platform.plan = STAYS_QUEUED
    run_id = await provider.submit(Submission("routing", {}, extra={"instance_id": "i"}))
    state = await provider.status("routing", run_id)
    assert (state.run_id, state.application, state.status) == (run_id, "routing", RunStatus.QUEUED)
    platform.start_run(run_id)
    assert (await provider.status("routing", run_id)).status is RunStatus.RUNNING
    platform.finish(run_id)
    state = await provider.status("routing", run_id)
    assert state.status is RunStatus.SUCCEEDED
    assert state.raw["metadata"]["status_v2"] == "succeeded"
    assert platform.status_calls[run_id] == 3


async def test_result_of_a_successful_run(platform: FakePlatform, provider: NextmvProvider) -> None:
    platform.plan = RunPlan(output={"solution": [3, 1, 2]})
    run_id = await provider.submit(Submission("routing", {"stops": 3}))
    await platform.drain()
    result = await provider.result("routing", run_id)
    assert result.status is RunStatus.SUCCEEDED
    assert result.output == {"solution": [3, 1, 2]}
    assert result.error is None
    assert platform.api_calls["runs.output"] == 0


async def test_result_of_a_failed_run(platform: FakePlatform, provider: NextmvProvider) -> None:
    platform.plan = RunPlan(status="failed", error="infeasible", stderr="no route\n")
    run_id = await provider.submit(Submission("routing", {}))
    await platform.drain()
    result = await provider.result("routing", run_id)
    assert result.status is RunStatus.FAILED
    assert result.output is None
    assert result.error == "infeasible"
    assert result.raw["error_log"]["stderr"] == "no route\n"
    assert (await provider.logs("routing", run_id)) == "no route\n"


async def test_result_of_a_run_still_going(
    platform: FakePlatform, provider: NextmvProvider
) -> None:
    platform.plan = STAYS_RUNNING
    run_id = await provider.submit(Submission("routing", {}))
    result = await provider.result("routing", run_id)
    assert (result.status, result.output, result.error) == (RunStatus.RUNNING, None, None)


async def test_large_output_is_downloaded_from_its_url(
    platform: FakePlatform, provider: NextmvProvider
) -> None:
    platform.inline_output_limit = 50
    big = {"solution": list(range(100))}
    platform.plan = RunPlan(output=big)
    run_id = await provider.submit(Submission("routing", {}))
    await platform.drain()
    result = await provider.result("routing", run_id)
    assert result.output == big
    assert "output" not in result.raw
    assert platform.api_calls["runs.output"] == 1
    # Served by the fake's storage, which rejects an Authorization header.
    assert platform.api_calls["download.get"] == 1


async def test_unknown_run_is_a_404(provider: NextmvProvider) -> None:
    with pytest.raises(ProviderError) as caught:
        await provider.status("routing", "no-such-run")
    assert caught.value.status_code == 404


async def test_unknown_status_word_is_a_provider_error(sleeps: Sleeps) -> None:
    async def metadata(request: Request) -> Response:
        return JSONResponse({"id": "r", "metadata": {"status_v2": "exploded"}})

    app = Starlette(routes=[Route("/v1/applications/a/runs/r/metadata", metadata)])
    async with (
        LoopbackServer(app) as server,
        NextmvProvider(API_KEY, base_url=server.base_url, sleep=sleeps) as client,
    ):
        with pytest.raises(ProviderError, match="exploded"):
            await client.status("a", "r")


# --- cancel, list, webhooks ---------------------------------------------------------------


async def test_cancel(platform: FakePlatform, provider: NextmvProvider) -> None:
    platform.plan = STAYS_RUNNING
    run_id = await provider.submit(Submission("routing", {}))
    await provider.cancel("routing", run_id)
    assert (await provider.status("routing", run_id)).status is RunStatus.CANCELED
    # Canceling again is harmless.
    await provider.cancel("routing", run_id)
    assert platform.api_calls["runs.cancel"] == 2


async def test_list_runs_follows_pages(platform: FakePlatform, provider: NextmvProvider) -> None:
    platform.page_size = 2
    ids = [await provider.submit(Submission("routing", {"n": n})) for n in range(5)]
    await provider.submit(Submission("other-app", {}))
    listed = [run["id"] async for run in provider.list_runs("routing")]
    assert listed == list(reversed(ids))
    assert platform.api_calls["runs.list"] == 3

    first = await provider.runs_page("routing")
    assert len(first.runs) == 2
    assert first.next_page_token is not None
    rest = [run["id"] async for run in provider.list_runs("routing", first.next_page_token)]
    assert rest == list(reversed(ids))[2:]


async def test_statuses_read_the_listing_and_return_what_the_pages_showed(
    platform: FakePlatform, provider: NextmvProvider
) -> None:
    platform.page_size = 3
    platform.plan = STAYS_RUNNING
    ids = [await provider.submit(Submission("routing", {"n": n})) for n in range(7)]
    platform.finish(ids[5], "failed")
    # The two newest runs are on the first page: one call answers for both, and the
    # third run on that page comes along too.
    states = await provider.statuses("routing", [ids[6], ids[5]])
    assert platform.api_calls["runs.list"] == 1
    assert set(states) == {ids[6], ids[5], ids[4]}
    assert states[ids[5]].status is RunStatus.FAILED
    assert states[ids[4]].status is RunStatus.RUNNING


async def test_statuses_stop_reading_when_a_page_no_longer_pays(
    platform: FakePlatform, provider: NextmvProvider
) -> None:
    platform.page_size = 2
    ids = [await provider.submit(Submission("routing", {"n": n})) for n in range(12)]
    # One wanted run at the bottom: asking for it alone is cheaper than six pages, so the
    # read stops after a first page without it.
    states = await provider.statuses("routing", [ids[0]])
    assert ids[0] not in states
    assert platform.api_calls["runs.list"] == 1
    # Many wanted runs further down are worth the pages: all six are read.
    before = platform.api_calls["runs.list"]
    states = await provider.statuses("routing", ids[:8])
    assert set(ids[:8]) <= set(states)
    assert platform.api_calls["runs.list"] - before == 6
    # And never more pages than the provider allows.
    before = platform.api_calls["runs.list"]
    await provider.statuses("routing", ids[:8], max_pages=2)
    assert platform.api_calls["runs.list"] - before == 2


async def test_statuses_await_pace_once_before_each_page(
    platform: FakePlatform, provider: NextmvProvider
) -> None:
    platform.page_size = 2
    ids = [await provider.submit(Submission("routing", {"n": n})) for n in range(12)]
    # What the platform had seen of the listing each time the read asked to go on.
    seen: list[int] = []

    async def pace() -> None:
        seen.append(platform.api_calls["runs.list"])

    await provider.statuses("routing", ids[:8], pace=pace)
    assert platform.api_calls["runs.list"] == 6
    assert seen == [0, 1, 2, 3, 4, 5]
    # A read that stops early is paced for the pages it reads, no more.
    seen.clear()
    await provider.statuses("routing", ids[:8], max_pages=2, pace=pace)
    assert seen == [6, 7]
    assert platform.api_calls["runs.list"] == 8


def test_status_pages_must_be_positive() -> None:
    with pytest.raises(ValueError, match="status_pages"):
        NextmvProvider("k", status_pages=0)


async def test_register_webhook_and_fetch_its_secret(
    platform: FakePlatform, provider: NextmvProvider
) -> None:
    received: list[tuple[bytes, dict[str, str]]] = []

    async def hook(request: Request) -> Response:
        received.append((await request.body(), dict(request.headers)))
        return Response(status_code=204)

    receiver = Starlette(routes=[Route("/hooks/nextmv", hook, methods=["POST"])])
    async with LoopbackServer(receiver) as server:
        answer = await provider.register_webhook(
            "listener", f"{server.base_url}/hooks/nextmv", "the run listener"
        )
        assert answer["id"] == "listener"
        assert answer["event_types"] == ["run.status"]
        secret = await provider.webhook_secret("listener")
        assert secret == platform.webhook_secret("listener")

        run_id = await provider.submit(Submission("routing", {}))
        await platform.drain()

    assert len(received) == 1
    body, headers = received[0]
    NextmvSignature([secret]).verify(body, headers)
    with pytest.raises(SignatureError):
        NextmvSignature(["another secret, long enough"]).verify(body, headers)
    event = parser_for("nextmv")(json.loads(body), delivery_id="d1")
    assert (event.run_id, event.status, event.application) == (
        run_id,
        RunStatus.SUCCEEDED,
        "routing",
    )


async def test_registering_an_endpoint_twice_fails(provider: NextmvProvider) -> None:
    await provider.register_webhook("listener", "http://127.0.0.1:9/hooks")
    with pytest.raises(ProviderError) as caught:
        await provider.register_webhook("listener", "http://127.0.0.1:9/hooks")
    assert caught.value.status_code == 409


async def test_secret_of_an_unknown_endpoint(provider: NextmvProvider) -> None:
    with pytest.raises(ProviderError) as caught:
        await provider.webhook_secret("nobody")
    assert caught.value.status_code == 404


# --- retries ------------------------------------------------------------------------------


async def test_reads_are_retried_on_5xx(
    platform: FakePlatform, provider: NextmvProvider, sleeps: Sleeps
) -> None:
    run_id = await provider.submit(Submission("routing", {}))
    platform.fail_next(503, route="runs.metadata", times=2)
    state = await provider.status("routing", run_id)
    assert state.status is RunStatus.SUCCEEDED
    assert platform.status_calls[run_id] == 3
    assert len(sleeps.delays) == 2
    # Full jitter under an exponential ceiling (base 1 s): [0, 1] then [0, 2].
    assert 0 <= sleeps.delays[0] <= 1
    assert 0 <= sleeps.delays[1] <= 2


async def test_429_retry_after_is_honoured(
    platform: FakePlatform, provider: NextmvProvider, sleeps: Sleeps
) -> None:
    run_id = await provider.submit(Submission("routing", {}))
    platform.fail_next(429, route="runs.get", retry_after="7")
    platform.fail_next(429, route="runs.get", retry_after="3600")
    result = await provider.result("routing", run_id)
    assert result.status is RunStatus.SUCCEEDED
    # The second Retry-After is capped (60 s by default).
    assert sleeps.delays == [7.0, 60.0]


async def test_retries_give_up_with_the_last_status(platform: FakePlatform, sleeps: Sleeps) -> None:
    async with platform.nextmv_provider(sleep=sleeps, max_attempts=3) as client:
        run_id = await client.submit(Submission("routing", {}))
        platform.fail_next(502, route="runs.metadata", times=10)
        with pytest.raises(ProviderError) as caught:
            await client.status("routing", run_id)
    assert caught.value.status_code == 502
    assert platform.status_calls[run_id] == 3
    assert len(sleeps.delays) == 2


async def test_cancel_and_uploads_are_retried(
    platform: FakePlatform, provider: NextmvProvider, sleeps: Sleeps
) -> None:
    platform.plan = STAYS_RUNNING
    platform.fail_next(500, route="runs.uploadurl")
    platform.fail_next(503, route="upload.put")
    run_id = await provider.submit(Submission("routing", "text input"))
    platform.fail_next(503, route="runs.cancel")
    await provider.cancel("routing", run_id)
    assert platform.runs[run_id].status == "canceled"
    assert len(sleeps.delays) == 3


async def test_submit_is_not_retried_after_a_5xx(
    platform: FakePlatform, provider: NextmvProvider, sleeps: Sleeps
) -> None:
    # The platform handled the request, then the answer was lost as a 502.
    platform.fail_next(502, route="runs.create", after_processing=True)
    with pytest.raises(ProviderError) as caught:
        await provider.submit(Submission("routing", {"n": 1}))
    assert caught.value.status_code == 502
    assert platform.api_calls["runs.create"] == 1
    assert len(platform.runs) == 1  # exactly one run, not two
    assert sleeps.delays == []


async def test_submit_is_not_retried_after_a_429(
    platform: FakePlatform, provider: NextmvProvider, sleeps: Sleeps
) -> None:
    platform.fail_next(429, route="runs.create", retry_after="1")
    with pytest.raises(ProviderError) as caught:
        await provider.submit(Submission("routing", {}))
    assert caught.value.status_code == 429
    assert platform.api_calls["runs.create"] == 1
    assert sleeps.delays == []


async def test_submit_is_retried_when_the_connection_failed(
    platform: FakePlatform, sleeps: Sleeps
) -> None:
    transport = FailFirstConnects(2, httpx.ConnectError)
    async with platform.nextmv_provider(sleep=sleeps, http_transport=transport) as client:
        run_id = await client.submit(Submission("routing", {"n": 1}))
    assert transport.failed == 2
    assert len(sleeps.delays) == 2
    assert list(platform.runs) == [run_id]


async def test_submit_is_not_retried_after_a_timeout(
    platform: FakePlatform, provider: NextmvProvider
) -> None:
    run_id = await provider.submit(Submission("routing", {}))
    sleeps = Sleeps()
    # A read timeout may come after the platform started the run: never send it again.
    transport = FailFirstConnects(1, httpx.ReadTimeout)
    async with platform.nextmv_provider(sleep=sleeps, http_transport=transport) as client:
        with pytest.raises(ProviderError, match="ReadTimeout"):
            await client.submit(Submission("routing", {}))
        assert sleeps.delays == []
        # A read is retried after the same failure.
        transport.count = 2
        assert (await client.status("routing", run_id)).status is RunStatus.SUCCEEDED
    assert len(sleeps.delays) == 1
    assert platform.api_calls["runs.create"] == 1


async def test_random_api_failures_are_survived_by_reads(sleeps: Sleeps) -> None:
    async with FakePlatform(
        api_key=API_KEY, time_scale=0.0, seed=7, api_error_rate=0.3, rate_limit_rate=0.2
    ) as platform:
        run_id = "?"
        async with platform.nextmv_provider(sleep=sleeps, max_attempts=20) as client:
            while run_id == "?":
                # A submit is never retried on 429/503, so it is simply asked again here.
                with contextlib.suppress(ProviderError):
                    run_id = await client.submit(Submission("routing", {}))
            await platform.drain()
            for _ in range(10):
                assert (await client.status("routing", run_id)).status is RunStatus.SUCCEEDED
    assert sleeps.delays  # some calls failed and were retried
    assert 1.0 in sleeps.delays  # the 429 answers' Retry-After: 1


# --- secrets never leak -------------------------------------------------------------------


async def test_api_key_never_appears_in_errors(sleeps: Sleeps) -> None:
    async def echo(request: Request) -> Response:
        # A hostile or careless server echoing the request's headers into its error body.
        return JSONResponse({"headers": dict(request.headers)}, 500)

    app = Starlette(routes=[Route("/{path:path}", echo, methods=["GET", "POST", "PATCH"])])
    async with (
        LoopbackServer(app) as server,
        NextmvProvider(API_KEY, base_url=server.base_url, sleep=sleeps, max_attempts=2) as client,
    ):
        for call in (
            client.status("a", "r"),
            client.submit(Submission("a", {})),
            client.cancel("a", "r"),
        ):
            with pytest.raises(ProviderError) as caught:
                await call
            assert caught.value.status_code == 500
            assert API_KEY not in str(caught.value)
            assert API_KEY not in repr(caught.value.args)
            assert caught.value.__cause__ is None


async def test_api_key_not_in_wrong_key_or_connection_errors(platform: FakePlatform) -> None:
    wrong = "wrong-key-abcdef"
    async with NextmvProvider(wrong, base_url=platform.base_url) as client:
        with pytest.raises(ProviderError) as caught:
            await client.status("routing", "r")
    assert caught.value.status_code == 401
    assert wrong not in str(caught.value)

    # Nothing listens on a port we just released.
    async with LoopbackServer(Starlette()) as server:
        url = server.base_url
    sleeps = Sleeps()
    async with NextmvProvider(API_KEY, base_url=url, sleep=sleeps, max_attempts=2) as client:
        with pytest.raises(ProviderError, match="ConnectError") as caught:
            await client.submit(Submission("routing", {}))
    assert API_KEY not in str(caught.value)
    assert len(sleeps.delays) == 1  # a refused connection is retried, even for a submit


async def test_presigned_url_query_is_not_in_errors(
    platform: FakePlatform, provider: NextmvProvider
) -> None:
    platform.fail_next(403, route="upload.put")
    with pytest.raises(ProviderError) as caught:
        await provider.submit(Submission("routing", "text"))
    assert caught.value.status_code == 403
    assert "signature=" not in str(caught.value)
    assert "/uploads/" in str(caught.value)


async def test_concurrent_submissions_each_start_one_run(
    platform: FakePlatform, provider: NextmvProvider
) -> None:
    ids = await asyncio.gather(*(provider.submit(Submission("a", {"n": n})) for n in range(20)))
    assert len(set(ids)) == 20
    assert len(platform.runs) == 20
