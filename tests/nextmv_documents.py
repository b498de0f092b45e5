"""Recorded Nextmv API documents: made by the fake platform, read by the SDK and the provider.

`record()` drives a seeded fake platform through each kind of answer and returns the
documents it gave, made stable (times, durations and the base URL fixed) so they can be
kept in `documents/nextmv/` and compared. `tests/test_testing_documents.py` checks the
files against a fresh recording and against the official SDK's models; the provider's
tests (`tests/providers/test_nextmv_recorded.py`) parse the same files.

Regenerate after a deliberate change to the fake:
`LISTENER_RECORD_DOCUMENTS=1 pytest tests/test_testing_documents.py`.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import httpx

from listener.testing import FakePlatform, FakeRun, RunPlan

DOCUMENTS = Path(__file__).resolve().parent / "documents" / "nextmv"
STABLE_TIME = "2025-01-01T00:00:00Z"
STABLE_BASE_URL = "https://fake-platform.invalid"
_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}T[0-9:.]+(Z|[+-]\d{2}:\d{2})$")
APP = "v1/applications/routing"


def load(name: str) -> Any:
    return json.loads((DOCUMENTS / f"{name}.json").read_text())


def names() -> list[str]:
    return sorted(path.stem for path in DOCUMENTS.glob("*.json"))


def stable(document: Any, base_url: str, key: str = "") -> Any:
    """`document` with what changes from one recording to the next fixed."""
    if isinstance(document, dict):
        return {k: stable(v, base_url, k) for k, v in document.items()}
    if isinstance(document, list):
        return [stable(item, base_url) for item in document]
    if isinstance(document, str):
        if _TIME.match(document):
            return STABLE_TIME
        return document.replace(base_url, STABLE_BASE_URL)
    if key == "duration" and isinstance(document, int | float):
        return 0
    return document


def _plan(run: FakeRun) -> RunPlan:
    spec = run.input if isinstance(run.input, dict) else {}
    if spec.get("hold") == "queued":
        return RunPlan(queued_for=None)
    if spec.get("hold") == "running":
        return RunPlan(runs_for=None)
    if spec.get("end") == "failed":
        return RunPlan(status="failed", error="no solution", stderr="reading\nsolving\n")
    return RunPlan(output={"routes": [["depot", "a", "b", "depot"]]})


async def record() -> dict[str, Any]:
    """Every kind of answer, recorded from a fresh seeded fake platform."""
    found: dict[str, Any] = {}
    async with FakePlatform(plan=_plan, time_scale=0.0, seed=7, page_size=3, drop_rate=1.0) as fake:
        fake.register_webhook("http://127.0.0.1:9/hooks/nextmv")
        headers = {"Authorization": f"Bearer {fake.api_key}"}
        async with httpx.AsyncClient(base_url=fake.base_url, headers=headers) as http:

            async def answer(name: str, method: str, path: str, **kwargs: Any) -> Any:
                response = await http.request(method, path, **kwargs)
                response.raise_for_status()
                found[name] = stable(response.json(), fake.base_url)
                return response.json()

            async def new_run(name: str, body: dict[str, Any]) -> str:
                run_id: str = (await answer(name, "POST", f"{APP}/runs", json=body))["run_id"]
                return run_id

            ok = await new_run("new_run", {"input": {"stops": 3}})
            failed = await new_run("new_run", {"input": {"end": "failed"}})
            queued = await new_run("new_run", {"input": {"hold": "queued"}})
            running = await new_run("new_run", {"input": {"hold": "running"}})
            upload = await answer("upload_url", "POST", f"{APP}/runs/uploadurl")
            async with httpx.AsyncClient() as storage:
                await storage.put(upload["upload_url"], content=json.dumps({"partial": True}))
            tracked = await new_run(
                "new_run",
                {
                    "input": {"stops": 4},
                    "name": "laptop",
                    "result": {
                        "status": "failed",
                        "error_message": "out of memory",
                        "execution_duration": 1234,
                        "output_upload_id": upload["upload_id"],
                    },
                },
            )
            await fake.drain()
            for status, run_id in (("queued", queued), ("running", running), ("succeeded", ok)):
                await answer(f"metadata_{status}", "GET", f"{APP}/runs/{run_id}/metadata")
            await answer("result_succeeded", "GET", f"{APP}/runs/{ok}")
            await answer("result_failed", "GET", f"{APP}/runs/{failed}")
            await answer("result_tracked_failed", "GET", f"{APP}/runs/{tracked}")
            await http.patch(f"{APP}/runs/{running}/cancel")
            await answer("metadata_canceled", "GET", f"{APP}/runs/{running}/metadata")
            page = await answer("runs_page", "GET", f"{APP}/runs", params={"pagereturn": "true"})
            await answer(
                "runs_page_next",
                "GET",
                f"{APP}/runs",
                params={"pagereturn": "true", "pagetoken": page["next_page_token"]},
            )
            await answer("logs", "GET", f"{APP}/runs/{failed}/logs")
            await answer("live_logs", "GET", f"{APP}/runs/{failed}/logs/live")
            params = {"format": "url"}
            await answer("output_url", "GET", f"{APP}/runs/{ok}/output", params=params)
            await answer("application", "GET", APP)
            # A large output is left out of the run document, to be fetched by its URL.
            fake.inline_output_limit = 0
            await answer("result_output_by_url", "GET", f"{APP}/runs/{ok}")
        found["webhook_run_status"] = stable(fake.deliveries[0].payload, fake.base_url)
    return found
