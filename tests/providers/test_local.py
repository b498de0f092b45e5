"""LocalProvider end to end: real subprocesses, a real loopback receiver, signed webhooks."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from helpers import Sleeps
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from listener.events import RunStatus
from listener.providers import parser_for
from listener.providers.base import Provider, ProviderError, Submission
from listener.providers.local import LocalProvider
from listener.signatures import SignatureError, StandardWebhooks, generate_hmac_secret
from listener.testing import LoopbackServer

PY = sys.executable
SUM = [
    PY,
    "-c",
    "import json, os, sys; data = json.load(sys.stdin); "
    "print(json.dumps({'sum': sum(data), 'run': os.environ['LISTENER_RUN_ID'], "
    "'options': json.loads(os.environ['LISTENER_OPTIONS'])}))",
]
FAIL = [
    PY,
    "-c",
    "import sys; print('partial'); sys.stderr.write('boom: bad input\\n'); sys.exit(3)",
]


@dataclass
class Receiver:
    """Verifies Standard Webhooks signatures and records what it accepted."""

    scheme: StandardWebhooks
    fail_first: int = 0
    received: list[tuple[str | None, dict[str, Any]]] = field(default_factory=list)
    ids_seen: list[str] = field(default_factory=list)
    rejected: int = 0

    async def hook(self, request: Request) -> Response:
        body = await request.body()
        try:
            verified = self.scheme.verify(body, request.headers)
        except SignatureError as exc:
            self.rejected += 1
            return JSONResponse({"reason": exc.reason}, exc.status_code)
        self.ids_seen.append(verified.msg_id or "")
        if self.fail_first > 0:
            self.fail_first -= 1
            return JSONResponse({"reason": "busy"}, 500)
        self.received.append((verified.msg_id, json.loads(body)))
        return Response(status_code=204)


@dataclass
class Setup:
    provider: LocalProvider
    receiver: Receiver
    url: str
    sleeps: Sleeps


@pytest.fixture
async def setup() -> AsyncIterator[Setup]:
    secret = generate_hmac_secret()
    receiver = Receiver(StandardWebhooks([secret]))
    app = Starlette(routes=[Route("/hooks/local", receiver.hook, methods=["POST"])])
    sleeps = Sleeps()
    async with LoopbackServer(app) as server:
        provider = LocalProvider(
            {"sum": SUM, "fail": FAIL},
            signer=StandardWebhooks([secret]),
            sleep=sleeps,
        )
        yield Setup(provider, receiver, f"{server.base_url}/hooks/local", sleeps)
        await provider.aclose()


def test_is_a_provider() -> None:
    assert isinstance(LocalProvider(), Provider)


async def test_a_command_run_end_to_end(setup: Setup) -> None:
    provider, receiver = setup.provider, setup.receiver
    run_id = await provider.submit(
        Submission("sum", [1, 2, 3], options={"depth": "2"}), callback_url=setup.url
    )
    result = await provider.wait(run_id)
    assert result.status is RunStatus.SUCCEEDED
    assert result.output == {"sum": 6, "run": run_id, "options": {"depth": "2"}}
    assert result.raw["exit_code"] == 0

    [(msg_id, payload)] = receiver.received
    event = parser_for("local")(payload, delivery_id=msg_id or "")
    assert (event.provider, event.application, event.run_id, event.status) == (
        "local",
        "sum",
        run_id,
        RunStatus.SUCCEEDED,
    )
    assert provider.parse_event(payload, delivery_id="d").run_id == run_id
    assert provider.runs[run_id].webhooks["succeeded"].delivered


async def test_a_failing_command(setup: Setup) -> None:
    run_id = await setup.provider.submit(Submission("fail", {}), callback_url=setup.url)
    result = await setup.provider.wait(run_id)
    assert result.status is RunStatus.FAILED
    assert result.error == "exit code 3: boom: bad input"
    assert result.raw["exit_code"] == 3
    assert result.raw["stdout"].strip() == "partial"
    assert "boom" in result.raw["stderr"]
    [(_, payload)] = setup.receiver.received
    assert payload["data"]["status"] == "failed"


async def test_status_and_result_answer_without_a_webhook(setup: Setup) -> None:
    # No callback URL: the poller learns the outcome from the provider's own table.
    run_id = await setup.provider.submit(Submission("sum", [4, 5]))
    await setup.provider.wait(run_id)
    state = await setup.provider.status("sum", run_id)
    assert (state.run_id, state.application, state.status) == (run_id, "sum", RunStatus.SUCCEEDED)
    assert (await setup.provider.result("sum", run_id)).output["sum"] == 9
    assert setup.receiver.received == []


async def test_webhook_retries_keep_the_message_id(setup: Setup) -> None:
    setup.receiver.fail_first = 2
    run_id = await setup.provider.submit(Submission("sum", [1]), callback_url=setup.url)
    await setup.provider.wait(run_id)
    assert len(setup.receiver.ids_seen) == 3
    assert len(set(setup.receiver.ids_seen)) == 1
    assert len(setup.receiver.received) == 1
    assert len(setup.sleeps.delays) == 2
    assert setup.provider.runs[run_id].webhooks["succeeded"].attempts == 3


async def test_webhook_attempts_are_bounded() -> None:
    secret = generate_hmac_secret()
    receiver = Receiver(StandardWebhooks([secret]), fail_first=100)
    app = Starlette(routes=[Route("/h", receiver.hook, methods=["POST"])])
    sleeps = Sleeps()
    async with (
        LoopbackServer(app) as server,
        LocalProvider(
            {"sum": SUM}, signer=StandardWebhooks([secret]), webhook_attempts=3, sleep=sleeps
        ) as provider,
    ):
        run_id = await provider.submit(Submission("sum", [1]), callback_url=f"{server.base_url}/h")
        result = await provider.wait(run_id)
    assert result.status is RunStatus.SUCCEEDED  # the run is fine; only the webhook is lost
    assert len(receiver.ids_seen) == 3
    assert not provider.runs[run_id].webhooks["succeeded"].delivered


async def test_cancel_kills_the_command(setup: Setup, tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    sleeper = [
        PY,
        "-c",
        "import os, sys, time; open(sys.argv[1], 'w').write(str(os.getpid())); time.sleep(600)",
        str(pid_file),
    ]
    setup.provider.register("sleep", sleeper)
    run_id = await setup.provider.submit(Submission("sleep", None), callback_url=setup.url)
    while not pid_file.exists() or not pid_file.read_text():
        await asyncio.sleep(0.01)
    assert (await setup.provider.status("sleep", run_id)).status is RunStatus.RUNNING
    pid = int(pid_file.read_text())

    await setup.provider.cancel("sleep", run_id)
    result = await setup.provider.wait(run_id)
    assert result.status is RunStatus.CANCELED
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    [(_, payload)] = setup.receiver.received
    assert payload["data"]["status"] == "canceled"
    # Canceling a finished run changes nothing.
    await setup.provider.cancel("sleep", run_id)
    assert (await setup.provider.status("sleep", run_id)).status is RunStatus.CANCELED


async def test_a_run_out_of_time_fails(setup: Setup) -> None:
    forever = asyncio.Event()

    async def stuck(_: Any) -> None:
        await forever.wait()

    setup.provider.register("stuck", stuck)
    run_id = await setup.provider.submit(
        Submission("stuck", {}, extra={"timeout": 0.01}), callback_url=setup.url
    )
    result = await setup.provider.wait(run_id)
    assert result.status is RunStatus.FAILED
    assert result.error is not None
    assert "timed out" in result.error


async def test_callables(setup: Setup) -> None:
    main_thread = threading.get_ident()
    threads: list[int] = []

    def double(data: Any) -> Any:
        threads.append(threading.get_ident())
        return {"double": data * 2}

    async def triple(data: Any) -> Any:
        return {"triple": data * 3}

    def broken(data: Any) -> Any:
        raise ValueError("no such stop")

    for name, target in (("double", double), ("triple", triple), ("broken", broken)):
        setup.provider.register(name, target)
    results = {}
    for name in ("double", "triple", "broken"):
        run_id = await setup.provider.submit(Submission(name, 7), callback_url=setup.url)
        results[name] = await setup.provider.wait(run_id)
    assert results["double"].output == {"double": 14}
    assert threads  # a sync callable runs in a worker thread
    assert threads[0] != main_thread
    assert results["triple"].output == {"triple": 21}
    assert results["broken"].status is RunStatus.FAILED
    assert results["broken"].error == "ValueError: no such stop"
    statuses = sorted(payload["data"]["status"] for _, payload in setup.receiver.received)
    assert statuses == ["failed", "succeeded", "succeeded"]


async def test_output_capture_is_bounded() -> None:
    chatty = [PY, "-c", "import sys; sys.stdout.write('x' * 200000); sys.stderr.write('e' * 5000)"]
    async with LocalProvider({"chatty": chatty}, capture_limit=100) as provider:
        run_id = await provider.submit(Submission("chatty", None))
        result = await provider.wait(run_id)
    assert result.status is RunStatus.SUCCEEDED
    assert result.output == "x" * 100  # truncated output is kept as text
    assert result.raw["output_truncated"] is True
    assert result.raw["stderr"] == "e" * 100


async def test_plain_text_output() -> None:
    echo = [PY, "-c", "print('hello')"]
    async with LocalProvider({"echo": echo}) as provider:
        result = await provider.wait(await provider.submit(Submission("echo", None)))
    assert result.output == "hello\n"


async def test_queued_runs_can_be_canceled(setup: Setup) -> None:
    gate = asyncio.Event()

    async def blocker(_: Any) -> str:
        await gate.wait()
        return "done"

    async with LocalProvider(
        {"block": blocker},
        signer=setup.receiver.scheme,
        max_parallel=1,
        notify_running=True,
    ) as provider:
        first = await provider.submit(Submission("block", {}), callback_url=setup.url)
        second = await provider.submit(Submission("block", {}), callback_url=setup.url)
        while provider.runs[first].status is not RunStatus.RUNNING:
            await asyncio.sleep(0)
        assert (await provider.status("block", second)).status is RunStatus.QUEUED
        await provider.cancel("block", second)
        assert (await provider.wait(second)).status is RunStatus.CANCELED
        gate.set()
        assert (await provider.wait(first)).output == "done"
    seen = [(p["data"]["run_id"], p["data"]["status"]) for _, p in setup.receiver.received]
    assert (second, "canceled") in seen
    assert (first, "running") in seen
    assert (first, "succeeded") in seen
    assert (second, "running") not in seen


async def test_unknown_application_and_run(setup: Setup) -> None:
    with pytest.raises(ProviderError, match="no local target") as caught:
        await setup.provider.submit(Submission("nope", {}))
    assert caught.value.status_code == 404
    with pytest.raises(ProviderError) as caught:
        await setup.provider.status("sum", "local-unknown")
    assert caught.value.status_code == 404


def test_targets_are_checked() -> None:
    provider = LocalProvider()
    with pytest.raises(TypeError, match="list of arguments"):
        provider.register("a", "python -c 1")
    with pytest.raises(TypeError, match="non-empty list"):
        provider.register("a", [])


async def test_closing_stops_running_commands(tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    sleeper = [
        PY,
        "-c",
        "import os, sys, time; open(sys.argv[1], 'w').write(str(os.getpid())); time.sleep(600)",
        str(pid_file),
    ]
    provider = LocalProvider({"sleep": sleeper})
    await provider.submit(Submission("sleep", None))
    while not pid_file.exists() or not pid_file.read_text():
        await asyncio.sleep(0.01)
    await provider.aclose()
    with pytest.raises(ProcessLookupError):
        os.kill(int(pid_file.read_text()), 0)
