"""Crash: a `listener serve` process is killed with SIGKILL mid-stream and restarted.

A few concurrent senders deliver signed Standard Webhooks events (each run: `running`,
then its final status) to a real `listener serve` process on a SQLite store; each
delivery is retried with the same message id until it is answered 2xx, as a platform's
sender does. Once the process has begun a number of handler calls drawn from the seed
(and a seeded moment after that), it is killed with SIGKILL, and started again with the
same configuration and store; the senders go on against the new process.

Promised: every delivery answered 2xx before the kill is in the store, read while no
process runs; every delivery left unanswered by the kill is accepted on a retry; every
handler call ends done; no transition has two stored calls for one handler; a handler
runs twice only for a call that was claimed and not done at the kill (its lease, the
handler timeout plus 30 s, has to run out first), and those re-runs are counted apart.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import httpx

from listener.events import RunEvent, RunStatus
from listener.providers import native
from listener.signatures import StandardWebhooks, generate_hmac_secret
from listener.store.base import CallState, Store
from listener.store.sqlite import SQLiteStore

from .common import Tally, all_calls, settle_calls
from .processes import (
    ServeProcess,
    audit_call_log,
    bounded,
    read_call_log,
    wait_for_executions,
    write_call_log_plugin,
)

__all__ = ["CrashSettings", "run_crash"]

SOURCE = "std"
FINAL = (RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELED)


@dataclass(frozen=True, slots=True)
class CrashSettings:
    runs: int = 100  # two deliveries each: running, then final
    senders: int = 4
    spacing: float = 0.04  # a sender's pause between two deliveries
    resend_rate: float = 0.1  # deliveries sent once more after their 2xx, same id
    seed: int = 11
    # The kill comes once the process has begun this many handler calls (drawn from the
    # range), plus a moment drawn from [0, kill_jitter) seconds.
    kill_after_calls: tuple[int, int] = (15, 60)
    kill_jitter: float = 0.1
    # Longer than kill_jitter, so calls are in flight at the kill.
    handler_seconds: float = 0.2
    handler_timeout: float = 1.0  # the lease is this plus 30 s
    attempts: int = 60  # per delivery
    limit: float = 90.0


@dataclass(frozen=True, slots=True)
class _Message:
    index: int
    msg_id: str
    run_id: str
    status: RunStatus
    body: bytes


@dataclass(frozen=True, slots=True)
class _Attempt:
    message: int
    generation: int  # which process the attempt went to: 0 killed, 1 restarted
    status: int | None  # None: no answer (connection refused, reset or cut)


class _Target:
    """Where the senders post: the current process, which changes on the restart."""

    def __init__(self) -> None:
        self.url = ""
        self.generation = 0


def _messages(settings: CrashSettings) -> list[_Message]:
    rng = random.Random(settings.seed)
    messages: list[_Message] = []
    for run in range(settings.runs):
        run_id = f"crash-{run}"
        for status in (RunStatus.RUNNING, rng.choice(FINAL)):
            event = RunEvent("unused", "local", "routing", run_id, status)
            body = json.dumps(native.build_payload(event), separators=(",", ":")).encode()
            index = len(messages)
            messages.append(_Message(index, f"msg-crash-{index}", run_id, status, body))
    return messages


def _config(directory: Path, store_url: str, plugin: Path, settings: CrashSettings) -> Path:
    path = directory / "crash.toml"
    path.write_text(
        f"""
[listener]
store = "{store_url}"
plugins = ["{plugin}"]

[server]
log_level = "warning"

[sources.{SOURCE}]
provider = "local"
scheme = "standard-webhooks"
secrets = ["env:CRASH_WEBHOOK_SECRET"]

[dispatch]
handler_timeout = {settings.handler_timeout}
sweep_interval = 0.1
backoff_base = 0.05
backoff_cap = 0.2
shutdown_timeout = 5.0

