"""`runs`, `runs show` and `events` on a store with some history."""

from __future__ import annotations

import json

from cli.support import History, invoke, run_cli


def test_listing_commands_on_a_populated_store(history: History) -> None:
    directory = history.config.parent
    base = ["--config", str(history.config)]

    runs = run_cli(*base, "runs", "--json", cwd=directory)
    assert runs.returncode == 0, runs.stderr
    assert {run["run_id"] for run in json.loads(runs.stdout)["items"]} == {"run-ok", "run-bad"}

    events = run_cli(*base, "events", "--origin", "poll", "--json", cwd=directory)
    assert [e["run_id"] for e in json.loads(events.stdout)["items"]] == ["run-bad"]

    dead = run_cli(*base, "dead-letters", cwd=directory)
    assert dead.returncode == 0
    assert "app.alert" in dead.stdout
    assert "pager unreachable second line" in dead.stdout

    replayed = run_cli(*base, "replay", str(history.dead_call), cwd=directory)
    assert replayed.returncode == 0, replayed.stderr
    assert "is pending again" in replayed.stdout
    again = run_cli(*base, "replay", str(history.dead_call), cwd=directory)
    assert again.returncode == 1
    assert "is pending; only dead or done calls can be replayed" in again.stderr


def test_runs_listing_and_filters(history: History) -> None:
    base = ["--config", str(history.config)]
    table = invoke(*base, "runs")
    assert table.exit_code == 0
    lines = table.stdout.splitlines()
    assert lines[0].split() == [
        "RUN",
        "ID",
        "STATUS",
        "PROVIDER",
        "APPLICATION",
        "SUBMITTED",
        "LAST",
        "EVENT",
    ]
    assert len(lines) == 3
    failed = json.loads(invoke(*base, "runs", "--status", "failed", "--json").stdout)
    assert [run["run_id"] for run in failed["items"]] == ["run-bad"]
    by_provider = json.loads(invoke(*base, "runs", "--provider", "nextmv", "--json").stdout)
    assert [run["run_id"] for run in by_provider["items"]] == ["run-ok"]
    by_app = invoke(*base, "runs", "--application", "nothing")
    assert by_app.stdout.strip() == "no runs"
    paged = invoke(*base, "runs", "--limit", "1", "--json")
    cursor = json.loads(paged.stdout)["next_cursor"]
    assert cursor is not None
    assert "more: listener runs --cursor" in invoke(*base, "runs", "--limit", "1").stderr
    rest = json.loads(invoke(*base, "runs", "--limit", "1", "--cursor", cursor, "--json").stdout)
    assert len(rest["items"]) == 1


def test_runs_show(history: History) -> None:
    base = ["--config", str(history.config)]
    shown = invoke(*base, "runs", "show", "run-bad")
    assert shown.exit_code == 0
    assert "status       failed" in shown.stdout
    assert "events:" in shown.stdout
    assert "app.alert" in shown.stdout
    assert "dead" in shown.stdout
    assert "polls        1 (0 since the last news)" in shown.stdout  # its end came by a poll
    document = json.loads(invoke(*base, "runs", "show", "run-ok", "--json").stdout)
    assert document["run"]["status"] == "succeeded"
    assert document["run"]["status_calls"] == 0
    assert [call["state"] for call in document["handler_calls"]] == ["done"]
    missing = invoke(*base, "runs", "show", "nope")
    assert missing.exit_code == 4
    assert missing.stderr.strip() == "error: no run 'nope' in the store"


def test_events_listing(history: History) -> None:
    base = ["--config", str(history.config)]
    table = invoke(*base, "events", "--run-id", "run-ok")
    assert table.exit_code == 0
    assert "d-ok" in table.stdout
    assert "d-bad" not in table.stdout
    statuses = json.loads(invoke(*base, "events", "--status", "succeeded", "--json").stdout)
    assert [event["delivery_id"] for event in statuses["items"]] == ["d-ok"]
    assert invoke(*base, "events", "--provider", "other").stdout.strip() == "no events"
    unroutable = invoke(*base, "events", "--unroutable")
    assert "no run id" in unroutable.stdout
    document = json.loads(invoke(*base, "events", "--unroutable", "--json").stdout)
    assert document["items"][0]["body"] == '{"x": 1}'
    assert "headers" not in document["items"][0]
