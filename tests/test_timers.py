"""Timers driven by the Python clock: delay, retry, ghost and purge, plus crash safety.

Every timer reads kickq's clock, so freezegun moves them all, from kickq's threads too.
"""

from __future__ import annotations

import asyncio
import datetime
import pathlib
import re
import signal
import subprocess
import sys
import threading

import pytest
import redis
from freezegun import freeze_time

import kickq
from support import RedisServer, all_keys, dbsize, index_size, job_key, wait_until

pytestmark = pytest.mark.both_backends

START = datetime.datetime(2030, 1, 1, tzinfo=datetime.timezone.utc)


def later(seconds: float) -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=seconds)


def state(job_id: str) -> str:
    return str(kickq.get(job_id).result(5).state)


def settle(name: str) -> None:
    """Run one quick job of `name` to the end: the worker and timer are demonstrably live."""
    marker = kickq.create(name, "marker").result(5)
    kickq.wait(marker.id, timeout=10).result(15)


def test_delayed_job_waits_for_the_clock(r: redis.Redis) -> None:
    """A job with delay=3600 stays delayed until the clock passes its time, then runs."""
    with freeze_time(START, tick=True) as frozen:
        kickq.process("later", lambda job, data: data)
        job = kickq.create("later", "x", delay=3600).result(5)
        assert job.state == "delayed"
        assert job.scheduled_for == job.create_time + datetime.timedelta(seconds=3600)
        settle("later")
        assert state(job.id) == "delayed"
        frozen.move_to(later(3601))
        done = kickq.wait(job.id, timeout=10).result(15)
        assert done.state == "success" and done.result == "x"
        assert done.runs[0].start_time >= job.scheduled_for  # type: ignore[operator]


def test_retry_runs_fail_fail_success() -> None:
    """A job that fails twice then succeeds, with retry_interval honoured each time."""
    attempts: list[int] = []

    def third_time_lucky(job: kickq.Job, data: str | None) -> str:
        if data == "marker":
            return data
        attempts.append(len(job.runs))
        if len(attempts) < 3:
            raise RuntimeError(f"attempt {len(attempts)} failed")
        return "finally"

    with freeze_time(START, tick=True) as frozen:
        kickq.process("lucky", third_time_lucky)
        job = kickq.create("lucky", retry=True, retry_count=3, retry_interval=600).result(5)
        wait_until(lambda: state(job.id) == "retry", timeout=10)
        settle("lucky")
        assert len(attempts) == 1 and state(job.id) == "retry"
        frozen.move_to(later(601))
        wait_until(lambda: len(attempts) == 2 and state(job.id) == "retry", timeout=10)
        frozen.move_to(later(601))
        done = kickq.wait(job.id, timeout=10).result(15)
    assert [run.state for run in done.runs] == ["fail", "fail", "success"]
    assert done.result == "finally" and done.last_error == "RuntimeError: attempt 2 failed"


def test_retries_run_out_and_the_job_fails_for_good() -> None:
    """After retry_count retries the job ends fail; its hotjob future raises JobFailed."""

    def always(job: kickq.Job, data: None) -> None:
        raise ValueError("never works")

    kickq.process("hopeless", always)
    job = kickq.create("hopeless", retry=True, retry_count=2, retry_interval=0, hotjob=True).result(
        5
    )
    with pytest.raises(kickq.JobFailed) as failed:
        job.hotjob_future.result(15)  # type: ignore[union-attr]
    final = failed.value.job
    assert final.state == "fail" and final.complete and not final.success
    assert [run.state for run in final.runs] == ["fail", "fail", "fail"]


def test_retry_interval_function_from_config() -> None:
    """retry_interval may be a function of the retry number, set in the worker's config."""
    asked: list[int] = []

    def interval(n: int) -> float:
        asked.append(n)
        return 0

    kickq.config(job_flags={"fn": {"retry": True, "retry_count": 2, "retry_interval": interval}})
    kickq.process("fn", lambda job, data: 1 / 0)
    job = kickq.create("fn").result(5)
    assert job.retry_interval is None
    with pytest.raises(kickq.JobFailed):
        kickq.wait(job.id, timeout=10).result(15)
    assert asked == [1, 2]


