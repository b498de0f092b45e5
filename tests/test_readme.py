"""The README's examples run as shown: every Python block, and the tutorial end to end."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from helpers import free_port

README = Path(__file__).resolve().parent.parent / "README.md"
TEXT = README.read_text()


def block_after(marker: str, language: str) -> str:
    """The first fenced block of `language` after the sentence `marker`."""
    start = TEXT.index(marker)
    found = re.search(rf"```{language}\n(.*?)```", TEXT[start:], flags=re.DOTALL)
    assert found is not None, f"no {language} block after {marker!r}"
    return found.group(1)


# The SDK snippet needs the fake platform the README starts first; it runs on its own below.
SDK_MARKER = "Point the official SDK at it"
SDK_BLOCK = block_after(SDK_MARKER, "python")
# The tracing snippet sets the process's one global tracer provider: it runs in a process
# of its own below.
TRACING_BLOCK = block_after("## Tracing", "python")
PYTHON_BLOCKS = [
    block
    for block in re.findall(r"```python\n(.*?)```", TEXT, flags=re.DOTALL)
    if block not in (SDK_BLOCK, TRACING_BLOCK)
]


def run_bash(script: str, *, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """A README's shell steps, run strictly (any failing command fails the script)."""
    return subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_readme_has_python_examples() -> None:
    assert len(PYTHON_BLOCKS) >= 3


@pytest.mark.parametrize(
    "source", PYTHON_BLOCKS, ids=[f"block{i}" for i in range(len(PYTHON_BLOCKS))]
)
def test_readme_python_block_runs(source: str) -> None:
    exec(compile(source, str(README), "exec"), {"__name__": "readme_example"})  # noqa: S102


