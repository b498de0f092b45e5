"""The documents the fake Noxus engine serves, recorded through its HTTP API.

`noxus_documents.json` beside this file holds one recording: the client's models validate
it and the provider's parsing tests read it (`test_noxus_documents.py`), and a test
records again and compares, so the fake, the file and the provider cannot drift apart.
After a deliberate change to the fake, write the file anew with
`python tests/providers/noxus_recording.py`.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from listener.testing import FakeNoxusEngine, LoopbackServer, NoxusPlan

RECORDING = Path(__file__).with_name("noxus_documents.json")
MOMENT = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


async def record() -> dict[str, Any]:
    """Runs that complete, fail and are stopped, and what the engine said about each."""
    callbacks: dict[str, Any] = {}

    async def hook(request: Request) -> Response:
        body = json.loads(await request.body())
        callbacks[body["status"]] = body
        return Response(status_code=204)

    receiver = Starlette(routes=[Route("/cb", hook, methods=["POST"])])
    engine = FakeNoxusEngine(plan=NoxusPlan(runs_for=None), seed=7, clock=lambda: MOMENT)
    async with (
        engine,
        LoopbackServer(receiver) as hooks,
        httpx.AsyncClient(base_url=engine.base_url, headers={"X-API-Key": engine.api_key}) as http,
    ):
        workflow = engine.workflow_id
        runs: dict[str, Any] = {}

        async def new_run() -> str:
            body = {"input": {"doc": "a.pdf"}, "callback_url": f"{hooks.base_url}/cb"}
            answer = (await http.post(f"/v1/workflows/{workflow}/runs", json=body)).json()
            runs.setdefault("queued", answer)
            engine.start_run(answer["id"])
            return str(answer["id"])

        async def get(run_id: str) -> Any:
            return (await http.get(f"/v1/workflows/{workflow}/runs/{run_id}")).json()

        completed = await new_run()
        runs["running"] = await get(completed)
        engine.await_feedback(completed)
        runs["awaiting_human_feedback"] = await get(completed)
        engine.finish(completed, output={"summary": "two pages"})
        runs["completed"] = await get(completed)
        failed = await new_run()
        engine.finish(failed, "failed", error="the summariser crashed")
        runs["failed"] = await get(failed)
        runs["stopped"] = (await http.post(f"/v1/runs/{await new_run()}/stop")).json()
        events: list[Any] = []
        async with http.stream("GET", f"/v1/runs/{completed}/events") as stream:
            async for line in stream.aiter_lines():
                if line.startswith("data: "):
                    events.append(json.loads(line.removeprefix("data: ")))
        await engine.drain()
        return {
            "nodes": (await http.get("/v1/nodes")).json(),
            "me": (await http.get("/v1/admin/me")).json(),
            "workflow": (await http.get(f"/v1/workflows/{workflow}")).json(),
            "runs": runs,
            "data": (await http.get(f"/v1/runs/{completed}/data")).json(),
            "events": events,
            "callbacks": callbacks,
        }


def recorded() -> dict[str, Any]:
    documents: dict[str, Any] = json.loads(RECORDING.read_text())
    return documents


if __name__ == "__main__":
    RECORDING.write_text(json.dumps(asyncio.run(record()), indent=2) + "\n")
