"""Tracing with OpenTelemetry: a request and the job it creates are one trace.

    pip install 'kickq[otel]' opentelemetry-sdk
    .venv/bin/python examples/tracing.py

With `kickq.config(tracing=True)`, a create inside a current span makes a PRODUCER span
"send <name>" and keeps its W3C trace context on the job's record; the job's run is a CONSUMER
span "process <name>", a child of it even in another process, and the spans the handler opens
are children of the run's. A retry starts a new trace, linked to the producer's span. Here the
SDK prints the spans to the console; a real application exports them (OTLP, Jaeger, ...).
"""

from __future__ import annotations

from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import kickq

exporter = InMemorySpanExporter()  # ConsoleSpanExporter() prints each span as JSON
provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(exporter))
trace.set_tracer_provider(provider)
tracer = trace.get_tracer("shop")

kickq.config(redis_namespace="tracing-example", tracing=True)


def resize(job: kickq.Job, data: dict[str, Any]) -> str:
    with tracer.start_as_current_span("load image"):  # a child of "process resize"
        pass
    if job.runs[-1].count == 1:
        raise OSError("the image store timed out")  # the first run fails: a retry follows
    return f"{data['image']} resized to {data['width']}"


kickq.process("resize", resize)
try:
    with tracer.start_as_current_span("POST /images"):  # stands for the web request
        job = kickq.create(
            "resize", {"image": "cat.png", "width": 200}, retry=True, retry_interval=0
        ).result(10)
    done = kickq.wait(job.id, timeout=20).result()
    print(f"{done.name}: {done.state.value} -> {done.result}")
finally:
    kickq.reset()


def describe(span: ReadableSpan) -> str:
    assert span.context is not None
    parent = f"child of {span.parent.span_id:016x}" if span.parent else "root"
    links = "".join(f", linked to {link.context.span_id:016x}" for link in span.links)
    status = span.status.status_code.name
    return (
        f"trace {span.context.trace_id:032x}  span {span.context.span_id:016x}  "
        f"{span.name!r} ({span.kind.name}, {parent}{links}, {status})"
    )


for span in sorted(exporter.get_finished_spans(), key=lambda span: span.start_time or 0):
    print(describe(span))
