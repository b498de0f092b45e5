"""The official `nextmv` SDK, unchanged, against the fake platform: every call a user makes.

The SDK is synchronous (requests); each call runs in a worker thread while the fake serves
from this test's event loop, over real HTTP on loopback.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from functools import partial
from typing import Any, TypeVar

import pytest
import requests
from nextmv import PollingOptions, StatusV2, TrackedRun, TrackedRunStatus
from nextmv.cloud import Application, Client

from listener.testing import FakePlatform, FakeRun, RunPlan

T = TypeVar("T")

# Polling that never sleeps; a bound on tries keeps a broken fake from spinning forever.
NO_WAIT = PollingOptions(initial_delay=0, delay=0, backoff=0, jitter=0, max_tries=10_000)
# Over the SDK's 5 MiB limit for inline inputs and outputs.
LARGE_INPUT = {"stops": [{"id": f"stop-{i:07d}", "quantity": i} for i in range(150_000)]}


async def sdk(call: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run one blocking SDK call off the event loop that serves the fake."""
    return await asyncio.to_thread(partial(call, *args, **kwargs))


def plan(run: FakeRun) -> RunPlan:
    """Inputs say how their run goes: `{"end": "failed"}`, `{"hold": true}`."""
    spec = run.input if isinstance(run.input, dict) else {}
    if spec.get("hold"):
        return RunPlan(runs_for=None)
    if spec.get("end") == "failed":
        return RunPlan(status="failed", error="no solution", stderr="reading\nsolving\n")
    return RunPlan()


@pytest.fixture
async def platform() -> AsyncIterator[FakePlatform]:
    async with FakePlatform(plan=plan, time_scale=0.0, page_size=2) as fake:
        yield fake


@pytest.fixture
def client(platform: FakePlatform) -> Client:
    return Client(api_key=platform.api_key, url=platform.base_url)


@pytest.fixture
def app(client: Client) -> Application:
    return Application(client=client, id="routing")


async def ended(platform: FakePlatform, app: Application, run_id: str) -> StatusV2:
    await platform.drain()
    info = await sdk(app.run_information, run_id)
    status: StatusV2 = info.metadata.status_v2
    return status


# --- submitting -------------------------------------------------------------------------


async def test_json_input_runs_and_reads_back(platform: FakePlatform, app: Application) -> None:
    run_id = await sdk(app.new_run, {"stops": 3}, name="three", options={"duration": "5s"})
    assert await ended(platform, app, run_id) is StatusV2.succeeded
    assert platform.api_calls["runs.uploadurl"] == 0
    assert platform.runs[run_id].options == {"duration": "5s"}

    # The SDK's older name for run_information, kept for now with a deprecation warning.
    with pytest.warns(DeprecationWarning, match="run_metadata"):
        info = await sdk(app.run_metadata, run_id)
    assert (info.id, info.name, info.metadata.application_id) == (run_id, "three", "routing")
    assert info.metadata.run_is_finalized()
    result = await sdk(app.run_result, run_id)
    assert result.output == {"echo": {"stops": 3}}
    assert result.error_log is None
    assert await sdk(app.run_output, run_id) == {"echo": {"stops": 3}}
    assert await sdk(app.run_input, run_id) == {"stops": 3}


async def test_text_input_goes_through_the_upload_url(
    platform: FakePlatform, app: Application
) -> None:
    run_id = await sdk(app.new_run, "3 stops\n2 vans\n")
    assert await ended(platform, app, run_id) is StatusV2.succeeded
    assert platform.api_calls["runs.uploadurl"] == 1
    assert platform.api_calls["upload.put"] == 1
    assert platform.runs[run_id].input == "3 stops\n2 vans\n"
    info = await sdk(app.run_information, run_id)
    assert info.metadata.format.format_input.input_type.value == "text"


async def test_large_input_and_output_go_through_storage_urls(
    platform: FakePlatform, app: Application
) -> None:
    run_id = await sdk(app.new_run, LARGE_INPUT)
    assert await ended(platform, app, run_id) is StatusV2.succeeded
    assert platform.api_calls["runs.uploadurl"] == 1
    assert platform.runs[run_id].upload_id is not None
    # The echoed output is as large: it is left out of the run and downloaded.
    result = await sdk(app.run_result, run_id)
    assert result.output == {"echo": LARGE_INPUT}
    assert platform.api_calls["download.get"] == 1
    assert await sdk(app.run_input, run_id) == LARGE_INPUT
    assert platform.api_calls["download.get"] == 2


@pytest.mark.parametrize("options", [None, NO_WAIT], ids=["default-polling", "no-wait"])
async def test_new_run_with_result(
    platform: FakePlatform, app: Application, options: PollingOptions | None
) -> None:
    polling = {} if options is None else {"polling_options": options}
    result = await sdk(app.new_run_with_result, {"stops": 2}, **polling)
    assert result.metadata.status_v2 is StatusV2.succeeded
    assert result.output == {"echo": {"stops": 2}}
    assert platform.status_calls[result.id] >= 1


async def test_a_failed_run_is_a_result_with_its_error_log(app: Application) -> None:
    result = await sdk(app.new_run_with_result, {"end": "failed"}, polling_options=NO_WAIT)
    assert result.metadata.status_v2 is StatusV2.failed
    assert result.metadata.error == "no solution"
    assert result.error_log is not None
    assert (result.error_log.error, result.error_log.stderr) == (
        "no solution",
        "reading\nsolving\n",
    )
    assert result.output is None


