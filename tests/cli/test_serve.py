"""`serve`, `poll` (as real processes) and the app factory for uvicorn workers."""

from __future__ import annotations

import json
import signal
from collections import Counter
from pathlib import Path

import httpx
import pytest
from helpers import serve, wait_for

from cli.support import (
    FAST_POLLER,
    PLATFORM_ENV,
    PROCESS_LIMIT,
    WEBHOOK_SECRET,
    free_port,
    long_running,
    platform_config,
    run_cli,
    store_url,
    write_config,
)
from listener.cli import create_app
from listener.errors import EXIT_FAILED
from listener.events import Origin, RunStatus
from listener.providers.base import Submission
from listener.sources import callback_token
from listener.store import NewRun, open_store
from listener.testing import FakeNoxusEngine, FakePlatform, NoxusPlan


def test_serve_takes_a_signed_delivery_and_stops_cleanly(tmp_path: Path) -> None:
    config = write_config(
        tmp_path,
        f"""
[listener]
store = "{store_url(tmp_path)}"
[server]
port = 0
log_level = "warning"
[sources.nextmv]
scheme = "nextmv"
secrets = ["env:NEXTMV_WEBHOOK_SECRET"]
""",
    )
    env = {"NEXTMV_WEBHOOK_SECRET": WEBHOOK_SECRET}
    with long_running(["--config", str(config), "serve"], cwd=tmp_path, env=env) as server:
        line = server.wait_for_line("listening on http://127.0.0.1:")
        base_url = line.split("listening on ")[1].strip()
        assert httpx.get(f"{base_url}/healthz", timeout=PROCESS_LIMIT).json() == {"status": "ok"}

        sent = run_cli(
            "send-test",
            f"{base_url}/hooks/nextmv",
            "--scheme",
            "nextmv",
            "--secret",
            "env:NEXTMV_WEBHOOK_SECRET",
            "--run-id",
            "run-from-test",
            cwd=tmp_path,
            env=env,
        )
        assert sent.returncode == 0, sent.stderr
        assert sent.stdout.startswith("HTTP 202")

        forged = run_cli(
            "send-test", f"{base_url}/hooks/nextmv", "--scheme", "nextmv",
            "--secret", "a-wrong-secret-text",
            cwd=tmp_path,
        )  # fmt: skip
        assert forged.returncode == EXIT_FAILED
        assert forged.stdout.startswith("HTTP 401")

        code = server.stop(signal.SIGTERM)
    assert code == 0, "".join(server.stderr)
    listed = run_cli("--config", str(config), "runs", "--json", cwd=tmp_path, env=env)
    (run,) = json.loads(listed.stdout)["items"]
    assert (run["run_id"], run["status"], run["application"]) == (
        "run-from-test",
        "succeeded",
        "send-test",
    )


def test_serve_with_workers_uses_the_app_factory(tmp_path: Path) -> None:
    config = write_config(tmp_path, f'[listener]\nstore = "{store_url(tmp_path)}"\n')
    port = free_port()
    args = ["--config", str(config), "serve", "--workers", "2", "--port", str(port)]
    with long_running(args, cwd=tmp_path, env={}) as server:
        # Several workers on one SQLite file contend for its write lock: the user is told.
        server.wait_for_line("2 workers share one SQLite file")
        server.wait_for_line("Application startup complete")
        answer = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=PROCESS_LIMIT)
        assert answer.json() == {"status": "ready"}
        assert server.stop(signal.SIGTERM) == 0


def one_callback_delivery(tmp_path: Path, *extra: str) -> tuple[int, str, str, str]:
    """`serve` (with `extra` arguments) taking one delivery at a per-run callback URL; its
    answer's status, the token, and what it wrote to stdout and stderr."""
    config = write_config(
        tmp_path,
        f"""
[listener]
store = "{store_url(tmp_path)}"
callback_secret = "env:CALLBACK_SECRET"
[server]
log_level = "info"
[sources.cb]
provider = "local"
scheme = "none"
""",
    )
    secret = "a-callback-secret"
    token = callback_token(secret, "run-nonce")
    port = free_port()
    args = ["--config", str(config), "serve", "--port", str(port), *extra]
    with long_running(args, cwd=tmp_path, env={"CALLBACK_SECRET": secret}) as server:
        server.wait_for_line("Application startup complete")
        answer = httpx.post(
            f"http://127.0.0.1:{port}/hooks/cb/{token}", json={}, timeout=PROCESS_LIMIT
        )
        assert server.stop(signal.SIGTERM) == 0
        assert server.process.stdout is not None
        out = server.process.stdout.read()  # uvicorn writes access lines to stdout
    return answer.status_code, token, out, "".join(server.stderr)


@pytest.mark.parametrize("workers", [1, 2])
def test_serve_masks_callback_tokens_in_the_access_log(tmp_path: Path, workers: int) -> None:
    status, token, access, errors = one_callback_delivery(tmp_path, "--workers", str(workers))
    assert f'"POST /hooks/cb/*** HTTP/1.1" {status}' in access
    log = access + errors
    assert token not in log
    assert token.partition(".")[2] not in log  # nor its MAC alone


@pytest.mark.parametrize("workers", [1, 2])
def test_serve_logs_json_lines_with_tokens_masked(tmp_path: Path, workers: int) -> None:
    status, token, out, errors = one_callback_delivery(
        tmp_path, "--workers", str(workers), "--log-format=json"
    )
    lines = [line for line in (out + errors).splitlines() if line.strip()]
    entries = [json.loads(line) for line in lines]  # every line is one JSON object
    assert all({"time", "level", "logger", "message"} <= entry.keys() for entry in entries)
    access = [e["message"] for e in entries if e["logger"] == "uvicorn.access"]
    assert len(access) == 1
    assert f'"POST /hooks/cb/*** HTTP/1.1" {status}' in access[0]
    deliveries = [e for e in entries if e["logger"] == "listener.receiver"]
    assert [e["http_status"] for e in deliveries] == [status]
    if workers == 1:
        assert any(e["message"].startswith("listening on http://") for e in entries)
    assert token.partition(".")[2] not in "\n".join(lines)


