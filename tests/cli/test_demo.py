"""The `demo` command (the demo itself is tested in tests/test_demo.py)."""

from __future__ import annotations

import sys
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from cli.support import invoke, run_cli


def test_demo_is_wired(tmp_path: Path) -> None:
    out = run_cli("demo", "--help", cwd=tmp_path)
    assert out.returncode == 0
    assert "--runs" in out.stdout
    assert "--seed" in out.stdout


@pytest.fixture
def fake_demo(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    calls: list[dict[str, Any]] = []
    module = types.ModuleType("listener.demo")

    async def run_demo(*, runs: int = 20, seed: int = 0, out: Callable[[str], None] = print) -> int:
        calls.append({"runs": runs, "seed": seed})
        out("demo ran")
        return 5

    module.run_demo = run_demo  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "listener.demo", module)
    return calls


def test_demo_calls_run_demo_and_returns_its_code(fake_demo: list[dict[str, Any]]) -> None:
    result = invoke("demo", "--runs", "3", "--seed", "7")
    assert result.exit_code == 5
    assert result.stdout == "demo ran\n"
    assert fake_demo == [{"runs": 3, "seed": 7}]


def test_demo_missing_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "listener.demo", None)
    result = invoke("demo")
    assert result.exit_code == 1
    assert result.stderr.strip() == "error: the demo is not part of this installation"