def test_ghost_is_requeued_after_ghost_interval_and_late_return_ignored() -> None:
    """An overrun run becomes a ghost, reruns after ghost_interval; its late return is ignored."""
    release = threading.Event()
    runs: list[int] = []

    def stuck_once(job: kickq.Job, data: str | None) -> str:
        if data == "marker":
            return data
        runs.append(len(job.runs))
        if len(runs) == 1:
            release.wait(20)
            return "late"
        return "second"

    with freeze_time(START, tick=True) as frozen:
        kickq.process("ghostly", stuck_once, concurrent_jobs=1)
        job = kickq.create("ghostly", process_timeout=5, ghost_interval=900).result(5)
        wait_until(lambda: runs, timeout=10)
        frozen.move_to(later(6))
        wait_until(lambda: state(job.id) == "ghost", timeout=10)
        ghosted = kickq.get(job.id).result(5)
        assert ghosted.runs[0].state == "ghost" and "process_timeout" in ghosted.last_error
        settle("ghostly")  # the ghost's slot was given back: another job ran meanwhile
        frozen.move_to(later(901))
        done = kickq.wait(job.id, timeout=10).result(15)
        assert done.result == "second"
        release.set()
        settle("ghostly")
    final = kickq.get(job.id).result(5)
    assert final.result == "second" and [r.state for r in final.runs] == ["ghost", "success"]


def test_ghost_count_exhausted_fails_the_job() -> None:
    """With ghost_retry off, an overrun run fails the job for good."""

    async def forever(job: kickq.Job, data: None) -> None:
        await asyncio.sleep(3600)

    with freeze_time(START, tick=True) as frozen:
        kickq.process("stuck", forever)
        job = kickq.create("stuck", process_timeout=5, ghost_retry=False).result(5)
        wait_until(lambda: state(job.id) == "processing", timeout=10)
        frozen.move_to(later(6))
        with pytest.raises(kickq.JobFailed) as failed:
            kickq.wait(job.id, timeout=10).result(15)
    assert [run.state for run in failed.value.job.runs] == ["ghost"]


def test_coroutine_handler_is_cancelled_when_it_ghosts() -> None:
    """A coroutine handler whose run ghosts is cancelled."""
    cancelled = threading.Event()
    started = threading.Event()

    async def slow(job: kickq.Job, data: None) -> None:
        started.set()
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    with freeze_time(START, tick=True) as frozen:
        kickq.process("cancel-me", slow)
        kickq.create("cancel-me", process_timeout=5, ghost_count=0).result(5)
        assert started.wait(10)
        frozen.move_to(later(6))
        assert cancelled.wait(10)


def test_finished_job_is_purged_after_purge_timeout(r: redis.Redis) -> None:
    """A finished job's record and index entries are deleted purge_timeout after it finished."""
    with freeze_time(START, tick=True) as frozen:
        kickq.config(purge_timeout=3600)
        kickq.process("purgeable", lambda job, data: "done")
        job = kickq.create("purgeable").result(5)
        kickq.wait(job.id, timeout=10).result(15)
        assert r.exists(job_key(job.id))
        frozen.move_to(later(3601))
        wait_until(lambda: not r.exists(job_key(job.id)), timeout=10)
    with pytest.raises(kickq.JobNotFound):
        kickq.get(job.id).result(5)
    assert index_size(r, "finished") == 0
    with pytest.raises(kickq.JobNotFound):
        kickq.wait(job.id).result(5)


def test_hotjob_timeout_follows_the_clock() -> None:
    """hotjob_timeout counts on the kickq clock from creation."""
    with freeze_time(START, tick=True) as frozen:
        job = kickq.create("unhandled", hotjob=True, hotjob_timeout=300).result(5)
        frozen.move_to(later(301))
        with pytest.raises(kickq.HotjobTimeout):
            job.hotjob_future.result(10)  # type: ignore[union-attr]


def test_sigkilled_worker_costs_a_ghost_rerun(subprocess_env: dict[str, str]) -> None:
    """A worker process SIGKILLed mid-run: the job is re-run by another worker and succeeds."""
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import kickq, time\n"
            "def hang(job, data):\n"
            "    print('started', flush=True)\n"
            "    time.sleep(60)\n"
            "kickq.process('crashy', hang)\n"
            "time.sleep(60)\n",
        ],
        env=subprocess_env,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        job = kickq.create("crashy", process_timeout=1, ghost_interval=0).result(5)
        assert child.stdout is not None and child.stdout.readline().strip() == "started"
        child.send_signal(signal.SIGKILL)
        child.wait(10)
        kickq.process("crashy", lambda j, d: "rescued")
        done = kickq.wait(job.id, timeout=20).result(25)
    finally:
        child.kill()
        child.wait(10)
        assert child.stdout is not None
        child.stdout.close()
    assert done.result == "rescued"
    assert [run.state for run in done.runs] == ["ghost", "success"]


