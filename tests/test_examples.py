"""Every example runs: against the fake platform where it needs one, over real HTTP."""

from __future__ import annotations

import asyncio
import configparser
import contextlib
import importlib.util
import json
import logging
import os
import re
import sys
import tomllib
from collections import Counter
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest
from helpers import free_port, serve, wait_for

from listener import DispatchSettings, Listener, Origin, PollSettings, RunStatus, Source
from listener.signatures import NextmvSignature, generate_hmac_secret
from listener.store import CallState
from listener.testing import (
    FakeNoxusEngine,
    FakePlatform,
    FakeRun,
    LoopbackServer,
    NoxusPlan,
    RunPlan,
    nextmv_run_status_payload,
    signed_delivery,
)

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
# Fake run plans are in platform seconds; at this scale a 40 s run takes 0.4 s.
TIME_SCALE = 0.01


def load_example(name: str) -> ModuleType:
    """Import `examples/<name>.py` (examples are scripts, not a package)."""
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def ending(run: FakeRun) -> RunPlan:
    """Runs whose input says `"end": "failed"` fail; the others succeed."""
    status = run.input.get("end", "succeeded") if isinstance(run.input, dict) else "succeeded"
    return RunPlan(status=status, queued_for=10, runs_for=30)


@contextlib.asynccontextmanager
async def platform_and_receiver(
    listener: Listener,
) -> AsyncIterator[FakePlatform]:
    """A fake platform whose webhooks go to `listener`, served on loopback and started."""
    async with (
        FakePlatform(plan=ending, time_scale=TIME_SCALE) as platform,
        listener,
        LoopbackServer(listener.asgi()) as server,
    ):
        secret = platform.register_webhook(f"{server.base_url}/hooks/nextmv")
        listener.add_source(Source("nextmv", "nextmv", NextmvSignature([secret])))
        async with platform.nextmv_provider() as provider:
            listener.add_provider(provider)
            yield platform


async def settled(listener: Listener) -> None:
    async def done() -> bool:
        states = (await listener.store.counts()).calls_by_state
        return not states.get("pending") and not states.get("running")

    await wait_for(done, "handler calls to finish")


# -- run_handlers.py -------------------------------------------------------------------------


