"""OpenTelemetry spans over a run's life, with the `otel` extra and a configured SDK.

One trace spans a run from its submission to its handler calls, however long the gap and
whichever replica does the work. `submit` and `track` keep the W3C trace context of
their span (`traceparent`, `tracestate`) with the run in the store, in its callback
details under `TRACE_KEY`; the spans made later for that run are its children:

- `listener.submit`, `listener.track`: recording a run (a submission around the
  platform's call);
- `listener.verify`: the receiver's signature (or callback token) check of a delivery;
- `listener.record`: `EventRecorder.record`, whichever path the event came by (webhook,
  stream, poll, track, expiry);
- `listener.handler`: each attempt of each handler call, with its outcome; a failure
  records its exception.

Spans made inside another trace's span (an instrumented HTTP server's request, say) link
to it. Attributes name runs, providers, statuses, handlers and outcomes, never a
payload, a header or a secret.

Tracing is on once the application sets a tracer provider in the OpenTelemetry API (its
global one, with the SDK and an exporter of its choice). The listener never imports
OpenTelemetry first: a provider can only be set by code that imported the API, so until
then `tracer()` is a dictionary lookup, and without the package nothing more ever runs.
"""

from __future__ import annotations

import sys
import time
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, cast

from listener._version import __version__
from listener.errors import StoreError
from listener.events import RunEvent
from listener.store.base import HandlerCall, RecordResult, Store

if TYPE_CHECKING:
    from opentelemetry.context import Context
    from opentelemetry.trace import Link, Span, Tracer

__all__ = [
    "TRACE_KEY",
    "Check",
    "RunTraces",
    "call_span",
    "carrier",
    "context_from",
    "ended_call",
    "recorded",
    "recording",
    "span",
    "tracer",
]

# Where a run's callback details keep its trace context.
TRACE_KEY = "trace"
# The W3C Trace Context headers, as kept.
_FIELDS = ("traceparent", "tracestate")
_API = "opentelemetry.trace"
# Span status descriptions are for reading, not for whole tracebacks.
_DESCRIPTION_LIMIT = 500

_UNSET: Any = object()
# The provider last seen and the tracer made from it.
_made: tuple[object, Tracer] | None = None


def tracer() -> Tracer | None:
    """The listener's tracer, or None while no tracer provider is set (tracing off)."""
    global _made
    api = sys.modules.get(_API)
    if api is None:
        return None
    # The API's global, read directly: while it is unset, `get_tracer_provider()` looks
    # in the environment on every call, which cost a microsecond per delivery. Should
    # the API ever lose the name, the public call decides.
    provider: Any = getattr(api, "_TRACER_PROVIDER", _UNSET)
    if provider is None:
        return None
    if provider is _UNSET:
        provider = api.get_tracer_provider()
    made = _made
    if made is not None and made[0] is provider:
        return made[1]
    if isinstance(provider, (api.ProxyTracerProvider, api.NoOpTracerProvider)):
        return None
    traced = cast("Tracer", provider.get_tracer("listener", __version__))
    _made = (provider, traced)
    return traced


@contextmanager
def span(name: str, attributes: Mapping[str, str]) -> Iterator[Span | None]:
    """A span named `name` under the current one (an error raised in it is recorded), or
    None with tracing off."""
    traced = tracer()
    if traced is None:
        yield None
        return
    with traced.start_as_current_span(name, attributes=attributes) as made:
        yield made


def _propagator() -> Any:
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    return TraceContextTextMapPropagator()


def carrier() -> dict[str, str]:
    """The current span's context as W3C Trace Context headers, to keep with a run."""
    headers: dict[str, str] = {}
    _propagator().inject(headers)
    return headers


def context_from(headers: object) -> Context | None:
    """The context kept by `carrier`, or None when `headers` holds no valid one."""
    if not isinstance(headers, Mapping):
        return None
    fields = {name: headers[name] for name in _FIELDS if isinstance(headers.get(name), str)}
    if "traceparent" not in fields:
        return None
    from opentelemetry import trace
    from opentelemetry.context import Context

    # From an empty context: a run's trace does not inherit whatever is current here.
    context = cast("Context", _propagator().extract(fields, context=Context()))
    if not trace.get_current_span(context).get_span_context().is_valid:
        return None
    return context


class RunTraces:
    """The trace contexts of runs: remembered at submission, else read from the store
    once, and kept for the `size` runs used last (a run's context never changes). A run
    the store holds without one is remembered as such, so its deliveries do not read the
    store each time; a run whose webhook beat its registration stays untraced."""

    def __init__(self, size: int = 4096) -> None:
        self.size = size
        self._known: OrderedDict[str, Context | None] = OrderedDict()

    def remember(self, run_id: str, context: Context | None) -> None:
        self._known[run_id] = context
        self._known.move_to_end(run_id)
        while len(self._known) > self.size:
            self._known.popitem(last=False)

    async def context(self, store: Store, run_id: str) -> Context | None:
        """The context `run_id` was recorded in, or None: a run first heard of by webhook,
        one recorded without tracing, or a store that cannot be read now (whatever needed
        the context then finds out for itself)."""
        if run_id in self._known:
            self._known.move_to_end(run_id)
            return self._known[run_id]
        try:
            run = await store.get_run(run_id)
        except StoreError:
            return None
        if run is None:
            # Not registered yet: its registration may still bring a context.
            return None
        context = context_from(run.callback.get(TRACE_KEY))
        self.remember(run_id, context)
        return context


