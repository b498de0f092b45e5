"""Write each succeeded run's result as a JSON file.

The file is `<dir>/<run id>.json`, written atomically (a temporary file, then a rename), so
readers never see half a file and a retried call simply rewrites it. Run ids with
characters outside `A-Z a-z 0-9 . _ -` are made safe and get a short hash suffix.

When the listener has a provider for the run, the file holds the fetched result
(`{"run_id", "status", "output", "error"}`); otherwise it holds the event itself
(`RunEvent.to_dict()`, payload included).

Settings (`configure({...})` or environment):

- `dir` / `LISTENER_HANDLER_SAVE_DIR`: the directory, default `results`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import hashlib
import json
import os
import re
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from handlers._settings import Settings
from listener.events import RunEvent
from listener.providers.base import RunResult
from listener.registry import Handlers

__all__ = ["configure", "file_name", "handlers", "save_result", "write_atomic"]

handlers = Handlers()
settings = Settings("save")

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


def configure(values: Mapping[str, Any]) -> None:
    settings.configure(values)


def file_name(run_id: str) -> str:
    safe = _UNSAFE.sub("_", run_id)[:150]
    if safe != run_id or safe.startswith("."):
        digest = hashlib.sha256(run_id.encode("utf-8", "surrogatepass")).hexdigest()[:12]
        safe = f"{safe.lstrip('.')}-{digest}"
    return f"{safe}.json"


def write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _document(result: Any) -> Any:
    if isinstance(result, RunResult):
        return {
            "run_id": result.run_id,
            "status": result.status.value,
            "output": result.output,
            "error": result.error,
        }
    if dataclasses.is_dataclass(result) and not isinstance(result, type):
        return dataclasses.asdict(result)
    return result


def _default(value: Any) -> Any:
    if isinstance(value, enum.Enum):
        return value.value
    return str(value)


@handlers.on("succeeded")
async def save_result(event: RunEvent) -> None:
    directory = Path(settings.text("dir") or "results")
    if event.result_fetcher is not None:
        document = _document(await event.fetch_result())
    else:
        document = event.to_dict()
    data = json.dumps(document, indent=2, default=_default).encode() + b"\n"
    await asyncio.to_thread(write_atomic, directory / file_name(event.run_id), data)