async def succeeded(tmp_path: Path, run_id: str) -> bool:
    """Whether the store in `tmp_path` holds `run_id` as succeeded, read afresh."""
    store = await open_store(store_url(tmp_path))
    try:
        run = await store.get_run(run_id)
    finally:
        await store.close()
    return run is not None and run.status is RunStatus.SUCCEEDED


async def test_poll_learns_a_run_end_and_stops_cleanly(
    tmp_path: Path, platform: FakePlatform
) -> None:
    async with platform.nextmv_provider() as provider:
        run_id = await provider.submit(Submission("routing", {"stops": 3}))
    await platform.drain()
    store = await open_store(store_url(tmp_path))
    await store.register_run(
        NewRun(run_id, "nextmv", "routing", grace_seconds=0, first_poll_seconds=0)
    )
    await store.close()
    config = platform_config(tmp_path, platform)

    args = ["--config", str(config), "poll"]
    with long_running(args, cwd=tmp_path, env=PLATFORM_ENV) as poller:
        await wait_for(
            lambda: succeeded(tmp_path, run_id), "the poll process to learn the run's end"
        )
        assert platform.status_calls[run_id] >= 1
        assert poller.stop(signal.SIGTERM) == 0
    assert any("polling (providers: nextmv)" in line for line in poller.stderr)


async def test_poll_follows_the_stream_of_a_noxus_run_and_never_asks(tmp_path: Path) -> None:
    async with FakeNoxusEngine(plan=NoxusPlan(runs_for=None)) as engine:
        async with engine.noxus_provider() as provider:
            run_id = await provider.submit(Submission(engine.workflow_id, {"doc": "a"}))
        engine.start_run(run_id)
        store = await open_store(store_url(tmp_path))
        await store.register_run(
            NewRun(run_id, "noxus", engine.workflow_id, grace_seconds=0, first_poll_seconds=0)
        )
        await store.close()
        config = write_config(
            tmp_path,
            f"""
[listener]
store = "{store_url(tmp_path)}"
[providers.noxus]
api_key = "{engine.api_key}"
base_url = "{engine.base_url}"
[streams]
interval = 0.05
{FAST_POLLER}
""",
        )

        args = ["--config", str(config), "poll"]
        with long_running(args, cwd=tmp_path, env={}) as poller:
            await wait_for(lambda: engine.stream_connections[run_id] == 1, "the run's stream")
            engine.finish(run_id)
            await wait_for(
                lambda: succeeded(tmp_path, run_id), "the poll process to learn the run's end"
            )
            assert poller.stop(signal.SIGTERM) == 0
        store = await open_store(store_url(tmp_path))
        try:
            [end] = (await store.list_events(run_id=run_id, status=[RunStatus.SUCCEEDED])).items
        finally:
            await store.close()
    assert end.origin is Origin.STREAM
    # Every poll pass found the run due and put it off: its stream was healthy.
    assert engine.status_calls == Counter()


async def test_create_app_reads_listener_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = write_config(tmp_path, f'[listener]\nstore = "{store_url(tmp_path)}"\n')
    monkeypatch.setenv("LISTENER_CONFIG", str(config))
    async with serve(create_app()) as base_url, httpx.AsyncClient() as client:
        answer = await client.get(f"{base_url}/readyz")
        assert answer.json() == {"status": "ready"}
    assert (tmp_path / "listener.db").exists()


@pytest.mark.parametrize("workers", [1, 2])
def test_serve_mounts_the_console_when_a_token_is_set(tmp_path: Path, workers: int) -> None:
    token = "a-console-token-of-some-length"
    config = write_config(
        tmp_path,
        f'[listener]\nstore = "{store_url(tmp_path)}"\n'
        '[console]\nread_token = "env:LISTENER_CONSOLE_TOKEN"\n',
    )
    port = free_port()
    args = ["--config", str(config), "serve", "--workers", str(workers), "--port", str(port)]
    with long_running(args, cwd=tmp_path, env={"LISTENER_CONSOLE_TOKEN": token}) as server:
        server.wait_for_line("Application startup complete")
        base = f"http://127.0.0.1:{port}"
        refused = httpx.get(f"{base}/ui/runs", headers={"authorization": "Bearer no"})
        assert refused.status_code == 401
        page = httpx.get(
            f"{base}/ui/runs", headers={"authorization": f"Bearer {token}"}, timeout=PROCESS_LIMIT
        )
        assert page.status_code == 200
        assert "No runs match." in page.text
        assert server.stop(signal.SIGTERM) == 0
    # The access lines name the pages, never the token.
    assert token not in "".join(server.stderr)


def test_serve_without_a_console_token_serves_no_console(tmp_path: Path) -> None:
    config = write_config(tmp_path, f'[listener]\nstore = "{store_url(tmp_path)}"\n')
    port = free_port()
    args = ["--config", str(config), "serve", "--port", str(port)]
    with long_running(args, cwd=tmp_path, env={}) as server:
        server.wait_for_line("Application startup complete")
        assert httpx.get(f"http://127.0.0.1:{port}/ui/runs").status_code == 404
        assert server.stop(signal.SIGTERM) == 0
