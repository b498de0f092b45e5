"""`webhooks register` and `webhooks secret` against a fake platform."""

from __future__ import annotations

import json
from pathlib import Path

from cli.support import (
    PLATFORM_ENV,
    invoke,
    invoke_async,
    platform_config,
    run_cli_async,
    write_config,
)
from listener.testing import FakePlatform


async def test_webhooks_register_against_a_fake_platform(
    tmp_path: Path, platform: FakePlatform
) -> None:
    config = platform_config(tmp_path, platform)
    result = await run_cli_async(
        "--config", str(config), "webhooks", "register", "--provider", "nextmv",
        "--endpoint-id", "prod", "--url", "https://hooks.example.com/hooks/nextmv",
        "--show-secret", "--json",
        cwd=tmp_path, env=PLATFORM_ENV,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["secret"] == platform.webhook_secret("prod")
    assert document["endpoint"]["endpoint_url"] == "https://hooks.example.com/hooks/nextmv"


async def test_webhooks_register_hides_the_secret_by_default(
    tmp_path: Path, platform: FakePlatform
) -> None:
    config = platform_config(tmp_path, platform)
    text = config.read_text().replace(
        "[listener]\n",
        '[listener]\npublic_url = "https://hooks.example.com/base/"\n',
    )
    text += '\n[sources.nv]\nprovider = "nextmv"\nscheme = "nextmv"\nsecrets = ["env:NV"]\n'
    config.write_text(text)
    env = {**PLATFORM_ENV, "NV": "nv-secret-of-the-source"}
    result = await invoke_async(
        "--config", str(config), "webhooks", "register", "--endpoint-id", "ep", env=env
    )
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == (
        "registered endpoint ep: https://hooks.example.com/base/hooks/nv (run.status)"
    )
    secret = platform.webhook_secret("ep")
    assert secret not in result.output
    assert "listener webhooks secret --provider nextmv --endpoint-id ep" in result.stderr

    printed = await invoke_async(
        "--config", str(config), "webhooks", "secret", "--endpoint-id", "ep", env=env
    )
    assert printed.stdout.strip() == secret

    shown = await invoke_async(
        "--config", str(config), "webhooks", "register", "--endpoint-id", "ep2", "--url",
        "https://x.example/hooks/nv", "--show-secret", env=env,
    )  # fmt: skip
    assert shown.stdout.splitlines()[1] == f"signing secret: {platform.webhook_secret('ep2')}"

    clash = await invoke_async(
        "--config", str(config), "webhooks", "register", "--endpoint-id", "ep", env=env
    )
    assert clash.exit_code == 1
    assert "error: the platform call failed" in clash.stderr


def test_webhooks_register_needs_an_account_provider_and_a_url(tmp_path: Path) -> None:
    config = write_config(
        tmp_path,
        '[providers.flows]\nkind = "workflow"\napi_key = "k"\nbase_url = "http://127.0.0.1:9"\n'
        '[providers.nextmv]\napi_key = "k"\nbase_url = "http://127.0.0.1:9"\n',
    )
    target = ("--endpoint-id", "e", "--url", "https://x.example")
    refusals = [
        (("--provider", "flows", *target), "has no account webhooks"),
        (("--endpoint-id", "e"), "give --url"),
        (
            ("--provider", "acme", *target),
            "providers.acme: not configured; configured: flows, nextmv",
        ),
    ]
    for arguments, reason in refusals:
        result = invoke("--config", str(config), "webhooks", "register", *arguments)
        assert result.exit_code == 2, arguments
        assert reason in result.stderr


async def test_webhooks_ensure_creates_then_finds_it_right_then_repairs_it(
    tmp_path: Path, platform: FakePlatform
) -> None:
    config = platform_config(tmp_path, platform)
    text = config.read_text().replace(
        "[listener]\n", '[listener]\npublic_url = "https://hooks.example.com"\n'
    )
    text += '\n[sources.nv]\nprovider = "nextmv"\nscheme = "nextmv"\nsecrets = ["env:NV"]\n'
    config.write_text(text)
    env = {**PLATFORM_ENV, "NV": "nv-secret-of-the-source"}
    url = "https://hooks.example.com/hooks/nv"

    async def ensure(*arguments: str) -> tuple[int, str, str]:
        result = await invoke_async(
            "--config", str(config), "webhooks", "ensure", *arguments, env=env
        )
        return result.exit_code, result.stdout, result.stderr

    code, out, err = await ensure("--dry-run")
    assert (code, out) == (
        0,
        f"would create endpoint listener-nv: {url} (run.status)\n  no endpoint listener-nv\n",
    )
    assert platform._endpoints == {}

    code, out, err = await ensure()
    assert (code, out.splitlines()[0]) == (0, f"created endpoint listener-nv: {url} (run.status)")
    secret = platform.webhook_secret("listener-nv")
    assert secret not in out + err
    assert "listener webhooks secret --provider nextmv --endpoint-id listener-nv" in err

    code, out, err = await ensure()
    assert (code, out, err) == (0, f"endpoint listener-nv is right: {url} (run.status)\n", "")
    assert list(platform._endpoints) == ["listener-nv"]

    platform.disable_webhook("listener-nv")
    code, out, err = await ensure("--json", "--show-secret")
    assert code == 0
    document = json.loads(out)
    assert document == {
        "action": "replace",
        "endpoint_id": "listener-nv",
        "reasons": ["it is disabled"],
        "changed": True,
        "url": url,
        "dry_run": False,
        "secret": platform.webhook_secret("listener-nv"),
    }
    assert document["secret"] != secret
    assert platform._endpoints["listener-nv"].enabled


def test_webhooks_ensure_needs_a_source_or_an_endpoint_id(tmp_path: Path) -> None:
    config = write_config(
        tmp_path, '[providers.nextmv]\napi_key = "k"\nbase_url = "http://127.0.0.1:9"\n'
    )
    result = invoke(
        "--config", str(config), "webhooks", "ensure", "--url", "https://x.example/hooks/nv"
    )
    assert result.exit_code == 2
    assert "give --endpoint-id, or configure a [sources.<name>]" in result.stderr
