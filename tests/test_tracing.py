"""kickq.config(tracing=True): a PRODUCER span per job created inside a span, its W3C context on
the record, a CONSUMER span per run (a child of the producer's on the first run, a new linked
trace on a retry or a ghost re-run), errors recorded, handler spans nested in every style. The
spans are read from the SDK's in-memory exporter."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

import kickq
from support import job_key, wait_until

pytestmark = pytest.mark.both_backends

EXPORTER = InMemorySpanExporter()


def _install() -> None:
    """The SDK's provider, exporting to EXPORTER: set once per process (OpenTelemetry refuses
    a second), or EXPORTER added to a provider set before."""
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(EXPORTER))
    trace.set_tracer_provider(provider)
    current = trace.get_tracer_provider()
    if current is not provider and isinstance(current, TracerProvider):
        current.add_span_processor(SimpleSpanProcessor(EXPORTER))


_install()
tracer = trace.get_tracer("tests")


@pytest.fixture(autouse=True)
def tracing() -> Iterator[None]:
    EXPORTER.clear()
    kickq.config(tracing=True)
    yield
    EXPORTER.clear()


def finished(name: str, count: int = 1) -> list[ReadableSpan]:
    """The finished spans called `name`, once there are `count` of them (oldest first)."""

    def found() -> list[ReadableSpan] | None:
        spans = [span for span in EXPORTER.get_finished_spans() if span.name == name]
        return spans if len(spans) >= count else None

    spans: list[ReadableSpan] = wait_until(found, timeout=20, what=f"{count} span(s) {name}")
    return spans


def one(name: str) -> ReadableSpan:
    spans = finished(name)
    assert len(spans) == 1, spans
    return spans[0]


def ids(span: ReadableSpan) -> tuple[int, int]:
    assert span.context is not None
    return span.context.trace_id, span.context.span_id


def parent_id(span: ReadableSpan) -> int | None:
    return None if span.parent is None else span.parent.span_id


def stored_trace(r: Any, job_id: str) -> str | None:
    value: str | None = r.hget(job_key(job_id), "trace")
    return value


def attributes(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


def test_a_job_created_in_a_span_and_its_run_are_one_trace(r: Any) -> None:
    """The create makes a PRODUCER span under the request's, its context kept on the record;
    the run is a CONSUMER span under it, and a span the handler opens is under the run's."""

    def handler(job: kickq.Job, data: Any) -> str:
        with tracer.start_as_current_span("inside"):
            return "ok"

    with tracer.start_as_current_span("request") as request:
        job = kickq.create("tr-one", {"n": 1}).result(10)
    kickq.process("tr-one", handler)
    assert kickq.wait(job.id, timeout=20).result(30).result == "ok"

    send, run, inside = one("send tr-one"), one("process tr-one"), one("inside")
    trace_id, request_id = request.get_span_context().trace_id, request.get_span_context().span_id
    assert send.kind is SpanKind.PRODUCER and run.kind is SpanKind.CONSUMER
    assert {ids(send)[0], ids(run)[0], ids(inside)[0]} == {trace_id}
    assert parent_id(send) == request_id
    assert parent_id(run) == ids(send)[1]
    assert parent_id(inside) == ids(run)[1]
    assert attributes(send) == {
        "messaging.system": "kickq",
        "messaging.operation.type": "send",
        "messaging.destination.name": "tr-one",
        "messaging.message.id": job.id,
    }
    assert attributes(run) == {
        "messaging.system": "kickq",
        "messaging.operation.type": "process",
        "messaging.destination.name": "tr-one",
        "messaging.message.id": job.id,
        "kickq.run": 1,
    }
    assert run.status.status_code is StatusCode.UNSET
    # the W3C traceparent of the producer span, on the record, not in meta
    traceparent = stored_trace(r, job.id) or ""
    assert traceparent[:-2] == f"00-{trace_id:032x}-{ids(send)[1]:016x}-"  # then its flags
    assert kickq.get(job.id).result(10).meta == {}


def test_each_job_of_create_many_has_its_own_producer_span(r: Any) -> None:
    with tracer.start_as_current_span("request"):
        futures = kickq.create_many("tr-many", [1, 2, 3])
        jobs = [future.result(10) for future in futures]
    sends = finished("send tr-many", 3)
    assert sorted(attributes(s)["messaging.message.id"] for s in sends) == sorted(
        job.id for job in jobs
    )
    assert len({ids(s)[1] for s in sends}) == 3
    by_id = {attributes(s)["messaging.message.id"]: ids(s)[1] for s in sends}
    for job in jobs:
        assert stored_trace(r, job.id).split("-")[2] == f"{by_id[job.id]:016x}"  # type: ignore[union-attr]


