"""Runs a stopping worker gives up are handed back at once: `kickq worker` whose --grace ran out
(or on a second signal), `Worker.stop(timeout)` and `kickq.reset()`. The job is queued again,
its run kept as an abandoned ghost that uses up no retry, and the given-up run's late end
changes nothing (the record's version fences it)."""

from __future__ import annotations

import asyncio
import datetime
import logging
import pathlib
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import connect_kickq

import kickq
import kickq._engine.runtime
from kickq._model import lifecycle
from kickq._model.job import Job, Run, State
from kickq._redis.stored import StoredJob
from kickq.cli import worker as worker_cli
from support import RedisCluster, RedisServer, wait_until

pytestmark = [
    pytest.mark.both_backends,
    pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals"),
]

BLOCKING = """
import pathlib
import time

import kickq


@kickq.processor("handback-block")
def block(job, data):
    pathlib.Path(data["marker"]).write_text(job.id)
    time.sleep(data["seconds"])
    return "slept"
"""
NOW = datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)


class CliWorker:
    """`kickq worker handback_app ...` in `directory`, its log in a file."""

    def __init__(self, directory: pathlib.Path, env: dict[str, str], *args: str) -> None:
        self.log_path = directory / "worker.log"
        with self.log_path.open("w") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "kickq", "worker", "handback_app", *args],
                env=env,
                cwd=directory,
                stdout=subprocess.DEVNULL,
                stderr=log,
            )

    @property
    def log(self) -> str:
        return self.log_path.read_text()


@pytest.fixture
def app(tmp_path: pathlib.Path) -> pathlib.Path:
    (tmp_path / "handback_app.py").write_text(BLOCKING)
    return tmp_path


@pytest.fixture
def cli_worker(app: pathlib.Path, subprocess_env: dict[str, str]) -> Iterator[Any]:
    started: list[CliWorker] = []

    def start(*args: str) -> CliWorker:
        started.append(CliWorker(app, subprocess_env, *args))
        return started[-1]

    yield start
    for worker in started:
        if worker.process.poll() is None:
            worker.process.kill()
            worker.process.wait(10)


def blocking_job(app: pathlib.Path, seconds: float = 60, **options: Any) -> Job:
    data = {"marker": str(app / "started"), "seconds": seconds}
    return kickq.create("handback-block", data, **options).result(5)


def handed_back(job_id: str) -> Job | None:
    """The job, once queued again with its last run abandoned."""
    job = kickq.get(job_id).result(5)
    if job.state is State.QUEUED and job.runs and lifecycle.abandoned(job.runs[-1]):
        return job
    return None


def assert_abandoned(job: Job, runs: int = 1) -> None:
    assert job.state is State.QUEUED
    assert len(job.runs) == runs
    run = job.runs[-1]
    assert (run.state, run.error) == (State.GHOST, lifecycle.ABANDONED)
    assert run.process_time is not None and run.process_time >= 0
    assert job.last_error == lifecycle.ABANDONED
    assert job.scheduled_for is None


def run_it_again(job_id: str) -> Job:
    """Another worker takes the job handed back and runs it to success."""
    name = kickq.get(job_id).result(5).name
    worker = kickq.process(name, lambda job, data: "ran again")
    try:
        return kickq.wait(job_id, timeout=20).result(25)
    finally:
        worker.stop(10)


def test_grace_running_out_hands_the_job_back_and_exits_0(
    cli_worker: Any, app: pathlib.Path
) -> None:
    """SIGTERM with --grace 1 and a handler that blocks: the job is queued again at once (not
    after process_timeout), its run abandoned, the worker exits 0; another worker runs it."""
    job = blocking_job(app, process_timeout=600)
    worker = cli_worker("--grace", "1")
    wait_until((app / "started").exists, 20, what="the job to start")
    worker.process.send_signal(signal.SIGTERM)
    assert worker.process.wait(15) == 0, worker.log
    back = handed_back(job.id)
    assert back is not None, kickq.get(job.id).result(5)
    assert_abandoned(back)
    assert "1 jobs still running after 1s; handed back, queued again" in worker.log
    assert f"handback-block {job.id} queued in " in worker.log
    assert "Traceback" not in worker.log
    done = run_it_again(job.id)
    assert (done.state, done.result) == (State.SUCCESS, "ran again")
    assert [run.state for run in done.runs] == [State.GHOST, State.SUCCESS]


def test_a_second_signal_hands_the_job_back_and_exits_at_once(
    cli_worker: Any, app: pathlib.Path
) -> None:
    """A second signal, while the first waits out a long grace, hands the running job back and
    exits with 128 + its number."""
    job = blocking_job(app, process_timeout=600)
    worker = cli_worker("--grace", "600")
    wait_until((app / "started").exists, 20, what="the job to start")
    worker.process.send_signal(signal.SIGTERM)
    wait_until(lambda: "stopping" in worker.log, 10, what="the first signal to be handled")
    worker.process.send_signal(signal.SIGINT)
    assert worker.process.wait(5) == 128 + signal.SIGINT, worker.log
    assert "second signal (SIGINT)" in worker.log
    back = handed_back(job.id)
    assert back is not None, kickq.get(job.id).result(5)
    assert_abandoned(back)


