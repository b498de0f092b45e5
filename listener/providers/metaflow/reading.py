"""One run as the Metaflow client sees it: its status, its end step's artifacts, its error.

These calls block (the client reads the metadata service and the datastore), so the
provider runs them in a worker thread; the exit hook calls :func:`view_of` on the `Run` it
is handed. The client finds runs through Metaflow's own configuration (``METAFLOW_HOME``,
profile, datastore root), as the flows themselves do.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

from listener.events import RunStatus
from listener.providers.base import ProviderError

__all__ = ["FlowRunView", "flow_name", "read_run", "view_of"]

# An artifact whose JSON is larger than this is summarised in the result, not copied.
MAX_ARTIFACT_JSON: Final = 64 * 1024


@dataclass(frozen=True, slots=True)
class FlowRunView:
    """What the client says of one run."""

    pathspec: str
    status: RunStatus
    finished_at: datetime | None = None
    output: dict[str, Any] | None = None
    error: str | None = None
    tags: tuple[str, ...] = field(default_factory=tuple)

    @property
    def flow(self) -> str:
        return flow_name(self.pathspec)

    def to_dict(self) -> dict[str, Any]:
        return {
            "pathspec": self.pathspec,
            "flow": self.flow,
            "status": self.status.value,
            "finished_at": None if self.finished_at is None else self.finished_at.isoformat(),
            "error": self.error,
            "tags": list(self.tags),
        }


def flow_name(pathspec: str) -> str:
    """The flow of a run pathspec (``HelloFlow/1796410078633618`` -> ``HelloFlow``)."""
    return pathspec.partition("/")[0]


def read_run(pathspec: str, *, with_output: bool = False) -> FlowRunView:
    """The run's view; `ProviderError` (404) when the client knows no such run."""
    from metaflow.client.core import Run
    from metaflow.exception import MetaflowInvalidPathspec, MetaflowNotFound

    try:
        run = Run(pathspec, _namespace_check=False)
    except (MetaflowNotFound, MetaflowInvalidPathspec) as exc:
        raise ProviderError(f"no Metaflow run {pathspec!r} ({exc})", status_code=404) from None
    return view_of(run, with_output=with_output)


def view_of(run: Any, *, with_output: bool = False) -> FlowRunView:
    """A client `Run`'s view. A run whose end step succeeded is `succeeded`; one with a
    task that raised is `failed`, with that exception as the error; else `running`."""
    pathspec = str(run.pathspec)
    tags = tuple(sorted(str(tag) for tag in run.user_tags))
    if run.finished:
        finished_at = _utc(run.finished_at)
        if run.successful:
            output = _artifacts(run.end_task) if with_output else None
            return FlowRunView(pathspec, RunStatus.SUCCEEDED, finished_at, output, None, tags)
        error = _failure(run) or "the end step did not succeed"
        return FlowRunView(pathspec, RunStatus.FAILED, finished_at, None, error, tags)
    failed = _failed_task(run)
    if failed is None:
        return FlowRunView(pathspec, RunStatus.RUNNING, tags=tags)
    task, error = failed
    return FlowRunView(pathspec, RunStatus.FAILED, _utc(task.finished_at), None, error, tags)


def _failure(run: Any) -> str | None:
    failed = _failed_task(run)
    return None if failed is None else failed[1]


def _failed_task(run: Any) -> tuple[Any, str] | None:
    """The first task that raised, and its exception as ``step: Type: message``."""
    for step in run:
        for task in step:
            if task.successful:
                continue
            exception = task.exception
            if exception is not None:
                return task, f"{step.id}: {_describe(exception)}"
    return None


def _describe(exception: Any) -> str:
    # The client hands back a MetaflowExceptionWrapper: the type's dotted name and message.
    kind = getattr(exception, "type", None)
    message = getattr(exception, "exception", None)
    if isinstance(kind, str) and message is not None:
        return f"{kind.removeprefix('builtins.')}: {message}"
    return f"{type(exception).__name__}: {exception}"


def _artifacts(task: Any) -> dict[str, Any]:
    """The task's artifacts by name (Metaflow's own, named ``_...``, left out)."""
    output: dict[str, Any] = {}
    for artifact in task.artifacts:
        name = str(artifact.id)
        if not name.startswith("_"):
            output[name] = _json_value(artifact.data)
    return output


def _json_value(value: Any) -> Any:
    try:
        text = json.dumps(value, allow_nan=False)
    except (TypeError, ValueError):
        return {"type": type(value).__name__, "repr": repr(value)[:200]}
    if len(text) > MAX_ARTIFACT_JSON:
        return {"type": type(value).__name__, "json_bytes": len(text)}
    return value


def _utc(value: Any) -> datetime | None:
    if not isinstance(value, datetime):
        return None
    # The client's times are naive local times.
    return value.astimezone(UTC)
