"""Starting a flow with Metaflow's `Runner`, watching its process, and stopping it.

`Runner(...)` imports the flow file and reloads Metaflow's command-line modules in this
process, so runners are built one at a time in a worker thread (the import must not hold
the event loop, and two reloads must not interleave); the launch itself is
`Runner.async_run` (or `async_resume`), which returns once the run has its id. The run's
process then goes on by itself; a task here awaits its end.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import signal
import threading
from dataclasses import dataclass, field
from typing import Any, Final

from listener.providers.base import ProviderError
from listener.providers.metaflow.options import LaunchPlan

__all__ = ["Launched", "launch", "stop"]

# The last lines of a failed run's standard error kept for its error message.
_STDERR_LINES: Final = 5
_BUILDING: Final = threading.Lock()


@dataclass
class Launched:
    """A run this process started, and what is known of its process."""

    pathspec: str
    pid: int
    executing: Any = field(repr=False)
    runner: Any = field(repr=False)
    canceled: bool = False
    returncode: int | None = None
    stderr_tail: str = ""
    ended: asyncio.Event = field(default_factory=asyncio.Event, repr=False)

    async def watch(self) -> None:
        """Wait for the process to end, keep its exit code and the tail of its stderr,
        and delete the runner's log files."""
        try:
            await self.executing.wait()
            self.returncode = self.executing.returncode
            if self.returncode != 0:
                with contextlib.suppress(OSError, ValueError):
                    lines = str(self.executing.stderr).strip().splitlines()
                    self.stderr_tail = "\n".join(lines[-_STDERR_LINES:])
        finally:
            self.runner.cleanup()
            self.ended.set()


def _build_runner(plan: LaunchPlan, env: dict[str, str], cwd: str | None) -> Any:
    from metaflow.runner.metaflow_runner import Runner

    top_level: dict[str, Any] = {}
    if plan.decospecs:
        top_level["decospecs"] = list(plan.decospecs)
    # Built off the event loop's thread, the runner's process manager cannot install its
    # SIGINT handler (the listener keeps its own) and says so on stderr; that note is
    # dropped, since nothing is wrong.
    with _BUILDING, contextlib.redirect_stderr(io.StringIO()):
        return Runner(plan.flow_file, show_output=False, env=env, cwd=cwd, **top_level)


async def launch(plan: LaunchPlan, *, env: dict[str, str], cwd: str | None) -> Launched:
    """Start the run; `ProviderError` with Metaflow's message when it does not start."""
    try:
        runner = await asyncio.to_thread(_build_runner, plan, env, cwd)
    except Exception as exc:  # the flow file itself fails to load
        raise ProviderError(f"cannot load flow {plan.flow_file}: {_message(exc)}") from None
    try:
        if plan.resume_run_id is not None:
            executing = await runner.async_resume(
                origin_run_id=plan.resume_run_id, tags=list(plan.tags)
            )
        else:
            executing = await runner.async_run(**plan.parameters, tags=list(plan.tags))
    except (TypeError, ValueError) as exc:  # a parameter Metaflow refuses
        runner.cleanup()
        raise ProviderError(_message(exc), status_code=400) from None
    except Exception as exc:  # the process ended before the run had an id
        runner.cleanup()
        raise ProviderError(f"the flow did not start: {_message(exc)}") from None
    return Launched(
        pathspec=str(executing.run.pathspec),
        pid=int(executing.command_obj.process.pid),
        executing=executing,
        runner=runner,
    )


async def stop(run: Launched, *, grace: float) -> None:
    """End the run's process and every process under it: SIGTERM to the whole tree at
    once (so the runtime cannot report its tasks' deaths as a failure), SIGKILL to what
    is left after `grace` seconds."""
    if run.ended.is_set():
        return
    tree = [run.pid, *await _descendants(run.pid)]
    _signal(tree, signal.SIGTERM)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(run.ended.wait(), grace)
    if not run.ended.is_set():
        _signal(tree, signal.SIGKILL)
        await run.ended.wait()


async def _descendants(pid: int) -> list[int]:
    """Every process under `pid`, children first, read with `pgrep -P` level by level."""
    found: list[int] = []
    level = [pid]
    while level:
        process = await asyncio.create_subprocess_exec(
            "pgrep",
            "-P",
            ",".join(str(p) for p in level),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
        )
        out, _ = await process.communicate()
        level = [int(word) for word in out.split() if word.isdigit()]
        found.extend(level)
    return found


def _signal(pids: list[int], which: signal.Signals) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, which)


def _message(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__
