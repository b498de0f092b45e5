from __future__ import annotations

from pathlib import Path

import httpx
from helpers import payload, serve, signed, wait_for
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from listener import DispatchSettings, Listener, RunEvent, Source
from listener.metrics import Metrics
from listener.signatures import StandardWebhooks, generate_hmac_secret
from listener.store import StoreCounts


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def test_each_metrics_object_has_its_own_registry() -> None:
    first, second = Metrics(), Metrics()
    first.delivery("a", "accepted")
    assert first.registry is not second.registry
    assert first.registry is not REGISTRY
    assert ("listener_deliveries_total", (("outcome", "accepted"), ("source", "a"))) in samples(
        first.render().decode()
    )
    assert "listener_deliveries_total{" not in second.render().decode()


def test_store_gauges_follow_the_last_read() -> None:
    metrics = Metrics()
    text = metrics.render().decode()
    assert "listener_store_up 0.0" in text
    assert "listener_runs{" not in text
    metrics.store_counts(
        StoreCounts(
            runs_by_status={"succeeded": 3, "running": 1},
            calls_by_state={"pending": 2, "dead": 1},
            events=9,
            unroutable=4,
        )
    )
    found = samples(metrics.render().decode())
    assert found[("listener_store_up", ())] == 1
    assert found[("listener_runs", (("status", "succeeded"),))] == 3
    assert found[("listener_runs", (("status", "failed"),))] == 0
    assert found[("listener_handler_calls_in_state", (("state", "dead"),))] == 1
    assert found[("listener_handler_calls_pending", ())] == 2
    assert found[("listener_handler_calls_dead", ())] == 1
    assert found[("listener_unroutable_deliveries", ())] == 4
    metrics.store_counts(None)
    text = metrics.render().decode()
    assert "listener_store_up 0.0" in text
    assert "listener_runs{" not in text


def test_handler_calls_and_latency() -> None:
    metrics = Metrics()
    metrics.handler_call("h", "ok", 0.02)
    metrics.handler_call("h", "abandoned", None)
    found = samples(metrics.render().decode())
    assert found[("listener_handler_calls_total", (("handler", "h"), ("outcome", "ok")))] == 1
    assert found[("listener_handler_duration_seconds_count", (("handler", "h"),))] == 1


async def test_metrics_endpoint_reads_the_store_at_scrape_time(tmp_path: Path) -> None:
    scheme = StandardWebhooks([generate_hmac_secret()])
    listener = Listener(
        store_url=f"sqlite:///{tmp_path / 'm.db'}",
        sources=[Source("std", "local", scheme)],
        dispatch=DispatchSettings(sweep_interval=0.02, max_attempts=1),
    )

    @listener.on("failed", name="breaks")
    async def breaks(event: RunEvent) -> None:
        raise RuntimeError("no")

    async with serve(listener.asgi()) as url, httpx.AsyncClient(base_url=url) as client:
        for n, (run, status) in enumerate([("a", "succeeded"), ("b", "failed"), ("c", "running")]):
            body = payload(run, status)
            response = await client.post(
                "/hooks/std", content=body, headers=signed(scheme, body, f"m{n}")
            )
            assert response.status_code == 202

        async def dead() -> bool:
            text = (await client.get("/metrics")).text
            return samples(text).get(("listener_handler_calls_dead", ())) == 1

        await wait_for(dead, "the failing call to be dead-lettered")
        response = await client.get("/metrics")
    assert response.headers["content-type"].startswith("text/plain")
    found = samples(response.text)
    assert found[("listener_runs", (("status", "succeeded"),))] == 1
    assert found[("listener_runs", (("status", "running"),))] == 1
    assert found[("listener_deliveries_total", (("outcome", "accepted"), ("source", "std")))] == 3
    assert (
        found[("listener_handler_calls_total", (("handler", "breaks"), ("outcome", "error")))] == 1
    )
    assert found[("listener_receive_seconds_count", ())] == 3