def test_tutorial_end_to_end(tmp_path: Path) -> None:
    (tmp_path / "my_handlers.py").write_text(block_after("Write a handler module", "python"))
    (tmp_path / "listener.toml").write_text(block_after("Point a `listener.toml`", "toml"))
    commands = block_after("Serve it, and send it", "sh")
    port = free_port()
    commands = commands.replace("8000", str(port))
    # The README starts the server in the background and goes on; a script must first
    # wait until it answers.
    wait = (
        f"for i in $(seq 1 100); do curl -fs http://127.0.0.1:{port}/healthz >/dev/null"
        " && break; sleep 0.1; done\n"
    )
    script = commands.replace(
        f"listener serve --port {port} &\n",
        f"listener serve --port {port} > serve.log 2>&1 &\necho $! > serve.pid\n{wait}",
    )
    assert "serve.pid" in script
    # The README's activation line, run from the tutorial's own folder.
    activate = ". .venv/bin/activate\n"
    assert script.startswith(activate)
    script = f". {Path(sys.executable).parent / 'activate'}\n{script[len(activate) :]}"
    env = dict(os.environ)
    env.pop("LISTENER_CONFIG", None)
    try:
        sent = run_bash(script, cwd=tmp_path, env=env)
        assert sent.returncode == 0, sent.stderr
        assert "HTTP 202 Accepted" in sent.stdout
        log = tmp_path / "serve.log"
        for _ in range(200):
            if "run run-1 succeeded (learned by webhook)" in log.read_text():
                break
            time.sleep(0.05)
        assert "run run-1 succeeded (learned by webhook)" in log.read_text()
        # A wrong secret is refused, and nothing more is stored.
        forged = subprocess.run(
            [
                str(Path(sys.executable).parent / "listener"),
                "send-test",
                f"http://127.0.0.1:{port}/hooks/local",
                "--scheme",
                "standard-webhooks",
                "--secret",
                "whsec_" + "A" * 43 + "=",
                "--provider",
                "local",
                "--run-id",
                "run-2",
            ],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert forged.returncode == 1
        assert "401" in forged.stdout
        runs = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
        assert 'outcome="rejected"' in runs
    finally:
        pid_file = tmp_path / "serve.pid"
        if pid_file.exists():
            pid = int(pid_file.read_text())
            subprocess.run(["kill", str(pid)], check=False)
            for _ in range(100):
                if subprocess.run(
                    ["kill", "-0", str(pid)], check=False, capture_output=True
                ).returncode:
                    break
                time.sleep(0.05)


def test_configuration_reference_loads(tmp_path: Path) -> None:
    from listener.config import build_listener, load_config

    path = tmp_path / "listener.toml"
    path.write_text(block_after("## Configuration", "toml"))
    (tmp_path / "run_handlers.py").write_text(
        (README.parent / "examples" / "run_handlers.py").read_text()
    )
    env = {
        "LISTENER_CALLBACK_SECRET": "a-callback-secret",
        "NEXTMV_WEBHOOK_SECRET": "a-webhook-secret",
        "NEXTMV_API_KEY": "an-api-key",
        "LISTENER_METRICS_TOKEN": "a-metrics-token",
    }
    config = load_config(path, env=env)
    assert config.receiver.metrics_token == "a-metrics-token"
    assert "a-metrics-token" not in repr(config)
    assert config.poller.grace == 300.0
    assert config.poller.learn is not None
    assert config.poller.cancel_at_deadline is False
    assert config.poller.overdue.minimum == 300.0
    assert (config.poller.learn.window, config.poller.learn.trusted_factor) == (200, 3.0)
    assert config.retention_days == 30
    assert config.dispatch.lease_margin == 30.0
    assert (config.health.window, config.health.min_ends) == (120.0, 20)
    assert [source.name for source in config.sources] == ["nextmv"]
    assert "a-webhook-secret" not in repr(config)
    listener = build_listener(config)
    assert listener.retention == 30 * 86400
    assert sorted(listener.sources) == ["nextmv"]
    assert sorted(listener.providers) == ["nextmv"]


def test_the_sdk_snippet_runs_against_the_fake_platform_command(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    [command] = [
        line for line in block_after("## The fake platform", "sh").splitlines() if line[:1] != "#"
    ]
    args = shlex.split(command.replace("8765", str(free_port())))
    assert args[:3] == ["listener", "fake-platform", "nextmv"]
    binary = str(Path(sys.executable).parent / "listener")
    with subprocess.Popen([binary, *args[1:]], stdout=subprocess.PIPE, text=True) as serving:
        try:
            assert serving.stdout is not None
            found = json.loads(serving.stdout.readline())
            monkeypatch.setenv("NEXTMV_BASE_URL", found["base_url"])
            monkeypatch.setenv("NEXTMV_API_KEY", found["api_key"])
            exec(compile(SDK_BLOCK, str(README), "exec"), {"__name__": "readme_sdk"})  # noqa: S102
        finally:
            serving.terminate()
        assert serving.wait(timeout=60) == 0
    assert capsys.readouterr().out == "succeeded {'echo': {'stops': 3}}\n"


def test_the_tracing_snippet_prints_one_trace(tmp_path: Path) -> None:
    script = tmp_path / "tracing.py"
    script.write_text(TRACING_BLOCK)
    root = README.parent
    done = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(root)},
        check=False,
    )
    assert done.returncode == 0, done.stderr
    printed = TRACING_BLOCK.rsplit("# ", 1)[1].strip()
    assert done.stdout.strip() == printed


def test_noxus_configuration_loads(tmp_path: Path) -> None:
    from listener.config import build_listener, load_config
    from listener.providers.noxus import NoxusProvider

    path = tmp_path / "listener.toml"
    path.write_text(block_after("## Noxus workflows", "toml"))
    env = {"LISTENER_CALLBACK_SECRET": "a-callback-secret", "NOXUS_API_KEY": "a-noxus-key"}
    listener = build_listener(load_config(path, env=env))
    source = listener.sources["noxus"]
    assert (source.provider, source.uses_token) == ("noxus", True)
    assert isinstance(listener.providers["noxus"], NoxusProvider)
    assert "a-noxus-key" not in repr(listener.providers["noxus"])


ARCHIVE_HANDLER = """

@handlers.on("succeeded")
def archive(event: RunEvent) -> None:
    print(f"archived {event.run_id}", flush=True)
"""


