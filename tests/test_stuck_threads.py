"""Runs of thread handlers that overrun process_timeout: ghosted, and their threads stopped
(TimeLimitExceeded raised inside them); threads that cannot be stopped (blocked in C) are
counted as stuck, and a worker with max_stuck_threads of them claims nothing more
until they return.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

import kickq
from support import capped, wait_until


@pytest.fixture
def untraced_threads() -> Iterator[None]:
    """Threads started in the test run untraced, so kickq interrupts them even under
    coverage (it interrupts no thread while the process is traced: see time_limit.traced)."""
    hook = threading.gettrace()
    threading.settrace(None)  # type: ignore[arg-type]
    try:
        yield
    finally:
        threading.settrace(hook)  # type: ignore[arg-type]


def _spin(started: threading.Event, ended: threading.Event, threads: list[int]) -> None:
    """A handler's body that loops in Python for ever (with short sleeps, so as not to hold
    the GIL): only an exception raised into its thread ends it."""
    threads.append(threading.get_ident())
    started.set()
    try:
        while True:
            for _ in range(1000):
                pass
            time.sleep(0.001)
    finally:
        ended.set()


@pytest.mark.usefixtures("untraced_threads")
def test_a_thread_handler_looping_past_process_timeout_is_ghosted_and_stopped(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """At its deadline the run becomes a ghost (re-run as ghost_retry says, as the contract
    has it), and its thread gets TimeLimitExceeded: the handler ends, the thread comes back to
    the pool and serves the next run, and nothing is left stuck."""
    started, ended = threading.Event(), threading.Event()
    threads: list[int] = []

    def handler(job: kickq.Job, data: None) -> str:
        if len(job.runs) == 1:
            _spin(started, ended, threads)
        threads.append(threading.get_ident())
        return "second"

    worker = kickq.process("spin", handler)
    with caplog.at_level(logging.WARNING, logger="kickq"):
        job = kickq.create("spin", process_timeout=0.5, ghost_interval=0).result(5)
        done = kickq.wait(job.id, timeout=20).result(25)
    assert done.result == "second"
    assert [run.state for run in done.runs] == ["ghost", "success"]
    assert ended.wait(capped(10, 30))  # the spinning handler was stopped
    assert threads[0] == threads[-1]  # its thread came back and ran the re-run
    wait_until(lambda: worker.stuck_threads == 0)
    assert any("TimeLimitExceeded" in r.getMessage() for r in caplog.records)


@pytest.mark.usefixtures("untraced_threads")
def test_time_limit_exceeded_is_not_an_exception() -> None:
    """A handler's `except Exception:` does not swallow it: it is a BaseException, outside
    KickqError, as asyncio.CancelledError is."""
    assert issubclass(kickq.TimeLimitExceeded, BaseException)
    assert not issubclass(kickq.TimeLimitExceeded, Exception)

    caught: list[str] = []
    ended = threading.Event()

    def careless(job: kickq.Job, data: None) -> None:
        try:
            while True:
                try:
                    time.sleep(0.001)
                except Exception as exc:  # what the limit must get through
                    caught.append(repr(exc))
        finally:
            ended.set()

    worker = kickq.process("careless", careless)
    job = kickq.create("careless", process_timeout=0.5, ghost_retry=False).result(5)
    failed = kickq.wait(job.id, timeout=20).exception(25)
    assert isinstance(failed, kickq.JobFailed)
    assert [run.state for run in failed.job.runs] == ["ghost"]
    assert ended.wait(capped(10, 30))
    assert caught == []
    wait_until(lambda: worker.stuck_threads == 0)


@pytest.mark.usefixtures("untraced_threads")
def test_plain_middleware_sees_the_time_limit_go_through_call_next() -> None:
    """Under plain middleware the thread runs middleware and handler: the exception goes
    through `call_next()`, where the middleware sees it (the run is a ghost already)."""
    started, ended = threading.Event(), threading.Event()
    threads: list[int] = []
    seen: list[str] = []

    def watch(job: kickq.Job, call_next: Any) -> Any:
        try:
            return call_next()
        except BaseException as exc:
            seen.append(type(exc).__name__)
            raise

    kickq.use(watch)
    kickq.process("wrapped", lambda job, data: _spin(started, ended, threads))
    job = kickq.create("wrapped", process_timeout=0.5, ghost_retry=False).result(5)
    failed = kickq.wait(job.id, timeout=20).exception(25)
    assert isinstance(failed, kickq.JobFailed)
    assert [run.state for run in failed.job.runs] == ["ghost"]
    wait_until(lambda: seen == ["TimeLimitExceeded"])


def test_threads_blocked_in_c_are_ghosted_counted_stuck_and_cap_claiming(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A handler blocked in C (an Event wait) cannot be interrupted: its run becomes a ghost,
    and its thread is counted stuck. At max_stuck_threads the worker logs an ERROR naming the
    stuck jobs and claims nothing more: a new job stays queued. Once the threads return, it
    claims again and the job runs."""
    caplog.set_level(logging.INFO, logger="kickq")
    kickq.config(max_stuck_threads=2)
    release = threading.Event()
    blocked = []

    def handler(job: kickq.Job, data: str) -> str:
        if data == "block":
            blocked.append(job.id)
            release.wait(60)  # in C: the interrupt takes effect only when it returns
            return "late"
        return data

    try:
        worker = kickq.process("block", handler, concurrent_jobs=3)
        stuck = [
            kickq.create("block", "block", process_timeout=0.5, ghost_retry=False).result(5)
            for _ in range(2)
        ]
        for job in stuck:
            with pytest.raises(kickq.JobFailed) as failed:
                kickq.wait(job.id, timeout=20).result(25)
            assert [run.state for run in failed.value.job.runs] == ["ghost"]
            assert "process_timeout" in failed.value.job.last_error
        wait_until(lambda: worker.stuck_threads == 2, timeout=10, what="two stuck threads")
        errors = wait_until(
            lambda: [r for r in caplog.records if r.name == "kickq" and r.levelno == logging.ERROR],
            timeout=10,
            what="the ERROR saying the worker claims no more",
        )
        message = errors[0].getMessage()
        assert "claims no more jobs" in message and "max_stuck_threads=2" in message
        assert all(f"job {job.id} (block)" in message for job in stuck)

        waiting = kickq.create("block", "waiting").result(5)
        deadline = time.monotonic() + capped(2, 5)
        while time.monotonic() < deadline:  # it would be claimed within milliseconds
            assert kickq.get(waiting.id).result(5).state is kickq.State.QUEUED
            time.sleep(0.05)
        wait_until(
            lambda: any(w.stuck_threads == 2 for w in kickq.workers().result(5)),
            timeout=30,
            what="workers() to show the stuck threads (next heartbeat)",
        )

        release.set()
        assert kickq.wait(waiting.id, timeout=10).result(15).result == "waiting"
        wait_until(lambda: worker.stuck_threads == 0, timeout=10, what="no stuck thread")
        assert any("claims jobs again" in r.getMessage() for r in caplog.records)
        for job in stuck:  # their late returns changed nothing
            assert kickq.get(job.id).result(5).last_error.startswith("run 1 overran")
    finally:
        release.set()


