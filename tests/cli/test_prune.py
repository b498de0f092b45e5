"""`prune` and the durations it takes."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from helpers import age_sqlite_store

from cli.support import DAY, PRUNE, History, invoke, run_cli, store_url, write_config
from listener.durations import parse_duration
from listener.events import RunEvent, RunStatus
from listener.store import open_store


def test_prune_removes_a_finished_runs_rows_and_keeps_dead_letters(history: History) -> None:
    directory = history.config.parent
    base = ["--config", str(history.config)]
    age_sqlite_store(directory / "listener.db", 2 * DAY)

    pruned = run_cli(*base, "prune", "--older-than", "1d", cwd=directory)
    assert pruned.returncode == 0, pruned.stderr
    assert pruned.stdout.startswith(
        "pruned 1 run, 1 event, 1 transition, 1 handler call, 1 unroutable delivery older than "
    )

    runs = json.loads(run_cli(*base, "runs", "--json", cwd=directory).stdout)["items"]
    # run-ok is finished and its only call is done; run-bad's call is a dead letter, which
    # keeps the run and its events (so it can still be replayed).
    assert [run["run_id"] for run in runs] == ["run-bad"]
    events = json.loads(run_cli(*base, "events", "--json", cwd=directory).stdout)["items"]
    assert [event["run_id"] for event in events] == ["run-bad"]
    unroutable = run_cli(*base, "events", "--unroutable", cwd=directory)
    assert unroutable.stdout.strip() == "no unroutable deliveries"
    dead = run_cli(*base, "dead-letters", "--json", cwd=directory)
    assert [call["id"] for call in json.loads(dead.stdout)["items"]] == [history.dead_call]

    again = run_cli(*base, "prune", "--older-than", "1d", "--json", cwd=directory)
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["runs"] == 0


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("30d", 30 * DAY),
        ("12h", 12 * 3600.0),
        ("90m", 5400.0),
        ("3600s", 3600.0),
        ("86400", DAY),
        ("1.5d", 1.5 * DAY),
        (" 2 H ", 7200.0),
    ],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "d", "30x", "-1d", "1d2h", "soon", "1e3", "9" * 400])
def test_parse_duration_refuses_what_is_not_a_duration(text: str) -> None:
    with pytest.raises(ValueError, match="is not a duration"):
        parse_duration(text)


def test_prune_json_gives_the_counts_and_the_cutoff(history: History) -> None:
    age_sqlite_store(history.config.parent / "listener.db", 3 * DAY)
    started = datetime.now(UTC)
    result = invoke("--config", str(history.config), "prune", "--older-than", "2d", "--json")
    ended = datetime.now(UTC)
    assert result.exit_code == 0, result.stderr
    document = json.loads(result.stdout)
    before = datetime.fromisoformat(document.pop("before"))
    assert document == {
        "runs": 1,
        "events": 1,
        "transitions": 1,
        "handler_calls": 1,
        "unroutable": 1,
    }
    # The cutoff is two days back from when the command ran.
    assert started - timedelta(days=2) <= before <= ended - timedelta(days=2)


def test_prune_leaves_what_is_younger_than_the_age_given(history: History) -> None:
    age_sqlite_store(history.config.parent / "listener.db", 2 * DAY)
    result = invoke("--config", str(history.config), "prune", "--older-than", "3d", "--json")
    assert result.exit_code == 0, result.stderr
    counts = json.loads(result.stdout)
    del counts["before"]
    assert set(counts.values()) == {0}
    runs = invoke("--config", str(history.config), "runs", "--json")
    assert len(json.loads(runs.stdout)["items"]) == 2


def test_prune_in_chunks_removes_everything(tmp_path: Path) -> None:
    async def fill() -> None:
        store = await open_store(store_url(tmp_path))
        try:
            for index in range(5):
                await store.record(
                    RunEvent(f"d-{index}", "local", "app", f"run-{index}", RunStatus.SUCCEEDED)
                )
        finally:
            await store.close()

    asyncio.run(fill())
    age_sqlite_store(tmp_path / "listener.db", 2 * DAY)
    config = write_config(tmp_path, f'[listener]\nstore = "{store_url(tmp_path)}"\n')
    result = invoke("--config", str(config), "prune", "--older-than", "1d", "--limit", "2")
    assert result.exit_code == 0, result.stderr
    assert result.stdout.startswith("pruned 5 runs, 5 events, 5 transitions, 0 handler calls")


@pytest.mark.parametrize("age", ["1h", "86399", "23h"])
def test_prune_under_a_day_is_a_usage_error_with_the_reason(history: History, age: str) -> None:
    age_sqlite_store(history.config.parent / "listener.db", 2 * DAY)
    result = invoke("--config", str(history.config), "prune", "--older-than", age)
    assert result.exit_code == 2
    message = result.stderr.strip()
    assert message.startswith("error: --older-than must be at least one day")
    assert "a delivery that a sender retries after its event was pruned is taken as new" in (
        message
    )
    assert "\n" not in message
    runs = invoke("--config", str(history.config), "runs", "--json")
    assert len(json.loads(runs.stdout)["items"]) == 2  # nothing was deleted


def test_prune_needs_a_readable_age(tmp_path: Path) -> None:
    assert invoke("prune").exit_code == 2
    bad = invoke("prune", "--older-than", "a month")
    assert bad.exit_code == 2
    assert "'a month' is not a duration" in bad.stderr
    assert invoke("prune", "--older-than", "30d", "--limit", "0").exit_code == 2


def test_prune_with_the_store_unreachable_exits_3(tmp_path: Path) -> None:
    config = write_config(tmp_path, '[listener]\nstore = "postgresql://nobody@127.0.0.1:9/x"\n')
    result = invoke("--config", str(config), *PRUNE)
    assert result.exit_code == 3
    assert result.stderr.startswith("error: store unavailable:")