@pytest.mark.single_backend  # a server of its own
def test_jobs_survive_a_persistent_redis_restart(tmp_path: pathlib.Path) -> None:
    """Delayed, running and finished jobs all reach their end state across a Redis restart."""
    server = RedisServer(tmp_path / "persist", persistent=True).start()
    release = threading.Event()
    try:
        kickq.reset()
        kickq.config(redis_url=server.url)
        kickq.process("durable", lambda job, data: release.wait(10) and data, concurrent_jobs=5)
        finished = kickq.create("durable", "finished").result(5)
        release.set()
        kickq.wait(finished.id, timeout=10).result(15)
        release.clear()
        running = kickq.create("durable", "running").result(5)
        wait_until(lambda: state(running.id) == "processing", timeout=10)
        delayed = kickq.create("durable", "delayed", delay=1).result(5)
        server.restart()
        release.set()
        for job in (finished, running, delayed):
            done = wait_until(lambda j=job: _wait_quietly(j.id), timeout=30, what=job.data)
            assert done.state == "success" and done.result == job.data
    finally:
        kickq.reset()
        server.stop()


def _wait_quietly(job_id: str) -> kickq.Job | None:
    try:
        return kickq.wait(job_id, timeout=5).result(10)
    except (kickq.RedisUnavailable, kickq.HotjobTimeout, ConnectionError):
        return None


@pytest.mark.slow
@pytest.mark.timeout(180)  # 20,000 jobs run, then purged: about a minute on a busy 2-core machine
def test_many_finished_jobs_purge_down_to_no_keys(r: redis.Redis) -> None:
    """20,000 finished jobs are purged to zero keys of theirs once purge_timeout has passed."""
    n = 20_000
    with freeze_time(START, tick=True) as frozen:
        kickq.config(purge_timeout=600)
        kickq.process("bulk", lambda job, data: None, concurrent_jobs=50)
        [future.result(30) for future in kickq.create_many("bulk", range(n))]
        wait_until(lambda: index_size(r, "finished") == n, timeout=120, what="all finished")
        # n records, the finished and success indexes, the name's bounded stats (the set of
        # names, its completions per minute and its last process times), the workers and the
        # last deadline announced
        kept = ["minutes:{bulk}", "names", "next_due", "times:{bulk}", "workers"]
        assert dbsize(r) == n + 2 + len(kept)
        frozen.move_to(later(601))
        wait_until(lambda: dbsize(r) == len(kept), timeout=60, what="everything purged")
        assert sorted(re.sub(r"^kickq:(\{.\}:)?", "", key) for key in all_keys(r)) == kept


def _create_elsewhere(subprocess_env: dict[str, str], code: str) -> str:
    """Run `code` in a child kickq process that exits at once; returns what it printed."""
    done = subprocess.run(
        [sys.executable, "-c", f"import kickq\n{code}\nkickq.reset()\n"],
        env=subprocess_env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return done.stdout.strip()


def test_a_deadline_set_by_another_process_is_acted_on_at_its_time(
    r: redis.Redis, subprocess_env: dict[str, str]
) -> None:
    """A delayed job created by a process that is gone by its due time is queued then by this
    one, although this process does not poll Redis: the deadline was announced to it. A
    damaged announcement key changes nothing."""
    kickq.get("0" * 32).exception(5)  # this process's timer is up, and has ticked
    keys = kickq._engine.runtime.get().store.keys_of_name("elsewhere")
    r.hset(keys.next_due, "not", "a string")
    job_id = _create_elsewhere(
        subprocess_env, "print(kickq.create('elsewhere', 1, delay=1.5).result(10).id)"
    )
    wait_until(
        lambda: kickq.get(job_id).result(5).state is kickq.State.QUEUED,
        timeout=10,
        what="the job queued by this process's timer",
    )
    assert r.type(keys.next_due) == "string"


def test_a_run_of_a_dead_process_is_ghosted_at_its_announced_deadline(
    subprocess_env: dict[str, str],
) -> None:
    """A run whose process died is ghosted by this process at the run's deadline, which the
    claim announced (no poll, no safety sweep needed)."""
    kickq.get("0" * 32).exception(5)
    job = kickq.create("dies", process_timeout=1, ghost_retry=False).result(5)
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import kickq, os, time\n"
            "kickq.process('dies', lambda job, data: os._exit(0))\n"
            "time.sleep(30)\n",
        ],
        env=subprocess_env,
    )
    try:
        assert child.wait(20) == 0  # it claimed the job, then died in its handler
        done = kickq.wait(job.id, timeout=10).exception(15)
    finally:
        child.kill()
        child.wait(10)
    assert isinstance(done, kickq.JobFailed)
    assert [run.state for run in done.job.runs] == ["ghost"]
