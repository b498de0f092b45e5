"""What tracing costs a delivery: off (the package absent, or no provider set) and on.

    python bench/tracing.py

In this process, with no HTTP server: signed deliveries through `Receiver.deliver` into
a new in-memory SQLite store each time (no fsync, so what tracing adds is not hidden in
disk waits; 50 at once, as under load), each run first recorded through `track`, in
rounds that take turns between the modes in a changing order so the machine's drift
hits each alike; best round of each. "absent" hides the API module from the listener
(as without the package), "no provider" has the API imported with no provider set, "on"
sets an SDK provider exporting to memory. Also the check each path
makes, `tracing.tracer()`, per call. The script reports; it always exits 0.
"""

from __future__ import annotations

import asyncio
import sys
import time
import timeit
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.util._once import Once
from receiver import signed_request

from listener import DispatchSettings, Listener, PollSettings, Source, tracing
from listener.signatures import StandardWebhooks, generate_hmac_secret

ROUNDS = 6
PER_ROUND = 1000
AT_ONCE = 50
CALLS = 200_000
API = "opentelemetry.trace"


def set_provider(provider: TracerProvider | None) -> None:
    # The API sets its global provider once per process; the bench takes turns.
    trace._TRACER_PROVIDER_SET_ONCE = Once()
    trace._TRACER_PROVIDER = provider


def mode(name: str, provider: TracerProvider) -> Callable[[], None]:
    def enter() -> None:
        sys.modules[API] = trace
        set_provider(provider if name == "on" else None)
        if name == "absent":
            # What the listener looks for: without the package it is never there.
            del sys.modules[API]

    return enter


async def deliver_round(listener: Listener, secret: str, prefix: str) -> float:
    scheme = StandardWebhooks([secret])
    requests = [signed_request(scheme, prefix, n) for n in range(PER_ROUND)]
    for n in range(PER_ROUND):
        await listener.track("local", "bench", f"{prefix}-run-{n}", "running")

    async def one(body: bytes, headers: dict[str, str]) -> None:
        lowered = {k.lower(): v for k, v in headers.items()}

        async def read() -> bytes:
            return body

        answer = await listener.receiver.deliver("std", None, read, lowered, lambda: [])
        assert answer.status_code == 202, answer.body

    started = time.perf_counter()
    for first in range(0, PER_ROUND, AT_ONCE):
        await asyncio.gather(*(one(*r) for r in requests[first : first + AT_ONCE]))
    return PER_ROUND / (time.perf_counter() - started)


async def deliveries(provider: TracerProvider) -> dict[str, float]:
    secret = generate_hmac_secret()
    names = ["absent", "no provider", "on"]
    best: dict[str, float] = {}
    for round_ in range(ROUNDS):
        # A new store each time, and each round in another order, so neither a growing
        # store nor going first favours a mode.
        for name in names[round_ % 3 :] + names[: round_ % 3]:
            listener = Listener(
                store_url="sqlite://:memory:",
                sources=[Source("std", "local", StandardWebhooks([secret]))],
                dispatch=DispatchSettings(enabled=False),
                poll=PollSettings(enabled=False),
            )
            async with listener:
                mode(name, provider)()
                rate = await deliver_round(listener, secret, f"{name}-{round_}")
            best[name] = max(best.get(name, 0.0), rate)
    mode("no provider", provider)()
    return best


def checks(provider: TracerProvider) -> dict[str, float]:
    found: dict[str, float] = {}
    for name in ("absent", "no provider", "on"):
        mode(name, provider)()
        seconds = min(timeit.repeat(tracing.tracer, number=CALLS, repeat=3))
        found[name] = seconds / CALLS * 1e9
    mode("no provider", provider)()
    return found


def main() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    check = checks(provider)
    rates = asyncio.run(deliveries(provider))
    base = rates["absent"]
    print("mode          tracer() ns  deliveries/s  x absent")
    for name in ("absent", "no provider", "on"):
        print(f"{name:<12}  {check[name]:>11.0f}  {rates[name]:>12.0f}  {rates[name] / base:>8.2f}")
    print(f"spans exported while on: {len(exporter.get_finished_spans())}")


if __name__ == "__main__":
    main()
