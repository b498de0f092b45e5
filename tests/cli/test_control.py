"""`submit` (and wait), `cancel` and `track`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from cli.support import (
    PLATFORM_ENV,
    invoke,
    invoke_async,
    platform_config,
    run_cli_async,
    store_url,
    write_config,
)
from listener.testing import FakePlatform, RunPlan


async def test_submit_and_wait_against_a_fake_platform(
    tmp_path: Path, platform: FakePlatform
) -> None:
    config = platform_config(tmp_path, platform)
    (tmp_path / "input.json").write_text('{"stops": [1, 2, 3]}')
    args = ["--config", str(config), "submit", "nextmv", "routing", "input.json"]
    result = await run_cli_async(
        *args, "--wait", "--timeout", "60", "-o", "solver=fast", "--name", "nightly", "--json",
        cwd=tmp_path, env=PLATFORM_ENV,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    event = json.loads(result.stdout)
    assert event["status"] == "succeeded"
    assert event["origin"] == "poll"  # no public URL: the command's own poller learned it
    (run,) = platform.runs.values()
    assert (run.id, run.input, run.options, run.name) == (
        event["run_id"],
        {"stops": [1, 2, 3]},
        {"solver": "fast"},
        "nightly",
    )
    assert f"{run.id}: succeeded" in result.stderr  # progress on stderr


async def test_submit_without_wait_prints_the_run_id(
    tmp_path: Path, platform: FakePlatform
) -> None:
    config = platform_config(tmp_path, platform)
    result = await invoke_async(
        "--config", str(config), "submit", "nextmv", "routing", env=PLATFORM_ENV
    )
    assert result.exit_code == 0, result.output
    (run,) = platform.runs.values()
    assert result.stdout.strip() == run.id
    assert run.input == {}

    result = await invoke_async(
        "--config", str(config), "submit", "nextmv", "routing", "--json", env=PLATFORM_ENV
    )
    document = json.loads(result.stdout)
    assert document["provider"] == "nextmv"
    assert document["callback_url"] is None  # no public URL: poll-only


def test_submit_reads_stdin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[Any] = []

    async def fake_submit(
        config: Any, provider: str, application: str, data: Any, **kw: Any
    ) -> int:
        seen.append(data)
        return 0

    monkeypatch.setattr("listener.cli.control._submit", fake_submit)
    config = write_config(tmp_path, "")
    assert invoke("--config", str(config), "submit", "p", "a", "-", input='{"a": 1}').exit_code == 0
    assert (
        invoke("--config", str(config), "submit", "p", "a", "-", input="plain text").exit_code == 0
    )
    assert seen == [{"a": 1}, "plain text"]
    bad = invoke("--config", str(config), "submit", "p", "a", "-o", "novalue")
    assert bad.exit_code == 2
    assert "expected NAME=VALUE" in bad.output


async def test_submit_wait_exits_1_when_the_run_fails(
    tmp_path: Path, platform: FakePlatform
) -> None:
    platform.plan = RunPlan(status="failed")
    config = platform_config(tmp_path, platform)
    result = await invoke_async(
        "--config", str(config), "submit", "nextmv", "routing", "--wait", env=PLATFORM_ENV
    )
    assert result.exit_code == 1, result.output
    assert result.stdout.strip().endswith("failed (learned by poll)")


async def test_submit_wait_times_out_with_124(tmp_path: Path, platform: FakePlatform) -> None:
    platform.plan = RunPlan(runs_for=None)
    config = platform_config(tmp_path, platform)
    result = await invoke_async(
        "--config", str(config), "submit", "nextmv", "routing", "--wait", "--timeout", "0.2",
        env=PLATFORM_ENV,
    )  # fmt: skip
    assert result.exit_code == 124, result.output
    assert "did not finish within 0.2 s" in result.stderr


def test_submit_to_an_unconfigured_provider_exits_2(tmp_path: Path) -> None:
    config = write_config(tmp_path, f'[listener]\nstore = "{store_url(tmp_path)}"\n')
    result = invoke("--config", str(config), "submit", "nextmv", "routing")
    assert result.exit_code == 2
    assert "no provider 'nextmv' configured (add [providers.nextmv]); configured: none" in (
        result.stderr
    )


async def test_cancel_a_running_run(tmp_path: Path, platform: FakePlatform) -> None:
    platform.plan = RunPlan(runs_for=None)
    config = platform_config(tmp_path, platform)
    submitted = await invoke_async(
        "--config", str(config), "submit", "nextmv", "routing", env=PLATFORM_ENV
    )
    run_id = submitted.stdout.strip()
    result = await invoke_async(
        "--config", str(config), "cancel", run_id, "--json", env=PLATFORM_ENV
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"run_id": run_id, "status": "canceled"}
    assert platform.runs[run_id].status == "canceled"

    missing = await invoke_async("--config", str(config), "cancel", "nope", env=PLATFORM_ENV)
    assert missing.exit_code == 4
    assert "no run 'nope'" in missing.stderr


def test_track_records_a_run_and_queues_its_handlers(tmp_path: Path) -> None:
    config = write_config(
        tmp_path,
        f'[listener]\nstore = "{store_url(tmp_path)}"\nplugins = ["handlers.log"]\n',
    )
    (tmp_path / "out.json").write_text('{"cost": 3}')
    args = ["--config", str(config), "track", "flows", "etl", "run-9", "SUCCEEDED"]
    first = invoke(*args, "--output-file", str(tmp_path / "out.json"), "--duration", "1.5")
    assert first.exit_code == 0, first.output
    assert first.stdout.strip() == "recorded run run-9 succeeded; 1 handler call(s) queued"
    again = invoke(*args, "--json")
    assert json.loads(again.stdout) == {
        "run_id": "run-9",
        "status": "succeeded",
        "duplicate": True,
        "moved": False,
        "handler_calls": [],
    }
    shown = invoke("--config", str(config), "runs", "show", "run-9", "--json")
    document = json.loads(shown.stdout)
    assert document["events"][0]["payload"] == {
        "status": "succeeded",
        "output": {"cost": 3},
        "duration_ms": 1500,
    }
    assert document["handler_calls"][0]["handler"] == "handlers.log.log_transition"
    assert document["handler_calls"][0]["state"] == "pending"  # the service runs it
