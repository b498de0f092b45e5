"""Callbacks as an unreliable network delivers them: lost, doubled, delayed, reordered.

:class:`CallbackChaos` takes each delivery a fake platform makes, draws its fate from the
knobs of its owner (read at each delivery, so a test may change them mid-run) and sends
it through :class:`~listener.sending.WebhookSender`, recording every delivery and its
attempts.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from listener.sending import WebhookSender
from listener.testing.records import DeliveryRecord, DeliveryStats

__all__ = ["CallbackChaos", "ChaosKnobs"]

Spawn = Callable[[Awaitable[None]], asyncio.Task[None]]


class ChaosKnobs(Protocol):
    """The knobs, as attributes of the fake that owns the deliveries."""

    drop_rate: float
    duplicate_rate: float
    delay: tuple[float, float]
    reorder_rate: float
    reorder_hold: float
    time_scale: float


@dataclass
class _Delivery:
    record: DeliveryRecord
    url: str
    delay: float
    timer: asyncio.Task[None] | None = None


class CallbackChaos:
    """Schedules deliveries through the knobs; one may be held back to be reordered.

    A delivery held back goes out just after the next one, or after ``reorder_hold``
    (platform seconds) if none comes. :attr:`deliveries` and :attr:`stats` record them.
    """

    def __init__(
        self, knobs: ChaosKnobs, rng: random.Random, sender: WebhookSender, spawn: Spawn
    ) -> None:
        self._knobs = knobs
        self._rng = rng
        self._sender = sender
        self._spawn = spawn
        self._held: _Delivery | None = None
        self.deliveries: list[DeliveryRecord] = []
        self.stats = DeliveryStats()

    def schedule(self, url: str, *, run_id: str, status: str, body: bytes) -> DeliveryRecord:
        knobs, rng = self._knobs, self._rng
        # Four draws per delivery, always in this order, so a seed replays exactly.
        drop = rng.random() < knobs.drop_rate
        duplicate = rng.random() < knobs.duplicate_rate
        low, high = knobs.delay
        delay = rng.uniform(low, high) * knobs.time_scale if high > 0 else 0.0
        hold = rng.random() < knobs.reorder_rate
        record = DeliveryRecord(
            msg_id=f"msg_{rng.getrandbits(96):024x}",
            endpoint_id="callback",
            run_id=run_id,
            status=status,
            body=body,
            dropped=drop,
            duplicated=duplicate and not drop,
            delay=delay,
        )
        self.deliveries.append(record)
        self.stats.scheduled += 1
        self.stats.dropped += drop
        self.stats.duplicated += record.duplicated
        if not drop:
            self._route(_Delivery(record, url, delay), hold=hold)
        return record

    def _route(self, delivery: _Delivery, *, hold: bool) -> None:
        if hold and self._held is None:
            delivery.record.reordered = True
            self.stats.reordered += 1
            self._held = delivery
            delivery.timer = self._spawn(self._hold(delivery))
            return
        earlier = self.release()
        self._spawn(self._send_both(delivery, earlier))

    def release(self) -> _Delivery | None:
        """Take back the delivery held for reordering (its timer stopped), if any."""
        held, self._held = self._held, None
        if held is not None and held.timer is not None:
            held.timer.cancel()
        return held

    def flush(self) -> None:
        """Send the delivery held for reordering now."""
        held = self.release()
        if held is not None:
            self._spawn(self._send(held))

    async def _hold(self, delivery: _Delivery) -> None:
        await asyncio.sleep(self._knobs.reorder_hold * self._knobs.time_scale)
        if self._held is delivery:
            self._held = None
            await self._send(delivery)

    async def _send_both(self, first: _Delivery, then: _Delivery | None) -> None:
        await self._send(first)
        if then is not None:
            await self._send(then)

    async def _send(self, delivery: _Delivery) -> None:
        if delivery.delay > 0:
            await asyncio.sleep(delivery.delay)
        record = delivery.record

        def on_attempt(_: int, status_code: int | None) -> None:
            self.stats.attempts += 1
            record.status_codes.append(status_code)

        for _ in range(2 if record.duplicated else 1):
            result = await self._sender.deliver(
                delivery.url, record.body, msg_id=record.msg_id, on_attempt=on_attempt
            )
            record.results.append(result)
            if result.delivered:
                self.stats.sent += 1
            else:
                self.stats.failed += 1