[poller]
enabled = false
"""
    )
    return path


async def run_crash(
    directory: Path, settings: CrashSettings | None = None, *, name: str = "process crash (SQLite)"
) -> Tally:
    """Run the crash scenario with its store and files in `directory`."""
    settings = settings or CrashSettings()
    rng = random.Random(settings.seed)
    kill_after = rng.randint(*settings.kill_after_calls)
    kill_pause = rng.uniform(0.0, settings.kill_jitter)
    secret = generate_hmac_secret()
    signer = StandardWebhooks([secret])
    messages = _messages(settings)
    store_url = f"sqlite:///{directory / 'crash.db'}"
    log = directory / "calls.log"
    plugin = write_call_log_plugin(
        directory / "crash_handlers.py", log, pause=settings.handler_seconds
    )
    config = _config(directory, store_url, plugin, settings)
    env = {"CRASH_WEBHOOK_SECRET": secret}
    first = ServeProcess(config, cwd=directory, env=env, name="the first process")
    second = ServeProcess(config, cwd=directory, env=env, name="the restarted process")
    target = _Target()
    attempts: list[_Attempt] = []
    delivered: dict[int, bool] = {}
    tally = Tally(name)

    async def deliver(client: httpx.AsyncClient, message: _Message) -> bool:
        for attempt in range(1, settings.attempts + 1):
            # Signed afresh on every attempt, with the same id, as senders do.
            headers = {"content-type": "application/json"}
            headers.update(signer.sign(message.body, msg_id=message.msg_id))
            generation = target.generation
            try:
                response = await client.post(
                    f"{target.url}/hooks/{SOURCE}", content=message.body, headers=headers
                )
            except httpx.HTTPError:
                attempts.append(_Attempt(message.index, generation, None))
                await asyncio.sleep(min(0.05 * 2**attempt, 0.5))
                continue
            attempts.append(_Attempt(message.index, generation, response.status_code))
            if 200 <= response.status_code < 300:
                return True
            await asyncio.sleep(min(0.05 * 2**attempt, 0.5))
        return False

    async def send(client: httpx.AsyncClient, mine: list[_Message], seed: int) -> None:
        # One sender's runs in order: a run's final delivery follows its running one.
        sender_rng = random.Random(seed)
        for message in mine:
            delivered[message.index] = await deliver(client, message)
            if delivered[message.index] and sender_rng.random() < settings.resend_rate:
                await deliver(client, message)
            await asyncio.sleep(settings.spacing)

    in_flight: set[int] = set()
    pending_at_kill = 0
    async with contextlib.AsyncExitStack() as stack:
        stack.push_async_callback(second.close)
        stack.push_async_callback(first.close)
        client = await stack.enter_async_context(
            httpx.AsyncClient(timeout=10.0, limits=httpx.Limits(max_connections=32))
        )
        async with bounded(name, settings.limit, first, second):
            target.url = await first.start()
            shares: list[list[_Message]] = [[] for _ in range(settings.senders)]
            for message in messages:
                shares[(message.index // 2) % settings.senders].append(message)
            senders = [
                asyncio.create_task(send(client, share, settings.seed * 100 + k))
                for k, share in enumerate(shares)
            ]
            try:
                await wait_for_executions(log, pid=first.pid, count=kill_after)
                await asyncio.sleep(kill_pause)
                await first.kill()
                # Between the processes: what the killed one acknowledged must be there.
                in_flight, pending_at_kill = await _check_at_kill(
                    tally, store_url, messages, attempts
                )
                target.url = await second.start()
                target.generation = 1
                await asyncio.gather(*senders)
            finally:
                for task in senders:
                    task.cancel()
                await asyncio.gather(*senders, return_exceptions=True)
            store = await _open(store_url)
            try:
                # The calls in flight at the kill come back once their lease runs out.
                await settle_calls(store)
            finally:
                await store.close()
        code = await second.terminate()
        if code != 0:
            tally.problem(f"the restarted process exited {code} on SIGTERM:\n{second.tail()}")
        for process in (first, second):
            for line in process.errors[:5]:
                tally.problem(f"{process.name} logged: {line.strip()}")
    store = await _open(store_url)
    try:
        await _audit(
            tally,
            store,
            messages,
            attempts,
            delivered,
            log,
            in_flight,
            pids=(first.pid, second.pid),
        )
    finally:
        await store.close()
    executions, _ = read_call_log(log)
    tally.notes.update(
        {
            "kill trigger: handler calls begun": kill_after,
            "acknowledged by the killed process": sum(
                1 for a in attempts if a.generation == 0 and a.status and a.status < 300
            ),
            "deliveries unanswered (cut, refused)": sum(1 for a in attempts if a.status is None),
            "acknowledged by the restarted process": sum(
                1 for a in attempts if a.generation == 1 and a.status and a.status < 300
            ),
            "calls in flight at the kill": len(in_flight),
            "calls pending at the kill": pending_at_kill,
            "calls run by the killed process": sum(1 for e in executions if e.pid == first.pid),
            "calls run by the restarted process": sum(1 for e in executions if e.pid == second.pid),
        }
    )
    return tally


async def _open(url: str) -> Store:
    store = SQLiteStore(url)
    await store.open()
    return store


async def _check_at_kill(
    tally: Tally, store_url: str, messages: list[_Message], attempts: list[_Attempt]
) -> tuple[set[int], int]:
    """With no process running: every delivery the killed process answered 2xx is stored.
    Returns the ids of the calls claimed and not done (in flight), and the pending count."""
    store = await _open(store_url)
    try:
        # Taken after opening the store: answers already received are all noted by now.
        acknowledged = {
            a.message for a in attempts if a.generation == 0 and a.status and 200 <= a.status < 300
        }
        for index in sorted(acknowledged):
            if await store.get_event(f"{SOURCE}:{messages[index].msg_id}") is None:
                tally.lost += 1
                tally.problem(f"{messages[index].msg_id} was acknowledged, then lost in the kill")
        calls = await all_calls(store)
    finally:
        await store.close()
    in_flight = {c.id for c in calls if c.state is CallState.RUNNING}
    pending = sum(1 for c in calls if c.state is CallState.PENDING)
    return in_flight, pending


async def _audit(
    tally: Tally,
    store: Store,
    messages: list[_Message],
    attempts: list[_Attempt],
    delivered: dict[int, bool],
    log: Path,
    in_flight: set[int],
    *,
    pids: tuple[int, int],
) -> None:
    codes = Counter(a.status for a in attempts)
    tally.sent = len(attempts)
    tally.acknowledged = sum(n for code, n in codes.items() if code and 200 <= code < 300)
    tally.stored = (await store.counts()).events
    # 200: a delivery (or a retry of one) whose event was already stored; nothing called.
    tally.duplicates_suppressed = codes[200]
    unexpected = {
        code: n for code, n in codes.items() if code is not None and code not in (200, 202)
    }
    if unexpected:
        tally.problem(f"answers other than 200 and 202: {unexpected}")

    finals: dict[str, RunStatus] = {}
    for message in messages:
        if message.status.is_terminal:
            finals[message.run_id] = message.status
        if not delivered.get(message.index):
            tally.lost += 1
            tally.problem(f"{message.msg_id} was never acknowledged")
        elif await store.get_event(f"{SOURCE}:{message.msg_id}") is None:
            tally.lost += 1
            tally.problem(f"{message.msg_id} was acknowledged but is not in the store")
    for run_id, status in finals.items():
        run = await store.get_run(run_id)
        if run is None or run.status is not status:
            tally.lost += 1
            tally.problem(f"{run_id} is {run.status.value if run else 'missing'}, not {status}")

    calls = await all_calls(store)
    # Every run: the every-status handler for running and final, the terminal one once.
    if len(calls) != 3 * len(finals):
        tally.problem(f"{len(calls)} handler calls stored for {len(finals)} runs, not 3 each")
    audit_call_log(tally, calls, log, in_flight_at_kill=in_flight, pids=pids)
