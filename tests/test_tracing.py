"""OpenTelemetry tracing: one trace from a run's submission to its handler calls.

Spans are exported by the SDK's in-memory exporter, from a listener served by uvicorn on
loopback, fed by the fake Nextmv platform's signed webhooks or its poller.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from helpers import WAIT_LIMIT, Recorder, payload, serve, signed, wait_for
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode
from opentelemetry.util._once import Once

from listener import (
    DispatchSettings,
    Listener,
    PollSchedule,
    PollSettings,
    RunEvent,
    RunStatus,
    Source,
)
from listener.signatures import NextmvSignature, StandardWebhooks, generate_hmac_secret
from listener.store import NewRun
from listener.testing import FakePlatform, RunPlan
from listener.tracing import TRACE_KEY, RunTraces, carrier, context_from, tracer

ROOT = Path(__file__).resolve().parent.parent
APP = "routing"
DISPATCH = DispatchSettings(sweep_interval=0.02, backoff_base=0.001, backoff_cap=0.01)
# Webhooks only: no poll comes within a test.
NO_POLLS = PollSettings(first_poll=3600.0, grace=3600.0)
QUICK_POLLS = PollSettings(
    first_poll=0.05, grace=5.0, interval=0.05, schedule=PollSchedule(interval=0.05, cap=0.2)
)


def _set_provider(provider: TracerProvider | None) -> None:
    # The API lets a process set its global provider once; each test sets its own and
    # clears it after, as OpenTelemetry's own test utilities do.
    trace._TRACER_PROVIDER_SET_ONCE = Once()
    if provider is None:
        trace._TRACER_PROVIDER = None
    else:
        trace.set_tracer_provider(provider)


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    """Tracing on, for this test: every finished span ends up here."""
    exported = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exported))
    _set_provider(provider)
    try:
        yield exported
    finally:
        _set_provider(None)
        provider.shutdown()


def named(spans: Sequence[ReadableSpan], name: str, **attributes: object) -> list[ReadableSpan]:
    """The spans called `name` whose attributes include `attributes` (`listener.` left out)."""
    return [
        span
        for span in spans
        if span.name == name
        and all((span.attributes or {}).get(f"listener.{k}") == v for k, v in attributes.items())
    ]


def one(spans: Sequence[ReadableSpan], name: str, **attributes: object) -> ReadableSpan:
    found = named(spans, name, **attributes)
    assert len(found) == 1, (name, attributes, [(s.name, s.attributes) for s in spans])
    return found[0]


def parent_of(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


def span_id(span: ReadableSpan) -> int:
    assert span.context is not None
    return int(span.context.span_id)


def trace_id(span: ReadableSpan) -> int:
    assert span.context is not None
    return int(span.context.trace_id)


async def handler_spans(exported: InMemorySpanExporter, count: int) -> list[ReadableSpan]:
    """The finished `listener.handler` spans, once there are `count` of them."""
    await wait_for(
        lambda: len(named(exported.get_finished_spans(), "listener.handler")) >= count,
        f"{count} handler spans",
    )
    return list(exported.get_finished_spans())


@dataclass
class Service:
    """A served listener taking the fake platform's webhooks, and a second listener on
    the same store that only submits (so the service reads each run's trace from it)."""

    service: Listener
    submitter: Listener
    handled: Recorder
    secret: str


@contextlib.asynccontextmanager
async def webhook_service(
    store_url: str, platform: FakePlatform, poll: PollSettings = NO_POLLS
) -> AsyncIterator[Service]:
    async with platform.nextmv_provider() as nextmv:
        service = Listener(store_url=store_url, providers=[nextmv], dispatch=DISPATCH, poll=poll)
        handled = Recorder()
        service.on("succeeded", name="report")(handled)
        submitter = Listener(
            store_url=store_url,
            providers=[nextmv],
            dispatch=DispatchSettings(enabled=False),
            poll=PollSettings(enabled=False),
        )
        async with serve(service.asgi()) as url, submitter:
            secret = platform.register_webhook(f"{url}/hooks/nextmv")
            service.add_source(Source("nextmv", "nextmv", NextmvSignature([secret])))
            yield Service(service, submitter, handled, secret)


async def test_one_trace_spans_submit_verify_record_and_the_handler(
    store_url: str, exporter: InMemorySpanExporter
) -> None:
    async with (
        FakePlatform(plan=RunPlan(runs_for=0.05)) as platform,
        webhook_service(store_url, platform) as stack,
    ):
        with trace.get_tracer("tests").start_as_current_span("caller") as caller:
            handle = await stack.submitter.submit("nextmv", APP, {"stops": 3})
        event = await stack.handled.next()
        assert event.origin == "webhook"
        spans = await handler_spans(exporter, 1)
        stored = await stack.service.store.get_run(handle.run_id)
    assert stored is not None
    assert "traceparent" in stored.callback[TRACE_KEY]

    run = handle.run_id
    submit = one(spans, "listener.submit", run_id=run, provider="nextmv", application=APP)
    assert parent_of(submit) == caller.get_span_context().span_id
    verify = one(spans, "listener.verify", run_id=run, source="nextmv", scheme="nextmv")
    record = one(spans, "listener.record", run_id=run, origin="webhook", status="succeeded")
    handler = one(spans, "listener.handler", run_id=run, handler="report")
    for later in (verify, record, handler):
        assert trace_id(later) == caller.get_span_context().trace_id
        assert parent_of(later) == span_id(submit)
    assert verify.attributes is not None
    assert verify.attributes["listener.outcome"] == "verified"
    assert record.attributes is not None
    assert record.attributes["listener.outcome"] == "moved"
    assert record.attributes["listener.calls"] == 1
    assert handler.attributes is not None
    assert handler.attributes["listener.attempt"] == 1
    assert handler.attributes["listener.outcome"] == "ok"
    assert handler.attributes["listener.dead_letter"] is False
    assert handler.status.status_code is StatusCode.UNSET
    # The check ends before the record begins; the handler runs after the commit.
    assert verify.end_time is not None
    assert record.start_time is not None
    assert verify.end_time <= record.start_time
    assert record.end_time is not None
    assert handler.start_time is not None
    assert record.end_time <= handler.start_time
    # No payload and no secret in any attribute.
    values = [str(v) for span in spans for v in (span.attributes or {}).values()]
    assert not any("stops" in v or stack.secret in v for v in values)


async def test_a_failing_handler_records_its_error_and_each_retry_is_a_span(
    store_url: str, exporter: InMemorySpanExporter
) -> None:
    listener = Listener(store_url=store_url, dispatch=DISPATCH)
    attempts: list[RunEvent] = []

    @listener.on("failed", name="flaky")
    def flaky(event: RunEvent) -> None:
        # A sync handler, run in a thread: what it traces nests under its call's span.
        with trace.get_tracer("tests").start_as_current_span("handler work"):
            attempts.append(event)
            if len(attempts) == 1:
                raise RuntimeError("the downstream said no")

    async with listener:
        await listener.track("local", APP, "run-7", "failed", error="out of memory")
        spans = await handler_spans(exporter, 2)

    tracked = one(spans, "listener.track", run_id="run-7")
    record = one(spans, "listener.record", run_id="run-7", origin="track")
    first = one(spans, "listener.handler", handler="flaky", attempt=1)
    second = one(spans, "listener.handler", handler="flaky", attempt=2)
    assert parent_of(record) == span_id(tracked)
    for call in (first, second):
        assert parent_of(call) == span_id(tracked)
        assert trace_id(call) == trace_id(tracked)
    assert first.attributes is not None
    assert first.attributes["listener.outcome"] == "error"
    assert first.attributes["listener.dead_letter"] is False
    assert first.status.status_code is StatusCode.ERROR
    assert first.status.description == "RuntimeError: the downstream said no"
    [raised] = [e for e in first.events if e.name == "exception"]
    assert raised.attributes is not None
    assert raised.attributes["exception.type"] == "RuntimeError"
    assert raised.attributes["exception.message"] == "the downstream said no"
    assert second.attributes is not None
    assert second.attributes["listener.outcome"] == "ok"
    assert not second.events
    work = named(spans, "handler work")
    assert {parent_of(span) for span in work} == {span_id(first), span_id(second)}
    assert len(work) == 2


async def test_a_call_out_of_attempts_is_marked_dead_letter_on_its_span(
    tmp_path: Path, exporter: InMemorySpanExporter
) -> None:
    listener = Listener(
        store_url=f"sqlite:///{tmp_path / 'dead.db'}",
        dispatch=DispatchSettings(sweep_interval=0.02, max_attempts=1),
    )

    @listener.on("succeeded", name="broken")
    async def broken(event: RunEvent) -> None:
        raise ValueError("never works")

    async with listener:
        await listener.track("local", APP, "run-8", "succeeded")
        spans = await handler_spans(exporter, 1)
    call = one(spans, "listener.handler", handler="broken", attempt=1)
    assert call.attributes is not None
    assert call.attributes["listener.outcome"] == "error"
    assert call.attributes["listener.dead_letter"] is True


async def test_an_end_learned_by_poll_continues_the_trace(
    store_url: str, exporter: InMemorySpanExporter
) -> None:
    async with (
        FakePlatform(plan=RunPlan(runs_for=0.05), drop_rate=1.0) as platform,
        webhook_service(store_url, platform, poll=QUICK_POLLS) as stack,
    ):
        handle = await stack.submitter.submit("nextmv", APP, {"stops": 1})
        event = await stack.handled.next()
        assert event.origin == "poll"
        spans = await handler_spans(exporter, 1)
    run = handle.run_id
    submit = one(spans, "listener.submit", run_id=run)
    record = one(spans, "listener.record", run_id=run, origin="poll", status="succeeded")
    handler = one(spans, "listener.handler", run_id=run, handler="report")
    assert not named(spans, "listener.verify")
    for later in (record, handler):
        assert trace_id(later) == trace_id(submit)
        assert parent_of(later) == span_id(submit)


async def test_a_refused_delivery_is_a_failed_verify_span_of_no_run(
    tmp_path: Path, exporter: InMemorySpanExporter
) -> None:
    secret = generate_hmac_secret()
    listener = Listener(
        store_url=f"sqlite:///{tmp_path / 'refused.db'}",
        sources=[Source("local", "local", StandardWebhooks([secret]))],
    )
    body = payload("run-9")
    wrong = signed(StandardWebhooks([generate_hmac_secret()]), body, "msg-1")
    async with serve(listener.asgi()) as url, httpx.AsyncClient(timeout=WAIT_LIMIT) as http:
        answer = await http.post(f"{url}/hooks/local", content=body, headers=wrong)
        assert answer.status_code == 401
        # A run first heard of by webhook has no stored trace: its spans start one.
        good = signed(StandardWebhooks([secret]), body, "msg-2")
        answer = await http.post(f"{url}/hooks/local", content=body, headers=good)
        assert answer.status_code == 202
    spans = exporter.get_finished_spans()
    refused = one(spans, "listener.verify", outcome="refused")
    assert refused.attributes is not None
    assert refused.attributes["listener.reason"] == "bad_signature"
    assert "listener.run_id" not in refused.attributes
    assert refused.status.status_code is StatusCode.ERROR
    verified = one(spans, "listener.verify", outcome="verified", run_id="run-9")
    record = one(spans, "listener.record", run_id="run-9")
    assert verified.parent is None
    assert record.parent is None
    assert trace_id(verified) != trace_id(record) != trace_id(refused)


async def test_spans_inside_a_request_span_link_to_it(
    tmp_path: Path, exporter: InMemorySpanExporter
) -> None:
    listener = Listener(store_url=f"sqlite:///{tmp_path / 'linked.db'}")
    async with listener:
        await listener.track("local", APP, "run-10", "running")
        with trace.get_tracer("tests").start_as_current_span("request") as request:
            await listener.record(RunEvent.from_poll("local", APP, "run-10", RunStatus.SUCCEEDED))
    spans = exporter.get_finished_spans()
    record = one(spans, "listener.record", run_id="run-10", status="succeeded")
    assert parent_of(record) == span_id(one(spans, "listener.track", run_id="run-10"))
    assert [link.context.span_id for link in record.links] == [request.get_span_context().span_id]


def test_a_stored_context_is_read_back_and_bad_ones_are_none(
    exporter: InMemorySpanExporter,
) -> None:
    with trace.get_tracer("tests").start_as_current_span("kept") as kept:
        headers = carrier()
    context = context_from(json.loads(json.dumps(headers)))
    assert context is not None
    read = trace.get_current_span(context).get_span_context()
    expected = kept.get_span_context()
    assert (read.trace_id, read.span_id, read.is_remote) == (
        expected.trace_id,
        expected.span_id,
        True,
    )
    for bad in (None, "00-abc", {}, {"traceparent": 7}, {"traceparent": "00-zz-yy-01"}):
        assert context_from(bad) is None


async def test_store_trouble_leaves_a_span_without_its_run_trace(tmp_path: Path) -> None:
    listener = Listener(store_url=f"sqlite:///{tmp_path / 'gone.db'}")
    async with listener:
        store = listener.store
    # The store is closed now: the context is not known, and nothing raises.
    assert await RunTraces().context(store, "run-11") is None


async def test_a_run_stored_without_a_context_is_read_from_the_store_once(
    exporter: InMemorySpanExporter, tmp_path: Path
) -> None:
    path = tmp_path / "runs.db"
    async with Listener(store_url=f"sqlite:///{path}") as listener:
        store = listener.store
        traces = RunTraces()
        # Not in the store yet: not remembered, so its registration may still bring one.
        assert await traces.context(store, "run-12") is None
        await store.register_run(NewRun("run-12", "nextmv", "routing"))
        assert await traces.context(store, "run-12") is None
        # A context written behind its back is not seen: the run was read once.
        with trace.get_tracer("tests").start_as_current_span("later"):
            kept = json.dumps({TRACE_KEY: carrier()})
        with sqlite3.connect(path) as conn:
            conn.execute("UPDATE runs SET callback = ? WHERE run_id = 'run-12'", [kept])
        assert await traces.context(store, "run-12") is None
        assert await RunTraces().context(store, "run-12") is not None


async def test_without_a_tracer_provider_nothing_is_traced_or_kept(tmp_path: Path) -> None:
    assert tracer() is None
    listener = Listener(store_url=f"sqlite:///{tmp_path / 'off.db'}")
    async with listener:
        await listener.track("local", APP, "run-12", "running")
        run = await listener.store.get_run("run-12")
    assert run is not None
    assert TRACE_KEY not in run.callback


_WITHOUT_OPENTELEMETRY = """
import asyncio, sys

sys.modules["opentelemetry"] = None  # as if the package were not installed

from listener import Listener

async def main() -> None:
    listener = Listener(store_url="sqlite://:memory:")
    seen = asyncio.Event()

    @listener.on("succeeded")
    async def handle(event):
        seen.set()

    async with listener:
        await listener.track("local", "routing", "run-1", "succeeded")
        await asyncio.wait_for(seen.wait(), 30)

asyncio.run(main())
loaded = sorted(name for name in sys.modules if name.startswith("opentelemetry."))
print("handled; loaded:", loaded)
"""


def test_without_opentelemetry_the_listener_works_and_imports_none_of_it() -> None:
    done = subprocess.run(
        [sys.executable, "-c", _WITHOUT_OPENTELEMETRY],
        capture_output=True,
        text=True,
        timeout=WAIT_LIMIT,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "handled; loaded: []"
