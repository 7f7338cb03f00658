"""OpenTelemetry spans, with `kickq.config(tracing=True)`: a PRODUCER span per job created
inside a current span, whose W3C trace context is kept on the job's record (field `trace`), and
a CONSUMER span per run, current in the handler.

opentelemetry is imported only once tracing is turned on; while it is off, the create and the
run each read `enabled` and do nothing else. The first run is a child of the producer's span;
a later one (a retry, a ghost re-run) starts a trace of its own, linked to it, as the messaging
conventions say of a message delivered again.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, TypeVar

from kickq._model import lifecycle

T = TypeVar("T")

enabled = False
"""Whether kickq makes spans: set by kickq.config(tracing=...), read on the hot path."""

_otel: dict[str, Any] = {}  # the opentelemetry modules, once tracing was turned on
SYSTEM = "kickq"
TRACE_FIELD = "trace"  # the record's field holding the producer's context (see create.lua)


def switch(on: bool) -> None:
    """Turn tracing on or off (config() checked that opentelemetry-api can be imported)."""
    global enabled
    if on and not _otel:
        # here, not at the top: importing kickq never imports opentelemetry
        from opentelemetry import context, trace
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        _otel.update(trace=trace, context=context, w3c=TraceContextTextMapPropagator())
    enabled = on


def _tracer() -> Any:
    # asked for at each span: a provider set after tracing was turned on is used at once
    return _otel["trace"].get_tracer("kickq")


def send_spans(name: str, count: int) -> list[Any] | None:
    """A PRODUCER span for each of `count` jobs of `name` about to be created, in the caller's
    thread (a create may be sent from another); None when no span is current there."""
    trace = _otel["trace"]
    if not trace.get_current_span().get_span_context().is_valid:
        return None
    attributes = {
        "messaging.system": SYSTEM,
        "messaging.operation.type": "send",
        "messaging.destination.name": name,
    }
    tracer = _tracer()
    kind = trace.SpanKind.PRODUCER
    return [
        tracer.start_span(f"send {name}", kind=kind, attributes=attributes) for _ in range(count)
    ]


def sent(spans: Sequence[Any], job_ids: Sequence[str]) -> list[str]:
    """End the producer spans of the jobs `job_ids`; the W3C trace context of each as the
    record keeps it: its traceparent, then a space and its tracestate if it has one (a
    traceparent alone is 55 bytes: the record's hash stays in Redis's compact encoding)."""
    inject = _otel["w3c"].inject
    in_context = _otel["trace"].set_span_in_context
    texts = []
    for span, job_id in zip(spans, job_ids, strict=True):
        span.set_attribute("messaging.message.id", job_id)
        carrier: dict[str, str] = {}
        inject(carrier, context=in_context(span))
        state = carrier.get("tracestate")
        texts.append(f"{carrier['traceparent']} {state}" if state else carrier["traceparent"])
        span.end()
    return texts


def _producer(record: Mapping[str, str]) -> tuple[Any, Any] | None:
    """The producer's context stored on a record, and its span context; None if it has none
    (or one that cannot be read: a run is never refused for it)."""
    text = record.get(TRACE_FIELD)
    if not text:
        return None
    parent, _, state = text.partition(" ")
    carrier = {"traceparent": parent, "tracestate": state} if state else {"traceparent": parent}
    context = _otel["w3c"].extract(carrier)  # one it cannot read gives an invalid span context
    span_context = _otel["trace"].get_current_span(context).get_span_context()
    return (context, span_context) if span_context.is_valid else None


def run_span(job_id: str, name: str, run: int, record: Mapping[str, str]) -> Any:
    """The CONSUMER span of run `run` of a job: the first run's parent is the producer's span,
    a later one starts a new trace linked to it."""
    trace = _otel["trace"]
    attributes = {
        "messaging.system": SYSTEM,
        "messaging.operation.type": "process",
        "messaging.destination.name": name,
        "messaging.message.id": job_id,
        "kickq.run": run,
    }
    producer = _producer(record)
    parent = _otel["context"].Context()  # never the worker thread's own current span
    links = []
    if producer is not None:
        if run <= 1:
            parent = producer[0]
        else:
            links = [trace.Link(producer[1])]
    return _tracer().start_span(
        f"process {name}",
        context=parent,
        kind=trace.SpanKind.CONSUMER,
        attributes=attributes,
        links=links,
    )


def call_within(span: Any, function: Callable[..., T], *args: Any) -> T:
    """Call `function` with `span` current: what it opens (and the task of a coroutine it
    schedules, which copies the context) nests in it."""
    with _within(span):
        return function(*args)


def _within(span: Any) -> Any:
    return _otel["trace"].use_span(
        span, end_on_exit=False, record_exception=False, set_status_on_exception=False
    )


def bound(span: Any, task: Callable[[], None]) -> Callable[[], None]:
    """`task`, run with `span` current (in whichever thread runs it)."""
    return lambda: call_within(span, task)


def end_run(span: Any, outcome: lifecycle.Outcome, cancelled: bool = False) -> None:
    """End a run's span with its outcome: a failure records its exception and is an ERROR, as
    is a ghost (`kickq.outcome` = "ghost") and a cancelled run (`kickq.outcome` =
    "cancelled")."""
    status = _otel["trace"].Status
    error = _otel["trace"].StatusCode.ERROR
    if isinstance(outcome, lifecycle.Failed) and outcome.exception is not None:
        span.record_exception(outcome.exception)
    if cancelled:  # whatever the handler did after: the job failed when it was cancelled
        span.set_attribute("kickq.outcome", "cancelled")
        span.set_status(status(error, "the run was cancelled"))
    elif isinstance(outcome, lifecycle.Ghosted):
        span.set_attribute("kickq.outcome", "ghost")
        span.set_status(status(error, "the run overran its process_timeout"))
    elif isinstance(outcome, lifecycle.Failed):
        span.set_status(status(error, outcome.error))
    span.end()


def handed_back(spans: Iterator[Any]) -> None:
    """End the spans of runs a stopping worker gave up (their jobs run again elsewhere)."""
    for span in spans:
        span.set_attribute("kickq.outcome", "given_up")
        span.end()
