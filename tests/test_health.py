"""How run ends were learned (`listener/health.py`): the summary, tested directly, the
store's recent ends on each backend, and the metrics a listener keeps of them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from listener import Listener, Origin, PollSettings, RunEvent, RunStatus
from listener.health import learned_by, percentile, summarize
from listener.store import RunEnd, Store

NOW = datetime(2026, 12, 1, 12, tzinfo=UTC)


def end(
    provider: str, origin: Origin, lag: float, status: RunStatus = RunStatus.SUCCEEDED
) -> RunEnd:
    return RunEnd(provider, "app", status, origin, NOW, NOW + timedelta(seconds=lag))


def test_an_expiry_is_learned_by_expiry_whatever_recorded_it() -> None:
    assert learned_by(end("n", Origin.POLL, 0, RunStatus.EXPIRED)) == "expiry"
    assert learned_by(end("n", Origin.POLL, 0)) == "poll"
    assert learned_by(end("n", Origin.WEBHOOK, 0, RunStatus.FAILED)) == "webhook"


def test_percentile_is_the_nearest_rank() -> None:
    assert percentile([], 0.5) is None
    assert percentile([3.0, 1.0, 2.0], 0.5) == 2.0
    assert percentile([float(n) for n in range(1, 101)], 0.95) == 95.0


def test_summary_shares_and_lags_per_provider() -> None:
    ends = [
        *(end("nextmv", Origin.WEBHOOK, 1.0) for _ in range(6)),
        end("nextmv", Origin.POLL, 40.0),
        end("nextmv", Origin.POLL, 80.0),
        end("nextmv", Origin.POLL, 0.0, RunStatus.EXPIRED),
        end("nextmv", Origin.TRACK, -5.0),  # a clock behind the platform's: no lag
        end("local", Origin.WEBHOOK, 0.5),
    ]
    local, nextmv = summarize(ends)
    assert (local.provider, local.ends, local.share("webhook")) == ("local", 1, 1.0)
    assert nextmv.ends == 10
    assert nextmv.by == {"webhook": 6, "poll": 2, "expiry": 1, "track": 1}
    assert nextmv.share("webhook") == 0.6
    assert nextmv.share("stream") == 0.0
    # Nine lags (the expiry has none): six of 1 s, 40, 80 and 0.
    assert (nextmv.lag_p50, nextmv.lag_p95) == (1.0, 80.0)


async def test_the_store_lists_recent_ends_newest_first(store: Store) -> None:
    occurred = datetime.now(UTC) - timedelta(seconds=30)
    for n, origin in enumerate((Origin.WEBHOOK, Origin.POLL)):
        run = f"r{n}"
        await store.record(RunEvent(f"{run}-a", "nextmv", "app", run, RunStatus.RUNNING))
        done = RunEvent(
            f"{run}-b", "nextmv", "app", run, RunStatus.SUCCEEDED, origin=origin,
            occurred_at=occurred,
        )  # fmt: skip
        await store.record(done)
    await store.record(RunEvent("open-a", "nextmv", "app", "open", RunStatus.RUNNING))
    ends = await store.list_run_ends(since=datetime.now(UTC) - timedelta(hours=1))
    assert [(e.origin, e.status) for e in ends] == [
        (Origin.POLL, RunStatus.SUCCEEDED),
        (Origin.WEBHOOK, RunStatus.SUCCEEDED),
    ]
    assert all(e.occurred_at == occurred and e.received_at > occurred for e in ends)
    assert await store.list_run_ends(since=datetime.now(UTC) + timedelta(hours=1)) == []
    assert len(await store.list_run_ends(since=occurred, limit=1)) == 1


async def test_a_listener_counts_each_end_by_how_it_was_learned(store: Store) -> None:
    listener = Listener(store=store, poll=PollSettings(enabled=False))
    async with listener:
        await listener.record(RunEvent("d1", "local", "app", "r1", RunStatus.SUCCEEDED))
        await listener.record(RunEvent("d1", "local", "app", "r1", RunStatus.SUCCEEDED))
        await listener.record(
            RunEvent("d2", "local", "app", "r2", RunStatus.FAILED, origin=Origin.POLL)
        )
        await listener.record(RunEvent("d3", "local", "app", "r3", RunStatus.RUNNING))
    text = listener.metrics.render().decode()
    assert 'listener_run_ends_total{learned_by="webhook",provider="local"} 1.0' in text
    assert 'listener_run_ends_total{learned_by="poll",provider="local"} 1.0' in text
    assert 'listener_run_end_lag_seconds_count{learned_by="poll",provider="local"} 1.0' in text
