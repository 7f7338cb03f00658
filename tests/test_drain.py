"""kickq.testing.drain(): wait until this process's workers have nothing left to do.

Run in this process, on the test's Redis (single server and cluster), with freezegun driving the
clock. The plugin's fixtures, in a pytest run of their own, are in test_testing_plugin.py.
"""

from __future__ import annotations

import datetime
import os
import pathlib
import signal
import threading
from collections.abc import Callable

import pytest
import redis
from freezegun import freeze_time

import kickq
import kickq._engine.runtime
import kickq.testing
from kickq._verbs.drain import Backlog
from support import RedisServer, free_port, job_key, wait_until

pytestmark = pytest.mark.both_backends

START = datetime.datetime(2030, 1, 1, 9, 0, tzinfo=datetime.timezone.utc)


def state(job_id: str) -> str:
    return str(kickq.get(job_id).result(5).state)


def in_thread(work: Callable[[], object]) -> tuple[threading.Thread, list[BaseException]]:
    """Run `work` in a thread; the list gets what it raised."""
    raised: list[BaseException] = []

    def run() -> None:
        try:
            work()
        except BaseException as exc:
            raised.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, raised


def test_drain_returns_once_every_queued_job_has_run() -> None:
    """Jobs created without waiting for their futures have all run when drain() returns."""
    ran: list[int] = []
    kickq.process("add", lambda job, data: ran.append(data) or data, concurrent_jobs=4)
    kickq.process("other", lambda job, data: ran.append(data) or data)
    futures = [kickq.create("add", i) for i in range(30)] + [kickq.create("other", 100)]
    kickq.testing.drain(timeout=10)
    assert sorted(ran) == [*range(30), 100]
    assert {state(f.result(0).id) for f in futures} == {"success"}


def test_drain_waits_for_the_jobs_handlers_create() -> None:
    """A chain of jobs, each created by the previous one's handler, has run to its end."""
    ran: list[int] = []

    def step(job: kickq.Job, data: int) -> int:
        ran.append(data)
        if data > 0:
            kickq.create("step", data - 1)
        return data

    kickq.process("step", step, concurrent_jobs=2)
    for _ in range(20):
        ran.clear()
        kickq.create("step", 4)
        kickq.testing.drain(timeout=10)
        assert ran == [4, 3, 2, 1, 0]


def test_a_create_queued_behind_the_read_is_waited_for(r: redis.Redis) -> None:
    """The race drain() closes: its read is queued, then a handler creates a job and its run
    ends before the read is served; the read finds the parent finished and the child not yet
    in Redis, but sees the child's create waiting behind it, and drain() goes on."""
    dispatcher = kickq._engine.runtime.get().dispatcher
    go, release, started = threading.Event(), threading.Event(), threading.Event()
    ran: list[str] = []

    def parent(job: kickq.Job, data: None) -> str:
        started.set()
        go.wait(10)
        kickq.create("child")
        return "parent"

    kickq.process("parent", parent)
    kickq.process("child", lambda job, data: ran.append("child"))
    job = kickq.create("parent").result(5)
    assert started.wait(10)
    dispatcher.task(lambda: release.wait(10))  # holds the dispatcher
    drainer, raised = in_thread(lambda: kickq.testing.drain(timeout=10))
    wait_until(lambda: dispatcher.waiting() >= 1, what="drain's read queued")
    go.set()  # the child's create queues behind the read; the parent's run ends
    wait_until(lambda: r.hget(job_key(job.id), "state") == "success", what="parent done")
    assert ran == []
    release.set()
    drainer.join(15)
    assert not drainer.is_alive() and raised == []
    assert ran == ["child"]


def test_drain_saves_pending_creates_when_no_worker_runs() -> None:
    """With no worker, drain() returns once the creates issued before it are in Redis."""
    futures = [kickq.create("nobody", i) for i in range(50)]
    kickq.testing.drain(timeout=10)
    assert all(future.done() for future in futures)
    assert state(futures[0].result(0).id) == "queued"


def test_jobs_of_names_no_worker_serves_are_not_waited_for() -> None:
    """drain() waits for the names this process's workers serve; names= waits for others."""
    kickq.process("served", lambda job, data: data)
    job = kickq.create("unserved").result(5)
    kickq.testing.drain(timeout=5)
    assert state(job.id) == "queued"
    with pytest.raises(TimeoutError, match=r"1 queued.*unserved"):
        kickq.testing.drain(timeout=2, names=["unserved"])  # time for an answer when loaded


def test_a_stopped_worker_serves_no_name() -> None:
    """Once its worker is stopped, a name's queued jobs no longer hold drain() up."""
    worker = kickq.process("gone", lambda job, data: data)
    worker.stop(5)
    job = kickq.create("gone").result(5)
    kickq.testing.drain(timeout=5)
    assert state(job.id) == "queued"


