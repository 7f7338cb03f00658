"""Progress: `kickq.progress(value)` from a run, `on_progress` of hotjobs and waits, the event
`progress`, and `Job.progress`.

Every handler style and its middleware reports the progress of its own run; a value reaches
Redis (True) only while the run counts; reports in a tight loop are coalesced; the last value
reaches `on_progress` before the future resolves, and nothing after it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import contextvars
import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import attrs
import pytest

import kickq
import kickq._engine.progress
from kickq import cli
from kickq._redis.keys import progress_message_head, read_progress_message
from kickq._redis.record import from_event, from_record
from support import ChildWorkers, job_key, scaled, wait_until

pytestmark = pytest.mark.both_parsers

Seen = list[Any]


def resolved_after(seen: Seen, future: concurrent.futures.Future[Any]) -> None:
    """Mark in `seen` the moment `future` resolves (on_progress is never called after it)."""
    future.add_done_callback(lambda f: seen.append("<resolved>"))


def run_hotjob(name: str, data: Any = None, **options: Any) -> tuple[kickq.Job, Seen]:
    """Create a hotjob of `name` with an on_progress that records what it is given; its final
    Job, and what on_progress saw then "<resolved>"."""
    seen: Seen = []
    job = kickq.create(name, data, hotjob=True, on_progress=seen.append, **options).result(10)
    assert job.hotjob_future is not None
    resolved_after(seen, job.hotjob_future)
    done = job.hotjob_future.result(15)
    wait_until(lambda: seen and seen[-1] == "<resolved>", timeout=5)
    return done, seen


# -- every handler style ---------------------------------------------------------------------


@pytest.mark.both_backends
def test_a_plain_handler_reports_and_on_progress_sees_each_value_before_the_end(r: Any) -> None:
    futures: list[kickq.KickqFuture[bool]] = []

    def handler(job: kickq.Job, data: Any) -> str:
        for i in range(3):
            futures.append(kickq.progress({"done": i + 1, "of": 3}))
            futures[-1].result(10)  # each its own write: none coalesced
        return "ok"

    kickq.process("plain", handler)
    done, seen = run_hotjob("plain")
    assert seen == [{"done": 1, "of": 3}, {"done": 2, "of": 3}, {"done": 3, "of": 3}, "<resolved>"]
    assert [f.result(0) for f in futures] == [True, True, True]
    assert done.result == "ok" and done.progress == {"done": 3, "of": 3}
    # kept on the record after the job completed, read back by get()
    assert kickq.get(done.id).result(5).progress == {"done": 3, "of": 3}
    assert json.loads(r.hget(job_key(done.id), "progress")) == {"done": 3, "of": 3}


def test_a_coroutine_handler_reports() -> None:
    async def handler(job: kickq.Job, data: Any) -> str:
        await asyncio.sleep(0)
        assert await kickq.progress("half") is True
        kickq.progress("all")
        return "ok"

    kickq.process("coro", handler)
    done, seen = run_hotjob("coro")
    assert seen == ["half", "all", "<resolved>"]
    assert done.progress == "all"


def test_a_callback_handler_reports_from_its_thread_and_from_a_thread_given_its_context() -> None:
    def work(done: Callable[..., None]) -> None:
        kickq.progress(2).result(10)
        done(None, "ok")

    def handler(job: kickq.Job, data: Any, done: Callable[..., None]) -> None:
        kickq.progress(1).result(10)  # else 2 may come soon enough to replace it (coalesced)
        # a thread knows the run only when started in a copy of the handler's context
        context = contextvars.copy_context()
        threading.Thread(target=context.run, args=(work, done)).start()

    kickq.process("callback", handler)
    done, seen = run_hotjob("callback")
    assert seen == [1, 2, "<resolved>"]
    assert done.result == "ok" and done.progress == 2


def test_a_thread_started_without_the_run_s_context_is_outside_a_run() -> None:
    """The limit, as documented: a bare thread the handler starts does not know the run."""
    errors: list[BaseException] = []

    def work(done: Callable[..., None]) -> None:
        try:
            kickq.progress(1)
        except RuntimeError as exc:
            errors.append(exc)
        done()

    def handler(job: kickq.Job, data: Any, done: Callable[..., None]) -> None:
        threading.Thread(target=work, args=(done,)).start()

    kickq.process("bare", handler)
    done, seen = run_hotjob("bare")
    assert seen == ["<resolved>"] and done.progress is None
    assert len(errors) == 1 and "copy_context" in str(errors[0])


def test_a_handler_returning_a_future_reports_from_its_thread() -> None:
    pool = concurrent.futures.ThreadPoolExecutor(1)

    def handler(job: kickq.Job, data: Any) -> concurrent.futures.Future[str]:
        kickq.progress("started").result(10)  # else "finishing" may replace it (coalesced)
        context = contextvars.copy_context()
        return pool.submit(context.run, lambda: kickq.progress("finishing").result(10) and "ok")

    try:
        kickq.process("returns-future", handler)
        done, seen = run_hotjob("returns-future")
    finally:
        pool.shutdown()
    assert seen == ["started", "finishing", "<resolved>"] and done.result == "ok"


def test_middleware_of_both_kinds_reports_for_the_run() -> None:
    def plain(job: kickq.Job, call_next: Callable[[], Any]) -> Any:
        kickq.progress(f"plain before {job.name}")
        return call_next()

    async def coroutine(job: kickq.Job, call_next: Callable[[], Any]) -> Any:
        kickq.progress("coroutine before")
        result = await call_next()
        kickq.progress("coroutine after")
        return result

    async def handler(job: kickq.Job, data: Any) -> str:
        return "ok"

    kickq.use(plain)
    kickq.use(coroutine)
    kickq.process("wrapped", handler)
    done, seen = run_hotjob("wrapped")
    assert seen[-1] == "<resolved>" and seen[-2] == "coroutine after"
    assert done.progress == "coroutine after"
    # what was not coalesced came in order
    order = ["plain before wrapped", "coroutine before", "coroutine after"]
    assert [v for v in order if v in seen] == [v for v in seen if v in order]


def test_create_many_hotjobs_share_one_on_progress() -> None:
    seen: Seen = []
    kickq.process("many", lambda job, data: kickq.progress(data).result(10) and data)
    futures = kickq.create_many("many", [1, 2, 3], hotjob=True, on_progress=seen.append)
    jobs = [future.result(10) for future in futures]
    done = [job.hotjob_future.result(10) for job in jobs if job.hotjob_future is not None]
    assert sorted(seen) == [1, 2, 3] and [job.progress for job in done] == [1, 2, 3]


# -- bad calls -------------------------------------------------------------------------------


def test_outside_a_run_progress_raises_runtime_error() -> None:
    with pytest.raises(RuntimeError, match="from a handler"):
        kickq.progress(1)
    failures: list[BaseException] = []

    def on_progress(value: Any) -> None:  # a kickq thread, but no run
        try:
            kickq.progress(value)
        except RuntimeError as exc:
            failures.append(exc)

    kickq.process("elsewhere", lambda job, data: kickq.progress(1).result(10))
    run_hotjob("elsewhere")
    job = kickq.create("elsewhere", hotjob=True, on_progress=on_progress).result(10)
    assert job.hotjob_future is not None and job.hotjob_future.result(10).result is True
    assert len(failures) == 1


def test_a_value_that_is_not_json_fails_its_future_and_stores_nothing(r: Any) -> None:
    outcomes: list[Any] = []

    def handler(job: kickq.Job, data: Any) -> str:
        for value in (object(), {"x": float("nan")}, "x" * (kickq.config()["max_value_bytes"])):
            error = kickq.progress(value).exception(10)
            outcomes.append(type(error))
        return "ok"

    kickq.process("bad-values", handler)
    events: list[kickq.Job] = []
    subscription = kickq.on("progress", events.append)
    try:
        done, seen = run_hotjob("bad-values")
    finally:
        subscription.cancel()
    assert outcomes == [kickq.SerializationError] * 3
    assert seen == ["<resolved>"] and events == []
    assert done.progress is None and not r.hexists(job_key(done.id), "progress")


def test_on_progress_needs_a_hotjob_and_a_callable_and_nothing_is_stored(r: Any) -> None:
    created: list[kickq.Job] = []
    subscription = kickq.on("create", created.append)
    try:
        for bad in (
            kickq.create("p", 1, on_progress=print),
            kickq.create("p", 1, {"on_progress": print}),
            kickq.create("p", 1, hotjob=True, on_progress="print"),
            *kickq.create_many("p", [1, 2], on_progress=print),
        ):
            assert isinstance(bad.exception(5), kickq.ConfigError)
        with pytest.raises(kickq.ConfigError, match="one create"):
            kickq.config(job_flags={"p": {"on_progress": print}})
        with pytest.raises(kickq.ConfigError, match="one create"):
            kickq.config(on_progress=print)
        with pytest.raises(kickq.ConfigError):
            kickq.schedule("p", every=60, on_progress=print).result(5)
        waited = kickq.wait("0" * 32, on_progress=42)  # type: ignore[arg-type]
        assert isinstance(waited.exception(5), kickq.ConfigError)
    finally:
        subscription.cancel()
    assert created == [] and not r.keys("kickq:*job:*")
    # hotjob=True from job_flags counts
    kickq.config(job_flags={"p": {"hotjob": True}})
    kickq.process("p", lambda job, data: kickq.progress(data).result(10) and data)
    seen: Seen = []
    job = kickq.create("p", 7, on_progress=seen.append).result(10)
    assert job.hotjob_future is not None and job.hotjob_future.result(10).progress == 7
    assert seen == [7]


# -- runs that no longer count ---------------------------------------------------------------


def test_after_a_cancel_a_report_is_false_and_dropped(r: Any) -> None:
    started, cancelled = threading.Event(), threading.Event()
    outcome: list[bool] = []

    def handler(job: kickq.Job, data: Any) -> None:
        assert kickq.progress("before").result(10) is True
        started.set()
        wait_until(kickq.cancelled, timeout=10)
        cancelled.wait(10)
        outcome.append(kickq.progress("after").result(10))

    kickq.process("cancelled", handler)
    seen: Seen = []
    job = kickq.create("cancelled", hotjob=True, on_progress=seen.append).result(10)
    assert started.wait(10)
    assert kickq.cancel(job.id).result(10) is True
    cancelled.set()
    wait_until(lambda: outcome, timeout=10)
    assert outcome == [False]
    assert json.loads(r.hget(job_key(job.id), "progress")) == "before"
    assert kickq.get(job.id).result(5).progress == "before"
    assert seen == ["before"]


def test_after_a_delete_a_report_is_false_and_stores_nothing(r: Any) -> None:
    started, deleted = threading.Event(), threading.Event()
    outcome: list[bool] = []

    def handler(job: kickq.Job, data: Any) -> None:
        started.set()
        deleted.wait(10)
        outcome.append(kickq.progress("after").result(10))

    kickq.process("deleted", handler)
    job = kickq.create("deleted").result(10)
    assert started.wait(10)
    assert kickq.delete(job.id).result(10) is True
    deleted.set()
    wait_until(lambda: outcome, timeout=10)
    assert outcome == [False] and not r.exists(job_key(job.id))


def test_after_a_ghost_a_report_is_false(r: Any) -> None:
    outcome: list[bool] = []
    release = threading.Event()

    def handler(job: kickq.Job, data: Any) -> None:
        # held until the test sees the ghost: TimeLimitExceeded may come at the run's deadline
        # (never while the process is traced, as under coverage), so it is waited out too
        while not release.is_set():
            with contextlib.suppress(kickq.TimeLimitExceeded):
                release.wait(0.01)
        outcome.append(kickq.progress("late").result(10))

    kickq.process("ghosted", handler)
    job = kickq.create("ghosted", process_timeout=0.3, ghost_retry=False).result(10)
    try:
        wait_until(lambda: kickq.get(job.id).result(10).state is kickq.State.FAIL, timeout=20)
    finally:
        release.set()
    wait_until(lambda: outcome, timeout=20)
    assert outcome == [False]
    assert not r.hexists(job_key(job.id), "progress")


def test_a_report_for_a_run_redis_no_longer_holds_is_dropped(r: Any) -> None:
    """The script's own check, whatever this process believes: the record's run is another."""
    started, moved, checked = threading.Event(), threading.Event(), threading.Event()
    outcome: list[bool] = []

    def handler(job: kickq.Job, data: Any) -> None:
        started.set()
        moved.wait(10)
        outcome.append(kickq.progress("stale").result(10))
        checked.wait(10)

    kickq.process("stale", handler)
    job = kickq.create("stale", process_timeout=30).result(10)
    assert started.wait(10)
    r.hset(job_key(job.id), "run_count", "7")  # as if a later run had started
    version = r.hget(job_key(job.id), "version")
    moved.set()
    wait_until(lambda: outcome, timeout=10)
    assert outcome == [False]
    assert not r.hexists(job_key(job.id), "progress")
    assert r.hget(job_key(job.id), "version") == version
    checked.set()


def test_progress_leaves_the_version_and_the_run_s_end_applies(r: Any) -> None:
    versions: list[str] = []

    def handler(job: kickq.Job, data: Any) -> str:
        versions.append(r.hget(job_key(job.id), "version"))
        for i in range(3):
            kickq.progress(i).result(10)
            versions.append(r.hget(job_key(job.id), "version"))
        return "ok"

    kickq.process("versioned", handler)
    done, _ = run_hotjob("versioned")
    assert len(set(versions)) == 1 and done.result == "ok" and done.progress == 2


# -- coalescing, order and the end ---------------------------------------------------------


@pytest.mark.both_backends
def test_a_tight_loop_of_reports_is_coalesced_and_the_last_value_comes_before_the_end() -> None:
    elapsed: list[float] = []
    futures: list[kickq.KickqFuture[bool]] = []

    def handler(job: kickq.Job, data: Any) -> str:
        start = time.perf_counter()
        for i in range(10_000):
            future = kickq.progress(i)
            if i % 1000 == 0 or i == 9_999:
                futures.append(future)
        elapsed.append(time.perf_counter() - start)
        return "ok"

    kickq.process("tight", handler)
    began = time.perf_counter()
    done, seen = run_hotjob("tight")
    took = time.perf_counter() - began
    assert elapsed[0] < 5.0  # never waits for Redis
    assert seen[-2:] == [9_999, "<resolved>"]
    values = seen[:-1]
    assert values == sorted(set(values))  # increasing: in order, none twice
    # at most one write per 50 ms (plus the first and the last, written at once)
    assert len(values) <= took / kickq._engine.progress.INTERVAL + 3
    assert len(values) < 1000
    assert all(f.result(10) is True for f in futures)  # a replaced value shares a later write
    assert done.progress == 9_999


def test_reports_are_spaced_by_the_interval(monkeypatch: pytest.MonkeyPatch) -> None:
    """With a long interval, a run that reports every 10 ms is written about once per
    interval: the newer values replace the pending one."""
    monkeypatch.setattr(kickq._engine.progress, "INTERVAL", 0.4)
    stop = threading.Event()
    writes: list[tuple[float, int]] = []

    def handler(job: kickq.Job, data: Any) -> str:
        i = 0
        while not stop.wait(0.01):
            kickq.progress(i)
            i += 1
        return "ok"

    kickq.process("spaced", handler)
    job = kickq.create(
        "spaced", hotjob=True, on_progress=lambda i: writes.append((time.perf_counter(), i))
    ).result(10)
    wait_until(lambda: len(writes) >= 3, timeout=10)
    stop.set()
    assert job.hotjob_future is not None and job.hotjob_future.result(10).result == "ok"
    times = [when for when, _ in writes[:3]]
    # each write starts a whole interval after the one before (what reaches on_progress
    # follows a round trip later, give or take)
    assert times[1] - times[0] > 0.3 and times[2] - times[1] > 0.3
    assert [i for _, i in writes] == sorted(i for _, i in writes)


def test_an_exception_in_on_progress_is_logged_and_changes_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    seen: Seen = []

    def on_progress(value: Any) -> None:
        seen.append(value)
        if value == 1:
            raise ValueError("on_progress broke")

    def handler(job: kickq.Job, data: Any) -> str:
        for i in range(1, 4):
            kickq.progress(i).result(10)
        return "ok"

    kickq.process("raising", handler)
    with caplog.at_level(logging.ERROR, logger="kickq"):
        job = kickq.create("raising", hotjob=True, on_progress=on_progress).result(10)
        assert job.hotjob_future is not None
        assert job.hotjob_future.result(10).result == "ok"
    assert seen == [1, 2, 3]
    assert any("on_progress" in rec.getMessage() and rec.exc_info for rec in caplog.records)


def test_a_lost_progress_message_is_made_up_before_the_end() -> None:
    """The finished job carries its last progress: a waiter that missed the message (its
    pub/sub connection was away) is given the value before its future resolves."""
    from kickq._engine import runtime

    waits = runtime.get().waits
    dropped: list[str] = []
    on_reply = waits._on_reply

    def losing(payload: str) -> None:
        if read_progress_message(payload) is not None:
            dropped.append(payload)
            return
        on_reply(payload)

    waits._on_reply = losing  # type: ignore[method-assign]
    kickq.process("lossy", lambda job, data: kickq.progress("last").result(10) and "ok")
    _, seen = run_hotjob("lossy")
    assert dropped and seen == ["last", "<resolved>"]


# -- other processes, events -----------------------------------------------------------------

REPORTER = """
import sys, kickq
def handler(job, data):
    for i in range(5):
        kickq.progress({"step": i}).result(10)
    return "ok"
