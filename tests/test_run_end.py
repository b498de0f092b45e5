"""A run's own end callback: named at submission, called once when the run ends, by any
process running the dispatcher on the store; and waiting for several runs at once."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import textwrap
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import run_end_targets
from helpers import WAIT_LIMIT, event, serve, wait_for

from listener import DispatchSettings, Listener, PollSettings, RunStatus, Source
from listener.errors import WaitTimeout
from listener.run_end import target_of
from listener.signatures import NextmvSignature
from listener.store import CallState, NewRun
from listener.store.base import Store
from listener.testing import FakePlatform, RunPlan

S = RunStatus
TARGET = "run_end_targets:write_line"
# Polls far off: these runs' ends come by webhook.
NO_POLL = PollSettings(first_poll=3600.0, grace=3600.0)
QUICK = DispatchSettings(sweep_interval=0.02, backoff_base=0.001, backoff_cap=0.01)


def lines(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


# -- naming the function -----------------------------------------------------------------


def test_a_function_is_stored_by_its_import_name() -> None:
    assert target_of(run_end_targets.write_line) == TARGET
    assert target_of(TARGET) == TARGET
    assert target_of(run_end_targets.Callbacks.write_line) == (
        "run_end_targets:Callbacks.write_line"
    )


@pytest.mark.parametrize(
    ("on_end", "reason"),
    [
        ("run_end_targets.write_line", "must be 'package.module:function'"),
        ("run_end_targets:", "must be 'package.module:function'"),
        ("no_such_module_here:f", "cannot import 'no_such_module_here'"),
        ("run_end_targets:missing", "has no 'missing'"),
        ("run_end_targets:not_callable", "is not callable"),
        (lambda event, context: None, "cannot be imported by name"),
    ],
)
def test_a_function_that_cannot_be_found_by_name_is_refused(on_end: Any, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        target_of(on_end)


def test_a_nested_function_is_refused() -> None:
    def done(event: Any, context: Any) -> None: ...

    with pytest.raises(ValueError, match="top level of an importable module"):
        target_of(done)


# -- the store enqueues the call with the end --------------------------------------------


def on_end_calls(calls: list[Any]) -> list[Any]:
    return [call for call in calls if call.handler == f"on_end:{TARGET}"]


async def test_the_end_enqueues_the_run_s_call_once(store: Store) -> None:
    await store.register_run(NewRun("r1", "local", "app", on_end=TARGET, on_end_context={"n": 1}))
    run = await store.get_run("r1")
    assert run is not None
    assert (run.on_end, run.on_end_context) == (TARGET, {"n": 1})

    running = await store.record(event("r1", "running", delivery_id="d1"), handlers=["h"])
    assert len(running.call_ids) == 1  # only the handler: the run has not ended
    ended = await store.record(event("r1", "succeeded", delivery_id="d2"), handlers=["h"])
    assert len(ended.call_ids) == 2
    # The end learned again (another copy, a poll) enqueues nothing more.
    again = await store.record(event("r1", "succeeded", delivery_id="d3"), handlers=["h"])
    assert again.call_ids == ()
    calls = (await store.list_calls(run_id="r1", limit=10)).items
    (call,) = on_end_calls(calls)
    assert (call.status, call.state) == (S.SUCCEEDED, CallState.PENDING)


async def test_a_run_without_on_end_enqueues_only_its_handlers(store: Store) -> None:
    await store.register_run(NewRun("r1", "local", "app"))
    result = await store.record(event("r1", "failed", delivery_id="d1"), handlers=["h"])
    assert len(result.call_ids) == 1


async def test_an_end_recorded_before_the_registration_still_calls_once(store: Store) -> None:
    # The webhook beat the registration: the run exists, ended, with no on_end yet.
    await store.record(event("r1", "succeeded", delivery_id="d1"), handlers=[])
    await store.register_run(NewRun("r1", "local", "app", on_end=TARGET))
    await store.register_run(NewRun("r1", "local", "app", on_end=TARGET))
    (call,) = on_end_calls((await store.list_calls(run_id="r1", limit=10)).items)
    assert (call.status, call.event.delivery_id) == (S.SUCCEEDED, "d1")


async def test_records_in_one_batch_enqueue_the_call_once(store: Store) -> None:
    await store.register_run(NewRun("r1", "local", "app", on_end=TARGET))
    # Concurrent records are committed together (SQLite: its batch path).
    results = await asyncio.gather(
        store.record(event("r1", "running", delivery_id="d1")),
        store.record(event("r1", "succeeded", delivery_id="d2")),
        store.record(event("r1", "succeeded", delivery_id="d3")),
    )
    assert [len(r.call_ids) for r in results] == [0, 1, 0]
    assert len(on_end_calls((await store.list_calls(run_id="r1", limit=10)).items)) == 1


# -- end to end --------------------------------------------------------------------------


def new_listener(tmp_path: Path, platform: FakePlatform) -> Listener:
    return Listener(
        store_url=f"sqlite:///{tmp_path / 'listener.db'}",
        providers=[platform.nextmv_provider()],
        dispatch=QUICK,
        poll=NO_POLL,
    )


def calls_done(listener: Listener, run_id: str) -> Callable[[], Awaitable[bool]]:
    """Whether the run's one handler call (its end callback) is done."""

    async def done() -> bool:
        calls = (await listener.store.list_calls(run_id=run_id)).items
        return [call.state for call in calls] == [CallState.DONE]

    return done


