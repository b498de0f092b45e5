"""End callbacks for tests/test_run_end.py, importable by name from any process."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from listener import RunEvent


def write_line(event: RunEvent, context: dict[str, Any]) -> None:
    """Appends the run's end and the context to the file the context names."""
    line = {"run_id": event.run_id, "status": event.status.value, "context": context}
    with Path(context["path"]).open("a") as file:
        file.write(json.dumps(line) + "\n")


async def fail_first(event: RunEvent, context: dict[str, Any]) -> None:
    """Fails the first attempt, after changing its context."""
    marker = Path(context["path"] + ".tried")
    if not marker.exists():
        marker.touch()
        context["path"] = "/nonexistent/changed-by-the-first-attempt"
        raise RuntimeError("not yet")
    write_line(event, context)


class Callbacks:
    @staticmethod
    def write_line(event: RunEvent, context: dict[str, Any]) -> None:
        write_line(event, context)


not_callable = 42
