"""Runs on this machine: a command or a Python callable per application, like a flow runner.

A run goes queued, running, then succeeded, failed (non-zero exit, exception, or out of time)
or canceled. When it ends, a signed webhook in the listener's own format
(:mod:`listener.providers.native`) is sent to the run's callback URL, retried with backoff and
the same message id on every attempt. The provider also answers ``status`` and ``result``
from its in-memory table, so the poller can reconcile a webhook that never arrived.

Commands get the input as JSON on stdin and ``LISTENER_RUN_ID``, ``LISTENER_APPLICATION``
and ``LISTENER_OPTIONS`` (JSON) in their environment; standard output is the run's output
(read as JSON when it parses, else as text). Callables get the input as their one argument;
synchronous ones run in a worker thread. A worker thread cannot be interrupted: canceling
(or timing out) a synchronous callable reports the run at once and discards its late result.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import os
import random
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final, Self, TypeAlias

import httpx

from listener.events import RunEvent, RunStatus
from listener.providers import native
from listener.providers.base import ProviderError, RunResult, RunState, Submission
from listener.providers.kinds import ProviderKind
from listener.sending import DeliveryResult, Sleep, WebhookSender, compact_json, new_msg_id
from listener.signatures import SignatureScheme

__all__ = ["KIND", "LocalProvider", "LocalRun", "Target"]

Target: TypeAlias = Sequence[str] | Callable[[Any], Any]

DEFAULT_CAPTURE_LIMIT: Final = 1024 * 1024
_CHUNK: Final = 64 * 1024


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass
class _Capture:
    """A bounded copy of a stream: the first ``limit`` bytes, and whether more came."""

    limit: int
    data: bytearray = field(default_factory=bytearray)
    truncated: bool = False

    def add(self, chunk: bytes) -> None:
        room = self.limit - len(self.data)
        if room > 0:
            self.data += chunk[:room]
        if len(chunk) > max(room, 0):
            self.truncated = True

    def text(self) -> str:
        return self.data.decode("utf-8", errors="replace")


@dataclass
class LocalRun:
    """One run in the provider's table."""

    run_id: str
    application: str
    status: RunStatus = RunStatus.QUEUED
    submitted_at: datetime = field(default_factory=_now)
    updated_at: datetime = field(default_factory=_now)
    exit_code: int | None = None
    output: Any = None
    error: str | None = None
    stdout: str = ""
    stderr: str = ""
    output_truncated: bool = False
    callback_url: str | None = None
    webhooks: dict[str, DeliveryResult] = field(default_factory=dict)
    finished: asyncio.Event = field(default_factory=asyncio.Event, repr=False)
    notified: asyncio.Event = field(default_factory=asyncio.Event, repr=False)
    _work: asyncio.Task[tuple[Any, str, str, int | None]] | None = field(default=None, repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "application": self.application,
            "status": self.status.value,
            "submitted_at": self.submitted_at.isoformat(),
            "updated_at": self.updated_at.isoformat(),
            "exit_code": self.exit_code,
            "error": self.error,
            "stdout": self.stdout,
            "stderr": self.stderr,
            "output_truncated": self.output_truncated,
        }


class _Failed(Exception):
    """A command ended with a non-zero exit code."""

    def __init__(self, exit_code: int, stdout: str, stderr: str) -> None:
        super().__init__(f"exit code {exit_code}")
        self.exit_code = exit_code
        self.stdout = stdout
        self.stderr = stderr