@contextlib.asynccontextmanager
async def serving(listener: Listener, platform: FakePlatform) -> AsyncIterator[str]:
    async with serve(listener.asgi()) as url:
        secret = platform.register_webhook(url + "/hooks/nextmv")
        listener.add_source(Source("nextmv", "nextmv", NextmvSignature([secret])))
        yield url


async def test_submit_with_on_end_calls_it_with_the_context(tmp_path: Path) -> None:
    out = tmp_path / "ends.jsonl"
    async with FakePlatform(plan=RunPlan(runs_for=0.05), seed=1) as platform:
        listener = new_listener(tmp_path, platform)
        async with serving(listener, platform):
            handle = await listener.submit(
                "nextmv",
                "routing",
                {},
                on_end=run_end_targets.write_line,
                context={"path": str(out), "order": 7},
            )
            await wait_for(lambda: bool(lines(out)), "the end callback called")
            await platform.drain()
            await wait_for(calls_done(listener, handle.run_id), "the call marked done")
    assert lines(out) == [
        {"run_id": handle.run_id, "status": "succeeded", "context": {"path": str(out), "order": 7}}
    ]


async def test_a_failing_end_callback_is_retried_with_the_stored_context(
    tmp_path: Path,
) -> None:
    out = tmp_path / "ends.jsonl"
    async with FakePlatform(plan=RunPlan(runs_for=0.05), seed=2) as platform:
        listener = new_listener(tmp_path, platform)
        async with serving(listener, platform):
            handle = await listener.submit(
                "nextmv",
                "routing",
                {},
                on_end="run_end_targets:fail_first",
                context={"path": str(out)},
            )
            await wait_for(lambda: bool(lines(out)), "the end callback called")
            await wait_for(calls_done(listener, handle.run_id), "the call marked done")
            (call,) = (await listener.store.list_calls(run_id=handle.run_id)).items
            assert call.attempts == 2
    # The retry saw the context as stored, not as the first attempt left it.
    assert lines(out) == [
        {"run_id": handle.run_id, "status": "succeeded", "context": {"path": str(out)}}
    ]


SUBMITTER = textwrap.dedent(
    """
    import asyncio, os, sys
    from listener import DispatchSettings, Listener, PollSettings
    from listener.providers.nextmv import NextmvProvider

    async def main():
        base_url, api_key, store_url, out = sys.argv[1:]
        provider = NextmvProvider(api_key, base_url=base_url)
        # Submits only: no dispatcher or poller runs here.
        listener = Listener(store_url=store_url, providers=[provider],
                            dispatch=DispatchSettings(enabled=False),
                            poll=PollSettings(enabled=False))
        async with listener:
            handle = await listener.submit(
                "nextmv", "routing", {}, on_end="run_end_targets:write_line",
                context={"path": out, "by": "submitter"},
            )
            print(handle.run_id, flush=True)
            os._exit(0)  # gone at once, without a shutdown

    asyncio.run(main())
    """
)


