"""Running the real `listener` command in tests (as a process, or in-process with CliRunner),
and the configurations and store contents the command tests share."""

from __future__ import annotations

import asyncio
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from click.testing import CliRunner, Result
from helpers import free_port as free_port  # the CLI tests take it from here too

from listener.cli import main
from listener.events import Origin, RunEvent, RunStatus
from listener.signatures import generate_hmac_secret
from listener.store import NewRun, open_store
from listener.testing import FakePlatform

# A safety net so a broken test fails instead of hanging; never a performance assertion.
PROCESS_LIMIT = 60.0
COMMAND = [sys.executable, "-m", "listener"]


def clean_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The test process's environment without any LISTENER_* setting, plus `extra`."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("LISTENER_")}
    env.update(extra or {})
    return env


def run_cli(
    *args: str,
    cwd: Path,
    env: Mapping[str, str] | None = None,
    input: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """`python -m listener ARGS` in `cwd`, to completion."""
    return subprocess.run(
        [*COMMAND, *args],
        cwd=cwd,
        env=clean_env(env),
        input=input,
        capture_output=True,
        text=True,
        timeout=PROCESS_LIMIT,
        check=False,
    )


@dataclass
class AsyncResult:
    returncode: int
    stdout: str
    stderr: str


async def run_cli_async(*args: str, cwd: Path, env: Mapping[str, str] | None = None) -> AsyncResult:
    """`run_cli` without blocking the event loop (a fake platform may be serving in it)."""
    process = await asyncio.create_subprocess_exec(
        *COMMAND,
        *args,
        cwd=cwd,
        env=clean_env(env),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(PROCESS_LIMIT):
        stdout, stderr = await process.communicate()
    assert process.returncode is not None
    return AsyncResult(process.returncode, stdout.decode(), stderr.decode())


def invoke(*args: str, env: Mapping[str, str] | None = None, input: str | None = None) -> Result:
    """The command in this process (fast; counted by coverage)."""
    return CliRunner().invoke(main, list(args), env=dict(env or {}), input=input)


async def invoke_async(*args: str, env: Mapping[str, str] | None = None) -> Result:
    """`invoke` in a worker thread, so the test's event loop keeps serving meanwhile."""
    return await asyncio.to_thread(invoke, *args, env=env)


class LongRunning:
    """A `listener` process that runs until told to stop (serve, poll); stderr is read
    line by line in a thread so the test can wait for a readiness message."""

    def __init__(self, args: Sequence[str], *, cwd: Path, env: Mapping[str, str]) -> None:
        self.process = subprocess.Popen(
            [*COMMAND, *args],
            cwd=cwd,
            env=clean_env(env),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.stderr: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.lines.put(line)

    def wait_for_line(self, text: str) -> str:
        deadline = time.monotonic() + PROCESS_LIMIT
        while time.monotonic() < deadline:
            if self.process.poll() is not None and self.lines.empty():
                break
            try:
                line = self.lines.get(timeout=0.1)
            except queue.Empty:
                continue
            self.stderr.append(line)
            if text in line:
                return line
        raise AssertionError(f"no {text!r} line; stderr so far:\n{''.join(self.stderr)}")

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
        code = self.process.wait(timeout=PROCESS_LIMIT)
        self._reader.join(PROCESS_LIMIT)
        while not self.lines.empty():
            self.stderr.append(self.lines.get())
        return code

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=PROCESS_LIMIT)


@contextmanager
def long_running(
    args: Sequence[str], *, cwd: Path, env: Mapping[str, str]
) -> Iterator[LongRunning]:
    process = LongRunning(args, cwd=cwd, env=env)
    try:
        yield process
    finally:
        process.kill()
        for stream in (process.process.stdout, process.process.stderr):
            if stream is not None:
                stream.close()


def write_config(directory: Path, text: str, name: str = "listener.toml") -> Path:
    path = directory / name
    path.write_text(text, encoding="utf-8")
    return path


# --- data the command tests share -----------------------------------------------------------

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
PLATFORM_ENV = {"NEXTMV_API_KEY": API_KEY}
PRUNE = ["prune", "--older-than", "30d"]


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
