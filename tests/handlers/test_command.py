from __future__ import annotations

import asyncio
import json
import os
import shlex
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import event, wait_for

from handlers import command

# Writes what it was given (stdin and the LISTENER_* variables) to the file in argv[1].
ECHO = """
import json, os, sys
data = {"stdin": json.load(sys.stdin),
        "env": {k: v for k, v in os.environ.items() if k.startswith("LISTENER_")}}
with open(sys.argv[1], "w") as f:
    json.dump(data, f)
"""


@pytest.fixture(autouse=True)
def fresh_settings(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv("LISTENER_HANDLER_COMMAND_COMMAND", raising=False)
    command.configure({})
    yield
    command.configure({})


async def test_runs_with_the_event_on_stdin_and_in_the_environment(tmp_path: Path) -> None:
    out = tmp_path / "out.json"
    command.configure({"command": [sys.executable, "-c", ECHO, str(out)]})
    sent = event("run-c", "canceled", application="packing")
    await command.run_command(sent)
    seen = json.loads(out.read_text())
    assert seen["stdin"] == sent.to_dict()
    assert seen["env"] == {
        "LISTENER_RUN_ID": "run-c",
        "LISTENER_STATUS": "canceled",
        "LISTENER_PROVIDER": "local",
        "LISTENER_APPLICATION": "packing",
        "LISTENER_EVENT_KEY": sent.key,
    }


async def test_command_line_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "env.json"
    line = shlex.join([sys.executable, "-c", ECHO, str(out)])
    monkeypatch.setenv("LISTENER_HANDLER_COMMAND_COMMAND", line)
    await command.run_command(event("run-e"))
    assert json.loads(out.read_text())["env"]["LISTENER_RUN_ID"] == "run-e"


async def test_non_zero_exit_raises_with_the_end_of_stderr() -> None:
    script = "import sys; sys.stderr.write('x' * 5000 + 'the reason'); sys.exit(4)"
    command.configure({"command": [sys.executable, "-c", script]})
    with pytest.raises(command.CommandFailed, match=r"exited with status 4: x+the reason$") as info:
        await command.run_command(event())
    assert info.value.returncode == 4
    assert len(str(info.value)) < 1200


async def test_stderr_of_a_successful_command_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    command.configure({"command": [sys.executable, "-c", "import sys; sys.stderr.write('note')"]})
    caplog.set_level("INFO", logger="listener.handlers.command")
    await command.run_command(event())
    assert "note" in caplog.text


async def test_cancelling_the_call_kills_the_command(tmp_path: Path) -> None:
    marker = tmp_path / "pid"
    script = "import os, sys, time; open(sys.argv[1], 'w').write(str(os.getpid())); time.sleep(60)"
    command.configure({"command": [sys.executable, "-c", script, str(marker)]})
    task = asyncio.create_task(command.run_command(event()))
    await wait_for(lambda: marker.exists() and marker.read_text() != "", "the command to start")
    pid = int(marker.read_text())
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


async def test_a_missing_command_is_an_error() -> None:
    with pytest.raises(RuntimeError, match="LISTENER_HANDLER_COMMAND_COMMAND"):
        await command.run_command(event())
    command.configure({"command": []})
    with pytest.raises(RuntimeError, match="empty"):
        await command.run_command(event())


# Writes its whole environment to the file in argv[1].
DUMP_ENV = "import json, os, sys; json.dump(dict(os.environ), open(sys.argv[1], 'w'))"


async def test_the_listeners_secrets_stay_out_of_the_commands_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "env.json"
    monkeypatch.setenv("LISTENER_WEBHOOK_SECRET", "whsec_do-not-pass")
    monkeypatch.setenv("DATABASE_URL", "postgresql://u:pw@db/x")
    monkeypatch.setenv("REPORT_BUCKET", "reports")
    monkeypatch.setenv("LC_TIME", "C")
    command.configure({"command": [sys.executable, "-c", DUMP_ENV, str(out)]})
    await command.run_command(event("run-s"))
    seen = json.loads(out.read_text())
    assert "whsec_do-not-pass" not in out.read_text()
    assert "DATABASE_URL" not in seen
    assert "REPORT_BUCKET" not in seen
    assert seen["PATH"] == os.environ["PATH"]
    assert seen["LC_TIME"] == "C"
    assert seen["LISTENER_RUN_ID"] == "run-s"
    assert set(seen) - {*command.PASSED_ENV, "LC_TIME"} <= {
        "LISTENER_RUN_ID",
        "LISTENER_STATUS",
        "LISTENER_PROVIDER",
        "LISTENER_APPLICATION",
        "LISTENER_EVENT_KEY",
        # Set by the interpreter itself at start-up on some systems.
        "LC_CTYPE",
    }


@pytest.mark.parametrize("listed", ["REPORT_BUCKET, OTHER", ["REPORT_BUCKET", "OTHER"]])
async def test_pass_env_names_more_variables(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, listed: str | list[str]
) -> None:
    out = tmp_path / "env.json"
    monkeypatch.setenv("REPORT_BUCKET", "reports")
    monkeypatch.setenv("DATABASE_URL", "postgresql://u:pw@db/x")
    command.configure({"command": [sys.executable, "-c", DUMP_ENV, str(out)], "pass_env": listed})
    await command.run_command(event())
    seen = json.loads(out.read_text())
    assert seen["REPORT_BUCKET"] == "reports"
    assert "DATABASE_URL" not in seen


async def test_an_event_too_large_for_the_environment_fails_once_clearly() -> None:
    command.configure({"command": [sys.executable, "-c", "pass"]})
    with pytest.raises(command.CommandFailed, match="retrying cannot help") as info:
        await command.run_command(event("r" * 200_000))
    assert info.value.retryable is False
    assert len(str(info.value)) < 300