async def _recovery_history(directory: Path) -> None:
    """Dead calls of the tutorial's handler, runs that ended before `archive` existed, and
    an unroutable delivery the current parser reads."""
    from listener.events import RunEvent, RunStatus
    from listener.providers.native import build_payload
    from listener.store import open_store

    store = await open_store(f"sqlite:///{directory / 'listener.db'}")
    try:
        for index in range(3):
            failed = RunEvent(f"f{index}", "local", "app", f"bad-{index}", RunStatus.FAILED)
            await store.record(failed, ["my_handlers.report"])
        for call in await store.claim_calls("t", limit=10, lease_seconds=60):
            await store.fail_call(call.id, "t", error="down", retry_at=None)
        for index in range(2):
            ended = RunEvent(f"s{index}", "local", "app", f"ok-{index}", RunStatus.SUCCEEDED)
            await store.record(ended)
        late = build_payload(RunEvent("x", "local", "app", "late-1", RunStatus.SUCCEEDED))
        await store.record_unroutable(
            source="local",
            delivery_id="local:msg-1",
            reason="an older parser",
            body=json.dumps(late).encode(),
            headers={},
        )
    finally:
        await store.close()


def test_recovering_in_bulk(tmp_path: Path) -> None:
    import asyncio

    from listener.signatures import generate_hmac_secret

    handlers = block_after("Write a handler module", "python") + ARCHIVE_HANDLER
    (tmp_path / "my_handlers.py").write_text(handlers)
    (tmp_path / "listener.toml").write_text(block_after("Point a `listener.toml`", "toml"))
    asyncio.run(_recovery_history(tmp_path))
    commands = block_after("## Recovering in bulk", "sh")
    script = f". {Path(sys.executable).parent / 'activate'}\n{commands}"
    env = dict(os.environ)
    env.pop("LISTENER_CONFIG", None)
    env["WEBHOOK_SECRET"] = generate_hmac_secret()
    done = run_bash(script, cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "3 handler calls would be replayed (dry run)",
        "3 of 3 handler calls pending again; a running listener (serve or poll) will call them",
        "my_handlers.archive: 2 of 5 transitions match; 2 calls enqueued, 0 had one already;"
        " a running listener (serve or poll) will call them",
        "1 of 1 deliveries recorded (2 handler calls), 0 were recorded already;"
        " 0 still unroutable, 0 skipped",
    ]
    assert "replay: chunk 1: 3 matched, 3 replayed" in done.stderr


def test_endpoint_configuration_loads(tmp_path: Path) -> None:
    from listener.config import build_listener, load_config
    from listener.endpoint_keeper import NOTICE_HANDLER_NAME

    path = tmp_path / "listener.toml"
    path.write_text(block_after("## Keeping the webhook endpoint right", "toml"))
    env = {"NEXTMV_WEBHOOK_SECRET": "a-webhook-secret-long", "NEXTMV_API_KEY": "an-api-key"}
    config = load_config(path, env=env)
    assert (config.webhooks.ensure, config.webhooks.endpoint_prefix) == ("degraded", "listener")
    listener = build_listener(config)
    [handler] = listener.handlers.notice_handlers("webhooks_degraded", "nextmv")
    assert handler.name == NOTICE_HANDLER_NAME


async def test_the_console_section_serves_the_console(tmp_path: Path) -> None:
    from helpers import serve

    from listener.cli.serve import service_app
    from listener.config import load_config

    path = tmp_path / "listener.toml"
    path.write_text(
        f'[listener]\nstore = "sqlite:///{tmp_path / "c.db"}"\n' + block_after("## Console", "toml")
    )
    env = {
        "LISTENER_CONSOLE_TOKEN": "a-read-token-of-some-length",
        "LISTENER_CONSOLE_ADMIN_TOKEN": "an-admin-token-of-some-length",
    }
    config = load_config(path, env=env)
    assert config.console.refresh == 5
    assert config.notices == ()
    async with serve(service_app(config)) as url, httpx.AsyncClient(base_url=url) as client:
        login = await client.post("/ui/login", data={"token": env["LISTENER_CONSOLE_TOKEN"]})
        assert login.status_code == 303
        page = await client.get("/ui/runs")
        assert page.status_code == 200
        assert "No runs match." in page.text
        bearer = {"authorization": f"Bearer {env['LISTENER_CONSOLE_ADMIN_TOKEN']}"}
        assert (await client.get("/ui/audit", headers=bearer)).status_code == 200