def _event_attributes(event: RunEvent) -> dict[str, str]:
    return {
        "listener.run_id": event.run_id,
        "listener.provider": event.provider,
        "listener.application": event.application,
        "listener.status": event.status.value,
        "listener.origin": event.origin.value,
    }


def _links(parent: Context | None) -> list[Link]:
    """A link to the span current here (an HTTP server's, say) when a span is made in a
    run's trace rather than under it."""
    if parent is None:
        return []
    from opentelemetry import trace

    here = trace.get_current_span().get_span_context()
    if not here.is_valid:
        return []
    if here.trace_id == trace.get_current_span(parent).get_span_context().trace_id:
        return []
    return [trace.Link(here)]


def _fail(span: Span, description: str) -> None:
    from opentelemetry.trace import Status, StatusCode

    span.set_status(Status(StatusCode.ERROR, description[:_DESCRIPTION_LIMIT]))


class Check:
    """The timing of one delivery's signature (or callback token) check. The run it is
    about is known only once the verified body is read, so the `listener.verify` span is
    made afterwards (`emit`), in that run's trace, with the times taken here."""

    __slots__ = ("emitted", "ended", "scheme", "source", "started", "tracer")

    def __init__(self, tracer: Tracer, source: str, scheme: str) -> None:
        self.tracer = tracer
        self.source = source
        self.scheme = scheme
        self.started = time.time_ns()
        self.ended: int | None = None
        self.emitted = False

    def done(self) -> None:
        self.ended = time.time_ns()

    def emit(
        self, parent: Context | None, event: RunEvent | None = None, *, refused: str | None = None
    ) -> None:
        """Make the span once, under `parent` (None: under the current span): for `event`
        once it is known, or with the reason the delivery was `refused`."""
        if self.emitted:
            return
        self.emitted = True
        if self.ended is None:
            self.done()
        attributes = {"listener.source": self.source, "listener.scheme": self.scheme}
        if event is not None:
            attributes.update(_event_attributes(event))
        span = self.tracer.start_span(
            "listener.verify",
            context=parent,
            attributes=attributes,
            links=_links(parent),
            start_time=self.started,
        )
        if refused is not None:
            span.set_attribute("listener.outcome", "refused")
            span.set_attribute("listener.reason", refused)
            _fail(span, refused)
        else:
            span.set_attribute("listener.outcome", "verified")
        span.end(end_time=self.ended)


@contextmanager
def recording(tracer: Tracer, parent: Context | None, event: RunEvent) -> Iterator[Span]:
    """The `listener.record` span around storing `event`; a store error is recorded on it."""
    attributes = _event_attributes(event)
    attributes["listener.delivery_id"] = event.delivery_id
    with tracer.start_as_current_span(
        "listener.record", context=parent, attributes=attributes, links=_links(parent)
    ) as span:
        yield span


def recorded(span: Span, result: RecordResult) -> None:
    """What the store did with the event, on its `listener.record` span."""
    if result.foreign:
        outcome = "foreign"
    elif result.duplicate:
        outcome = "duplicate"
    elif result.transition is None:
        outcome = "known"
    else:
        outcome = "moved"
    span.set_attribute("listener.outcome", outcome)
    span.set_attribute("listener.run_status", result.status.value)
    span.set_attribute("listener.calls", len(result.call_ids))


@contextmanager
def call_span(tracer: Tracer, parent: Context | None, call: HandlerCall) -> Iterator[Span]:
    """The `listener.handler` span around one attempt of `call`; `ended_call` says how it
    went. What the handler traces itself nests under it."""
    attributes: dict[str, str | int] = {
        **_event_attributes(call.event),
        "listener.handler": call.handler,
        "listener.call_id": call.id,
        "listener.attempt": call.attempts,
        "listener.status": call.status.value,
    }
    with tracer.start_as_current_span(
        "listener.handler",
        context=parent,
        attributes=attributes,
        record_exception=False,
        set_status_on_exception=False,
    ) as span:
        yield span


def ended_call(
    span: Span,
    outcome: str,
    *,
    error: str | None = None,
    exception: BaseException | None = None,
    dead: bool = False,
) -> None:
    """How one attempt ended, on its `listener.handler` span: `outcome` as the metrics
    count it (ok, error, timeout, abandoned; released when handed back at shutdown),
    the stored error text and the exception raised, and whether it was dead-lettered."""
    span.set_attribute("listener.outcome", outcome)
    if outcome == "released":
        return
    span.set_attribute("listener.dead_letter", dead)
    if exception is not None:
        span.record_exception(exception)
    if error is not None:
        _fail(span, error)