def test_without_a_cap_the_worker_goes_on_claiming() -> None:
    """max_stuck_threads=None: stuck threads are counted, and the worker claims on."""
    kickq.config(max_stuck_threads=None)
    release = threading.Event()

    def handler(job: kickq.Job, data: str) -> str:
        if data == "block":
            release.wait(60)
        return data

    try:
        worker = kickq.process("nocap", handler)
        job = kickq.create("nocap", "block", process_timeout=0.5, ghost_retry=False).result(5)
        kickq.wait(job.id, timeout=20).exception(25)
        wait_until(lambda: worker.stuck_threads == 1, timeout=10, what="one stuck thread")
        other = kickq.create("nocap", "other").result(5)
        assert kickq.wait(other.id, timeout=10).result(15).result == "other"
    finally:
        release.set()


@pytest.mark.parametrize("value", [0, -1, 1.5, "3", True, 10_001])
def test_bad_max_stuck_threads_is_refused(value: Any) -> None:
    """A whole number from 1 to 10,000, or None; anything else is a ConfigError naming the
    option, and changes nothing."""
    with pytest.raises(kickq.ConfigError, match="max_stuck_threads"):
        kickq.config(max_stuck_threads=value)
    assert kickq.config()["max_stuck_threads"] == 10


@pytest.mark.parametrize("value", [1, 10_000, None])
def test_good_max_stuck_threads_is_taken(value: int | None) -> None:
    kickq.config(max_stuck_threads=value)
    assert kickq.config()["max_stuck_threads"] == value


@pytest.mark.usefixtures("untraced_threads")
def test_an_interrupt_leaves_nothing_pending_for_other_threads() -> None:
    """After a thread handler was stopped, a thread that turns tracing on (a debugger,
    coverage) runs as before. Withdrawing an interrupt with PyThreadState_SetAsyncExc(id,
    NULL) left CPython 3.11's pending flag set, and such a thread then hung."""
    started, ended = threading.Event(), threading.Event()
    kickq.process("settle", lambda job, data: _spin(started, ended, []))
    job = kickq.create("settle", process_timeout=0.5, ghost_retry=False).result(5)
    kickq.wait(job.id, timeout=20).exception(25)
    assert ended.wait(capped(10, 30))

    calls: list[str] = []

    def traced() -> None:
        def trace(frame: Any, event: str, arg: Any) -> None:
            if event == "call":
                calls.append(frame.f_code.co_name)

        sys.settrace(trace)
        try:
            kickq.get(job.id).result(10)
        finally:
            sys.settrace(None)

    thread = threading.Thread(target=traced)
    thread.start()
    thread.join(capped(10, 30))
    assert not thread.is_alive()
    assert "get" in calls
