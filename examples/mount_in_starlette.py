"""The receiver inside an existing Starlette app, under `/listener`.

    NEXTMV_WEBHOOK_SECRET=... uvicorn --factory examples.mount_in_starlette:create_app

Register `https://<this host>/listener/hooks/nextmv` as the Nextmv webhook endpoint;
health checks are `/listener/healthz` and `/listener/readyz`. Starlette does not run a
mounted app's lifespan, so the host app's lifespan is the listener's: it opens the store
and starts the dispatcher and poller with the app, and stops them with it.

Environment: `NEXTMV_WEBHOOK_SECRET` (required; several, comma-separated, while rotating),
`LISTENER_STORE` (default `sqlite:///listener.db`).
"""

from __future__ import annotations

import logging
import os

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Mount, Route

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


def create_app(listener: Listener | None = None) -> Starlette:
    # uvicorn sets up its own loggers only: without a root handler the handlers' lines
    # (`announce` above) would go nowhere. A no-op when the host configured logging.
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    service = listener or build_listener()

    async def home(request: Request) -> JSONResponse:
        return JSONResponse({"service": "orders"})

    async def run_status(request: Request) -> JSONResponse:
        # The host's own routes can read what the listener stored.
        run = await service.store.get_run(request.path_params["run_id"])
        if run is None:
            return JSONResponse({"error": "unknown run"}, status_code=404)
        return JSONResponse({"run_id": run.run_id, "status": run.status.value})

    app = Starlette(
        routes=[
            Route("/", home),
            Route("/runs/{run_id}", run_status),
            Mount("/listener", app=service.asgi()),
        ],
        lifespan=service.lifespan,
    )
    app.state.listener = service
    return app