kickq.process("remote", handler)
print("ready", flush=True)
import time
time.sleep(60)
"""


@pytest.mark.both_backends
def test_wait_with_on_progress_follows_a_run_in_another_process(
    subprocess_env: dict[str, str],
) -> None:
    job = kickq.create("remote").result(10)
    seen: Seen = []
    future = kickq.wait(job.id, 20, on_progress=seen.append)
    resolved_after(seen, future)
    workers = ChildWorkers(subprocess_env)
    try:
        workers.start(REPORTER)
        done = future.result(20)
    finally:
        workers.stop_all()
    wait_until(lambda: seen and seen[-1] == "<resolved>", timeout=5)
    assert seen == [{"step": i} for i in range(5)] + ["<resolved>"]
    assert done.progress == {"step": 4}


@pytest.mark.both_backends
def test_on_progress_event_gets_every_job_s_updates() -> None:
    events: list[kickq.Job] = []
    subscription = kickq.on("progress", events.append)
    try:
        kickq.process("evented", lambda job, data: kickq.progress(data * 10).result(10) and data)
        jobs = [kickq.create("evented", n, hotjob=True).result(10) for n in (1, 2)]
        for job in jobs:
            assert job.hotjob_future is not None and job.hotjob_future.result(10).progress
        wait_until(lambda: len(events) == 2, timeout=10)
    finally:
        subscription.cancel()
    assert sorted((e.id, e.progress, e.state) for e in events) == sorted(
        (job.id, job.data * 10, kickq.State.PROCESSING) for job in jobs
    )
    assert all(e.name == "evented" for e in events)


# -- what jobs that never report pay ---------------------------------------------------------


def test_a_job_that_never_reports_has_no_progress_field_nor_event_field(r: Any) -> None:
    messages: list[str] = []
    kickq.process("quiet", lambda job, data: "ok")
    subscription = kickq.on("success", lambda job: messages.append(job.id))
    try:
        job = kickq.create("quiet", hotjob=True).result(10)
        assert job.hotjob_future is not None
        assert job.hotjob_future.result(10).progress is None
        wait_until(lambda: messages, timeout=10)
    finally:
        subscription.cancel()
    assert not r.hexists(job_key(job.id), "progress")
    assert kickq.get(job.id).result(5).progress is None


def test_progress_round_trips_through_record_and_event() -> None:
    record = {"name": "n", "state": "success", "version": "3", "data": "1", "progress": '{"a":1}'}
    assert from_record(record, "0" * 32).progress == {"a": 1}
    assert from_record({**record, "progress": "null"}, "0" * 32).progress is None
    event = '{"id":"' + "0" * 32 + '","name":"n","state":"processing","runs":[],"progress":[1,2]}'
    assert from_event(event).progress == [1, 2]
    message = progress_message_head("a" * 32) + '12:{"x":"y:z"}'
    assert read_progress_message(message) == ("a" * 32, 12, '{"x":"y:z"}')
    for other in ("", "damaged", "deleted:" + "a" * 32, "damaged:" + "a" * 32, '{"id":"x"}'):
        assert read_progress_message(other) is None


def test_kickq_show_gives_the_last_progress(
    redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    kickq.process("shown", lambda job, data: kickq.progress({"step": 2}).result(10))
    job = kickq.create("shown", hotjob=True).result(10)
    job.hotjob_future.result(scaled(10))
    capsys.readouterr()
    assert cli.main(["show", job.id, "--json", "--redis-url", redis_url]) == 0
    assert json.loads(capsys.readouterr().out)["progress"] == {"step": 2}
    kickq.config(redis_url=redis_url)


def test_a_report_read_from_the_record_and_from_its_message_is_given_once() -> None:
    """A waiter's re-read of the record and the report's message may come in either order:
    each report (numbered by the record's `progress_seq`) is given once, none after a later."""
    from kickq._engine import runtime

    job = kickq.create("numbered").result(10)  # no worker: only the calls below report
    seen: Seen = []
    waits = runtime.get().waits
    waiter = waits.wait(job.id, None, seen.append)
    waits._progressed(waiter, 1, '"a"')
    waits._resolve(waiter, attrs.evolve(job, progress="a"), 1)  # report 1 read again
    waits._resolve(waiter, attrs.evolve(job, progress="b"), 2)  # read before its message
    waits._progressed(waiter, 2, '"b"')
    waits._progressed(waiter, 1, '"a"')  # a stale one
    assert seen == ["a", "b"]
    waits.cancel(waiter)
