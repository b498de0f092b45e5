"""Fixtures for the command tests: a clean environment, a fake platform, a store
with some history."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from cli.support import History, make_history
from listener.testing import FakePlatform, RunPlan


@pytest.fixture(autouse=True)
def _no_listener_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    # In-process runs read os.environ: a developer's own LISTENER_* must not leak in.
    import os

    for name in list(os.environ):
        if name.startswith("LISTENER_"):
            monkeypatch.delenv(name)


@pytest.fixture
async def platform() -> AsyncIterator[FakePlatform]:
    async with FakePlatform(plan=RunPlan(), time_scale=0.001) as fake:
        yield fake


@pytest.fixture
async def history(tmp_path: Path) -> History:
    return await make_history(tmp_path)
