"""The `listener` command, run as a real process for each command family and in-process
(CliRunner) for the finer cases."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import sys
import types
from collections.abc import AsyncIterator, Callable, Coroutine
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from cli_support import (
    PROCESS_LIMIT,
    invoke,
    invoke_async,
    long_running,
    run_cli,
    run_cli_async,
    write_config,
)
from helpers import age_sqlite_store, serve, wait_for
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from listener import __version__
from listener.cli import create_app
from listener.cli.exits import EXIT_FAILED, CommandError, classify
from listener.cli.prune import parse_duration
from listener.client import RunNotFound, WaitTimeout
from listener.config import ConfigError
from listener.events import Origin, RunEvent, RunStatus
from listener.providers.base import ProviderError, Submission
from listener.signatures import (
    StandardWebhooks,
    generate_hmac_secret,
    scheme_from_name,
)
from listener.store import NewRun, open_store
from listener.store.base import StoreUnavailable
from listener.testing import FakePlatform, LoopbackServer, RunPlan

API_KEY = "fake-api-key"
DAY = 86400.0
WEBHOOK_SECRET = generate_hmac_secret()
FAST_POLLER = """
[poller]
interval = 0.05
grace = 0
first_poll = 0
schedule_interval = 0.05
schedule_cap = 0.2
"""


@pytest.fixture(autouse=True)
def _no_listener_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    # In-process runs read os.environ: a developer's own LISTENER_* must not leak in.
    import os

    for name in list(os.environ):
        if name.startswith("LISTENER_"):
            monkeypatch.delenv(name)


def store_url(directory: Path) -> str:
    return f"sqlite:///{directory / 'listener.db'}"


def platform_config(directory: Path, platform: FakePlatform, extra: str = "") -> Path:
    return write_config(
        directory,
        f"""
[listener]
store = "{store_url(directory)}"

