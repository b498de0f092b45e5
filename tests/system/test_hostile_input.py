"""Nobody gets in: 3,600 forged, replayed, stale, future, oversized, truncated and
malformed requests, with genuine deliveries among them, against a served receiver.

Never a 5xx, never a 2xx or a handler call or a stored run for anything not authentic;
every genuine delivery accepted and handled once; and the heap does not grow over the
second of two equal batches (a memory bound, measured with tracemalloc).
"""

from __future__ import annotations

from pathlib import Path

from scenarios import HostileSettings, assert_held, run_hostile
from scenarios.hostile import WEIGHTS


async def test_hostile_input(tmp_path: Path) -> None:
    settings = HostileSettings(warmup=600, batch=1500)
    tally = await run_hostile(tmp_path, settings)
    assert_held(tally)
    assert tally.sent == settings.warmup + 2 * settings.batch
    assert tally.lost == 0
    assert tally.double_calls == 0
    for kind in WEIGHTS:
        assert tally.notes[f"sent {kind}"] > 0, kind
    assert tally.notes["heap growth over the second batch (KiB)"] * 1024 <= settings.memory_bound