def held(name: str) -> tuple[kickq.Worker, Job, threading.Event, threading.Event]:
    """A worker whose one job is running, its handler held until `release` is set; `returned`
    is set as the handler returns."""
    release, started, returned = threading.Event(), threading.Event(), threading.Event()

    def handler(job: Job, data: Any) -> str:
        started.set()
        release.wait(30)
        returned.set()
        return "late"

    worker = kickq.process(name, handler)
    job = kickq.create(name, retry_count=0, process_timeout=600).result(5)
    assert started.wait(10)
    return worker, job, release, returned


def test_worker_stop_hands_back_and_ignores_the_late_end(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Worker.stop(timeout) that expires hands the run back; the handler's thread, released
    later, ends unseen: the job stays as the hand-back left it, and is run again elsewhere."""
    caplog.set_level(logging.INFO, logger="kickq")
    worker, job, release, returned = held("handback-stop")
    try:
        worker.stop(0.2)
        assert worker.stopped
        back = handed_back(job.id)
        assert back is not None, kickq.get(job.id).result(5)
        assert_abandoned(back)
        assert back.retry_count == 0  # and yet it is queued: an abandoned run is no failure
    finally:
        release.set()
    assert returned.wait(10)
    wait_until(
        lambda: any("returned late; ignored" in r.getMessage() for r in caplog.records),
        10,
        what="the late end to be ignored",
    )
    assert kickq.get(job.id).result(5) == back
    done = run_it_again(job.id)
    assert (done.state, done.result) == (State.SUCCESS, "ran again")


def test_reset_hands_back_the_runs_in_progress(target: RedisServer | RedisCluster) -> None:
    """kickq.reset() with a run in progress hands it back before it closes."""
    _, job, release, _ = held("handback-reset")
    try:
        kickq.reset()
    finally:
        release.set()
    connect_kickq(target)
    back = handed_back(job.id)
    assert back is not None, kickq.get(job.id).result(5)
    assert_abandoned(back)


def claimed(name: str) -> StoredJob:
    """A job of `name` created and claimed, as a worker's claim leaves it (no worker runs it)."""
    kickq.create(name).result(5)
    store = kickq._engine.runtime.get().store
    (found,) = store.parse_claimed(store.run(store.claim_call([name], 1, "w", "w.1")))
    assert isinstance(found, StoredJob)
    return found


def apply(stored: StoredJob, change: lifecycle.Change | None) -> Any:
    assert change is not None
    store = kickq._engine.runtime.get().store
    return store.run(store.transition_call(change, stored, 60))


def test_a_run_that_ended_before_the_hand_back_is_not_touched() -> None:
    """The hand-back of a run whose end Redis took first changes nothing."""
    run = claimed("handback-ended")
    now = kickq._model.clock.now()
    ended = lifecycle.end_run(run.job, lifecycle.Succeeded(1), now, lambda job, n: 0.0)
    assert apply(run, ended) == 1
    assert apply(run, lifecycle.abandon(run.job, now)) == 0
    job = kickq.get(run.job.id).result(5)
    assert (job.state, job.result, [r.state for r in job.runs]) == (
        State.SUCCESS,
        1,
        [State.SUCCESS],
    )


def test_the_end_of_a_run_handed_back_is_fenced_off() -> None:
    """Once its run is handed back, that run's end (had a worker sent it) changes nothing."""
    run = claimed("handback-late")
    now = kickq._model.clock.now()
    assert apply(run, lifecycle.abandon(run.job, now)) == 1
    late = lifecycle.end_run(run.job, lifecycle.Succeeded(1), now, lambda job, n: 0.0)
    assert apply(run, late) == 0
    job = kickq.get(run.job.id).result(5)
    assert_abandoned(job)
    assert kickq.stats().result(5)["handback-late"].counts["queued"] == 1


# -- the decision (pure) ----------------------------------------------------------------------


def processing(runs: tuple[Run, ...] = (), **options: Any) -> Job:
    count = len(runs) + 1
    current = Run(count, NOW - datetime.timedelta(seconds=2), None, State.PROCESSING)
    return Job(
        id="j1",
        name="n",
        state=State.PROCESSING,
        priority=7,
        runs=(*runs, current),
        **options,
    )


def abandoned_runs(count: int) -> tuple[Run, ...]:
    return tuple(Run(i + 1, NOW, 1.0, State.GHOST, lifecycle.ABANDONED) for i in range(count))


@pytest.mark.single_backend
def test_abandon_queues_the_job_again_at_its_priority() -> None:
    change = lifecycle.abandon(processing(), NOW)
    assert change is not None and change.events == ("queued",)
    job = change.job
    assert_abandoned(job)
    assert job.runs[-1].process_time == 2.0
    assert lifecycle.placement(job, 60) == ("queue", 7)


@pytest.mark.single_backend
def test_abandoned_runs_use_up_no_budget_up_to_the_limit() -> None:
    """Ten abandoned runs are free: a job with no retries and no ghost re-run left is queued
    again each time; the eleventh counts as a ghost; ghosts and failures count as before."""
    free = lifecycle.FREE_ABANDONS
    strict = {"retry_count": 0, "ghost_count": 0}
    change = lifecycle.abandon(processing(abandoned_runs(free - 1), **strict), NOW)
    assert change is not None and change.job.state is State.QUEUED
    over = lifecycle.abandon(processing(abandoned_runs(free), **strict), NOW)
    assert over is not None and over.events == ("fail",)
    assert over.job.state is State.FAIL and over.job.last_error == lifecycle.ABANDONED
    again = lifecycle.abandon(processing(abandoned_runs(free), ghost_count=1), NOW)
    assert again is not None and again.job.state is State.GHOST
    # a real ghost after ten abandoned runs is the job's first that counts
    ghost = lifecycle.end_run(
        processing(abandoned_runs(free), ghost_count=1), lifecycle.Ghosted(), NOW, lambda j, n: 0
    )
    assert ghost is not None and ghost.job.state is State.GHOST
    # a requeued job's budgets start again: its old abandoned runs are free no more to count
    renewed = processing(abandoned_runs(free), budget_start=free, **strict)
    fresh = lifecycle.abandon(renewed, NOW)
    assert fresh is not None and fresh.job.state is State.QUEUED


@pytest.mark.single_backend
def test_abandon_leaves_anything_but_a_run_in_progress_alone() -> None:
    assert lifecycle.abandon(Job(id="j", name="n", state=State.QUEUED), NOW) is None
    assert lifecycle.abandon(Job(id="j", name="n", state=State.PROCESSING), NOW) is None


def test_stop_with_nothing_left_to_hand_back_returns_0() -> None:
    """The CLI's stop() exits 0 when the grace ran out and the run was handed back."""
    worker, job, release, _ = held("handback-cli-stop")
    try:
        assert worker_cli.stop([worker], 0.2) == 0
    finally:
        release.set()
    assert handed_back(job.id) is not None


@pytest.mark.single_backend
def test_runs_redis_does_not_take_back_are_left_to_ghost(
    tmp_path: pathlib.Path, caplog: pytest.LogCaptureFixture
) -> None:
    """With Redis down when the grace runs out, the run stays processing (its deadline ghosts
    it, as before) and the CLI's stop() returns 1, saying so."""
    own = RedisServer(tmp_path / "redis", persistent=True).start()
    kickq.reset()
    kickq.config(redis_url=own.url, redis_options={"socket_timeout": 0.5})
    try:
        worker, job, release, _ = held("handback-down")
        own.stop()
        try:
            assert worker_cli.stop([worker], 0.2) == 1
        finally:
            release.set()
        assert any("could not hand back 1 runs" in r.getMessage() for r in caplog.records)
        assert any("could not be handed back" in r.getMessage() for r in caplog.records)
        own.start()
        assert kickq.get(job.id).result(10).state is State.PROCESSING
    finally:
        kickq.reset()
        own.stop()


def test_a_coroutine_handed_back_is_cancelled() -> None:
    """A coroutine handler's run given up is cancelled, and its job handed back."""
    started, cancelled = threading.Event(), threading.Event()

    async def handler(job: Job, data: Any) -> str:
        started.set()
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return "never"

    worker = kickq.process("handback-async", handler)
    job = kickq.create("handback-async", process_timeout=600).result(5)
    assert started.wait(10)
    worker.stop(0.2)
    assert cancelled.wait(10)
    back = handed_back(job.id)
    assert back is not None, kickq.get(job.id).result(5)
    assert_abandoned(back)


def test_a_thread_handler_given_up_sees_cancelled() -> None:
    """Inside a thread handler whose run was given up, kickq.cancelled() turns True."""
    started, saw = threading.Event(), threading.Event()

    def handler(job: Job, data: Any) -> str:
        started.set()
        wait_until(kickq.cancelled, 20, what="the run to be given up")
        saw.set()
        return "stopped early"

    worker = kickq.process("handback-cooperative", handler)
    job = kickq.create("handback-cooperative", process_timeout=600).result(5)
    assert started.wait(10)
    worker.stop(0.2)
    assert saw.wait(10)
    assert handed_back(job.id) is not None