async def test_the_handlers_example_saves_outputs_and_reports_failures(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    results = tmp_path / "results"
    monkeypatch.setenv("EXAMPLE_RESULTS_DIR", str(results))
    caplog.set_level(logging.WARNING, logger="examples.run_handlers")
    listener = Listener(
        store_url=f"sqlite:///{tmp_path / 'h.db'}",
        plugins=[str(EXAMPLES / "run_handlers.py")],
        dispatch=DispatchSettings(sweep_interval=0.05),
        poll=PollSettings(grace=60),
    )
    names = listener.handlers.names()
    assert any(name.endswith("save_output") for name in names)
    assert any(name.endswith("report_problem") for name in names)
    async with platform_and_receiver(listener):
        good = await listener.run("nextmv", "routing", {"stops": 3}, timeout=30)
        bad = await listener.run("nextmv", "routing", {"end": "failed"}, timeout=30)
        await settled(listener)
        calls = (await listener.store.list_calls()).items
        assert len(calls) == 2
        assert all(call.state is CallState.DONE for call in calls)
    assert (good.status, bad.status) == (RunStatus.SUCCEEDED, RunStatus.FAILED)
    saved = json.loads((results / f"{good.run_id}.json").read_text())
    # The output came from the platform through `event.fetch_result()`.
    assert saved == {"run_id": good.run_id, "status": "succeeded", "output": {"echo": {"stops": 3}}}
    assert [path.name for path in results.iterdir()] == [f"{good.run_id}.json"]
    assert f"run {bad.run_id} of routing ended failed (learned by webhook)" in caplog.messages


# -- submit_and_wait.py ------------------------------------------------------------------


async def run_script(
    path: Path, env: dict[str, str], cwd: Path, args: Sequence[str] = ()
) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(path),
        *args,
        cwd=cwd,
        env={**os.environ, **env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(60):
        stdout, stderr = await process.communicate()
    assert process.returncode is not None
    return process.returncode, stdout.decode(), stderr.decode()


async def test_submit_and_wait_learns_the_end_from_a_service_sharing_its_store(
    tmp_path: Path,
) -> None:
    store_url = f"sqlite:///{tmp_path / 'shared.db'}"
    # This process plays the `listener serve` that receives the account's webhooks.
    service = Listener(
        store_url=store_url,
        dispatch=DispatchSettings(sweep_interval=0.05),
        poll=PollSettings(enabled=False),
    )
    async with platform_and_receiver(service) as platform:
        env = {
            "NEXTMV_BASE_URL": platform.base_url,
            "NEXTMV_API_KEY": platform.api_key,
            "LISTENER_STORE": store_url,
            # The script must not find out by polling: only the webhook can tell it.
            "LISTENER_POLLER_GRACE": "3600",
        }
        code, stdout, stderr = await run_script(EXAMPLES / "submit_and_wait.py", env, tmp_path)
        assert platform.api_calls["runs.metadata"] == 0
    assert code == 0, stderr
    run_id = re.search(r"submitted (\S+) to routing", stdout)
    assert run_id is not None
    assert f"run {run_id[1]} succeeded (learned by webhook)" in stdout


async def test_submit_and_wait_polls_when_no_webhook_comes(tmp_path: Path) -> None:
    async with FakePlatform(plan=RunPlan("failed", runs_for=30), time_scale=TIME_SCALE) as fake:
        env = {
            "NEXTMV_BASE_URL": fake.base_url,
            "NEXTMV_API_KEY": fake.api_key,
            "LISTENER_STORE": f"sqlite:///{tmp_path / 'alone.db'}",
            "LISTENER_POLLER_GRACE": "0.5",
        }
        code, stdout, stderr = await run_script(EXAMPLES / "submit_and_wait.py", env, tmp_path)
    assert code == 1, stderr
    assert re.search(r"run \S+ failed \(learned by poll\)", stdout)


async def test_submit_and_wait_needs_an_api_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("NEXTMV_API_KEY", raising=False)
    example = load_example("submit_and_wait")
    assert await example.submit_and_wait({}, timeout=1) == 2
    assert "set NEXTMV_API_KEY" in capsys.readouterr().err


# -- poll_only.py ------------------------------------------------------------------------


async def test_poll_only_finds_every_end_without_webhooks(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    example = load_example("poll_only")
    async with FakePlatform(plan=ending, time_scale=TIME_SCALE) as platform:
        monkeypatch.setenv("NEXTMV_BASE_URL", platform.base_url)
        monkeypatch.setenv("NEXTMV_API_KEY", platform.api_key)
        monkeypatch.delenv("LISTENER_STORE", raising=False)
        inputs = [{"stops": 4}, {"stops": 8, "end": "failed"}]
        code = await example.run_all(inputs, timeout=30)
        assert platform.deliveries == []  # no endpoint was ever registered
        assert platform.api_calls["runs.metadata"] + platform.api_calls["runs.list"] > 0
    assert code == 1  # one of the runs failed
    printed = capsys.readouterr().out
    ends = re.findall(r"^run (\S+) (\w+) \(learned by (\w+)\)$", printed, re.MULTILINE)
    assert sorted((status, origin) for _, status, origin in ends) == [
        ("failed", "poll"),
        ("succeeded", "poll"),
    ]
    for run_id, status, _ in ends:
        assert f"handler: run {run_id} {status}" in printed


# -- noxus_workflow.py -------------------------------------------------------------------


async def test_noxus_workflow_learns_the_end_by_stream(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    example = load_example("noxus_workflow")
    async with FakeNoxusEngine(plan=NoxusPlan(status="failed", runs_for=0.2)) as engine:
        monkeypatch.setenv("NOXUS_BASE_URL", engine.base_url)
        monkeypatch.setenv("NOXUS_API_KEY", engine.api_key)
        monkeypatch.setenv("NOXUS_WORKFLOW_ID", engine.workflow_id)
        monkeypatch.delenv("LISTENER_STORE", raising=False)
        code = await example.run_one({"doc": "a.pdf"}, timeout=30)
        [run_id] = engine.runs
        assert engine.runs[run_id].callback_url is None  # nothing could reach this process
        assert engine.status_calls == Counter()  # its end came by stream, unasked
    assert code == 1
    printed = capsys.readouterr().out
    assert f"run {run_id} failed (learned by stream)" in printed
    assert f"handler: run {run_id} failed" in printed


# -- mounting in a host app --------------------------------------------------------------


@pytest.mark.parametrize("name", ["mount_in_starlette", "mount_in_fastapi"])
async def test_the_receiver_mounted_under_a_prefix(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = generate_hmac_secret()
    monkeypatch.setenv("NEXTMV_WEBHOOK_SECRET", f"{secret}, {generate_hmac_secret()}")
    monkeypatch.setenv("LISTENER_STORE", f"sqlite:///{tmp_path / 'mounted.db'}")
    app = load_example(name).create_app()
    listener: Listener = app.state.listener
    scheme = NextmvSignature([secret])
    body, headers = signed_delivery(scheme, nextmv_run_status_payload("run-7", "routing", "failed"))
    async with serve(app) as url, httpx.AsyncClient(base_url=url) as client:
        assert (await client.get("/")).json() == {"service": "orders"}
        assert (await client.get("/listener/healthz")).status_code == 200
        assert (await client.get("/listener/readyz")).status_code == 200
        assert (await client.get("/runs/run-7")).status_code == 404

        forged = dict(headers, **NextmvSignature([generate_hmac_secret()]).sign(body, msg_id="x"))
        hook = "/listener/hooks/nextmv"
        assert (await client.post(hook, content=body, headers=forged)).status_code == 401
        unmounted = await client.post("/hooks/nextmv", content=body, headers=headers)
        assert unmounted.status_code == 404
        answer = await client.post(hook, content=body, headers=headers)
        assert answer.status_code == 202
        again = await client.post(hook, content=body, headers=headers)
        assert again.status_code == 200

        assert (await client.get("/runs/run-7")).json() == {"run_id": "run-7", "status": "failed"}
        await settled(listener)
        calls = (await listener.store.list_calls(run_id="run-7")).items
        assert [(c.handler, c.state, c.event.origin) for c in calls] == [
            ("announce", CallState.DONE, Origin.WEBHOOK)
        ]
    # The host's lifespan stopped the listener with the app.
    assert not listener.started


@pytest.mark.parametrize("name", ["mount_in_starlette", "mount_in_fastapi"])
async def test_the_mounted_handlers_log_line_appears_under_uvicorn(
    name: str, tmp_path: Path
) -> None:
    """Started as its docstring says, with uvicorn's own logging: `announce`'s line shows."""
    secret = generate_hmac_secret()
    port = free_port()
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "uvicorn",
        "--factory",
        f"examples.{name}:create_app",
        "--port",
        str(port),
        cwd=EXAMPLES.parent,
        env={
            **os.environ,
            "NEXTMV_WEBHOOK_SECRET": secret,
            "LISTENER_STORE": f"sqlite:///{tmp_path / 'mounted.db'}",
        },
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stderr is not None
    output = b""
    try:
        async with asyncio.timeout(60):
            while b"Uvicorn running" not in output:
                output += await process.stderr.readline()
            body, headers = signed_delivery(
                NextmvSignature([secret]), nextmv_run_status_payload("run-9", "routing", "failed")
            )
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
                answer = await client.post("/listener/hooks/nextmv", content=body, headers=headers)
            assert answer.status_code == 202
            while b"run run-9 ended failed" not in output:
                line = await process.stderr.readline()
                assert line, output.decode()
                output += line
    finally:
        process.terminate()
        await process.wait()
    assert b"INFO examples.mount: run run-9 ended failed" in output


# -- listener.toml -----------------------------------------------------------------------


@pytest.fixture
def restore_log_plugin() -> Iterator[None]:
    """Loading the example config configures `handlers.log`; undo that for other tests."""
    import handlers.log

    yield
    handlers.log.configure({})


CONFIG = EXAMPLES / "listener.toml"


def credentials(document: Any, key: str = "") -> Iterator[tuple[str, Any]]:
    """Every value under a key that names a secret, a key or a password, at any depth."""
    if isinstance(document, dict):
        for name, value in document.items():
            yield from credentials(value, name)
    elif isinstance(document, list):
        for value in document:
            yield from credentials(value, key)
    elif re.search(r"secret|key|password|token", key):
        yield key, document


def test_the_example_config_holds_secrets_only_as_references() -> None:
    document = tomllib.loads(CONFIG.read_text())
    assert document["sources"]["nextmv"]["secrets"] == ["env:NEXTMV_WEBHOOK_SECRET"]
    assert document["providers"]["nextmv"]["api_key"] == "env:NEXTMV_API_KEY"
    found = list(credentials(document))
    assert len(found) == 2
    assert all(str(value).startswith(("env:", "file:")) for _, value in found)


async def test_the_example_config_loads_and_builds_a_listener(restore_log_plugin: None) -> None:
    from listener.config import ConfigError, build_listener, load_config

    secret = generate_hmac_secret()
    env = {"NEXTMV_API_KEY": "key-from-env", "NEXTMV_WEBHOOK_SECRET": secret}
    config = load_config(CONFIG, env)
    assert config.store == "sqlite:////var/lib/listener/listener.db"
    [source] = config.sources
    assert (source.name, source.provider, source.scheme, source.secrets) == (
        "nextmv",
        "nextmv",
        "nextmv",
        (secret,),
    )
    [provider] = config.providers
    assert provider.kind == "nextmv"
    assert provider.settings["api_key"] == "key-from-env"
    assert secret not in repr(config)

    listener = build_listener(config)
    try:
        assert sorted(listener.sources) == ["nextmv"]
        assert sorted(listener.providers) == ["nextmv"]
        names = listener.handlers.names()
        assert "handlers.log.log_transition" in names
        assert any(name.endswith("save_output") for name in names)
    finally:
        for built in listener.providers.values():
            await built.aclose()

    with pytest.raises(ConfigError, match="NEXTMV_WEBHOOK_SECRET"):
        load_config(CONFIG, {"NEXTMV_API_KEY": "k"})


# -- deploy/ -----------------------------------------------------------------------------


def test_the_systemd_unit_is_hardened() -> None:
    unit = configparser.ConfigParser(interpolation=None, strict=True)
    unit.optionxform = str  # type: ignore[assignment,method-assign]  # keys are case-sensitive
    unit.read_string((EXAMPLES / "deploy" / "listener.service").read_text())
    assert unit.sections() == ["Unit", "Service", "Install"]
    service = unit["Service"]
    assert service["ExecStart"].endswith("listener serve --config /etc/listener/listener.toml")
    assert service["EnvironmentFile"] == "/etc/listener/listener.env"
    assert service["DynamicUser"] == "yes"
    assert service["StateDirectory"] == "listener"
    assert service["NoNewPrivileges"] == "yes"
    assert service["ProtectSystem"] == "strict"
    assert service["Restart"] == "on-failure"
    assert service["LimitNOFILE"] == "65536"  # above [server] limit_concurrency
    assert unit["Install"]["WantedBy"] == "multi-user.target"
    # The store the example config names lives in the unit's state directory.
    store = tomllib.loads(CONFIG.read_text())["listener"]["store"]
    assert store.startswith(f"sqlite:////var/lib/{service['StateDirectory']}/")


def test_the_reverse_proxy_guide_covers_what_deliveries_need() -> None:
    guide = (EXAMPLES / "deploy" / "reverse-proxy.md").read_text()
    for needed in ("client_max_body_size 2m", "max_size 2MB", "X-Forwarded-Proto", "/readyz"):
        assert needed in guide
    timeouts = [
        int(s)
        for s in re.findall(r"(?:proxy_read_timeout|response_header_timeout)\s+(\d+)s", guide)
    ]
    assert timeouts
    assert all(limit < 15 for limit in timeouts)


# -- offline: against `listener fake-platform nextmv`, and with nothing to reach -----------

SCRIPTS = ["submit_and_wait.py", "poll_only.py"]


@contextlib.asynccontextmanager
async def fake_platform_command(*args: str) -> AsyncIterator[dict[str, Any]]:
    """`listener fake-platform <args> --json` in a child process: what its line says."""
    serving = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "listener",
        "fake-platform",
        *args,
        "--json",
        stdout=asyncio.subprocess.PIPE,
    )
    assert serving.stdout is not None
    try:
        async with asyncio.timeout(60):
            found: dict[str, Any] = json.loads(await serving.stdout.readline())
        yield found
    finally:
        serving.terminate()
        assert await serving.wait() == 0


async def test_noxus_workflow_runs_against_the_fake_engine_command(tmp_path: Path) -> None:
    """Two terminals: `listener fake-platform noxus --json`, then the example."""
    async with fake_platform_command("noxus", "--runs-for", "0.2") as found:
        env = {
            "NOXUS_BASE_URL": found["base_url"],
            "NOXUS_API_KEY": found["api_key"],
            "NOXUS_WORKFLOW_ID": found["workflow_id"],
        }
        code, stdout, stderr = await run_script(EXAMPLES / "noxus_workflow.py", env, tmp_path)
    offline = {**env, "NOXUS_BASE_URL": f"http://127.0.0.1:{free_port()}"}
    unreachable = await run_script(EXAMPLES / "noxus_workflow.py", offline, tmp_path)
    assert code == 0, stderr
    assert re.search(r"^run \S+ succeeded \(learned by stream\)$", stdout, re.MULTILINE)
    assert 'output {"echo": {"doc": "quarterly-report.pdf"}}' in stdout
    assert unreachable[0] == 1
    [line] = unreachable[2].splitlines()
    assert line.startswith("error: the platform call failed: nothing answers at")
    assert "listener fake-platform noxus" in line


@pytest.mark.parametrize("script", SCRIPTS)
async def test_an_example_without_a_platform_says_so_in_one_line(
    script: str, tmp_path: Path
) -> None:
    env = {"NEXTMV_API_KEY": "k", "NEXTMV_BASE_URL": f"http://127.0.0.1:{free_port()}"}
    code, stdout, stderr = await run_script(EXAMPLES / script, env, tmp_path)
    assert (code, stdout) == (1, "")
    [line] = stderr.splitlines()
    assert line.startswith("error: the platform call failed: nothing answers at")
    assert "listener fake-platform nextmv" in line
    code, _, stderr = await run_script(EXAMPLES / script, env, tmp_path, ["--debug"])
    assert code == 1
    assert "Traceback" in stderr


async def test_poll_only_runs_against_the_fake_platform_command(tmp_path: Path) -> None:
    """Two terminals: `listener fake-platform nextmv --json`, then the example."""
    async with fake_platform_command("nextmv", "--runs-for", "0") as found:
        env = {"NEXTMV_BASE_URL": found["base_url"], "NEXTMV_API_KEY": found["api_key"]}
        code, stdout, stderr = await run_script(EXAMPLES / "poll_only.py", env, tmp_path)
    assert code == 0, stderr
    ends = re.findall(r"^run \S+ (\w+) \(learned by (\w+)\)$", stdout, re.MULTILINE)
    assert ends == [("succeeded", "poll")] * 3


async def test_submit_and_wait_runs_against_the_fake_platform_command(tmp_path: Path) -> None:
    """Two terminals: `listener fake-platform nextmv --json`, then the example, no receiver."""
    async with fake_platform_command("nextmv", "--runs-for", "0", "--fail", "1") as found:
        env = {
            "NEXTMV_BASE_URL": found["base_url"],
            "NEXTMV_API_KEY": found["api_key"],
            "LISTENER_STORE": f"sqlite:///{tmp_path / 'alone.db'}",
            "LISTENER_POLLER_GRACE": "0.5",
        }
        code, stdout, stderr = await run_script(EXAMPLES / "submit_and_wait.py", env, tmp_path)
    assert code == 1, stderr
    assert re.search(r"^run \S+ failed \(learned by poll\)$", stdout, re.MULTILINE)
