"""The top-level group: version, the config file, usage errors and one-line errors."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import pytest

from cli.support import invoke, run_cli, write_config
from listener import __version__
from listener.store import open_store


def test_version_from_the_installed_command(tmp_path: Path) -> None:
    out = run_cli("--version", cwd=tmp_path)
    assert out.returncode == 0
    assert out.stdout.strip() == f"listener, version {__version__}"
    out = run_cli("version", "--json", cwd=tmp_path)
    assert json.loads(out.stdout) == {"version": __version__}


def test_a_config_error_exits_2_with_the_message_only(tmp_path: Path) -> None:
    config = write_config(tmp_path, '[poller]\ngrace = "soon"\n')
    out = run_cli("--config", str(config), "runs", cwd=tmp_path)
    assert out.returncode == 2
    assert out.stderr.strip() == (
        f'{config}: poller.grace: expected a number of seconds >= 0, got "soon"'
    )
    assert "Traceback" not in out.stderr
    assert out.stdout == ""


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    config = write_config(tmp_path, '[poller]\ngrace = "soon"\n')
    out = run_cli("--debug", "--config", str(config), "runs", cwd=tmp_path)
    assert out.returncode == 2
    assert "Traceback (most recent call last)" in out.stderr
    assert out.stderr.strip().endswith('got "soon"')


def test_the_config_file_comes_from_the_environment_or_the_directory(tmp_path: Path) -> None:
    write_config(tmp_path, "[server]\nport = 70000\n")
    out = run_cli("runs", cwd=tmp_path)
    assert out.returncode == 2
    assert out.stderr.startswith("listener.toml: server.port:")
    other = write_config(tmp_path, "[poller]\ngrace = -1\n", name="other.toml")
    out = run_cli("runs", cwd=tmp_path, env={"LISTENER_CONFIG": str(other)})
    assert out.stderr.startswith(f"{other}: poller.grace:")


def test_usage_errors_exit_2(tmp_path: Path) -> None:
    assert invoke("runs", "--limit", "0").exit_code == 2
    assert invoke("no-such-command").exit_code == 2
    assert invoke("track", "p", "a", "r", "done").exit_code == 2


def test_version_in_process() -> None:
    assert invoke("version").stdout.strip() == __version__


def test_an_unexpected_error_is_one_line_without_a_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def explode(coroutine: Coroutine[Any, Any, Any]) -> None:
        coroutine.close()
        raise RuntimeError("first line\nsecond line")

    monkeypatch.setattr("listener.cli.runs.run_async", explode)
    config = write_config(tmp_path, "")
    result = invoke("--config", str(config), "runs")
    assert result.exit_code == 1
    assert result.stderr == "error: RuntimeError: first line second line\n"
    debug = invoke("--debug", "--config", str(config), "runs")
    assert "Traceback (most recent call last)" in debug.stderr


def test_commands_that_only_read_the_store_run_without_the_webhook_secrets(
    tmp_path: Path,
) -> None:
    # As in a second terminal beside `serve`, where the secrets' variables are not set.
    config = write_config(
        tmp_path,
        f'[listener]\nstore = "sqlite:///{tmp_path / "l.db"}"\n'
        'callback_secret = "env:UNSET_CALLBACK_SECRET"\n'
        '[sources.std]\nprovider = "local"\nscheme = "standard-webhooks"\n'
        'secrets = ["env:UNSET_WEBHOOK_SECRET"]\n'
        '[sources.cb]\nprovider = "local"\nscheme = "none"\n'
        '[providers.nextmv]\napi_key = "env:UNSET_API_KEY"\n',
    )
    asyncio.run(_create_store(f"sqlite:///{tmp_path / 'l.db'}"))
    for command in (["runs"], ["runs", "show", "nope"], ["events"], ["events", "--unroutable"],
                    ["dead-letters"], ["prune", "--older-than", "30d"]):  # fmt: skip
        result = invoke("--config", str(config), *command)
        assert "UNSET_" not in result.output, (command, result.output)
        assert result.exit_code in (0, 4), (command, result.output)  # 4: `runs show` of no run
    # Commands that verify, sign or call a platform still need them, and say which.
    result = invoke("--config", str(config), "cancel", "nope")
    assert result.exit_code == 2
    assert "UNSET_CALLBACK_SECRET is not set" in result.output


async def _create_store(url: str) -> None:
    store = await open_store(url)
    await store.close()


def test_a_secret_written_inline_is_warned_about_once(tmp_path: Path) -> None:
    config = write_config(
        tmp_path,
        f'[listener]\nstore = "sqlite:///{tmp_path / "l.db"}"\n'
        '[sources.nx]\nprovider = "nextmv"\nscheme = "nextmv"\n'
        'secrets = ["an-inline-webhook-secret"]\n',
    )
    asyncio.run(_create_store(f"sqlite:///{tmp_path / 'l.db'}"))
    result = invoke("--config", str(config), "runs")
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1
    assert "sources.nx.secrets[0]: a secret written inline" in warnings[0]
    assert "an-inline-webhook-secret" not in result.output