def test_frozen_clock_delayed_job_runs_once_the_clock_moves_past_it() -> None:
    """Under a frozen clock a job with delay=60 stays delayed through drain(); after tick(61)
    drain() runs it, and move_to() does the same for the next one."""
    ran: list[str] = []
    with freeze_time(START) as frozen:
        kickq.process("remind", lambda job, data: ran.append(data))
        kickq.create("remind", "now")
        later = kickq.create("remind", "in a minute", delay=60).result(5)
        kickq.testing.drain(timeout=10)
        assert ran == ["now"]
        assert state(later.id) == "delayed"
        frozen.tick(61)
        kickq.testing.drain(timeout=10)
        assert ran == ["now", "in a minute"]
        tomorrow = kickq.create("remind", "tomorrow", delay=86400).result(5)
        kickq.testing.drain(timeout=10)
        assert state(tomorrow.id) == "delayed"
        frozen.move_to(START + datetime.timedelta(days=1, minutes=2))
        kickq.testing.drain(timeout=10)
    assert ran == ["now", "in a minute", "tomorrow"]


def test_frozen_clock_retries_run_when_their_interval_has_passed() -> None:
    """A failing job waits in retry until the clock passes its retry_interval, each time."""

    def flaky(job: kickq.Job, data: None) -> str:
        if len(job.runs) < 3:
            raise RuntimeError(f"run {len(job.runs)} failed")
        return "third time"

    with freeze_time(START) as frozen:
        kickq.process("flaky", flaky)
        job = kickq.create("flaky", retry=True, retry_count=5, retry_interval=600).result(5)
        kickq.testing.drain(timeout=10)
        assert state(job.id) == "retry"
        for _ in range(2):
            frozen.tick(601)
            kickq.testing.drain(timeout=10)
    done = kickq.get(job.id).result(5)
    assert done.state == "success" and [run.state for run in done.runs] == [
        "fail",
        "fail",
        "success",
    ]


def test_timeout_counts_real_time_under_a_frozen_clock() -> None:
    """With a run that never ends and a frozen clock, drain() raises TimeoutError, naming what
    is left, once its timeout has passed in real time: neither early nor never."""
    release = threading.Event()
    try:
        with freeze_time(START):
            kickq.process("stuck", lambda job, data: release.wait(30))
            kickq.create("stuck").result(5)
            drainer, raised = in_thread(lambda: kickq.testing.drain(timeout=1))
            drainer.join(0.5)
            assert drainer.is_alive()  # not before its timeout
            drainer.join(10)
            assert not drainer.is_alive()
    finally:
        release.set()
    assert len(raised) == 1 and isinstance(raised[0], TimeoutError)
    assert "after 1 s, still 0 queued, 0 due, 1 processing (job names: stuck)" in str(raised[0])


@pytest.mark.single_backend  # pure: never reaches Redis
@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"timeout": -1}, kickq.ConfigError),
        ({"timeout": "10"}, kickq.ConfigError),
        ({"names": [""]}, kickq.ConfigError),
        ({"names": [3]}, TypeError),
    ],
)
def test_bad_arguments_raise_at_once(kwargs: dict[str, object], error: type[Exception]) -> None:
    """A bad timeout or name raises before anything is read."""
    with pytest.raises(error):
        kickq.testing.drain(**kwargs)  # type: ignore[arg-type]


@pytest.mark.single_backend  # points kickq at a server that is not there
def test_an_unreachable_redis_raises_redis_unavailable() -> None:
    """drain() on a Redis that does not answer raises RedisUnavailable rather than hanging."""
    kickq.config(redis_url=f"redis://127.0.0.1:{free_port()}/0")
    with pytest.raises(kickq.RedisUnavailable):
        kickq.testing.drain(timeout=10)


@pytest.mark.single_backend  # points kickq at a server that is not there
def test_an_unreachable_redis_raises_with_workers_too() -> None:
    """The same when a worker serves names: the read of their jobs fails, drain() says so."""
    kickq.config(redis_url=f"redis://127.0.0.1:{free_port()}/0")
    kickq.process("anything", lambda job, data: data)
    with pytest.raises(kickq.RedisUnavailable):
        kickq.testing.drain(timeout=10)


@pytest.mark.single_backend  # a server of its own, stopped mid-test
def test_a_redis_that_does_not_answer_times_out(tmp_path: pathlib.Path) -> None:
    """drain() on a Redis that takes the connection but never answers (SIGSTOP) raises
    TimeoutError after its timeout, saying Redis did not answer."""
    server = RedisServer(tmp_path / "stopped").start()
    assert server.process is not None
    try:
        kickq.config(redis_url=server.url)
        kickq.process("any", lambda job, data: data)
        kickq.testing.drain(timeout=5)  # connected, and nothing to do
        os.kill(server.process.pid, signal.SIGSTOP)
        try:
            with pytest.raises(
                TimeoutError, match=r"after 0\.5 s, no answer from redis://127\.0\.0\.1"
            ):
                kickq.testing.drain(timeout=0.5)
        finally:
            os.kill(server.process.pid, signal.SIGCONT)
    finally:
        kickq.reset()
        server.stop()


@pytest.mark.single_backend  # pure: never reaches Redis
def test_what_is_left_reads_as_text() -> None:
    """The timeout's account of what is left names every kind, unsent requests when any."""
    assert str(Backlog(1, 2, 3)) == "1 queued, 2 due, 3 processing"
    assert str(Backlog(0, 0, 0, 4)) == (
        "0 queued, 0 due, 0 processing, 4 requests of this process not yet sent to Redis"
    )
    assert Backlog().empty and not Backlog(unsent=1).empty
