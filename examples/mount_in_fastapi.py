"""The receiver inside an existing FastAPI app, under `/listener`.

    NEXTMV_WEBHOOK_SECRET=... uvicorn --factory examples.mount_in_fastapi:create_app

Register `https://<this host>/listener/hooks/nextmv` as the Nextmv webhook endpoint.
FastAPI, like Starlette, does not run a mounted app's lifespan: the listener's lifespan
is given to FastAPI itself. An app with a lifespan of its own enters the listener inside
it instead::

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with listener:
            yield

Environment: `NEXTMV_WEBHOOK_SECRET` (required; several, comma-separated, while rotating),
`LISTENER_STORE` (default `sqlite:///listener.db`).
"""

from __future__ import annotations

import logging
import os
from typing import Any

from fastapi import FastAPI, HTTPException

from listener import Listener, RunEvent, Source
from listener.signatures import NextmvSignature

log = logging.getLogger("examples.mount")


def build_listener() -> Listener:
    secrets = [s.strip() for s in os.environ["NEXTMV_WEBHOOK_SECRET"].split(",") if s.strip()]
    listener = Listener(
        store_url=os.environ.get("LISTENER_STORE", "sqlite:///listener.db"),
        sources=[Source("nextmv", "nextmv", NextmvSignature(secrets))],
    )

    @listener.on("succeeded", "failed", "canceled", "expired", name="announce")
    async def announce(event: RunEvent) -> None:
        log.info("run %s ended %s", event.run_id, event.status.value)

    return listener


def create_app(listener: Listener | None = None) -> FastAPI:
    # uvicorn sets up its own loggers only: without a root handler the handlers' lines
    # (`announce` above) would go nowhere. A no-op when the host configured logging.
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    service = listener or build_listener()
    app = FastAPI(lifespan=service.lifespan)

    @app.get("/")
    async def home() -> dict[str, str]:
        return {"service": "orders"}

    @app.get("/runs/{run_id}")
    async def run_status(run_id: str) -> dict[str, Any]:
        # The host's own routes can read what the listener stored.
        run = await service.store.get_run(run_id)
        if run is None:
            raise HTTPException(status_code=404, detail="unknown run")
        return {"run_id": run.run_id, "status": run.status.value}

    app.mount("/listener", service.asgi())
    app.state.listener = service
    return app