def test_a_retry_is_a_new_trace_linked_to_the_producer() -> None:
    """The failed first run records its exception and is an ERROR; the retry starts a trace
    of its own, with a link to the producer's span."""
    runs: list[int] = []

    def flaky(job: kickq.Job, data: Any) -> str:
        runs.append(1)
        if len(runs) == 1:
            raise ValueError("first time fails")
        return "second"

    with tracer.start_as_current_span("request"):
        job = kickq.create("tr-retry", None, retry=True, retry_count=1, retry_interval=0).result(10)
    kickq.process("tr-retry", flaky)
    assert kickq.wait(job.id, timeout=20).result(30).result == "second"

    send = one("send tr-retry")
    first, second = sorted(
        finished("process tr-retry", 2), key=lambda s: attributes(s)["kickq.run"]
    )
    assert attributes(first)["kickq.run"] == 1 and attributes(second)["kickq.run"] == 2
    assert first.status.status_code is StatusCode.ERROR
    assert "first time fails" in (first.status.description or "")
    assert [event.name for event in first.events] == ["exception"]
    assert first.events[0].attributes is not None
    assert first.events[0].attributes["exception.type"] == "ValueError"
    assert parent_id(first) == ids(send)[1] and ids(first)[0] == ids(send)[0]
    assert second.parent is None and ids(second)[0] != ids(send)[0]
    assert [link.context.span_id for link in second.links] == [ids(send)[1]]
    assert second.status.status_code is StatusCode.UNSET


def test_a_ghosted_run_ends_its_span_as_a_ghost_and_the_rerun_is_linked() -> None:
    release = threading.Event()
    runs: list[int] = []

    def stuck_once(job: kickq.Job, data: Any) -> str:
        runs.append(1)
        if len(runs) == 1:  # overruns: in Python, so that TimeLimitExceeded ends it soon
            while not release.wait(0.05):
                pass
            return "late"
        return "again"

    with tracer.start_as_current_span("request"):
        job = kickq.create(
            "tr-ghost", None, process_timeout=1, ghost_retry=True, ghost_count=1, ghost_interval=0
        ).result(10)
    kickq.process("tr-ghost", stuck_once)
    try:
        assert kickq.wait(job.id, timeout=30).result(40).result == "again"
    finally:
        release.set()
    send = one("send tr-ghost")
    spans = sorted(finished("process tr-ghost", 2), key=lambda s: attributes(s)["kickq.run"])
    ghost, rerun = spans
    assert attributes(ghost)["kickq.outcome"] == "ghost"
    assert ghost.status.status_code is StatusCode.ERROR
    assert parent_id(ghost) == ids(send)[1]
    assert rerun.parent is None and [link.context.span_id for link in rerun.links] == [ids(send)[1]]
    assert attributes(rerun)["kickq.run"] == 2 and "kickq.outcome" not in attributes(rerun)


async def _coroutine(job: kickq.Job, data: Any) -> str:
    await asyncio.sleep(0)
    with tracer.start_as_current_span("inside"):
        await asyncio.sleep(0)
    return "ok"


def _callback(job: kickq.Job, data: Any, done: Any) -> None:
    with tracer.start_as_current_span("inside"):
        done(None, "ok")


def _failing_callback(job: kickq.Job, data: Any, done: Any) -> None:
    with tracer.start_as_current_span("inside"):
        done(RuntimeError("told so"))


@pytest.mark.parametrize("handler", [_coroutine, _callback], ids=["coroutine", "callback"])
def test_handler_spans_nest_in_the_run_in_every_style(handler: Any) -> None:
    job = kickq.create("tr-style", None).result(10)  # no span current: the run is a root
    kickq.process("tr-style", handler)
    assert kickq.wait(job.id, timeout=20).result(30).result == "ok"
    run, inside = one("process tr-style"), one("inside")
    assert run.parent is None and not run.links
    assert parent_id(inside) == ids(run)[1] and ids(inside)[0] == ids(run)[0]
    assert not [s for s in EXPORTER.get_finished_spans() if s.name.startswith("send ")]


def test_a_span_opened_in_middleware_nests_in_the_run() -> None:
    def middleware(job: kickq.Job, call_next: Any) -> Any:
        with tracer.start_as_current_span("middleware"):
            return call_next()

    kickq.use(middleware)
    job = kickq.create("tr-mw", None).result(10)
    kickq.process("tr-mw", _coroutine)
    kickq.wait(job.id, timeout=20).result(30)
    run, outer, inside = one("process tr-mw"), one("middleware"), one("inside")
    assert parent_id(outer) == ids(run)[1] and parent_id(inside) == ids(outer)[1]


