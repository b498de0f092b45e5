"""How soon a listener says its webhooks are degraded, and recovered, at one run end a
second.

    python bench/notices.py [--scale 0.05] [--first-poll 30] [--seed 5]

A real listener (SQLite store, dispatcher, poller, notice watcher, receiver on loopback)
and the fake Nextmv platform. One run is submitted every platform second and ends at
once. Webhooks are healthy for one window, then every one is dropped (the poller learns
the ends `--first-poll` platform seconds after submission) until the degraded notice
arrives, then they are back until the recovered notice. Platform time is real time times
`--scale`: the `[health]` defaults (window 120 s, interval 15 s, threshold 0.5, recovery
at 0.8, 20 ends at least) and the poll settings are scaled by the same factor, so each
evaluation happens at the platform time it would unscaled.

Printed, in platform seconds: from the last webhook to the degraded notice, and from the
first webhook back to the recovered notice, each beside its figure on paper (with ends
learned by poll `L` seconds after they happen, a window of `W` crosses 0.5 at
`(W + L) / 2`, and recovers at 0.8 at `0.8 * (W + L)`, plus at most one evaluation
interval either way) and the ratio of the two.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from helpers import serve

from listener import (
    DispatchSettings,
    Listener,
    Notice,
    NoticeSettings,
    PollSchedule,
    PollSettings,
    Source,
)
from listener.notices import DEGRADED, RECOVERED
from listener.signatures import NextmvSignature
from listener.testing import FakePlatform, RunPlan


async def measure(
    scale: float, first_poll: float, seed: int
) -> tuple[float, float, NoticeSettings]:
    unscaled = NoticeSettings()
    health = NoticeSettings(
        window=unscaled.window * scale,
        interval=unscaled.interval * scale,
        threshold=unscaled.threshold,
        recover_share=unscaled.recover_share,
        min_ends=unscaled.min_ends,
    )
    poll = PollSettings(
        first_poll=first_poll * scale,
        grace=300 * scale,
        interval=1 * scale,
        schedule=PollSchedule(interval=2 * scale, cap=60 * scale),
        rate_limit=1000.0,
    )
    heard: dict[str, float] = {}

    async def on_notice(notice: Notice) -> None:
        heard.setdefault(notice.kind, time.monotonic())

    with tempfile.TemporaryDirectory() as folder:
        async with FakePlatform(plan=RunPlan(runs_for=0.0), seed=seed) as platform:
            provider = platform.nextmv_provider()
            listener = Listener(
                store_url=f"sqlite:///{Path(folder) / 'listener.db'}",
                providers=[provider],
                dispatch=DispatchSettings(sweep_interval=0.05),
                poll=poll,
                health=health,
            )
            listener.on_notice(DEGRADED, RECOVERED, name="bench")(on_notice)
            try:
                async with serve(listener.asgi()) as url:
                    secret = platform.register_webhook(url + "/hooks/nextmv")
                    listener.add_source(Source("nextmv", "nextmv", NextmvSignature([secret])))

                    async def submit_until(kind: str | None, least: float) -> None:
                        begun = time.monotonic()
                        while (kind is not None and kind not in heard) or (
                            time.monotonic() - begun < least
                        ):
                            await listener.submit("nextmv", "routing", {})
                            await asyncio.sleep(scale)
                            if time.monotonic() - begun > 900 * scale:
                                raise SystemExit(f"no {kind} notice within 15 minutes")

                    await submit_until(None, health.window)  # one healthy window
                    platform.drop_rate = 1.0
                    stopped = time.monotonic()
                    await submit_until(DEGRADED, 0)
                    platform.drop_rate = 0.0
                    back = time.monotonic()
                    await submit_until(RECOVERED, 0)
            finally:
                await provider.aclose()
    return (heard[DEGRADED] - stopped) / scale, (heard[RECOVERED] - back) / scale, unscaled


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=0.05)
    parser.add_argument("--first-poll", type=float, default=30.0)
    parser.add_argument("--seed", type=int, default=5)
    args = parser.parse_args()
    degraded, recovered, health = asyncio.run(measure(args.scale, args.first_poll, args.seed))
    window, lag, interval = health.window, args.first_poll, health.interval
    # On paper: the share falls below the threshold once (W - d) / (W - L) < threshold.
    paper_degraded = window - health.threshold * (window - lag)
    # Ends by poll keep arriving for L seconds after webhooks are back: the window holds
    # d ends by webhook and W + L - d by poll at d seconds, d / (W + L) >= recover_share.
    paper_recovered = health.recover_share * (window + lag)
    print(f"one end a second, scale {args.scale:g}, ends by poll {lag:g} s late")
    print(f"{'':>10}  {'measured s':>10}  {'paper s':>8}  {'ratio':>5}  (+ up to {interval:g} s)")
    for label, measured, paper in (
        ("degraded", degraded, paper_degraded),
        ("recovered", recovered, paper_recovered),
    ):
        print(f"{label:>10}  {measured:>10.1f}  {paper:>8.1f}  {measured / paper:>5.2f}")
    verdict = "within" if degraded <= 120 else "OVER"
    print(f"degraded notice {verdict} 2 minutes of webhooks stopping")


if __name__ == "__main__":
    main()
