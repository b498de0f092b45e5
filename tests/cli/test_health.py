"""`health`: how recent run ends were learned, per provider, as a table and as JSON."""

from __future__ import annotations

import json
from pathlib import Path

from cli.support import invoke_async, store_url, write_config
from listener.events import Origin, RunEvent, RunStatus
from listener.store import open_store


async def test_health_reports_how_ends_were_learned(tmp_path: Path) -> None:
    config = write_config(tmp_path, f'[listener]\nstore = "{store_url(tmp_path)}"\n')
    store = await open_store(store_url(tmp_path))
    try:
        for n in range(3):
            await store.record(RunEvent(f"w{n}", "nextmv", "app", f"r{n}", RunStatus.SUCCEEDED))
        await store.record(
            RunEvent("p1", "nextmv", "app", "r9", RunStatus.FAILED, origin=Origin.POLL)
        )
    finally:
        await store.close()

    shown = await invoke_async("--config", str(config), "health", "--json")
    assert shown.exit_code == 0, shown.output
    (row,) = json.loads(shown.output)["providers"]
    assert row["provider"] == "nextmv"
    assert (row["ends"], row["learned_by"], row["webhook_share"]) == (
        4,
        {"webhook": 3, "poll": 1},
        0.75,
    )

    table = await invoke_async("--config", str(config), "health")
    assert table.exit_code == 0, table.output
    header, line = table.output.splitlines()
    assert header.split()[:4] == ["PROVIDER", "ENDS", "WEBHOOK", "%"]
    assert line.split()[:4] == ["nextmv", "4", "75", "0"]

    quiet = await invoke_async("--config", str(config), "health", "--since", "0s")
    assert quiet.output.startswith("no run ended since ")
    bad = await invoke_async("--config", str(config), "health", "--since", "soon")
    assert bad.exit_code == 2
    assert "is not a duration" in bad.output
