"""`listener fake-platform noxus`, run as a process and used through the official client."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest
from noxus_sdk.client import Client
from noxus_sdk.errors import ServerError
from noxus_sdk.resources.runs import RunFailureError

from .support import long_running, run_cli
from .test_fake_platform import Hooks, hooks, started

__all__ = ["hooks"]


def test_serves_the_client_runs_streams_and_callbacks(
    tmp_path: Path, hooks: tuple[Hooks, str]
) -> None:
    receiver, url = hooks
    args = ["fake-platform", "noxus", "--json", "--runs-for", "0", "--workflow", "wf-a"]
    with long_running(args, cwd=tmp_path, env={}) as process:
        found = started(process)
        assert sorted(found) == ["api_key", "base_url", "workflow_id"]
        assert found["base_url"].startswith("http://127.0.0.1:")
        assert found["workflow_id"] == "wf-a"
        client = Client(found["api_key"], base_url=found["base_url"])
        workflow = client.workflows.get(found["workflow_id"])
        run = workflow.run({"doc": "a"}, callback_url=url)
        # Waited by the run's event stream, then read once.
        assert run.wait(0) is run
        assert (run.status, run.output) == ("completed", {"echo": {"doc": "a"}})
        body, _ = receiver.next()
        assert (json.loads(body)["id"], json.loads(body)["status"]) == (run.id, "completed")
        client.close()
        assert process.stop(signal.SIGTERM) == 0


def test_chaos_knobs_fail_runs_and_api_calls(tmp_path: Path) -> None:
    args = ["fake-platform", "noxus", "--json", "--runs-for", "0", "--fail", "1"]
    with long_running(args, cwd=tmp_path, env={}) as process:
        found = started(process)
        assert found["workflow_id"] == "wf-summarise"
        client = Client(found["api_key"], base_url=found["base_url"])
        run = client.workflows.get(found["workflow_id"]).run({"n": 1})
        with pytest.raises(RunFailureError):
            run.wait(0)
        client.close()
        assert process.stop(signal.SIGINT) == 0

    args = ["fake-platform", "noxus", "--json", "--http-errors", "1", "--api-key", "k-1"]
    with long_running(args, cwd=tmp_path, env={}) as process:
        found = started(process)
        assert found["api_key"] == "k-1"
        with pytest.raises(ServerError):
            Client(found["api_key"], base_url=found["base_url"])
        assert process.stop(signal.SIGTERM) == 0


def test_prints_for_people_without_json(tmp_path: Path) -> None:
    args = ["fake-platform", "noxus", "--api-key", "k-2", "--drop", "0.5"]
    with long_running(args, cwd=tmp_path, env={}) as process:
        assert process.process.stdout is not None
        lines = [process.process.stdout.readline() for _ in range(3)]
        assert lines[0].startswith("fake Noxus engine at http://127.0.0.1:")
        assert lines[1:] == ["api key: k-2\n", "workflows: wf-summarise\n"]
        process.wait_for_line("stop with Ctrl-C or SIGTERM")
        assert process.stop(signal.SIGINT) == 0
    bad = run_cli("fake-platform", "noxus", "--delay", "3:1", cwd=tmp_path)
    assert bad.returncode == 2
    assert "MIN <= MAX" in bad.stderr