async def test_the_call_is_made_after_the_submitting_process_is_gone(tmp_path: Path) -> None:
    out = tmp_path / "ends.jsonl"
    store_url = f"sqlite:///{tmp_path / 'listener.db'}"
    tests_dir = str(Path(__file__).parent)
    # The platform holds the run's end until the submitter has exited.
    async with FakePlatform(plan=RunPlan(runs_for=None), seed=3) as platform:
        listener = new_listener(tmp_path, platform)
        async with serving(listener, platform):
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-c",
                SUBMITTER,
                platform.base_url,
                platform.api_key,
                store_url,
                str(out),
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env={**os.environ, "PYTHONPATH": tests_dir},
            )
            stdout, stderr = await asyncio.wait_for(proc.communicate(), WAIT_LIMIT)
            assert proc.returncode == 0, stderr.decode()
            run_id = stdout.decode().strip()
            platform.finish(run_id, "failed")
            await wait_for(lambda: bool(lines(out)), "the end callback called")
            await platform.drain()
    assert lines(out) == [
        {"run_id": run_id, "status": "failed", "context": {"path": str(out), "by": "submitter"}}
    ]


# -- waiting for several runs ------------------------------------------------------------


async def test_wait_all_and_as_completed(tmp_path: Path) -> None:
    async with FakePlatform(plan=RunPlan(runs_for=None), seed=4) as platform:
        listener = new_listener(tmp_path, platform)
        async with serving(listener, platform):
            ids = [(await listener.submit("nextmv", "routing", {})).run_id for _ in range(3)]
            seen: list[str] = []

            async def follow() -> None:
                async for ended in listener.as_completed(ids, timeout=WAIT_LIMIT):
                    seen.append(ended.run_id)

            following = asyncio.create_task(follow())
            for run_id, status in zip(
                reversed(ids), ["failed", "succeeded", "canceled"], strict=True
            ):
                platform.finish(run_id, status)
                await wait_for(lambda r=run_id: r in seen, f"{run_id} seen")
            await following
            assert seen == list(reversed(ids))
            events = await listener.wait_all(ids, timeout=WAIT_LIMIT)
            assert [e.run_id for e in events] == ids
            assert [e.status for e in events] == [S.CANCELED, S.SUCCEEDED, S.FAILED]


async def test_wait_all_times_out_when_a_run_goes_on(tmp_path: Path) -> None:
    async with FakePlatform(plan=RunPlan(runs_for=None), seed=5) as platform:
        listener = new_listener(tmp_path, platform)
        async with serving(listener, platform):
            ids = [(await listener.submit("nextmv", "routing", {})).run_id for _ in range(2)]
            platform.finish(ids[0], "succeeded")
            with pytest.raises(WaitTimeout, match=ids[1]):
                await listener.wait_all(ids, timeout=0.3)
            seen: list[str] = []

            async def follow() -> None:
                async for ended in listener.as_completed(ids, timeout=0.3):
                    seen.append(ended.run_id)

            with pytest.raises(WaitTimeout):
                await follow()
            assert seen == [ids[0]]


async def test_a_bad_on_end_or_context_is_refused_before_submitting(tmp_path: Path) -> None:
    async with FakePlatform(seed=6) as platform:
        listener = new_listener(tmp_path, platform)
        async with serving(listener, platform):
            with pytest.raises(ValueError, match="only kept for an on_end"):
                await listener.submit("nextmv", "routing", {}, context={"a": 1})
            with pytest.raises(ValueError, match="has no 'typo'"):
                await listener.submit("nextmv", "routing", {}, on_end="run_end_targets:typo")
            assert platform.api_calls["runs.create"] == 0