def test_a_failure_reported_through_done_is_an_error() -> None:
    job = kickq.create("tr-done-fail", None).result(10)
    kickq.process("tr-done-fail", _failing_callback)
    with pytest.raises(kickq.JobFailed, match="told so"):
        kickq.wait(job.id, timeout=20).result(30)
    run = one("process tr-done-fail")
    assert run.status.status_code is StatusCode.ERROR
    assert [event.name for event in run.events] == ["exception"]


def test_without_a_current_span_nothing_is_stored(r: Any) -> None:
    job = kickq.create("tr-root", None).result(10)
    assert stored_trace(r, job.id) is None


def test_tracing_off_stores_nothing_and_makes_no_span(r: Any) -> None:
    kickq.config(tracing=False)
    with tracer.start_as_current_span("request"):
        job = kickq.create("tr-off", None).result(10)
        jobs = [f.result(10) for f in kickq.create_many("tr-off", [1, 2])]
    kickq.process("tr-off", lambda job, data: data)
    kickq.wait(job.id, timeout=20).result(30)
    for each in (job, *jobs):
        assert stored_trace(r, each.id) is None
    assert [s.name for s in EXPORTER.get_finished_spans()] == ["request"]


@pytest.mark.single_backend
@pytest.mark.parametrize("value", [1, "yes", None])
def test_tracing_takes_a_bool(value: Any) -> None:
    with pytest.raises(kickq.ConfigError, match="tracing must be True or False"):
        kickq.config(tracing=value)


@pytest.mark.single_backend
def test_tracing_without_opentelemetry_api_is_a_config_error(
    subprocess_env: dict[str, str],
) -> None:
    code = (
        "import sys\n"
        "sys.modules['opentelemetry'] = None  # not installed\n"
        "import kickq\n"
        "try:\n"
        "    kickq.config(tracing=True)\n"
        "except kickq.ConfigError as exc:\n"
        "    print('refused:', exc)\n"
        "print('tracing', kickq.config()['tracing'])\n"
        "kickq.config(tracing=False)\n"
        "print('off ok')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        env=subprocess_env,
    )
    lines = done.stdout.splitlines()
    assert lines[0].startswith("refused: tracing=True needs opentelemetry-api")
    assert lines[1:] == ["tracing False", "off ok"]


def test_a_cancelled_run_ends_its_span_as_cancelled() -> None:
    started, stop = threading.Event(), threading.Event()

    def waits(job: kickq.Job, data: Any) -> str:
        started.set()
        wait_until(kickq.cancelled, timeout=20, what="the cancel to reach the run")
        stop.set()
        return "ignored"

    job = kickq.create("tr-cancel", None).result(10)
    kickq.process("tr-cancel", waits)
    assert started.wait(20)
    assert kickq.cancel(job.id).result(10) is True
    run = one("process tr-cancel")
    assert stop.is_set()
    assert attributes(run)["kickq.outcome"] == "cancelled"
    assert run.status.status_code is StatusCode.ERROR


def test_a_stopping_worker_ends_the_spans_of_the_runs_it_gives_up() -> None:
    started, release = threading.Event(), threading.Event()

    def holds(job: kickq.Job, data: Any) -> None:
        started.set()
        release.wait(20)

    job = kickq.create("tr-give-up", None).result(10)
    worker = kickq.process("tr-give-up", holds)
    assert started.wait(20)
    try:
        worker.stop(timeout=0.1)
        run = one("process tr-give-up")
    finally:
        release.set()
    assert attributes(run)["kickq.outcome"] == "given_up"
    assert attributes(run)["messaging.message.id"] == job.id


def test_the_tracestate_travels_with_the_job(r: Any) -> None:
    """A remote parent's tracestate is kept on the record after the traceparent, and the run
    (a child of the producer's span) carries it on."""
    remote = trace.SpanContext(
        trace_id=0x0AF7651916CD43DD8448EB211C80319C,
        span_id=0xB7AD6B7169203331,
        is_remote=True,
        trace_flags=trace.TraceFlags(trace.TraceFlags.SAMPLED),
        trace_state=trace.TraceState([("vendor", "abc")]),
    )
    with trace.use_span(trace.NonRecordingSpan(remote)):
        job = kickq.create("tr-state", None).result(10)
    kickq.process("tr-state", lambda job, data: data)
    kickq.wait(job.id, timeout=20).result(30)
    send, run = one("send tr-state"), one("process tr-state")
    stored = stored_trace(r, job.id)
    traceparent, _, state = (stored or "").partition(" ")
    assert traceparent[:-2] == f"00-{remote.trace_id:032x}-{ids(send)[1]:016x}-"
    assert state == "vendor=abc"
    assert parent_id(send) == remote.span_id and parent_id(run) == ids(send)[1]
    assert run.context is not None and run.context.trace_state.get("vendor") == "abc"
