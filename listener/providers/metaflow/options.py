"""A submission read as a Metaflow launch: the flow file, its parameters, its run options.

``Submission.application`` is the flow file; ``Submission.input`` a JSON object of the
flow's parameters (by name, as `python flow.py run --name value` takes them);
``Submission.options``:

``tags``
    Tags for the run, comma-separated (``tags=nightly,team-a``).
``with``
    Decorators for every step (`--with`), separated by ``;`` since a decorator's
    attributes use commas (``with=retry:times=2;catch``).
``env.NAME``
    An environment variable for the run (``env.DATA_DIR=/srv/data``).

``Submission.extra["resume"]``, a run's pathspec, resumes that (failed) run instead:
a new run that reuses the steps the first one finished.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from listener.providers.base import ProviderError, Submission

__all__ = ["KNOWN_OPTIONS", "LaunchPlan", "plan_launch"]

KNOWN_OPTIONS: Final = ("tags", "with", "env.NAME")
_ENV_PREFIX: Final = "env."


@dataclass(frozen=True, slots=True)
class LaunchPlan:
    """How to start one run with Metaflow's `Runner`."""

    flow_file: str
    parameters: dict[str, Any] = field(default_factory=dict)
    tags: tuple[str, ...] = ()
    decospecs: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)
    # The run id (not the pathspec) of the run to resume, for Metaflow's `resume`.
    resume_run_id: str | None = None


def plan_launch(submission: Submission, *, cwd: str | None = None) -> LaunchPlan:
    """The plan for `submission`; `ProviderError` (400) naming what is wrong with it."""
    flow_file = submission.application
    path = flow_file if os.path.isabs(flow_file) else os.path.join(cwd or os.getcwd(), flow_file)
    if not os.path.isfile(path):
        raise ProviderError(f"no flow file {flow_file!r}", status_code=404)
    tags: tuple[str, ...] = ()
    decospecs: tuple[str, ...] = ()
    env: dict[str, str] = {}
    for name, value in submission.options.items():
        if name == "tags":
            tags = _split(value, ",")
        elif name == "with":
            decospecs = _split(value, ";")
        elif name.startswith(_ENV_PREFIX) and len(name) > len(_ENV_PREFIX):
            env[name[len(_ENV_PREFIX) :]] = value
        else:
            known = ", ".join(KNOWN_OPTIONS)
            raise ProviderError(
                f"unknown Metaflow run option {name!r}; known: {known}", status_code=400
            )
    return LaunchPlan(
        flow_file=path,
        parameters=_parameters(submission.input),
        tags=tags,
        decospecs=decospecs,
        env=env,
        resume_run_id=_resume_run_id(submission.extra),
    )


def _split(value: str, separator: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in value.split(separator) if part.strip())


def _parameters(value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping) or not all(isinstance(name, str) for name in value):
        raise ProviderError(
            "the input of a Metaflow run is a JSON object of the flow's parameters",
            status_code=400,
        )
    return dict(value)


def _resume_run_id(extra: Mapping[str, Any]) -> str | None:
    origin = extra.get("resume")
    if origin is None:
        return None
    if not isinstance(origin, str) or "/" not in origin:
        raise ProviderError(
            f"resume takes a run pathspec (Flow/run-id), got {origin!r}", status_code=400
        )
    return origin.partition("/")[2] or None
