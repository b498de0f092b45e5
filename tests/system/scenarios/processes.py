"""Real `listener serve` processes, and handler calls counted across them.

`ServeProcess` runs `python -m listener --config FILE serve --port 0` as a child process,
reads the port it prints, and can stop it with SIGTERM or kill it with SIGKILL.

Handler calls of several processes cannot be counted in memory, so the scenarios load a
handler plugin written by `write_call_log_plugin`: each call appends one line (handler,
run id, status, event key, pid) to one file with O_APPEND and fsync before doing its
work, so a line survives a kill that comes right after. `audit_executions` then compares
those lines with the handler calls in the store, and tells the re-runs that at-least-once
delivery allows (a call that was claimed and not done when its process was killed) from
calls made twice for no reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections import Counter, defaultdict, deque
from collections.abc import AsyncIterator, Collection, Mapping
from dataclasses import dataclass
from pathlib import Path

from listener.store.base import CallState, HandlerCall

from .common import Tally

__all__ = [
    "EVERY",
    "TERMINAL",
    "Execution",
    "ServeProcess",
    "audit_call_log",
    "audit_executions",
    "bounded",
    "read_call_log",
    "wait_for_executions",
    "write_call_log_plugin",
]

EVERY = "system.every"
TERMINAL = "system.terminal"
# How long a process may take to print its address, and to exit once told to.
START_LIMIT = 30.0
STOP_LIMIT = 20.0

_PLUGIN = '''"""Scenario handlers: every call appends a line to a log shared by all processes."""

import asyncio
import os

from listener import Handlers, RunEvent

LOG = {log!r}
PAUSE = {pause!r}
handlers = Handlers()


def _append(line: str) -> None:
    # os.write is unbuffered (nothing to flush); O_APPEND keeps lines of several
    # processes whole; fsync makes the line outlive a kill of this process.
    fd = os.open(LOG, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
        os.fsync(fd)
    finally:
        os.close(fd)


async def _note(name: str, event: RunEvent) -> None:
    fields = (name, event.run_id, event.status.value, event.key, str(os.getpid()))
    await asyncio.to_thread(_append, "\\t".join(fields) + "\\n")
    # The handler's work: while it lasts, the call is claimed and not done.
    await asyncio.sleep(PAUSE)


@handlers.on_any(name={every!r})
async def every(event: RunEvent) -> None:
    await _note({every!r}, event)


@handlers.on("succeeded", "failed", "canceled", "expired", name={terminal!r})
async def terminal(event: RunEvent) -> None:
    await _note({terminal!r}, event)
'''


def write_call_log_plugin(path: Path, log: Path, *, pause: float) -> Path:
    """Write the handler plugin (handlers `EVERY` and `TERMINAL`) logging to `log`."""
    path.write_text(_PLUGIN.format(log=str(log), pause=pause, every=EVERY, terminal=TERMINAL))
    return path


@dataclass(frozen=True, slots=True)
class Execution:
    """One line of the call log: one handler execution."""

    handler: str
    run_id: str
    status: str
    key: str
    pid: int


def read_call_log(log: Path) -> tuple[list[Execution], int]:
    """The executions logged so far, and how many lines could not be read (a line is
    written by one `write`, so there should be none)."""
    try:
        text = log.read_text()
    except FileNotFoundError:
        return [], 0
    executions: list[Execution] = []
    bad = 0
    for line in text.splitlines(keepends=True):
        fields = line.rstrip("\n").split("\t")
        if not line.endswith("\n") or len(fields) != 5 or not fields[4].isdigit():
            bad += 1
            continue
        handler, run_id, status, key, pid = fields
        executions.append(Execution(handler, run_id, status, key, int(pid)))
    return executions, bad


async def wait_for_executions(log: Path, *, pid: int, count: int) -> None:
    """Return once process `pid` has begun `count` handler calls. Callers bound it."""
    while True:
        executions, _ = read_call_log(log)
        if sum(1 for e in executions if e.pid == pid) >= count:
            return
        await asyncio.sleep(0.01)


def audit_executions(
    tally: Tally,
    calls: list[HandlerCall],
    executions: list[Execution],
    *,
    in_flight_at_kill: Collection[int],
    killed_pid: int,
    survivor_pid: int,
) -> None:
    """Compare logged executions with the stored calls; fill the tally's counts.

    Each transition and handler has one stored call, done. Each call ran once, or twice
    when it was claimed and not done at the kill: once in the killed process and once
    in the survivor after the lease ran out (a re-run). Anything else is a double call.
    """
    by_call: dict[tuple[str, str, str], list[Execution]] = defaultdict(list)
    for execution in executions:
        by_call[(execution.handler, execution.run_id, execution.status)].append(execution)
    stored = Counter((c.handler, c.run_id, c.status.value) for c in calls)
    for (handler, run_id, status), n in stored.items():
        if n > 1:
            tally.double_calls += n - 1
            tally.problem(f"{n} calls stored for {handler} on {run_id} {status}")
    for key in set(by_call) - set(stored):
        tally.problem(f"{key[0]} ran for {key[1]} {key[2]}, which has no stored call")
    reruns = 0
    for call in calls:
        ran = by_call.get((call.handler, call.run_id, call.status.value), [])
        what = f"call {call.id} ({call.handler}, {call.run_id} {call.status.value})"
        if call.state is not CallState.DONE:
            tally.problem(f"{what} is {call.state.value} after {call.attempts} attempts")
        if not ran:
            tally.lost += 1
            tally.problem(f"{what} never ran")
        elif len(ran) == 2 and call.id in in_flight_at_kill:
            # At-least-once: the killed process never marked it done.
            if [e.pid for e in ran] == [killed_pid, survivor_pid]:
                reruns += 1
            else:
                tally.double_calls += 1
                tally.problem(f"{what} ran twice, by pids {[e.pid for e in ran]}")
        elif len(ran) > 1:
            tally.double_calls += len(ran) - 1
            tally.problem(f"{what} ran {len(ran)} times, by pids {[e.pid for e in ran]}")
    tally.reruns = reruns
    tally.handler_calls = len(executions)
    if reruns > len(in_flight_at_kill):
        tally.problem(f"{reruns} re-runs for {len(in_flight_at_kill)} calls in flight")


def audit_call_log(
    tally: Tally,
    calls: list[HandlerCall],
    log: Path,
    *,
    in_flight_at_kill: Collection[int],
    pids: tuple[int, int],
) -> None:
    """`audit_executions` on the executions in `log`, run by `pids` (killed, survivor);
    also a problem for each unreadable line and for executions by any other process."""
    executions, unreadable = read_call_log(log)
    if unreadable:
        tally.problem(f"{unreadable} unreadable lines in the call log")
    strangers = {e.pid for e in executions} - set(pids)
    if strangers:
        tally.problem(f"handler calls from unknown processes: {sorted(strangers)}")
    audit_executions(
        tally,
        calls,
        executions,
        in_flight_at_kill=in_flight_at_kill,
        killed_pid=pids[0],
        survivor_pid=pids[1],
    )


@contextlib.asynccontextmanager
async def bounded(name: str, limit: float, *processes: ServeProcess) -> AsyncIterator[None]:
    """`asyncio.timeout(limit)`, failing with the processes' last log lines, which say
    more than a bare TimeoutError about why a scenario got stuck."""
    try:
        async with asyncio.timeout(limit):
            yield
    except TimeoutError:
        tails = "".join(f"\n--- {p.name}:\n{p.tail()}" for p in processes)
        raise AssertionError(f"{name}: not finished within {limit:g} s{tails}") from None


class ServeProcess:
    """`listener --config CONFIG serve --port 0` in a child process.

    The environment is this process's without any LISTENER_* variable, plus `env`.
    Standard error is read all along (so the child never blocks on a full pipe); its last
    lines are kept for failure messages, and lines reporting errors in `errors`.
    """

    def __init__(self, config: Path, *, cwd: Path, env: Mapping[str, str], name: str) -> None:
        self.config = config
        self.cwd = cwd
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("LISTENER_")}
        self.env.update(env)
        self.name = name
        self.base_url: str | None = None
        self._process: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None
        self._lines: deque[str] = deque(maxlen=200)
        self.errors: list[str] = []
        self._listening: asyncio.Future[str] | None = None

    @property
    def pid(self) -> int:
        assert self._process is not None
        return self._process.pid

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.returncode is None

    def tail(self) -> str:
        return "".join(self._lines)

    async def start(self) -> str:
        """Start the process; return its base URL once it listens."""
        self._listening = asyncio.get_running_loop().create_future()
        self._process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "listener",
            "--config",
            str(self.config),
            "serve",
            "--port",
            "0",
            cwd=self.cwd,
            env=self.env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        self._reader = asyncio.create_task(self._read(self._process, self._listening))
        try:
            async with asyncio.timeout(START_LIMIT):
                self.base_url = await self._listening
        except (TimeoutError, RuntimeError) as exc:
            await self.close()
            raise AssertionError(f"{self.name} did not start ({exc}):\n{self.tail()}") from None
        return self.base_url

    async def _read(
        self, process: asyncio.subprocess.Process, listening: asyncio.Future[str]
    ) -> None:
        assert process.stderr is not None
        async for raw in process.stderr:
            line = raw.decode(errors="replace")
            self._lines.append(line)
            if "ERROR" in line or "Traceback" in line:
                self.errors.append(line)
            if "listening on http://" in line and not listening.done():
                listening.set_result(line.split("listening on ", 1)[1].strip())
        if not listening.done():
            listening.set_exception(RuntimeError(f"exited with {await process.wait()}"))

    async def kill(self) -> int:
        """SIGKILL: no shutdown of any kind. Returns the exit status (-9)."""
        return await self._signal(signal.SIGKILL)

    async def terminate(self) -> int:
        """SIGTERM: the graceful stop. Returns the exit status (0 when clean)."""
        return await self._signal(signal.SIGTERM)

    async def _signal(self, sig: int) -> int:
        assert self._process is not None
        if self._process.returncode is None:
            self._process.send_signal(sig)
        try:
            async with asyncio.timeout(STOP_LIMIT):
                code = await self._process.wait()
        finally:
            if self._process.returncode is None:
                self._process.kill()
                await self._process.wait()
        if self._reader is not None:
            with contextlib.suppress(Exception):
                await self._reader
        return code

    async def close(self) -> None:
        """Kill the process if it still runs; for clean-up after a failure."""
        if self._process is not None:
            with contextlib.suppress(ProcessLookupError):
                await self.kill()
