"""Processing jobs: every handler style, concurrency, exactly-once, failures, other processes."""

from __future__ import annotations

import asyncio
import concurrent.futures
import subprocess
import sys
import threading
import time

import pytest
import redis

import kickq
from support import RedisServer, index_size, scaled, wait_until

pytestmark = pytest.mark.both_backends


def finished(job_id: str, timeout: float = 10) -> kickq.Job:
    """The job once it is complete (success or failure)."""
    try:
        return kickq.wait(job_id, timeout=timeout).result(timeout + 5)
    except kickq.JobFailed as failed:
        return failed.job


def test_plain_handler_result_is_stored() -> None:
    """A plain handler's return value becomes job.result and the job succeeds."""
    kickq.process("add", lambda job, data: data["a"] + data["b"])
    job = kickq.create("add", {"a": 2, "b": 3}).result(5)
    done = finished(job.id)
    assert done.state == kickq.State.SUCCESS and done.success and done.complete
    assert done.result == 5
    assert kickq.get(job.id).result(5).result == 5
    assert [run.state for run in done.runs] == ["success"]
    assert done.total_process_time is not None and done.finish_time is not None


def test_handler_sees_its_own_run_as_processing() -> None:
    """Inside the handler the job is processing and its current run is listed as processing."""
    seen: list[kickq.Job] = []
    kickq.process("look", lambda job, data: seen.append(job))
    job = kickq.create("look").result(5)
    finished(job.id)
    assert seen[0].state == "processing"
    assert seen[0].runs[-1].state == "processing" and seen[0].runs[-1].count == 1


def test_coroutine_handler() -> None:
    """A coroutine handler is awaited on kickq's loop thread and its result stored."""

    async def fetch(job: kickq.Job, data: dict[str, int]) -> int:
        await asyncio.sleep(0.01)
        return data["x"] * 10

    kickq.process("fetch", fetch)
    job = kickq.create("fetch", {"x": 4}).result(5)
    assert finished(job.id).result == 40


def test_callback_handler_done_and_done_with_error() -> None:
    """A (job, data, done) handler ends its run when done() is called; done(err) fails it."""

    def legacy(job: kickq.Job, data: str, done: object) -> None:
        assert callable(done)
        if data == "bad":
            threading.Timer(0.01, lambda: done("it broke")).start()
        else:
            threading.Timer(0.01, done).start()

    kickq.process("legacy", legacy)
    good = kickq.create("legacy", "good").result(5)
    bad = kickq.create("legacy", "bad").result(5)
    assert finished(good.id).state == "success"
    failed = finished(bad.id)
    assert failed.state == "fail" and failed.last_error == "it broke"
    assert failed.runs[-1].error == "it broke"


def test_handler_returning_future_or_awaitable() -> None:
    """A handler returning a concurrent Future or an awaitable ends its run when that does."""
    pool = concurrent.futures.ThreadPoolExecutor(1)

    async def later() -> str:
        await asyncio.sleep(0.01)
        return "awaited"

    kickq.process("fut", lambda job, data: pool.submit(lambda: "from future"))
    kickq.process("aw", lambda job, data: later())
    a = kickq.create("fut").result(5)
    b = kickq.create("aw").result(5)
    assert finished(a.id).result == "from future"
    assert finished(b.id).result == "awaited"
    pool.shutdown()


def test_handler_exception_fails_the_run_and_worker_goes_on() -> None:
    """An exception fails the run with its message recorded; the worker keeps processing."""

    def flaky(job: kickq.Job, data: int) -> int:
        if data == 0:
            raise ValueError("zero is not allowed")
        return data

    kickq.process("flaky", flaky)
    bad = kickq.create("flaky", 0).result(5)
    good = kickq.create("flaky", 7).result(5)
    failed = finished(bad.id)
    assert failed.state == "fail" and not failed.success and failed.complete
    assert "zero is not allowed" in (failed.last_error or "")
    assert "zero is not allowed" in (failed.runs[0].error or "")
    assert finished(good.id).result == 7


def test_non_json_result_fails_the_run() -> None:
    """A handler returning a value that is not JSON fails its run with a clear error."""
    kickq.process("weird", lambda job, data: {1, 2})
    job = kickq.create("weird").result(5)
    failed = finished(job.id)
    assert failed.state == "fail"
    assert "JSON" in (failed.last_error or "")


def test_base_exception_in_handler_fails_only_the_run() -> None:
    """A handler raising SystemExit fails its run; the worker survives and runs the next job."""

    def exits(job: kickq.Job, data: int) -> int:
        if data == 0:
            raise SystemExit("bye")
        return data

    kickq.process("exits", exits)
    bad = kickq.create("exits", 0).result(5)
    good = kickq.create("exits", 1).result(5)
    assert finished(bad.id).state == "fail"
    assert finished(good.id).result == 1


