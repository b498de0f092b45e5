"""The JSON documents the fake platform answers with, shaped as the Nextmv API writes them.

Each function builds one kind of answer from a :class:`FakeRun`: the run information (the
metadata route), the run result (information plus output or error log), a run as the
listing shows it (flat, no ``metadata`` object), the logs, and an application. The
official SDK parses these with its own models; the test suite checks that they validate.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Final

from listener.sending import compact_json
from listener.testing.payloads import iso
from listener.testing.records import FakeRun

__all__ = [
    "USER_EMAIL",
    "application_document",
    "listed_run",
    "live_logs",
    "output_size",
    "run_format",
    "run_information",
    "run_result",
]

USER_EMAIL: Final = "someone@example.com"
_JSON_FORMAT: Final = {"input": {"type": "json"}, "output": {"type": "json"}}


def output_size(run: FakeRun) -> int:
    return len(compact_json(run.output)) if run.output is not None else 0


def run_format(run: FakeRun) -> Mapping[str, Any]:
    """The run's content format; the SDK fails on one without an output type."""
    found = run.configuration.get("format")
    if isinstance(found, Mapping) and "input" in found and "output" in found:
        return found
    if isinstance(found, Mapping) and "input" in found:
        return {"input": found["input"], "output": {"type": "json"}}
    return _JSON_FORMAT


def _duration_ms(run: FakeRun) -> int:
    if run.duration_ms is not None:
        return run.duration_ms
    if run.started_at is None:
        return 0
    end = run.finished_at or datetime.now(UTC)
    return int((end - run.started_at).total_seconds() * 1000)


def _run_type(run: FakeRun) -> dict[str, str]:
    return {"type": "external" if run.external else "standard"}


def run_information(run: FakeRun) -> dict[str, Any]:
    """What ``GET .../runs/{id}/metadata`` answers (the SDK's ``RunInformation``)."""
    return {
        "id": run.id,
        "name": run.name,
        "description": run.description,
        "user_email": USER_EMAIL,
        "metadata": {
            "application_id": run.application,
            "application_instance_id": run.instance_id or "",
            "application_version_id": "",
            "created_at": iso(run.created_at),
            "duration": _duration_ms(run),
            "error": run.error,
            "input_size": run.input_size,
            "output_size": output_size(run),
            "format": run_format(run),
            "run_type": _run_type(run),
            "status_v2": run.status,
        },
    }


def run_result(run: FakeRun, *, inline_output_limit: int) -> dict[str, Any]:
    """What ``GET .../runs/{id}`` answers (the SDK's ``RunResult``).

    A succeeded run's output is inline up to ``inline_output_limit`` bytes, else left out
    (it is downloaded through the output URL); a failed run carries its ``error_log``.
    """
    document = run_information(run)
    if run.status == "succeeded" and output_size(run) <= inline_output_limit:
        document["output"] = run.output
    if run.status == "failed":
        document["error_log"] = {"error": run.error, "stdout": run.stdout, "stderr": run.stderr}
    return document


def listed_run(run: FakeRun) -> dict[str, Any]:
    """One run of ``GET .../runs`` (the SDK's ``Run``): its fields flat, no ``metadata``."""
    return {
        "id": run.id,
        "user_email": USER_EMAIL,
        "name": run.name,
        "description": run.description,
        "created_at": iso(run.created_at),
        "application_id": run.application,
        "application_instance_id": run.instance_id or "",
        "application_version_id": "",
        "run_type": _run_type(run),
        "execution_class": "",
        "runtime": "",
        "status_v2": run.status,
    }


def live_logs(run: FakeRun, since: int) -> dict[str, Any]:
    """What ``GET .../runs/{id}/logs/live`` answers: the log lines from ``since`` on."""
    lines = run.stderr.splitlines()
    moment = iso(run.updated_at)
    return {
        "items": [{"timestamp": moment, "log": line} for line in lines[since:]],
        "status_v2": run.status,
        "next_page_token": str(len(lines)),
        "next_available_in_seconds": 0 if run.is_final else 1,
    }


def application_document(application: str, created_at: datetime) -> dict[str, Any]:
    """What ``GET /v1/applications/{id}`` answers (the SDK's ``Application``)."""
    return {
        "id": application,
        "name": application,
        "description": "",
        "type": "custom",
        "default_instance": "",
        "locked": False,
        "created_at": iso(created_at),
        "updated_at": iso(created_at),
    }
