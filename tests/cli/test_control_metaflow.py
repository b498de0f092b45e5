"""`submit`, `track` and `cancel` of Metaflow flows, through the command in its own process."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cli.support import FAST_POLLER, run_cli_async, store_url, write_config

pytestmark = pytest.mark.usefixtures("metaflow_home")

HELLO = Path(__file__).resolve().parent.parent / "flows" / "hello_flow.py"


def _config(directory: Path) -> Path:
    text = f'[listener]\nstore = "{store_url(directory)}"\n\n[providers.metaflow]\n{FAST_POLLER}'
    return write_config(directory, text)


async def test_submit_waits_for_the_flow_and_prints_its_result(tmp_path: Path) -> None:
    config = _config(tmp_path)
    (tmp_path / "params.json").write_text('{"n": 2}')
    result = await run_cli_async(
        "--config", str(config), "submit", "metaflow", str(HELLO), "params.json",
        "--wait", "--json", cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    event = json.loads(result.stdout)
    assert (event["status"], event["origin"]) == ("succeeded", "poll")
    assert event["run_id"].startswith("HelloFlow/")
    assert event["result"]["output"]["total"] == 5

    # Recorded elsewhere, asked of the provider by pathspec.
    other = tmp_path / "other"
    other.mkdir()
    tracked = await run_cli_async(
        "--config", str(_config(other)), "track", "metaflow", event["run_id"], "--json",
        cwd=other,
    )  # fmt: skip
    assert tracked.returncode == 0, tracked.stderr
    assert json.loads(tracked.stdout)["status"] == "succeeded"


async def test_a_failed_flow_exits_1_and_a_refused_one_names_the_reason(tmp_path: Path) -> None:
    config = _config(tmp_path)
    (tmp_path / "fail.json").write_text('{"fail": true}')
    failed = await run_cli_async(
        "--config", str(config), "submit", "metaflow", str(HELLO), "fail.json", "--wait",
        cwd=tmp_path,
    )  # fmt: skip
    assert failed.returncode == 1
    assert "failed" in failed.stdout
    (tmp_path / "bad.json").write_text('{"n": "two"}')
    refused = await run_cli_async(
        "--config", str(config), "submit", "metaflow", str(HELLO), "bad.json", cwd=tmp_path
    )
    assert refused.returncode == 1
    assert "Invalid type for 'n'" in refused.stderr


async def test_cancel_of_a_run_this_process_did_not_start_is_refused(tmp_path: Path) -> None:
    config = _config(tmp_path)
    submitted = await run_cli_async(
        "--config", str(config), "submit", "metaflow", str(HELLO), cwd=tmp_path
    )
    assert submitted.returncode == 0, submitted.stderr
    run_id = submitted.stdout.strip()
    canceled = await run_cli_async("--config", str(config), "cancel", run_id, cwd=tmp_path)
    assert canceled.returncode == 1
    assert "not started by this listener" in canceled.stderr