class LocalProvider:
    """Runs commands (argv lists) or Python callables here, one target per application.

    ``signer`` signs the completion webhooks (a :class:`~listener.signatures.StandardWebhooks`
    scheme, typically); without one, runs still work and are learned by polling. ``timeout``
    (seconds, per run; ``Submission.extra["timeout"]`` overrides it) fails a run that runs
    too long. ``max_parallel`` keeps further runs queued.
    """

    def __init__(
        self,
        targets: Mapping[str, Target] | None = None,
        *,
        signer: SignatureScheme | None = None,
        name: str = "local",
        timeout: float | None = None,
        max_parallel: int | None = None,
        capture_limit: int = DEFAULT_CAPTURE_LIMIT,
        notify_running: bool = False,
        webhook_attempts: int = 5,
        webhook_backoff: float = 0.5,
        webhook_backoff_cap: float = 30.0,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        sleep: Sleep | None = None,
        rng: random.Random | None = None,
        http_transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.name = name
        self.timeout = timeout
        self.capture_limit = capture_limit
        self.notify_running = notify_running
        self._targets: dict[str, Target] = {}
        for application, target in (targets or {}).items():
            self.register(application, target)
        self._env = dict(env) if env is not None else None
        self._cwd = cwd
        self._slots = asyncio.Semaphore(max_parallel) if max_parallel else None
        self._runs: dict[str, LocalRun] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._sender = (
            WebhookSender(
                signer,
                attempts=webhook_attempts,
                backoff_base=webhook_backoff,
                backoff_cap=webhook_backoff_cap,
                sleep=sleep,
                rng=rng,
                http_transport=http_transport,
            )
            if signer is not None
            else None
        )

    def __repr__(self) -> str:
        return f"LocalProvider(name={self.name!r}, applications={sorted(self._targets)!r})"

    def register(self, application: str, target: Target) -> None:
        """Run ``target`` for submissions to ``application``."""
        if isinstance(target, str | bytes):
            raise TypeError("a command is a list of arguments, not a single string")
        if not callable(target):
            if not target or not all(isinstance(arg, str) for arg in target):
                raise TypeError("a command must be a non-empty list of strings")
            target = list(target)
        self._targets[application] = target

    @property
    def runs(self) -> Mapping[str, LocalRun]:
        return self._runs

    async def submit(self, submission: Submission, *, callback_url: str | None = None) -> str:
        target = self._targets.get(submission.application)
        if target is None:
            known = ", ".join(sorted(self._targets)) or "none"
            raise ProviderError(
                f"no local target for application {submission.application!r}; known: {known}",
                status_code=404,
            )
        timeout = submission.extra.get("timeout", self.timeout)
        run = LocalRun(
            run_id=f"local-{uuid.uuid4().hex}",
            application=submission.application,
            callback_url=callback_url,
        )
        self._runs[run.run_id] = run
        self._spawn(self._supervise(run, target, submission, timeout))
        return run.run_id

    def _spawn(self, coroutine: Awaitable[None]) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _get(self, run_id: str) -> LocalRun:
        run = self._runs.get(run_id)
        if run is None:
            raise ProviderError(f"no local run {run_id!r}", status_code=404)
        return run

    async def status(self, application: str, run_id: str) -> RunState:
        run = self._get(run_id)
        return RunState(run.run_id, run.application, run.status, run.updated_at, run.to_dict())

    async def result(self, application: str, run_id: str) -> RunResult:
        run = self._get(run_id)
        return RunResult(run.run_id, run.status, run.output, run.error, run.to_dict())

    async def cancel(self, application: str, run_id: str) -> None:
        """Cancel a queued or running run (a command is killed); a finished run is left as is."""
        run = self._get(run_id)
        if run.status.is_terminal:
            return
        if run._work is not None:
            run._work.cancel()  # the supervisor sees it and reports `canceled`
            return
        # Still queued: report it at once; the supervisor skips it when its turn comes.
        self._finish(run, RunStatus.CANCELED)
        self._spawn(self._notify(run, final=True))

    async def wait(self, run_id: str) -> RunResult:
        """Wait until the run has ended and its webhook was delivered or given up."""
        run = self._get(run_id)
        await run.finished.wait()
        await run.notified.wait()
        return await self.result(run.application, run_id)

    def parse_event(self, payload: Any, *, delivery_id: str) -> RunEvent:
        return native.parse_event(payload, delivery_id=delivery_id, provider=self.name)

    async def aclose(self) -> None:
        """Stop every run still going (commands are killed) and close the webhook client."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        if self._sender is not None:
            await self._sender.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # --- running ------------------------------------------------------------------------

    async def _supervise(
        self, run: LocalRun, target: Target, submission: Submission, time_limit: float | None
    ) -> None:
        if self._slots is not None:
            async with self._slots:
                await self._execute(run, target, submission, time_limit)
        else:
            await self._execute(run, target, submission, time_limit)

    async def _execute(
        self, run: LocalRun, target: Target, submission: Submission, time_limit: float | None
    ) -> None:
        if run.status.is_terminal:  # canceled while queued
            return
        run.status, run.updated_at = RunStatus.RUNNING, _now()
        if self.notify_running:
            self._spawn(self._notify(run, final=False))
        work = asyncio.ensure_future(self._work(run, target, submission))
        run._work = work
        try:
            done, _ = await asyncio.wait({work}, timeout=time_limit)
        except asyncio.CancelledError:
            # The provider is closing: stop the work too (a command is killed on the way out).
            work.cancel()
            await asyncio.gather(work, return_exceptions=True)
            raise
        if not done:
            work.cancel()
            await asyncio.gather(work, return_exceptions=True)
            self._finish(run, RunStatus.FAILED, error=f"timed out after {time_limit} s")
        elif work.cancelled():
            self._finish(run, RunStatus.CANCELED)
        elif (exc := work.exception()) is not None:
            if isinstance(exc, _Failed):
                run.stdout, run.stderr, run.exit_code = exc.stdout, exc.stderr, exc.exit_code
                detail = exc.stderr.strip().splitlines()[-1:] if exc.stderr.strip() else []
                error = f"exit code {exc.exit_code}" + (f": {detail[0]}" if detail else "")
            else:
                error = f"{type(exc).__name__}: {exc}"
            self._finish(run, RunStatus.FAILED, error=error)
        else:
            output, stdout, stderr, exit_code = work.result()
            run.stdout, run.stderr, run.exit_code = stdout, stderr, exit_code
            self._finish(run, RunStatus.SUCCEEDED, output=output)
        await self._notify(run, final=True)

    def _finish(
        self, run: LocalRun, status: RunStatus, *, output: Any = None, error: str | None = None
    ) -> None:
        run.status, run.output, run.error, run.updated_at = status, output, error, _now()
        run.finished.set()

    async def _work(
        self, run: LocalRun, target: Target, submission: Submission
    ) -> tuple[Any, str, str, int | None]:
        if callable(target):
            if inspect.iscoroutinefunction(target):
                return await target(submission.input), "", "", None
            result = await asyncio.to_thread(target, submission.input)
            if inspect.iscoroutine(result):  # a plain function that returned a coroutine
                result = await result
            return result, "", "", None
        return await self._run_command(run, list(target), submission)

    async def _run_command(
        self, run: LocalRun, argv: list[str], submission: Submission
    ) -> tuple[Any, str, str, int | None]:
        env = dict(os.environ if self._env is None else self._env)
        env.update(
            LISTENER_RUN_ID=run.run_id,
            LISTENER_APPLICATION=run.application,
            LISTENER_OPTIONS=json.dumps(dict(submission.options)),
        )
        stdin_data = compact_json(submission.input)
        spawn = asyncio.ensure_future(
            asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env=env,
                cwd=self._cwd,
            )
        )
        try:
            process = await asyncio.shield(spawn)
        except asyncio.CancelledError:
            # Canceled while the process was being started: it must not be left running.
            with contextlib.suppress(Exception):
                started = await spawn
                started.kill()
                await started.wait()
            raise
        stdout = _Capture(self.capture_limit)
        stderr = _Capture(self.capture_limit)
        try:
            await asyncio.gather(
                _feed(process.stdin, stdin_data),
                _drain(process.stdout, stdout),
                _drain(process.stderr, stderr),
            )
            exit_code = await process.wait()
        finally:
            if process.returncode is None:
                # Canceled or timed out: the run must not outlive its report.
                process.kill()
                await process.wait()
        run.output_truncated = stdout.truncated
        if exit_code != 0:
            raise _Failed(exit_code, stdout.text(), stderr.text())
        text = stdout.text()
        output: Any = text
        if not stdout.truncated:
            try:
                output = json.loads(text)
            except ValueError:
                output = text
        return output, text, stderr.text(), exit_code

    # --- webhooks -----------------------------------------------------------------------

    async def _notify(self, run: LocalRun, *, final: bool) -> None:
        try:
            if self._sender is None or run.callback_url is None:
                return
            status = run.status if final else RunStatus.RUNNING
            msg_id = new_msg_id()
            event = RunEvent(
                delivery_id=msg_id,
                provider=self.name,
                application=run.application,
                run_id=run.run_id,
                status=status,
                occurred_at=run.updated_at,
            )
            body = compact_json(native.build_payload(event))
            run.webhooks[status.value] = await self._sender.deliver(
                run.callback_url, body, msg_id=msg_id
            )
        finally:
            if final:
                run.notified.set()


async def _feed(stream: asyncio.StreamWriter | None, data: bytes) -> None:
    if stream is None:
        return
    try:
        stream.write(data)
        await stream.drain()
    except (BrokenPipeError, ConnectionResetError):
        pass  # the command does not read its input; that is its choice
    finally:
        stream.close()


async def _drain(stream: asyncio.StreamReader | None, capture: _Capture) -> None:
    if stream is None:
        return
    # Keep reading past the limit so a chatty command never blocks on a full pipe.
    while chunk := await stream.read(_CHUNK):
        capture.add(chunk)


def _parse_event(payload: Any, *, delivery_id: str) -> RunEvent:
    # Local runs report in the listener's own payload.
    return native.parse_event(payload, delivery_id=delivery_id, provider="local")


KIND: Final = ProviderKind(
    name="local", factory=LocalProvider, parse_event=_parse_event, named=True
)
