"""`listener fake-platform nextmv`, run as a process and used through the official SDK."""

from __future__ import annotations

import json
import queue
import signal
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from helpers import serve_in_thread
from nextmv import PollingOptions, StatusV2
from nextmv.cloud import Application, Client
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from listener.signatures import NextmvSignature

from .support import PROCESS_LIMIT, LongRunning, long_running, run_cli

NO_WAIT = PollingOptions(initial_delay=0, delay=0, backoff=0, jitter=0, max_tries=100_000)


class Hooks:
    """A receiver that keeps each delivery's body and headers."""

    def __init__(self) -> None:
        self.received: queue.Queue[tuple[bytes, dict[str, str]]] = queue.Queue()

    async def hook(self, request: Request) -> Response:
        self.received.put((await request.body(), dict(request.headers)))
        return Response(status_code=204)

    def next(self) -> tuple[bytes, dict[str, str]]:
        return self.received.get(timeout=PROCESS_LIMIT)


@pytest.fixture
def hooks() -> Iterator[tuple[Hooks, str]]:
    receiver = Hooks()
    app = Starlette(routes=[Route("/hooks/nextmv", receiver.hook, methods=["POST"])])
    with serve_in_thread(app, lifespan="off") as url:
        yield receiver, f"{url}/hooks/nextmv"


def started(process: LongRunning) -> dict[str, Any]:
    """The one JSON line the command prints before serving."""
    assert process.process.stdout is not None
    line = process.process.stdout.readline()
    assert line, f"the command ended: {''.join(process.stderr)}"
    found: dict[str, Any] = json.loads(line)
    return found


def application(found: dict[str, Any]) -> Application:
    return Application(client=Client(api_key=found["api_key"], url=found["base_url"]), id="demo")


def test_serves_the_sdk_and_signs_webhooks(tmp_path: Path, hooks: tuple[Hooks, str]) -> None:
    receiver, url = hooks
    args = ["fake-platform", "nextmv", "--json", "--runs-for", "0", "--webhook", url]
    with long_running(args, cwd=tmp_path, env={}) as process:
        found = started(process)
        assert sorted(found) == ["api_key", "base_url", "webhook_secret"]
        assert found["base_url"].startswith("http://127.0.0.1:")
        result = application(found).new_run_with_result({"stops": 2}, polling_options=NO_WAIT)
        assert result.metadata.status_v2 is StatusV2.succeeded
        assert result.output == {"echo": {"stops": 2}}
        body, headers = receiver.next()
        NextmvSignature([found["webhook_secret"]]).verify(body, headers)
        assert json.loads(body)["data"]["run_id"] == result.id
        assert process.stop(signal.SIGTERM) == 0


def test_chaos_knobs_fail_runs_and_api_calls(tmp_path: Path) -> None:
    args = ["fake-platform", "nextmv", "--json", "--runs-for", "0", "--fail", "1"]
    with long_running(args, cwd=tmp_path, env={}) as process:
        found = started(process)
        assert found["webhook_secret"] is None
        result = application(found).new_run_with_result({"n": 1}, polling_options=NO_WAIT)
        assert result.metadata.status_v2 is StatusV2.failed
        assert process.stop(signal.SIGINT) == 0

    args = ["fake-platform", "nextmv", "--json", "--http-errors", "1", "--api-key", "k-1"]
    with long_running(args, cwd=tmp_path, env={}) as process:
        found = started(process)
        assert found["api_key"] == "k-1"
        with pytest.raises(requests.HTTPError) as raised:
            application(found).new_run({"n": 1})
        assert raised.value.response is not None
        assert raised.value.response.status_code == 503
        assert process.stop(signal.SIGTERM) == 0


def test_prints_for_people_without_json(tmp_path: Path, hooks: tuple[Hooks, str]) -> None:
    _, url = hooks
    args = ["fake-platform", "nextmv", "--port", "0", "--webhook", url, "--delay", "0:0.5"]
    with long_running(args, cwd=tmp_path, env={}) as process:
        assert process.process.stdout is not None
        lines = [process.process.stdout.readline() for _ in range(3)]
        assert lines[0].startswith("fake Nextmv platform at http://127.0.0.1:")
        assert lines[1].startswith("api key: fake-")
        assert lines[2].startswith("webhook secret: whsec_")
        process.wait_for_line("stop with Ctrl-C or SIGTERM")
        assert process.stop(signal.SIGINT) == 0


def test_usage_and_binding_errors_are_one_line(tmp_path: Path) -> None:
    bad = run_cli("fake-platform", "nextmv", "--delay", "3:1", cwd=tmp_path)
    assert bad.returncode == 2
    assert "MIN <= MAX" in bad.stderr
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        busy = run_cli("fake-platform", "nextmv", "--port", str(port), cwd=tmp_path)
    assert busy.returncode == 1
    assert busy.stderr == f"error: cannot serve on 127.0.0.1:{port}\n"


def test_serves_on_the_host_given_with_a_url_clients_can_use(tmp_path: Path) -> None:
    args = ["fake-platform", "nextmv", "--json", "--host", "::1", "--runs-for", "0"]
    with long_running(args, cwd=tmp_path, env={}) as process:
        found = started(process)
        assert found["base_url"].startswith("http://[::1]:")
        result = application(found).new_run_with_result({"stops": 1}, polling_options=NO_WAIT)
        assert result.output == {"echo": {"stops": 1}}
        assert process.stop(signal.SIGTERM) == 0


def test_webhook_chaos_knobs_reach_the_deliveries(tmp_path: Path, hooks: tuple[Hooks, str]) -> None:
    receiver, url = hooks
    args = ["fake-platform", "nextmv", "--json", "--runs-for", "0", "--webhook", url]
    with long_running([*args, "--duplicate", "1", "--delay", "0.1"], cwd=tmp_path, env={}) as p:
        found = started(p)
        result = application(found).new_run_with_result({"n": 1}, polling_options=NO_WAIT)
        (body, _), (again, _) = receiver.next(), receiver.next()
        assert body == again  # the same delivery, sent twice (each signed when sent)
        assert json.loads(body)["data"]["run_id"] == result.id
        assert p.stop(signal.SIGTERM) == 0

    with long_running([*args, "--drop", "1"], cwd=tmp_path, env={}) as p:
        found = started(p)
        result = application(found).new_run_with_result({"n": 2}, polling_options=NO_WAIT)
        assert result.metadata.status_v2 is StatusV2.succeeded
        assert p.stop(signal.SIGTERM) == 0
    # Its end was scheduled before the SDK could read it; dropped, it never came.
    assert receiver.received.empty()
