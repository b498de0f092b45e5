"""`send-test` signs with each scheme and speaks each provider."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from helpers import free_port
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from cli.support import WEBHOOK_SECRET, invoke, invoke_async
from listener.signatures import scheme_from_name
from listener.testing import LoopbackServer


@pytest.fixture
async def echo_server() -> AsyncIterator[tuple[str, list[Request], list[bytes]]]:
    """Answers 200 when the delivery verifies with the secret named in the path."""
    requests: list[Request] = []
    bodies: list[bytes] = []

    async def hook(request: Request) -> JSONResponse:
        body = await request.body()
        requests.append(request)
        bodies.append(body)
        scheme_name = request.path_params["scheme"]
        if scheme_name == "none":
            return JSONResponse({"ok": True})
        try:
            scheme_from_name(scheme_name, [WEBHOOK_SECRET]).verify(body, request.headers)
        except Exception as exc:
            return JSONResponse({"error": type(exc).__name__}, 401)
        return JSONResponse({"ok": True})

    app = Starlette(routes=[Route("/{scheme}", hook, methods=["POST"])])
    async with LoopbackServer(app) as server:
        yield server.base_url, requests, bodies


@pytest.mark.parametrize("scheme", ["nextmv", "standard-webhooks", "stripe", "github", "none"])
async def test_send_test_signs_with_each_scheme(
    scheme: str, echo_server: tuple[str, list[Request], list[bytes]], tmp_path: Path
) -> None:
    base_url, _, _ = echo_server
    secret_file = tmp_path / "secret"
    secret_file.write_text(WEBHOOK_SECRET + "\n")
    result = await invoke_async(
        "send-test", f"{base_url}/{scheme}", "--scheme", scheme, "--secret", f"file:{secret_file}",
        "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["status_code"] == 200
    assert WEBHOOK_SECRET not in result.output


@pytest.mark.parametrize(
    ("provider", "field"),
    [("nextmv", "status_v2"), ("workflow", "status"), ("local", "status")],
)
async def test_send_test_speaks_each_provider(
    provider: str, field: str, echo_server: tuple[str, list[Request], list[bytes]]
) -> None:
    base_url, _, bodies = echo_server
    result = await invoke_async(
        "send-test", f"{base_url}/none", "--scheme", "none", "--provider", provider,
        "--status", "canceled", "--run-id", "r-1",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("HTTP 200 OK")
    payload = json.loads(bodies[-1])
    data = payload.get("data", payload)
    assert data["run_id"] == "r-1"
    assert data[field] == ("stopped" if provider == "workflow" else "canceled")


async def test_send_test_reports_rejections_and_bad_input(
    echo_server: tuple[str, list[Request], list[bytes]],
) -> None:
    base_url, _, _ = echo_server
    rejected = await invoke_async(
        "send-test", f"{base_url}/nextmv", "--scheme", "nextmv", "--secret", "another-secret-text"
    )
    assert rejected.exit_code == 1
    assert rejected.stdout.startswith("HTTP 401")
    unsigned = invoke("send-test", f"{base_url}/nextmv", "--scheme", "nextmv")
    assert unsigned.exit_code == 2
    assert "--scheme nextmv needs --secret" in unsigned.output
    bad = invoke("send-test", base_url, "--scheme", "standard-webhooks", "--secret", "not*b64")
    assert bad.exit_code == 2
    assert "not valid base64" in bad.stderr
    assert "not*b64" not in bad.stderr
    missing = invoke("send-test", base_url, "--scheme", "nextmv", "--secret", "env:NOT_SET_HERE")
    assert missing.exit_code == 2
    assert missing.stderr.strip() == "--secret: environment variable NOT_SET_HERE is not set"


def test_send_test_to_nowhere_exits_1() -> None:
    port = free_port()
    result = invoke("send-test", f"http://127.0.0.1:{port}/hooks/x", "--scheme", "none")
    assert result.exit_code == 1
    assert result.stderr.startswith(f"error: cannot deliver to http://127.0.0.1:{port}/hooks/x")
