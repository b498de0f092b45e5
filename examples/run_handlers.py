"""Example handler plugin: load it with `plugins = ["./run_handlers.py"]` in `listener.toml`
(or `Listener(plugins=["examples/run_handlers.py"])`).

- `save_output` (async) fetches each succeeded Nextmv run's output through the provider
  and writes it to `<EXAMPLE_RESULTS_DIR>/<run id>.json` (default `results/`).
- `report_problem` (sync, so the dispatcher runs it on a thread) logs failed and
  canceled runs; a real one might page someone or open a ticket.

A handler call is at-least-once: both are idempotent (a retry rewrites the same file or
logs the same line again), and `event.key` names the transition if one needs to dedupe.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
from pathlib import Path
from typing import Any

from listener.events import RunEvent
from listener.registry import Handlers

handlers = Handlers()
log = logging.getLogger("examples.run_handlers")

# Run ids come from the platform: keep only safe file-name characters.
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


def results_dir() -> Path:
    return Path(os.environ.get("EXAMPLE_RESULTS_DIR", "results"))


def write_json(path: Path, document: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # Written next to the target, then renamed: readers never see half a file.
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(json.dumps(document, indent=2) + "\n")
    partial.replace(path)


@handlers.on("succeeded", provider="nextmv")
async def save_output(event: RunEvent) -> None:
    result = await event.fetch_result()
    document = {"run_id": event.run_id, "status": event.status.value, "output": result.output}
    path = results_dir() / f"{_UNSAFE.sub('_', event.run_id)}.json"
    # File I/O on a thread, so other handlers on the event loop keep going meanwhile.
    await asyncio.to_thread(write_json, path, document)


@handlers.on("failed", "canceled", "expired")
def report_problem(event: RunEvent) -> None:
    log.warning(
        "run %s of %s ended %s (learned by %s)",
        event.run_id,
        event.application,
        event.status.value,
        event.origin.value,
    )
