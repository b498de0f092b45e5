"""The top-level group: version, the config file, usage errors and one-line errors."""

from __future__ import annotations

import json
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import pytest

from cli.support import invoke, run_cli, write_config
from listener import __version__


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