async def test_logs_and_live_logs(platform: FakePlatform, app: Application) -> None:
    run_id = await sdk(app.new_run, {"end": "failed"})
    await platform.drain()
    assert (await sdk(app.run_logs, run_id)).log == "reading\nsolving\n"
    live = await sdk(app.run_logs_with_polling, run_id, polling_options=NO_WAIT)
    assert [entry.log for entry in live] == ["reading", "solving"]
    assert platform.api_calls["runs.logs.live"] == 1


# --- listing, canceling, deleting -------------------------------------------------------


async def test_list_runs_pages_and_filters_by_status(
    platform: FakePlatform, app: Application
) -> None:
    ids = [await sdk(app.new_run, {"end": end}) for end in ("ok", "failed", "ok", "ok", "failed")]
    await platform.drain()
    listed = await sdk(app.list_runs)
    assert [run.id for run in listed] == ids[::-1]  # newest first
    assert platform.api_calls["runs.list"] == 3  # five runs, two a page
    failed = await sdk(app.list_runs, status=StatusV2.failed)
    assert sorted(run.id for run in failed) == sorted([ids[1], ids[4]])
    assert all(run.application_id == "routing" for run in listed)
    unpaged = await sdk(app.list_runs, no_pagination=True)
    assert [run.id for run in unpaged] == ids[::-1]


async def test_cancel_a_running_run(platform: FakePlatform, app: Application) -> None:
    run_id = await sdk(app.new_run, {"hold": True})
    assert await ended(platform, app, run_id) is StatusV2.running
    await sdk(app.cancel_run, run_id)
    assert await ended(platform, app, run_id) is StatusV2.canceled


async def test_delete_a_run(platform: FakePlatform, app: Application) -> None:
    run_id = await sdk(app.new_run, {"hold": True})
    await sdk(app.delete_run, run_id)
    assert run_id not in platform.runs
    assert (await http_error(app.run_information, run_id)).status_code == 404


async def test_application_get_and_exists(client: Client) -> None:
    app = await sdk(Application.get, client, "routing")
    assert (app.id, app.name) == ("routing", "routing")
    assert app.client is client
    assert await sdk(Application.exists, client, "routing")
    assert not await sdk(Application.exists, client, "no-such-app")
    # A first run creates an application the platform did not know.
    await sdk(Application(client=client, id="pricing").new_run, {"n": 1})
    assert await sdk(Application.exists, client, "pricing")


# --- tracked (external) runs ------------------------------------------------------------


@pytest.mark.parametrize("with_result", [False, True], ids=["track_run", "with_result"])
async def test_track_a_succeeded_run(
    platform: FakePlatform, app: Application, with_result: bool
) -> None:
    tracked = TrackedRun(
        status=TrackedRunStatus.SUCCEEDED,
        input={"stops": 4},
        output={"routes": [["a", "b"]]},
        duration=1234,
        name="laptop",
    )
    if with_result:
        run_id = (await sdk(app.track_run_with_result, tracked, polling_options=NO_WAIT)).id
    else:
        run_id = await sdk(app.track_run, tracked)
    assert await ended(platform, app, run_id) is StatusV2.succeeded
    result = await sdk(app.run_result, run_id)
    assert result.output == {"routes": [["a", "b"]]}
    assert result.name == "laptop"
    assert result.metadata.duration == 1234
    assert result.metadata.run_type is not None
    assert result.metadata.run_type.run_type is not None
    assert result.metadata.run_type.run_type.value == "external"
    assert await sdk(app.run_input, run_id) == {"stops": 4}


async def test_track_a_failed_run_with_result(app: Application) -> None:
    tracked = TrackedRun(
        status=TrackedRunStatus.FAILED,
        input={"stops": 4},
        output={"partial": True},
        error="out of memory",
        # One string: the SDK joins a list of lines with a literal backslash-n.
        logs="loading\nkilled\n",
    )
    result = await sdk(app.track_run_with_result, tracked, polling_options=NO_WAIT)
    assert result.metadata.status_v2 is StatusV2.failed
    assert result.metadata.error == "out of memory"
    assert result.error_log is not None
    assert result.error_log.error == "out of memory"
    assert await sdk(app.run_output, result.id) == {"partial": True}
    assert (await sdk(app.run_logs, result.id)).log == "loading\nkilled\n"


# --- errors -----------------------------------------------------------------------------


async def http_error(call: Callable[..., Any], *args: Any) -> requests.Response:
    with pytest.raises(requests.HTTPError) as raised:
        await sdk(call, *args)
    response = raised.value.response
    assert response is not None
    return response


async def test_a_wrong_key_is_401(platform: FakePlatform) -> None:
    app = Application(client=Client(api_key="wrong", url=platform.base_url), id="routing")
    assert (await http_error(app.new_run, {"n": 1})).status_code == 401
    assert platform.runs == {}


async def test_an_unknown_run_is_404(app: Application) -> None:
    assert (await http_error(app.run_result, "run-nope")).status_code == 404


async def test_429_carries_retry_after(platform: FakePlatform, app: Application) -> None:
    # The SDK retries a 429 only over https; over plain http it reaches the caller at once.
    platform.fail_next(429, route="runs.create", retry_after="7")
    response = await http_error(app.new_run, {"n": 1})
    assert (response.status_code, response.headers["Retry-After"]) == (429, "7")
    assert platform.runs == {}


@pytest.mark.parametrize("status", [500, 503])
async def test_5xx_surfaces(platform: FakePlatform, client: Client, status: int) -> None:
    platform.fail_next(status, route="applications.get")
    assert (await http_error(Application.exists, client, "routing")).status_code == status
