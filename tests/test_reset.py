"""kickq.reset() from kickq's own threads, and with many requests still waiting for Redis."""

from __future__ import annotations

import asyncio
import logging
import pathlib
import sys
import threading
import time
import types
from typing import Any

import pytest
import redis

import kickq
from kickq._engine.waits import Waits
from support import RedisServer, capped, numsub, scaled, wait_until


class Resetter:
    """A callback that calls kickq.reset() and notes the thread it ran on and what it raised."""

    def __init__(self) -> None:
        self.threads: list[str] = []
        self.errors: list[BaseException] = []
        self.returned = threading.Event()
        self.took = 0.0

    def __call__(self, *_args: Any) -> None:
        self.threads.append(threading.current_thread().name)
        started = time.monotonic()
        try:
            kickq.reset()
        except BaseException as exc:
            self.errors.append(exc)
            raise
        self.took = time.monotonic() - started
        self.returned.set()


def works_again(redis_url: str) -> None:
    """After the reset kickq starts afresh: a worker runs a new job and its hotjob resolves."""
    kickq.config(redis_url=redis_url)
    kickq.process("again", lambda job, data: data + 1)
    job = kickq.create("again", 1, hotjob=True).result(5)
    assert job.hotjob_future is not None and job.hotjob_future.result(10).result == 2


def assert_clean(resetter: Resetter, thread: str, caplog: pytest.LogCaptureFixture) -> None:
    assert resetter.returned.wait(10), f"reset() did not return: {resetter.errors}"
    assert resetter.threads and resetter.threads[0].startswith(thread), resetter.threads
    assert not resetter.errors
    problems = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert not problems, [r.getMessage() for r in problems]


def test_reset_from_an_event_callback(
    r: redis.Redis, redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """reset() in a kickq.on() callback, on the listener thread, stops kickq cleanly."""
    caplog.set_level(logging.INFO, logger="kickq")
    resetter = Resetter()
    kickq.on("create", resetter)
    wait_until(lambda: numsub(r, "kickq:create"), timeout=5)
    kickq.create("x").result(5)
    assert_clean(resetter, "kickq-listener", caplog)
    works_again(redis_url)


def test_reset_from_a_done_callback_on_the_dispatcher_thread(
    r: redis.Redis, redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """reset() in a future's done-callback, run by the dispatcher thread, stops kickq cleanly."""
    caplog.set_level(logging.INFO, logger="kickq")
    resetter = Resetter()
    kickq.create("warm").result(5)
    r.client_pause(300)  # the create below stays pending until the callback is attached
    kickq.create("x").add_done_callback(resetter)
    assert_clean(resetter, "kickq-dispatcher", caplog)
    works_again(redis_url)


def test_reset_from_a_handler_on_a_worker_thread(
    redis_url: str, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """reset() in a plain handler, on a worker pool thread, stops kickq at once and cleanly."""
    caplog.set_level(logging.INFO, logger="kickq")
    # a reset that waited for the runs would wait the whole minute for this one, its own
    monkeypatch.setattr(kickq._engine.runtime.shutdown, "__defaults__", (60.0,))
    resetter = Resetter()
    kickq.process("resetting", lambda job, data: resetter())
    kickq.create("resetting").result(5)
    assert_clean(resetter, "kickq-run", caplog)
    # waiting for its own run to end would take the whole minute
    assert resetter.took < scaled(capped(5, 30))
    works_again(redis_url)


def test_reset_from_a_coroutine_handler(redis_url: str, caplog: pytest.LogCaptureFixture) -> None:
    """reset() in a coroutine handler, on the event-loop thread, stops kickq cleanly."""
    caplog.set_level(logging.INFO, logger="kickq")
    resetter = Resetter()

    async def handler(job: kickq.Job, data: None) -> str:
        resetter()
        await asyncio.sleep(0)
        return "after"

    kickq.process("resetting", handler)
    kickq.create("resetting").result(5)
    assert_clean(resetter, "kickq-asyncio", caplog)
    works_again(redis_url)


def test_reset_from_a_wait_timeout_on_the_timer_thread(
    redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """reset() in the done-callback of a wait the timer times out stops kickq cleanly."""
    caplog.set_level(logging.INFO, logger="kickq")
    resetter = Resetter()
    job = kickq.create("nobody-runs-this").result(5)
    kickq.wait(job.id, timeout=0.2).add_done_callback(resetter)
    assert_clean(resetter, "kickq-timer", caplog)
    works_again(redis_url)


def test_reset_cancels_thousands_of_pending_requests_at_once(tmp_path: pathlib.Path) -> None:
    """reset() with 2,000 get() and create() calls waiting on a paused Redis returns at once,
    with every one of their futures done, and nothing stored for the cancelled creates."""
    server = RedisServer(tmp_path / "paused").start()
    client = server.client()
    pause = scaled(6.0)
    try:
        kickq.config(redis_url=server.url)
        known = kickq.create("known").result(5)
        client.client_pause(int(pause * 1000))
        gets = [kickq.get(known.id) for _ in range(1000)]
        creates = [kickq.create("never", i) for i in range(1000)]
        time.sleep(0.2)  # the dispatcher takes up the first get, which Redis does not answer
        started = time.monotonic()
        kickq.reset()
        assert time.monotonic() - started < pause - 1  # returned while Redis was paused
        assert all(f.done() for f in gets + creates)
        assert all(f.cancelled() for f in creates)
        assert sum(f.cancelled() for f in gets) >= len(gets) - 1
        assert client.ping()  # answered once the pause is over
        assert client.keys("kickq:job:*") == [f"kickq:job:{known.id}"]
        assert not client.exists("kickq:queue:never")
    finally:
        kickq.reset()
        client.close()
        server.stop()


@pytest.mark.parametrize("stop", ["reset", "config"])
def test_a_wait_issued_while_another_thread_stops_kickq_fails_with_job_not_found(
    redis_url: str, monkeypatch: pytest.MonkeyPatch, stop: str
) -> None:
    """kickq.wait() on a missing id, whose engine another thread stops (reset(), or config()
    of a connection option) after the wait found it and before the wait is listed: the wait
    goes to the next engine and fails with JobNotFound. It used to be listed by the stopped
    engine, after that engine had cancelled its waits, and never answered. The waiting thread
    is held at that moment (a trace function pauses it as it enters `Waits.wait`), so that the
    race is met every time, not one run in eight."""
    monkeypatch.setenv("KICKQ_REDIS_URL", redis_url)  # the engine after a reset: this server
    missing = "0" * 32
    kickq.get(missing).exception(10)  # an engine running, the one the wait finds
    paused, go_on = threading.Event(), threading.Event()

    def pause_in_waits(frame: types.FrameType, event: str, arg: Any) -> None:
        if event == "call" and frame.f_code is Waits.wait.__code__ and not paused.is_set():
            paused.set()
            go_on.wait(10)

    futures: list[Any] = []

    def wait() -> None:
        previous = sys.gettrace()
        sys.settrace(pause_in_waits)
        try:
            futures.append(kickq.wait(missing, timeout=None))
        finally:
            sys.settrace(previous)

    waiting = threading.Thread(target=wait)
    waiting.start()
    try:
        assert paused.wait(10), "the wait never reached Waits.wait"
        if stop == "reset":
            kickq.reset()
        else:
            kickq.config(redis_namespace="elsewhere")
    finally:
        go_on.set()
        waiting.join(10)
    with pytest.raises(kickq.JobNotFound):
        futures[0].result(10)
