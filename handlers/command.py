"""Run a command for each run transition.

The command gets the event as JSON (`RunEvent.to_dict()`) on stdin and these environment
variables: `LISTENER_RUN_ID`, `LISTENER_STATUS`, `LISTENER_PROVIDER`,
`LISTENER_APPLICATION`, `LISTENER_EVENT_KEY`. Of the listener's own environment, which
holds its secrets, it gets only `PASSED_ENV` (`PATH`, `HOME`, the locale and time zone,
...) and the names listed in `pass_env`. Its stdout goes to the listener's stdout. A
non-zero exit raises (with the end of its stderr), so the dispatcher retries; when the
call times out or the listener stops, the process is killed. An event too large for the
environment (a run id of hundreds of kB) fails once, without retries.

Settings (`configure({...})` or environment):

- `command` / `LISTENER_HANDLER_COMMAND_COMMAND`: the command line (split like a shell
  would, without running one) or, through `configure`, a list of arguments (required).
- `pass_env` / `LISTENER_HANDLER_COMMAND_PASS_ENV`: more variable names to pass from the
  listener's environment, separated by commas or spaces (or, through `configure`, a list).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import logging
import os
import shlex
from collections.abc import Mapping, Sequence
from typing import Any

from handlers._settings import Settings
from listener.errors import HandlerFailed
from listener.events import RunEvent
from listener.registry import Handlers

__all__ = ["PASSED_ENV", "CommandFailed", "configure", "environment", "handlers", "run_command"]

log = logging.getLogger("listener.handlers.command")

handlers = Handlers()
settings = Settings("command")

STDERR_TAIL_CHARS = 1000
# What a command needs to run like one started from a shell; nothing that holds a secret.
PASSED_ENV = (
    "PATH",
    "HOME",
    "USER",
    "LOGNAME",
    "SHELL",
    "LANG",
    "LANGUAGE",
    "TZ",
    "TMPDIR",
)


class CommandFailed(HandlerFailed):
    """The command exited with a non-zero status."""

    def __init__(self, message: str, returncode: int | None, *, retryable: bool = True) -> None:
        super().__init__(message, retryable=retryable)
        self.returncode = returncode


def configure(values: Mapping[str, Any]) -> None:
    settings.configure(values)


def _argv() -> list[str]:
    value = settings.get("command")
    if isinstance(value, Sequence) and not isinstance(value, str):
        argv = [str(part) for part in value]
    else:
        argv = shlex.split(settings.require("command"))
    if not argv:
        raise RuntimeError(f"{settings.prefix}COMMAND is empty")
    return argv


def _passed_names() -> list[str]:
    extra = settings.get("pass_env") or ()
    if isinstance(extra, str):
        extra = extra.replace(",", " ").split()
    return [*PASSED_ENV, *(str(name) for name in extra)]


def environment(event: RunEvent) -> dict[str, str]:
    """The command's environment: the passed names that are set, the locale's `LC_*`
    variables, and the event's `LISTENER_*` variables."""
    names = set(_passed_names())
    passed = {k: v for k, v in os.environ.items() if k in names or k.startswith("LC_")}
    return {
        **passed,
        "LISTENER_RUN_ID": event.run_id,
        "LISTENER_STATUS": event.status.value,
        "LISTENER_PROVIDER": event.provider,
        "LISTENER_APPLICATION": event.application,
        "LISTENER_EVENT_KEY": event.key,
    }


@handlers.on_any
async def run_command(event: RunEvent) -> None:
    argv = _argv()
    env = environment(event)
    try:
        process = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env,
        )
    except OSError as exc:
        if exc.errno != errno.E2BIG:
            raise
        size = sum(len(k) + len(v) for k, v in env.items() if k.startswith("LISTENER_"))
        raise CommandFailed(
            f"{argv[0]} cannot be started: the event's {size} characters of LISTENER_* "
            "variables exceed what the system lets a process receive; retrying cannot help",
            None,
            retryable=False,
        ) from None
    try:
        _, stderr = await process.communicate(json.dumps(event.to_dict()).encode())
    except BaseException:
        # Cancelled (timeout or shutdown): do not leave the command running.
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()
        raise
    tail = stderr.decode("utf-8", "replace")[-STDERR_TAIL_CHARS:].strip()
    code = process.returncode
    assert code is not None
    if code != 0:
        how = f"was killed by signal {-code}" if code < 0 else f"exited with status {code}"
        message = f"{argv[0]} {how}"
        raise CommandFailed(f"{message}: {tail}" if tail else message, code)
    if tail:
        log.info("%s wrote to stderr: %s", argv[0], tail)