[providers.nextmv]
api_key = "env:NEXTMV_API_KEY"
base_url = "{platform.base_url}"
{FAST_POLLER}
{extra}
""",
    )


PLATFORM_ENV = {"NEXTMV_API_KEY": API_KEY}


@pytest.fixture
async def platform() -> AsyncIterator[FakePlatform]:
    async with FakePlatform(plan=RunPlan(), time_scale=0.001) as fake:
        yield fake


# --- a store with some history ----------------------------------------------------------------


class History:
    """Ids in a store the tests fill: one finished run, one failed run with a dead call."""

    def __init__(self, config: Path, done_call: int, dead_call: int) -> None:
        self.config = config
        self.done_call = done_call
        self.dead_call = dead_call


async def make_history(directory: Path) -> History:
    store = await open_store(store_url(directory))
    try:
        await store.register_run(NewRun("run-ok", "nextmv", "routing"))
        await store.register_run(NewRun("run-bad", "local", "packing"))
        await store.record(
            RunEvent("d-ok", "nextmv", "routing", "run-ok", RunStatus.SUCCEEDED), ["app.notify"]
        )
        await store.record(
            RunEvent("d-bad", "local", "packing", "run-bad", RunStatus.FAILED, origin=Origin.POLL),
            ["app.alert"],
        )
        calls = {
            call.handler: call for call in await store.claim_calls("t", limit=9, lease_seconds=60)
        }
        await store.complete_call(calls["app.notify"].id, "t")
        await store.fail_call(
            calls["app.alert"].id, "t", error="pager unreachable\nsecond line", retry_at=None
        )
        await store.record_unroutable(
            source="nextmv", delivery_id="u-1", reason="no run id", body=b'{"x": 1}', headers={}
        )
    finally:
        await store.close()
    config = write_config(directory, f'[listener]\nstore = "{store_url(directory)}"\n')
    return History(config, calls["app.notify"].id, calls["app.alert"].id)


@pytest.fixture
async def history(tmp_path: Path) -> History:
    return await make_history(tmp_path)


# === real processes: one per command family ===================================================


def test_version_from_the_installed_command(tmp_path: Path) -> None:
    out = run_cli("--version", cwd=tmp_path)
    assert out.returncode == 0
    assert out.stdout.strip() == f"listener, version {__version__}"
    out = run_cli("version", "--json", cwd=tmp_path)
    assert json.loads(out.stdout) == {"version": __version__}


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
            "send-test", f"{base_url}/hooks/nextmv", "--scheme", "nextmv", "--secret", "wrong",
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


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


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

    async def finished() -> bool:
        store = await open_store(store_url(tmp_path))
        try:
            run = await store.get_run(run_id)
        finally:
            await store.close()
        return run is not None and run.status is RunStatus.SUCCEEDED

    args = ["--config", str(config), "poll"]
    with long_running(args, cwd=tmp_path, env=PLATFORM_ENV) as poller:
        await wait_for(finished, "the poll process to learn the run's end")
        assert platform.status_calls[run_id] >= 1
        assert poller.stop(signal.SIGTERM) == 0
    assert any("polling (providers: nextmv)" in line for line in poller.stderr)


async def test_submit_and_wait_against_a_fake_platform(
    tmp_path: Path, platform: FakePlatform
) -> None:
    config = platform_config(tmp_path, platform)
    (tmp_path / "input.json").write_text('{"stops": [1, 2, 3]}')
    args = ["--config", str(config), "submit", "nextmv", "routing", "input.json"]
    result = await run_cli_async(
        *args, "--wait", "--timeout", "60", "-o", "solver=fast", "--name", "nightly", "--json",
        cwd=tmp_path, env=PLATFORM_ENV,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    event = json.loads(result.stdout)
    assert event["status"] == "succeeded"
    assert event["origin"] == "poll"  # no public URL: the command's own poller learned it
    (run,) = platform.runs.values()
    assert (run.id, run.input, run.options, run.name) == (
        event["run_id"],
        {"stops": [1, 2, 3]},
        {"solver": "fast"},
        "nightly",
    )
    assert f"{run.id}: succeeded" in result.stderr  # progress on stderr


async def test_webhooks_register_against_a_fake_platform(
    tmp_path: Path, platform: FakePlatform
) -> None:
    config = platform_config(tmp_path, platform)
    result = await run_cli_async(
        "--config", str(config), "webhooks", "register", "--provider", "nextmv",
        "--endpoint-id", "prod", "--url", "https://hooks.example.com/hooks/nextmv",
        "--show-secret", "--json",
        cwd=tmp_path, env=PLATFORM_ENV,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["secret"] == platform.webhook_secret("prod")
    assert document["endpoint"]["endpoint_url"] == "https://hooks.example.com/hooks/nextmv"


def test_listing_commands_on_a_populated_store(history: History) -> None:
    directory = history.config.parent
    base = ["--config", str(history.config)]

    runs = run_cli(*base, "runs", "--json", cwd=directory)
    assert runs.returncode == 0, runs.stderr
    assert {run["run_id"] for run in json.loads(runs.stdout)["items"]} == {"run-ok", "run-bad"}

    events = run_cli(*base, "events", "--origin", "poll", "--json", cwd=directory)
    assert [e["run_id"] for e in json.loads(events.stdout)["items"]] == ["run-bad"]

    dead = run_cli(*base, "dead-letters", cwd=directory)
    assert dead.returncode == 0
    assert "app.alert" in dead.stdout
    assert "pager unreachable second line" in dead.stdout

    replayed = run_cli(*base, "replay", str(history.dead_call), cwd=directory)
    assert replayed.returncode == 0, replayed.stderr
    assert "is pending again" in replayed.stdout
    again = run_cli(*base, "replay", str(history.dead_call), cwd=directory)
    assert again.returncode == 1
    assert "is pending; only dead or done calls can be replayed" in again.stderr


def test_prune_removes_a_finished_runs_rows_and_keeps_dead_letters(history: History) -> None:
    directory = history.config.parent
    base = ["--config", str(history.config)]
    age_sqlite_store(directory / "listener.db", 2 * DAY)

    pruned = run_cli(*base, "prune", "--older-than", "1d", cwd=directory)
    assert pruned.returncode == 0, pruned.stderr
    assert pruned.stdout.startswith(
        "pruned 1 run, 1 event, 1 transition, 1 handler call, 1 unroutable delivery older than "
    )

    runs = json.loads(run_cli(*base, "runs", "--json", cwd=directory).stdout)["items"]
    # run-ok is finished and its only call is done; run-bad's call is a dead letter, which
    # keeps the run and its events (so it can still be replayed).
    assert [run["run_id"] for run in runs] == ["run-bad"]
    events = json.loads(run_cli(*base, "events", "--json", cwd=directory).stdout)["items"]
    assert [event["run_id"] for event in events] == ["run-bad"]
    unroutable = run_cli(*base, "events", "--unroutable", cwd=directory)
    assert unroutable.stdout.strip() == "no unroutable deliveries"
    dead = run_cli(*base, "dead-letters", "--json", cwd=directory)
    assert [call["id"] for call in json.loads(dead.stdout)["items"]] == [history.dead_call]

    again = run_cli(*base, "prune", "--older-than", "1d", "--json", cwd=directory)
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["runs"] == 0


def test_keys_generate(tmp_path: Path) -> None:
    secret = run_cli("keys", "generate", cwd=tmp_path).stdout.strip()
    assert secret.startswith("whsec_")
    scheme = StandardWebhooks([secret])
    scheme.verify(b"{}", scheme.sign(b"{}", msg_id="m1"))

    pair = json.loads(
        run_cli("keys", "generate", "--kind", "ed25519", "--json", cwd=tmp_path).stdout
    )
    signer = StandardWebhooks([pair["signing_key"]])
    verifier = StandardWebhooks([pair["public_key"]])
    verifier.verify(b"{}", signer.sign(b"{}", msg_id="m2"))


def test_a_config_error_exits_2_with_the_message_only(tmp_path: Path) -> None:
    config = write_config(tmp_path, '[poller]\ngrace = "soon"\n')
    out = run_cli("--config", str(config), "runs", cwd=tmp_path)
    assert out.returncode == 2
    assert out.stderr.strip() == (
        f'{config}: poller.grace: expected a number of seconds >= 0, got "soon"'
    )
    assert "Traceback" not in out.stderr
    assert out.stdout == ""


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    config = write_config(tmp_path, '[poller]\ngrace = "soon"\n')
    out = run_cli("--debug", "--config", str(config), "runs", cwd=tmp_path)
    assert out.returncode == 2
    assert "Traceback (most recent call last)" in out.stderr
    assert out.stderr.strip().endswith('got "soon"')


def test_the_config_file_comes_from_the_environment_or_the_directory(tmp_path: Path) -> None:
    write_config(tmp_path, "[server]\nport = 70000\n")
    out = run_cli("runs", cwd=tmp_path)
    assert out.returncode == 2
    assert out.stderr.startswith("listener.toml: server.port:")
    other = write_config(tmp_path, "[poller]\ngrace = -1\n", name="other.toml")
    out = run_cli("runs", cwd=tmp_path, env={"LISTENER_CONFIG": str(other)})
    assert out.stderr.startswith(f"{other}: poller.grace:")


def test_demo_is_wired(tmp_path: Path) -> None:
    out = run_cli("demo", "--help", cwd=tmp_path)
    assert out.returncode == 0
    assert "--runs" in out.stdout
    assert "--seed" in out.stdout


# === in-process: finer cases ==================================================================


def test_usage_errors_exit_2(tmp_path: Path) -> None:
    assert invoke("runs", "--limit", "0").exit_code == 2
    assert invoke("no-such-command").exit_code == 2
    assert invoke("track", "p", "a", "r", "done").exit_code == 2


async def test_submit_without_wait_prints_the_run_id(
    tmp_path: Path, platform: FakePlatform
) -> None:
    config = platform_config(tmp_path, platform)
    result = await invoke_async(
        "--config", str(config), "submit", "nextmv", "routing", env=PLATFORM_ENV
    )
    assert result.exit_code == 0, result.output
    (run,) = platform.runs.values()
    assert result.stdout.strip() == run.id
    assert run.input == {}

    result = await invoke_async(
        "--config", str(config), "submit", "nextmv", "routing", "--json", env=PLATFORM_ENV
    )
    document = json.loads(result.stdout)
    assert document["provider"] == "nextmv"
    assert document["callback_url"] is False  # no public URL: poll-only


def test_submit_reads_stdin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[Any] = []

    async def fake_submit(
        config: Any, provider: str, application: str, data: Any, **kw: Any
    ) -> int:
        seen.append(data)
        return 0

    monkeypatch.setattr("listener.cli.control._submit", fake_submit)
    config = write_config(tmp_path, "")
    assert invoke("--config", str(config), "submit", "p", "a", "-", input='{"a": 1}').exit_code == 0
    assert (
        invoke("--config", str(config), "submit", "p", "a", "-", input="plain text").exit_code == 0
    )
    assert seen == [{"a": 1}, "plain text"]
    bad = invoke("--config", str(config), "submit", "p", "a", "-o", "novalue")
    assert bad.exit_code == 2
    assert "expected NAME=VALUE" in bad.output


async def test_submit_wait_exits_1_when_the_run_fails(
    tmp_path: Path, platform: FakePlatform
) -> None:
    platform.plan = RunPlan(status="failed")
    config = platform_config(tmp_path, platform)
    result = await invoke_async(
        "--config", str(config), "submit", "nextmv", "routing", "--wait", env=PLATFORM_ENV
    )
    assert result.exit_code == 1, result.output
    assert result.stdout.strip().endswith("failed (learned by poll)")


async def test_submit_wait_times_out_with_124(tmp_path: Path, platform: FakePlatform) -> None:
    platform.plan = RunPlan(runs_for=None)
    config = platform_config(tmp_path, platform)
    result = await invoke_async(
        "--config", str(config), "submit", "nextmv", "routing", "--wait", "--timeout", "0.2",
        env=PLATFORM_ENV,
    )  # fmt: skip
    assert result.exit_code == 124, result.output
    assert "did not finish within 0.2 s" in result.stderr


def test_submit_to_an_unconfigured_provider_exits_2(tmp_path: Path) -> None:
    config = write_config(tmp_path, f'[listener]\nstore = "{store_url(tmp_path)}"\n')
    result = invoke("--config", str(config), "submit", "nextmv", "routing")
    assert result.exit_code == 2
    assert "no provider 'nextmv' configured (add [providers.nextmv]); configured: none" in (
        result.stderr
    )


async def test_cancel_a_running_run(tmp_path: Path, platform: FakePlatform) -> None:
    platform.plan = RunPlan(runs_for=None)
    config = platform_config(tmp_path, platform)
    submitted = await invoke_async(
        "--config", str(config), "submit", "nextmv", "routing", env=PLATFORM_ENV
    )
    run_id = submitted.stdout.strip()
    result = await invoke_async(
        "--config", str(config), "cancel", run_id, "--json", env=PLATFORM_ENV
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"run_id": run_id, "status": "canceled"}
    assert platform.runs[run_id].status == "canceled"

    missing = await invoke_async("--config", str(config), "cancel", "nope", env=PLATFORM_ENV)
    assert missing.exit_code == 4
    assert "no run 'nope'" in missing.stderr


def test_track_records_a_run_and_queues_its_handlers(tmp_path: Path) -> None:
    config = write_config(
        tmp_path,
        f'[listener]\nstore = "{store_url(tmp_path)}"\nplugins = ["handlers.log"]\n',
    )
    (tmp_path / "out.json").write_text('{"cost": 3}')
    args = ["--config", str(config), "track", "flows", "etl", "run-9", "SUCCEEDED"]
    first = invoke(*args, "--output-file", str(tmp_path / "out.json"), "--duration", "1.5")
    assert first.exit_code == 0, first.output
    assert first.stdout.strip() == "recorded run run-9 succeeded; 1 handler call(s) queued"
    again = invoke(*args, "--json")
    assert json.loads(again.stdout) == {
        "run_id": "run-9",
        "status": "succeeded",
        "duplicate": True,
        "moved": False,
        "handler_calls": [],
    }
    shown = invoke("--config", str(config), "runs", "show", "run-9", "--json")
    document = json.loads(shown.stdout)
    assert document["events"][0]["payload"] == {
        "status": "succeeded",
        "output": {"cost": 3},
        "duration_ms": 1500,
    }
    assert document["handler_calls"][0]["handler"] == "handlers.log.log_transition"
    assert document["handler_calls"][0]["state"] == "pending"  # the service runs it


def test_runs_listing_and_filters(history: History) -> None:
    base = ["--config", str(history.config)]
    table = invoke(*base, "runs")
    assert table.exit_code == 0
    lines = table.stdout.splitlines()
    assert lines[0].split() == [
        "RUN",
        "ID",
        "STATUS",
        "PROVIDER",
        "APPLICATION",
        "SUBMITTED",
        "LAST",
        "EVENT",
    ]
    assert len(lines) == 3
    failed = json.loads(invoke(*base, "runs", "--status", "failed", "--json").stdout)
    assert [run["run_id"] for run in failed["items"]] == ["run-bad"]
    by_provider = json.loads(invoke(*base, "runs", "--provider", "nextmv", "--json").stdout)
    assert [run["run_id"] for run in by_provider["items"]] == ["run-ok"]
    by_app = invoke(*base, "runs", "--application", "nothing")
    assert by_app.stdout.strip() == "no runs"
    paged = invoke(*base, "runs", "--limit", "1", "--json")
    cursor = json.loads(paged.stdout)["next_cursor"]
    assert cursor is not None
    assert "more: listener runs --cursor" in invoke(*base, "runs", "--limit", "1").stderr
    rest = json.loads(invoke(*base, "runs", "--limit", "1", "--cursor", cursor, "--json").stdout)
    assert len(rest["items"]) == 1


def test_runs_show(history: History) -> None:
    base = ["--config", str(history.config)]
    shown = invoke(*base, "runs", "show", "run-bad")
    assert shown.exit_code == 0
    assert "status       failed" in shown.stdout
    assert "events:" in shown.stdout
    assert "app.alert" in shown.stdout
    assert "dead" in shown.stdout
    document = json.loads(invoke(*base, "runs", "show", "run-ok", "--json").stdout)
    assert document["run"]["status"] == "succeeded"
    assert [call["state"] for call in document["handler_calls"]] == ["done"]
    missing = invoke(*base, "runs", "show", "nope")
    assert missing.exit_code == 4
    assert missing.stderr.strip() == "error: no run 'nope' in the store"


def test_events_listing(history: History) -> None:
    base = ["--config", str(history.config)]
    table = invoke(*base, "events", "--run-id", "run-ok")
    assert table.exit_code == 0
    assert "d-ok" in table.stdout
    assert "d-bad" not in table.stdout
    statuses = json.loads(invoke(*base, "events", "--status", "succeeded", "--json").stdout)
    assert [event["delivery_id"] for event in statuses["items"]] == ["d-ok"]
    assert invoke(*base, "events", "--provider", "other").stdout.strip() == "no events"
    unroutable = invoke(*base, "events", "--unroutable")
    assert "no run id" in unroutable.stdout
    document = json.loads(invoke(*base, "events", "--unroutable", "--json").stdout)
    assert document["items"][0]["body"] == '{"x": 1}'
    assert "headers" not in document["items"][0]


def test_dead_letters_and_replay(history: History) -> None:
    base = ["--config", str(history.config)]
    dead = json.loads(invoke(*base, "dead-letters", "--json").stdout)
    assert [call["id"] for call in dead["items"]] == [history.dead_call]
    assert invoke(*base, "dead-letters", "--handler", "app.notify").stdout.strip() == (
        "no dead letters"
    )
    replayed = invoke(*base, "replay", str(history.done_call), "--json")
    assert replayed.exit_code == 0
    assert json.loads(replayed.stdout)["state"] == "pending"
    missing = invoke(*base, "replay", "999")
    assert missing.exit_code == 4
    assert missing.stderr.strip() == "error: no handler call 999"


def test_a_missing_store_exits_3(tmp_path: Path) -> None:
    config = write_config(tmp_path, f'[listener]\nstore = "{store_url(tmp_path)}"\n')
    for command in (["runs"], ["events"], ["dead-letters"], ["replay", "1"], PRUNE):
        result = invoke("--config", str(config), *command)
        assert result.exit_code == 3, command
        assert "no store at" in result.stderr
    assert not (tmp_path / "listener.db").exists()  # reading never creates one


def test_an_unreachable_store_exits_3(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("")
    config = write_config(tmp_path, f'[listener]\nstore = "sqlite:///{tmp_path}/a-file/l.db"\n')
    result = invoke("--config", str(config), "track", "p", "a", "r", "failed")
    assert result.exit_code == 3
    assert result.stderr.startswith("error: store unavailable:")


# --- prune ------------------------------------------------------------------------------------

PRUNE = ["prune", "--older-than", "30d"]


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("30d", 30 * DAY),
        ("12h", 12 * 3600.0),
        ("90m", 5400.0),
        ("3600s", 3600.0),
        ("86400", DAY),
        ("1.5d", 1.5 * DAY),
        (" 2 H ", 7200.0),
    ],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "d", "30x", "-1d", "1d2h", "soon", "1e3", "9" * 400])
def test_parse_duration_refuses_what_is_not_a_duration(text: str) -> None:
    with pytest.raises(ValueError, match="is not a duration"):
        parse_duration(text)


def test_prune_json_gives_the_counts_and_the_cutoff(history: History) -> None:
    age_sqlite_store(history.config.parent / "listener.db", 3 * DAY)
    started = datetime.now(UTC)
    result = invoke("--config", str(history.config), "prune", "--older-than", "2d", "--json")
    ended = datetime.now(UTC)
    assert result.exit_code == 0, result.stderr
    document = json.loads(result.stdout)
    before = datetime.fromisoformat(document.pop("before"))
    assert document == {
        "runs": 1,
        "events": 1,
        "transitions": 1,
        "handler_calls": 1,
        "unroutable": 1,
    }
    # The cutoff is two days back from when the command ran.
    assert started - timedelta(days=2) <= before <= ended - timedelta(days=2)


def test_prune_leaves_what_is_younger_than_the_age_given(history: History) -> None:
    age_sqlite_store(history.config.parent / "listener.db", 2 * DAY)
    result = invoke("--config", str(history.config), "prune", "--older-than", "3d", "--json")
    assert result.exit_code == 0, result.stderr
    counts = json.loads(result.stdout)
    del counts["before"]
    assert set(counts.values()) == {0}
    runs = invoke("--config", str(history.config), "runs", "--json")
    assert len(json.loads(runs.stdout)["items"]) == 2


def test_prune_in_chunks_removes_everything(tmp_path: Path) -> None:
    async def fill() -> None:
        store = await open_store(store_url(tmp_path))
        try:
            for index in range(5):
                await store.record(
                    RunEvent(f"d-{index}", "local", "app", f"run-{index}", RunStatus.SUCCEEDED)
                )
        finally:
            await store.close()

    asyncio.run(fill())
    age_sqlite_store(tmp_path / "listener.db", 2 * DAY)
    config = write_config(tmp_path, f'[listener]\nstore = "{store_url(tmp_path)}"\n')
    result = invoke("--config", str(config), "prune", "--older-than", "1d", "--limit", "2")
    assert result.exit_code == 0, result.stderr
    assert result.stdout.startswith("pruned 5 runs, 5 events, 5 transitions, 0 handler calls")


@pytest.mark.parametrize("age", ["1h", "86399", "23h"])
def test_prune_under_a_day_is_a_usage_error_with_the_reason(history: History, age: str) -> None:
    age_sqlite_store(history.config.parent / "listener.db", 2 * DAY)
    result = invoke("--config", str(history.config), "prune", "--older-than", age)
    assert result.exit_code == 2
    message = result.stderr.strip()
    assert message.startswith("error: --older-than must be at least one day")
    assert "a delivery that a sender retries after its event was pruned is taken as new" in (
        message
    )
    assert "\n" not in message
    runs = invoke("--config", str(history.config), "runs", "--json")
    assert len(json.loads(runs.stdout)["items"]) == 2  # nothing was deleted


def test_prune_needs_a_readable_age(tmp_path: Path) -> None:
    assert invoke("prune").exit_code == 2
    bad = invoke("prune", "--older-than", "a month")
    assert bad.exit_code == 2
    assert "'a month' is not a duration" in bad.stderr
    assert invoke("prune", "--older-than", "30d", "--limit", "0").exit_code == 2


def test_prune_with_the_store_unreachable_exits_3(tmp_path: Path) -> None:
    config = write_config(tmp_path, '[listener]\nstore = "postgresql://nobody@127.0.0.1:9/x"\n')
    result = invoke("--config", str(config), *PRUNE)
    assert result.exit_code == 3
    assert result.stderr.startswith("error: store unavailable:")


# --- send-test --------------------------------------------------------------------------------


@pytest.fixture
async def echo_server() -> AsyncIterator[tuple[str, list[Request], list[bytes]]]:
    """Answers 200 when the delivery verifies with the secret named in the path."""
    requests: list[Request] = []
    bodies: list[bytes] = []

    async def hook(request: Request) -> JSONResponse:
        body = await request.body()
        requests.append(request)
        bodies.append(body)
        scheme_name = request.path_params["scheme"]
        if scheme_name == "none":
            return JSONResponse({"ok": True})
        try:
            scheme_from_name(scheme_name, [WEBHOOK_SECRET]).verify(body, request.headers)
        except Exception as exc:
            return JSONResponse({"error": type(exc).__name__}, 401)
        return JSONResponse({"ok": True})

    app = Starlette(routes=[Route("/{scheme}", hook, methods=["POST"])])
    async with LoopbackServer(app) as server:
        yield server.base_url, requests, bodies


@pytest.mark.parametrize("scheme", ["nextmv", "standard-webhooks", "stripe", "github", "none"])
async def test_send_test_signs_with_each_scheme(
    scheme: str, echo_server: tuple[str, list[Request], list[bytes]], tmp_path: Path
) -> None:
    base_url, _, _ = echo_server
    secret_file = tmp_path / "secret"
    secret_file.write_text(WEBHOOK_SECRET + "\n")
    result = await invoke_async(
        "send-test", f"{base_url}/{scheme}", "--scheme", scheme, "--secret", f"file:{secret_file}",
        "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["status_code"] == 200
    assert WEBHOOK_SECRET not in result.output


@pytest.mark.parametrize(
    ("provider", "field"),
    [("nextmv", "status_v2"), ("workflow", "status"), ("local", "status")],
)
async def test_send_test_speaks_each_provider(
    provider: str, field: str, echo_server: tuple[str, list[Request], list[bytes]]
) -> None:
    base_url, _, bodies = echo_server
    result = await invoke_async(
        "send-test", f"{base_url}/none", "--scheme", "none", "--provider", provider,
        "--status", "canceled", "--run-id", "r-1",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("HTTP 200 OK")
    payload = json.loads(bodies[-1])
    data = payload.get("data", payload)
    assert data["run_id"] == "r-1"
    assert data[field] == ("stopped" if provider == "workflow" else "canceled")


async def test_send_test_reports_rejections_and_bad_input(
    echo_server: tuple[str, list[Request], list[bytes]],
) -> None:
    base_url, _, _ = echo_server
    rejected = await invoke_async(
        "send-test", f"{base_url}/nextmv", "--scheme", "nextmv", "--secret", "other"
    )
    assert rejected.exit_code == 1
    assert rejected.stdout.startswith("HTTP 401")
    unsigned = invoke("send-test", f"{base_url}/nextmv", "--scheme", "nextmv")
    assert unsigned.exit_code == 2
    assert "--scheme nextmv needs --secret" in unsigned.output
    bad = invoke("send-test", base_url, "--scheme", "standard-webhooks", "--secret", "not*b64")
    assert bad.exit_code == 2
    assert "not valid base64" in bad.stderr
    assert "not*b64" not in bad.stderr
    missing = invoke("send-test", base_url, "--scheme", "nextmv", "--secret", "env:NOT_SET_HERE")
    assert missing.exit_code == 2
    assert missing.stderr.strip() == "--secret: environment variable NOT_SET_HERE is not set"


def test_send_test_to_nowhere_exits_1() -> None:
    port = free_port()
    result = invoke("send-test", f"http://127.0.0.1:{port}/hooks/x", "--scheme", "none")
    assert result.exit_code == 1
    assert result.stderr.startswith(f"error: cannot deliver to http://127.0.0.1:{port}/hooks/x")


# --- webhooks, keys, demo, version ------------------------------------------------------------


async def test_webhooks_register_hides_the_secret_by_default(
    tmp_path: Path, platform: FakePlatform
) -> None:
    config = platform_config(tmp_path, platform)
    text = config.read_text().replace(
        "[listener]\n",
        '[listener]\npublic_url = "https://hooks.example.com/base/"\n',
    )
    text += '\n[sources.nv]\nprovider = "nextmv"\nscheme = "nextmv"\nsecrets = ["env:NV"]\n'
    config.write_text(text)
    env = {**PLATFORM_ENV, "NV": "nv-secret"}
    result = await invoke_async(
        "--config", str(config), "webhooks", "register", "--endpoint-id", "ep", env=env
    )
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == (
        "registered endpoint ep: https://hooks.example.com/base/hooks/nv (run.status)"
    )
    secret = platform.webhook_secret("ep")
    assert secret not in result.output
    assert "listener webhooks secret --provider nextmv --endpoint-id ep" in result.stderr

    printed = await invoke_async(
        "--config", str(config), "webhooks", "secret", "--endpoint-id", "ep", env=env
    )
    assert printed.stdout.strip() == secret

    shown = await invoke_async(
        "--config", str(config), "webhooks", "register", "--endpoint-id", "ep2", "--url",
        "https://x.example/hooks/nv", "--show-secret", env=env,
    )  # fmt: skip
    assert shown.stdout.splitlines()[1] == f"signing secret: {platform.webhook_secret('ep2')}"

    clash = await invoke_async(
        "--config", str(config), "webhooks", "register", "--endpoint-id", "ep", env=env
    )
    assert clash.exit_code == 1
    assert "error: the platform call failed" in clash.stderr


def test_webhooks_register_needs_an_account_provider_and_a_url(tmp_path: Path) -> None:
    config = write_config(
        tmp_path,
        '[providers.flows]\nkind = "workflow"\napi_key = "k"\nbase_url = "http://127.0.0.1:9"\n'
        '[providers.nextmv]\napi_key = "k"\nbase_url = "http://127.0.0.1:9"\n',
    )
    flows = invoke(
        "--config", str(config), "webhooks", "register", "--provider", "flows",
        "--endpoint-id", "e", "--url", "https://x.example",
    )  # fmt: skip
    assert flows.exit_code == 2
    assert "has no account webhooks" in flows.stderr
    no_url = invoke("--config", str(config), "webhooks", "register", "--endpoint-id", "e")
    assert no_url.exit_code == 2
    assert "give --url" in no_url.stderr
    unknown = invoke(
        "--config", str(config), "webhooks", "register", "--provider", "acme",
        "--endpoint-id", "e", "--url", "https://x.example",
    )  # fmt: skip
    assert unknown.exit_code == 2
    assert "providers.acme: not configured; configured: flows, nextmv" in unknown.stderr


def test_keys_generate_in_process() -> None:
    hmac_key = json.loads(invoke("keys", "generate", "--json").stdout)["secret"]
    assert hmac_key.startswith("whsec_")
    pair = invoke("keys", "generate", "--kind", "ed25519").stdout.splitlines()
    assert pair[0].startswith("signing key (sender only): whsk_")
    assert pair[1].startswith("public key (receiver's secrets): whpk_")


@pytest.fixture
def fake_demo(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    calls: list[dict[str, Any]] = []
    module = types.ModuleType("listener.demo")

    async def run_demo(*, runs: int = 20, seed: int = 0, out: Callable[[str], None] = print) -> int:
        calls.append({"runs": runs, "seed": seed})
        out("demo ran")
        return 5

    module.run_demo = run_demo  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "listener.demo", module)
    return calls


def test_demo_calls_run_demo_and_returns_its_code(fake_demo: list[dict[str, Any]]) -> None:
    result = invoke("demo", "--runs", "3", "--seed", "7")
    assert result.exit_code == 5
    assert result.stdout == "demo ran\n"
    assert fake_demo == [{"runs": 3, "seed": 7}]


def test_demo_missing_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "listener.demo", None)
    result = invoke("demo")
    assert result.exit_code == 1
    assert result.stderr.strip() == "error: the demo is not part of this installation"


def test_version_in_process() -> None:
    assert invoke("version").stdout.strip() == __version__


# --- the app factory and error mapping --------------------------------------------------------


async def test_create_app_reads_listener_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = write_config(tmp_path, f'[listener]\nstore = "{store_url(tmp_path)}"\n')
    monkeypatch.setenv("LISTENER_CONFIG", str(config))
    async with serve(create_app()) as base_url, httpx.AsyncClient() as client:
        answer = await client.get(f"{base_url}/readyz")
        assert answer.json() == {"status": "ready"}
    assert (tmp_path / "listener.db").exists()


@pytest.mark.parametrize(
    ("exc", "code", "message"),
    [
        (CommandError("error: x", 4), 4, "error: x"),
        (ConfigError("f.toml: a.b: expected c"), 2, "f.toml: a.b: expected c"),
        (StoreUnavailable("down"), 3, "error: store unavailable: down"),
        (RunNotFound("no run 'r'"), 4, "error: no run 'r'"),
        (WaitTimeout("late"), 124, "error: late"),
        (
            ProviderError("503 from platform"),
            1,
            "error: the platform call failed: 503 from platform",
        ),
        (RuntimeError("boom"), 1, "error: RuntimeError: boom"),
    ],
)
def test_exceptions_map_to_exit_codes(exc: Exception, code: int, message: str) -> None:
    assert classify(exc) == (code, message)


def test_an_unexpected_error_is_one_line_without_a_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def explode(coroutine: Coroutine[Any, Any, Any]) -> None:
        coroutine.close()
        raise RuntimeError("first line\nsecond line")

    monkeypatch.setattr("listener.cli.runs.run_async", explode)
    config = write_config(tmp_path, "")
    result = invoke("--config", str(config), "runs")
    assert result.exit_code == 1
    assert result.stderr == "error: RuntimeError: first line second line\n"
    debug = invoke("--debug", "--config", str(config), "runs")
    assert "Traceback (most recent call last)" in debug.stderr
