from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import httpx
import pytest
from helpers import event, payload, serve, signed, wait_for

from handlers import save
from listener import DispatchSettings, Listener, RunEvent, RunStatus, Source
from listener.providers.base import RunResult
from listener.signatures import StandardWebhooks, generate_hmac_secret


@pytest.fixture(autouse=True)
def fresh_settings(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv("LISTENER_HANDLER_SAVE_DIR", raising=False)
    save.configure({})
    yield
    save.configure({})


def only_file(directory: Path) -> Path:
    files = list(directory.iterdir())
    assert len(files) == 1, files  # no temporary files left behind
    return files[0]


async def test_without_a_fetcher_the_event_is_saved(tmp_path: Path) -> None:
    save.configure({"dir": str(tmp_path / "out")})
    await save.save_result(event("run-1"))
    path = only_file(tmp_path / "out")
    assert path.name == "run-1.json"
    saved = json.loads(path.read_text())
    assert saved["run_id"] == "run-1"
    assert saved["status"] == "succeeded"
    assert saved["key"] == event("run-1").key


async def test_with_a_fetcher_the_result_is_saved(tmp_path: Path) -> None:
    async def fetch(event: RunEvent) -> RunResult:
        return RunResult(event.run_id, RunStatus.SUCCEEDED, output={"routes": [1, 2]})

    save.configure({"dir": str(tmp_path)})
    await save.save_result(replace(event("run-2"), result_fetcher=fetch))
    saved = json.loads((tmp_path / "run-2.json").read_text())
    assert saved == {
        "run_id": "run-2",
        "status": "succeeded",
        "output": {"routes": [1, 2]},
        "error": None,
    }


async def test_other_result_shapes_are_written_as_json(tmp_path: Path) -> None:
    @dataclass
    class Custom:
        value: object

    async def fetch(event: RunEvent) -> Custom:
        return Custom(value=RunStatus.FAILED)

    save.configure({"dir": str(tmp_path)})
    await save.save_result(replace(event("run-3"), result_fetcher=fetch))
    assert json.loads((tmp_path / "run-3.json").read_text()) == {"value": "failed"}


async def test_directory_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LISTENER_HANDLER_SAVE_DIR", str(tmp_path / "env"))
    await save.save_result(event("run-env"))
    assert (tmp_path / "env" / "run-env.json").exists()


def test_file_names_are_safe_and_distinct() -> None:
    assert save.file_name("abc-1.2_3") == "abc-1.2_3.json"
    escaped = save.file_name("../../etc/passwd")
    assert "/" not in escaped
    assert not escaped.startswith(".")
    assert save.file_name("a/b") != save.file_name("a_b")
    assert save.file_name(".hidden") != ".hidden.json"


def test_a_failed_write_leaves_no_temporary_file(tmp_path: Path) -> None:
    (tmp_path / "taken.json").mkdir()  # a directory where the file should go
    with pytest.raises(OSError):  # noqa: PT011
        save.write_atomic(tmp_path / "taken.json", b"{}")
    assert [p.name for p in tmp_path.iterdir()] == ["taken.json"]


def test_only_succeeded_runs() -> None:
    assert save.handlers.match(event(status="succeeded")) == ["handlers.save.save_result"]
    assert save.handlers.match(event(status="failed")) == []


async def test_end_to_end_through_the_listener(tmp_path: Path) -> None:
    scheme = StandardWebhooks([generate_hmac_secret()])
    save.configure({"dir": str(tmp_path / "results")})
    listener = Listener(
        store_url=f"sqlite:///{tmp_path / 'l.db'}",
        sources=[Source("std", "local", scheme)],
        plugins=["handlers.save"],
        dispatch=DispatchSettings(sweep_interval=0.02),
    )
    async with serve(listener.asgi()) as url, httpx.AsyncClient(base_url=url) as client:
        body = payload("run-e2e")
        answer = await client.post("/hooks/std", content=body, headers=signed(scheme, body, "m"))
        assert answer.status_code == 202
        target = tmp_path / "results" / "run-e2e.json"
        await wait_for(target.exists, "the result file")
    assert json.loads(target.read_text())["delivery_id"] == "std:m"
