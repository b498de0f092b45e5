"""`MetaflowProvider`: flows started with Metaflow's `Runner`, read through its client."""

from __future__ import annotations

import asyncio
import importlib.util
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from listener.events import RunEvent, RunStatus
from listener.providers import native
from listener.providers.base import ProviderError, RunResult, RunState, Submission
from listener.providers.metaflow.environment import run_environment
from listener.providers.metaflow.launching import Launched, launch, stop
from listener.providers.metaflow.options import plan_launch
from listener.providers.metaflow.reading import FlowRunView, read_run

__all__ = ["MetaflowProvider"]


class MetaflowProvider:
    """Runs flows on this machine (or wherever Metaflow's configuration sends their steps).

    A run's id is its pathspec (``HelloFlow/1796410078633618``). ``webhook_secret`` is the
    secret of the listener's Standard Webhooks source for this provider: with it, each run
    gets the variables its exit hook reports with (see
    :mod:`listener.providers.metaflow.environment`); without it, runs are learned by
    polling. ``env`` adds variables to every run, ``cwd`` is where flows run from, and
    ``termination_timeout`` is how long a canceled run's processes get to stop before
    they are killed.

    Runs keep going when the provider closes (a `listener submit` without `--wait` ends
    while its flow runs on); only `cancel` stops one, and only a run this provider
    started: another's process is not ours to signal.
    """

    name = "metaflow"

    def __init__(
        self,
        *,
        webhook_secret: str | None = None,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        termination_timeout: float = 2.0,
    ) -> None:
        if importlib.util.find_spec("metaflow") is None:
            raise ValueError(
                "the metaflow provider needs Metaflow: pip install 'listener[metaflow]'"
            )
        if not termination_timeout > 0:
            raise ValueError("termination_timeout must be positive")
        self._secret = webhook_secret or None
        self._env = dict(env or {})
        self._cwd = cwd
        self.termination_timeout = termination_timeout
        self._runs: dict[str, Launched] = {}
        self._watchers: set[asyncio.Task[None]] = set()
        # One launch at a time: `Runner` reloads Metaflow's modules in this process.
        self._launching = asyncio.Lock()

    def __repr__(self) -> str:
        return f"MetaflowProvider(cwd={self._cwd!r}, runs={len(self._runs)})"

    @property
    def runs(self) -> Mapping[str, Launched]:
        """The runs this provider started, by pathspec."""
        return self._runs

    async def submit(self, submission: Submission, *, callback_url: str | None = None) -> str:
        """Start the flow; the run id (its pathspec) once Metaflow has assigned it."""
        plan = plan_launch(submission, cwd=self._cwd)
        env = {
            **self._env,
            **plan.env,
            **run_environment(
                application=submission.application,
                callback_url=callback_url,
                secret=self._secret,
            ),
        }
        async with self._launching:
            run = await launch(plan, env=env, cwd=self._cwd)
        self._runs[run.pathspec] = run
        watcher = asyncio.create_task(run.watch(), name=f"metaflow {run.pathspec}")
        self._watchers.add(watcher)
        watcher.add_done_callback(self._watchers.discard)
        return run.pathspec

    def run_links(self, submission: Submission, run_id: str) -> dict[str, str]:
        """A resumed run is recorded with the pathspec of the run it resumed."""
        origin = submission.extra.get("resume")
        return {"resumed_from": origin} if isinstance(origin, str) else {}

    async def status(self, application: str, run_id: str) -> RunState:
        view = await self._view(run_id, with_output=False)
        return RunState(
            run_id=run_id,
            application=application or view.flow,
            status=view.status,
            updated_at=view.finished_at,
            raw=view.to_dict(),
        )

    async def result(self, application: str, run_id: str) -> RunResult:
        view = await self._view(run_id, with_output=True)
        return RunResult(run_id, view.status, view.output, view.error, view.to_dict())

    async def _view(self, run_id: str, *, with_output: bool) -> FlowRunView:
        """The client's view, corrected by what this process saw of a run it started and
        whose process has ended: a killed one is canceled, and one whose process failed
        before any task raised is failed with the end of its stderr."""
        started = self._runs.get(run_id)
        if started is not None and started.ended.is_set() and started.returncode != 0:
            if started.canceled:
                return FlowRunView(run_id, RunStatus.CANCELED, _now(), error="canceled")
            view = await asyncio.to_thread(read_run, run_id, with_output=False)
            error = view.error or f"exit code {started.returncode}: {started.stderr_tail}"
            return FlowRunView(run_id, RunStatus.FAILED, view.finished_at or _now(), None, error)
        return await asyncio.to_thread(read_run, run_id, with_output=with_output)

    async def cancel(self, application: str, run_id: str) -> None:
        """Stop a run this provider started; a finished one is left as it is."""
        run = self._runs.get(run_id)
        if run is None:
            raise ProviderError(
                f"run {run_id} was not started by this listener process; "
                "stop it where it runs (its scheduler, or its process)",
                status_code=409,
            )
        if run.ended.is_set():
            return
        run.canceled = True
        await stop(run, grace=self.termination_timeout)

    def parse_event(self, payload: Any, *, delivery_id: str) -> RunEvent:
        return parse_event(payload, delivery_id=delivery_id)

    async def aclose(self) -> None:
        """Stop watching; the runs themselves go on."""
        watchers = list(self._watchers)
        for watcher in watchers:
            watcher.cancel()
        await asyncio.gather(*watchers, return_exceptions=True)
        for run in self._runs.values():
            run.runner.cleanup()


def parse_event(payload: Any, *, delivery_id: str) -> RunEvent:
    """The exit hook's delivery: the listener's own payload, from provider `metaflow`."""
    return native.parse_event(payload, delivery_id=delivery_id, provider=MetaflowProvider.name)


def _now() -> datetime:
    return datetime.now(UTC)
