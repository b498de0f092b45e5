"""`replay` by filter, `backfill` and `unroutable reprocess`, run as commands against a
real store."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from cli.support import WEBHOOK_SECRET, invoke, long_running, run_cli, store_url, write_config
from listener.events import RunEvent, RunStatus
from listener.providers.native import build_payload
from listener.store import open_store
from listener.store.base import CallState

HANDLERS = """
from listener import Handlers, RunEvent

handlers = Handlers()


@handlers.on("failed")
def alert(event: RunEvent) -> None: ...


@handlers.on("succeeded", provider="nextmv")
def archive(event: RunEvent) -> None: ...
"""


def recovery_config(directory: Path) -> Path:
    (directory / "ops_handlers.py").write_text(HANDLERS)
    return write_config(
        directory,
        f"""
[listener]
store = "{store_url(directory)}"
plugins = ["./ops_handlers.py"]

[sources.local]
provider = "local"
scheme = "standard-webhooks"
secrets = ["env:WEBHOOK_SECRET"]
""",
    )


async def fill(directory: Path, *, dead: int = 3, succeeded: int = 2) -> None:
    """`dead` failed runs whose `ops_handlers.alert` call died, `succeeded` nextmv runs
    recorded before `ops_handlers.archive` existed, and one unroutable delivery."""
    store = await open_store(store_url(directory))
    try:
        for index in range(dead):
            event = RunEvent(f"f-{index}", "nextmv", "routing", f"bad-{index}", RunStatus.FAILED)
            await store.record(event, ["ops_handlers.alert"])
        while claimed := await store.claim_calls("t", limit=100, lease_seconds=60):
            for call in claimed:
                await store.fail_call(call.id, "t", error="pager down", retry_at=None)
        for index in range(succeeded):
            event = RunEvent(f"s-{index}", "nextmv", "routing", f"ok-{index}", RunStatus.SUCCEEDED)
            await store.record(event)
        body = build_payload(RunEvent("x", "local", "packing", "late-1", RunStatus.FAILED))
        await store.record_unroutable(
            source="local",
            delivery_id="local:msg-1",
            reason="PayloadNotUnderstood: an older parser",
            body=json.dumps(body).encode(),
            headers={},
        )
    finally:
        await store.close()


async def calls_of(directory: Path, handler: str) -> list[tuple[str, CallState, int]]:
    store = await open_store(store_url(directory))
    try:
        page = await store.list_calls(handler=handler, limit=1000)
    finally:
        await store.close()
    return sorted((call.run_id, call.state, call.replays) for call in page.items)


def test_replay_by_filter_dry_run_then_in_chunks(tmp_path: Path) -> None:
    config = recovery_config(tmp_path)
    asyncio.run(fill(tmp_path))
    base = ["--config", str(config)]
    pick = ["replay", "--handler", "ops_handlers.alert", "--state", "dead", "--since", "2h"]

    dry = invoke(*base, *pick, "--dry-run", "--json")
    assert dry.exit_code == 0, dry.stderr
    summary = json.loads(dry.stdout)
    assert (summary["matched"], summary["replayed"], summary["dry_run"]) == (3, 0, True)
    assert summary["filter"]["handlers"] == ["ops_handlers.alert"]

    done = invoke(*base, *pick, "--chunk-size", "2")
    assert done.exit_code == 0, done.stderr
    assert done.stdout.startswith("3 of 3 handler calls pending again")
    assert done.stderr.splitlines() == [
        "replay: chunk 1: 2 matched, 2 replayed",
        "replay: chunk 2: 3 matched, 3 replayed",
    ]
    calls = asyncio.run(calls_of(tmp_path, "ops_handlers.alert"))
    assert calls == [(f"bad-{i}", CallState.PENDING, 1) for i in range(3)]
    again = json.loads((invoke(*base, *pick, "--json")).stdout)
    assert (again["matched"], again["replayed"]) == (0, 0)
    # The one-call form still works.
    assert invoke(*base, "replay", "999").exit_code == 4


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--handler", "ops_handlers.typo"], "error: unknown handler 'ops_handlers.typo'"),
        (["--state", "pending"], "error: state 'pending' cannot be replayed"),
        (["--since", "last week"], "error: --since: 'last week' is neither a duration"),
        (["--since", "1h", "--until", "2h"], "error: the window is empty"),
        (["1", "--state", "dead"], "error: give a CALL_ID or filter options, not both"),
        ([], "error: give a CALL_ID, or pick calls with --state"),
    ],
)
def test_a_bad_replay_filter_is_a_usage_error(
    tmp_path: Path, args: list[str], message: str
) -> None:
    config = recovery_config(tmp_path)
    asyncio.run(fill(tmp_path))
    result = invoke("--config", str(config), "replay", *args)
    assert result.exit_code == 2
    assert result.stderr.startswith(message), result.stderr


def test_backfill_enqueues_once_however_often_it_runs(tmp_path: Path) -> None:
    config = recovery_config(tmp_path)
    asyncio.run(fill(tmp_path))
    base = ["--config", str(config), "backfill", "ops_handlers.archive", "--since", "7d"]
    dry = json.loads((invoke(*base, "--dry-run", "--json")).stdout)
    assert (dry["scanned"], dry["matched"], dry["enqueued"]) == (5, 2, 0)
    first = invoke(*base, "--chunk-size", "2")
    assert first.exit_code == 0, first.stderr
    assert first.stdout.startswith("ops_handlers.archive: 2 of 5 transitions match; 2 calls")
    assert len(first.stderr.splitlines()) == 3
    again = json.loads((invoke(*base, "--json")).stdout)
    assert (again["enqueued"], again["already"]) == (0, 2)
    calls = asyncio.run(calls_of(tmp_path, "ops_handlers.archive"))
    assert calls == [("ok-0", CallState.PENDING, 0), ("ok-1", CallState.PENDING, 0)]
    unknown = invoke("--config", str(config), "backfill", "ops_handlers.nope", "--since", "7d")
    assert unknown.exit_code == 2
    assert "register ops_handlers.alert, ops_handlers.archive" in unknown.stderr


def test_unroutable_reprocess_records_through_the_one_path(tmp_path: Path) -> None:
    config = recovery_config(tmp_path)
    asyncio.run(fill(tmp_path))
    env = {"WEBHOOK_SECRET": WEBHOOK_SECRET}
    base = ["--config", str(config), "unroutable", "reprocess"]
    dry = json.loads((invoke(*base, "--dry-run", "--json", env=env)).stdout)
    assert (dry["scanned"], dry["recorded"]) == (1, 1)
    done = json.loads((invoke(*base, "--json", env=env)).stdout)
    assert (done["recorded"], done["calls"], done["unroutable"]) == (1, 1, 0)
    assert asyncio.run(calls_of(tmp_path, "ops_handlers.alert")) == [
        *[(f"bad-{i}", CallState.DEAD, 0) for i in range(3)],
        ("late-1", CallState.PENDING, 0),
    ]
    listed = json.loads(
        (invoke("--config", str(config), "events", "--unroutable", "--json")).stdout
    )
    assert listed["items"] == []
    again = json.loads((invoke(*base, "--json", env=env)).stdout)
    assert again["scanned"] == 0


@contextlib.contextmanager
def stop_before_second_chunk() -> Iterator[object]:
    """Stands in for Ctrl-C: asked before each chunk, it says stop from the second on."""

    class Asked:
        times = 0

        def is_set(self) -> bool:
            self.times += 1
            return self.times > 1

    yield Asked()


def test_an_interrupted_replay_prints_what_it_did_and_how_to_go_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = recovery_config(tmp_path)
    asyncio.run(fill(tmp_path))
    monkeypatch.setattr("listener.cli.recovery.stop_requested", stop_before_second_chunk)
    result = invoke("--config", str(config), "replay", "--state", "dead", "--chunk-size", "1")
    assert result.exit_code == 130
    assert result.stdout.startswith("1 of 1 handler calls pending again")
    last = result.stderr.splitlines()[-1]
    assert last.startswith("interrupted after 1 chunk; to continue: listener replay --state dead")
    assert "--until 20" in last
    monkeypatch.undo()
    # The printed command goes on with the rest, each call replayed once in all.
    resume = last.split("to continue: listener ")[1].split()
    rest = run_cli("--config", str(config), *resume, cwd=tmp_path)
    assert rest.returncode == 0, rest.stderr
    assert rest.stdout.startswith("2 of 2 handler calls pending again")
    calls = asyncio.run(calls_of(tmp_path, "ops_handlers.alert"))
    assert calls == [(f"bad-{i}", CallState.PENDING, 1) for i in range(3)]


def test_ctrl_c_stops_a_replay_between_chunks_and_the_rerun_finishes_it(tmp_path: Path) -> None:
    config = recovery_config(tmp_path)
    asyncio.run(fill(tmp_path, dead=300, succeeded=0))
    args = ["--config", str(config), "replay", "--state", "dead", "--chunk-size", "1"]
    with long_running(args, cwd=tmp_path, env={}) as replaying:
        replaying.wait_for_line("replay: chunk 1:")
        code = replaying.stop(signal.SIGINT)
        assert replaying.process.stdout is not None
        summary = replaying.process.stdout.read()
    if code == 130:  # stopped before the last chunk, as it almost always is
        assert "to continue: listener replay --state dead --until" in "".join(replaying.stderr)
        resume = "".join(replaying.stderr).split("to continue: listener ")[1].split()
        rest = run_cli("--config", str(config), *resume, cwd=tmp_path)
        assert rest.returncode == 0, rest.stderr
    else:
        assert (code, summary.split(" of ")[0]) == (0, "300")
    calls = asyncio.run(calls_of(tmp_path, "ops_handlers.alert"))
    assert [replays for _, _, replays in calls] == [1] * 300
