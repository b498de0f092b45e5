"""`dead-letters` and `replay`."""

from __future__ import annotations

import json

from cli.support import History, invoke


def test_dead_letters_and_replay(history: History) -> None:
    base = ["--config", str(history.config)]
    dead = json.loads(invoke(*base, "dead-letters", "--json").stdout)
    assert [call["id"] for call in dead["items"]] == [history.dead_call]
    assert invoke(*base, "dead-letters", "--handler", "app.notify").stdout.strip() == (
        "no dead letters"
    )
    replayed = invoke(*base, "replay", str(history.done_call), "--json")
    assert replayed.exit_code == 0
    assert json.loads(replayed.stdout)["state"] == "pending"
    missing = invoke(*base, "replay", "999")
    assert missing.exit_code == 4
    assert missing.stderr.strip() == "error: no handler call 999"