def test_concurrent_jobs_caps_parallel_runs() -> None:
    """No more than concurrent_jobs runs of a worker are in progress at once."""
    lock = threading.Lock()
    active = [0]
    peak = [0]
    full = threading.Event()  # 3 runs were in progress at once

    def slow(job: kickq.Job, data: None) -> None:
        with lock:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
            if active[0] == 3:
                full.set()
        full.wait(scaled(10))  # the first runs overlap however slowly the others start
        with lock:
            active[0] -= 1

    kickq.process("slow", {"concurrent_jobs": 3}, slow)
    jobs = [f.result(5) for f in [kickq.create("slow") for _ in range(15)]]
    for job in jobs:
        finished(job.id)
    assert peak[0] == 3


def test_two_thousand_jobs_each_run_exactly_once(r: redis.Redis) -> None:
    """2,000 jobs through concurrent_jobs=10 all succeed, each run exactly once."""
    counts: dict[int, int] = {}
    lock = threading.Lock()

    def count(job: kickq.Job, data: int) -> None:
        with lock:
            counts[data] = counts.get(data, 0) + 1

    kickq.process("count", count, concurrent_jobs=10)
    futures = [kickq.create("count", i) for i in range(2000)]
    ids = [f.result(10).id for f in futures]
    wait_until(lambda: len(counts) == 2000, timeout=60, what="2,000 runs")
    waits = [kickq.wait(job_id, timeout=30) for job_id in ids]
    assert all(w.result(35).state == "success" for w in waits)
    assert set(counts) == set(range(2000)) and set(counts.values()) == {1}
    assert index_size(r, "processing") == 0


def test_one_worker_serves_several_names() -> None:
    """process() with a list of names runs jobs of each name."""
    kickq.process(["a", "b"], {"concurrent_jobs": 2}, lambda job, data: job.name)
    a = kickq.create("a").result(5)
    b = kickq.create("b").result(5)
    assert finished(a.id).result == "a"
    assert finished(b.id).result == "b"


def test_stop_lets_running_jobs_finish_and_fetches_no_more() -> None:
    """worker.stop() waits for the job in progress and then claims nothing new."""
    started = threading.Event()

    def slow(job: kickq.Job, data: int) -> int:
        started.set()
        time.sleep(0.2)
        return data

    worker = kickq.process("stoppable", slow)
    first = kickq.create("stoppable", 1).result(5)
    assert started.wait(5)
    worker.stop(timeout=5)
    assert kickq.get(first.id).result(5).state == "success"
    later = kickq.create("stoppable", 2).result(5)
    with pytest.raises(kickq.HotjobTimeout):
        kickq.wait(later.id, timeout=0.5).result(5)
    assert kickq.get(later.id).result(5).state == "queued"


def test_deleted_job_never_runs() -> None:
    """A job deleted while queued is never run, and get() says it is gone."""
    ran: list[str] = []
    job = kickq.create("deleted", "x").result(5)
    assert kickq.delete(job.id).result(5) is True
    assert kickq.delete(job.id).result(5) is False
    kickq.process("deleted", lambda j, d: ran.append(j.id))
    marker = kickq.create("deleted", "marker").result(5)
    finished(marker.id)
    assert ran == [marker.id]
    with pytest.raises(kickq.JobNotFound):
        kickq.get(job.id).result(5)


def test_job_created_here_is_processed_by_a_subprocess(subprocess_env: dict[str, str]) -> None:
    """A worker in another process picks up a job created here; we see its result."""
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import kickq, time\n"
            "kickq.process('remote', lambda job, data: {'pid_seen': data * 2})\n"
            "time.sleep(30)\n",
        ],
        env=subprocess_env,
    )
    try:
        job = kickq.create("remote", 21).result(5)
        done = kickq.wait(job.id, timeout=20).result(25)
        assert done.result == {"pid_seen": 42}
    finally:
        child.kill()
        child.wait(10)


@pytest.mark.single_backend  # a server of its own
def test_worker_survives_redis_restart(tmp_path: object) -> None:
    """A worker keeps going after its Redis restarts, and processes jobs created afterwards."""
    import pathlib

    server = RedisServer(pathlib.Path(str(tmp_path)) / "restart", persistent=True).start()
    try:
        kickq.reset()
        kickq.config(redis_url=server.url)
        kickq.process("survive", lambda job, data: data + 1)
        before = kickq.create("survive", 1).result(5)
        assert finished(before.id).result == 2
        server.restart()
        after = wait_until(lambda: _create_when_up("survive", 41), timeout=20, what="create")
        assert kickq.wait(after.id, timeout=20).result(25).result == 42
    finally:
        kickq.reset()
        server.stop()


def _create_when_up(name: str, data: int) -> kickq.Job | None:
    try:
        return kickq.create(name, data).result(10)
    except kickq.RedisUnavailable:
        return None
