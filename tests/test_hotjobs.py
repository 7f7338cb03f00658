"""Hotjobs and waiting for results over pub/sub: success, failure, timeout, races, reconnects."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
import time

import pytest
import redis

import kickq
import kickq._engine.runtime
from support import client_lists, numsub, scaled, wait_until

pytestmark = [pytest.mark.both_backends, pytest.mark.both_parsers]


def done_channel(job_id: str) -> str:
    return kickq._engine.runtime.get().keys.done(job_id)


def test_hotjob_resolves_with_the_finished_job() -> None:
    """job.hotjob_future resolves with the finished Job carrying the handler's result."""
    kickq.process("hot", lambda job, data: {"echo": data})
    job = kickq.create("hot", [1, 2], hotjob=True).result(5)
    assert isinstance(job.hotjob_future, kickq.KickqFuture)
    done = job.hotjob_future.result(10)
    assert done.id == job.id and done.state == "success" and done.result == {"echo": [1, 2]}


def test_non_hotjob_has_no_future() -> None:
    """A job created without hotjob has hotjob_future None."""
    assert kickq.create("cold").result(5).hotjob_future is None


def test_hotjob_failure_raises_job_failed() -> None:
    """A hotjob that fails for good fails its future with JobFailed carrying .job and .error."""

    def boom(job: kickq.Job, data: None) -> None:
        raise RuntimeError("kaboom")

    kickq.process("boom", boom)
    job = kickq.create("boom", hotjob=True).result(5)
    with pytest.raises(kickq.JobFailed) as failed:
        job.hotjob_future.result(10)  # type: ignore[union-attr]
    assert failed.value.job.id == job.id and failed.value.job.state == "fail"
    assert "kaboom" in str(failed.value.error)


def test_hotjob_timeout_fires_on_time() -> None:
    """With no worker, the hotjob future fails with HotjobTimeout once its timeout has passed,
    not before (and within a bounded wait: how soon after is for the benchmarks)."""
    start = time.monotonic()
    job = kickq.create("nobody", hotjob=True, hotjob_timeout=0.5).result(5)
    with pytest.raises(kickq.HotjobTimeout):
        job.hotjob_future.result(10)  # type: ignore[union-attr]
    assert time.monotonic() - start >= 0.5


def test_hotjob_timeout_is_a_timeout_error() -> None:
    """HotjobTimeout can be caught as the built-in TimeoutError."""
    job = kickq.create("nobody", hotjob=True, hotjob_timeout=0.1).result(5)
    with pytest.raises(TimeoutError):
        job.hotjob_future.result(10)  # type: ignore[union-attr]


def test_completion_before_subscription_is_not_missed() -> None:
    """A handler already running when the hotjob is created, finishing at once, still resolves."""
    kickq.process("instant", lambda job, data: "fast", concurrent_jobs=4)
    futures = [kickq.create("instant", i, hotjob=True) for i in range(200)]
    done = [f.result(5).hotjob_future.result(10) for f in futures]  # type: ignore[union-attr]
    assert all(d.result == "fast" for d in done)


def test_wait_for_finished_job_resolves_from_record() -> None:
    """kickq.wait() on a job that finished long ago resolves at once from its record."""
    kickq.process("past", lambda job, data: "old news")
    job = kickq.create("past").result(5)
    kickq.wait(job.id, timeout=10).result(15)
    assert kickq.wait(job.id, timeout=5).result(10).result == "old news"


def test_wait_for_unknown_job_fails_at_once() -> None:
    """Waiting on an id that does not exist fails with JobNotFound, without hanging."""
    with pytest.raises(kickq.JobNotFound):
        kickq.wait("no-such-job").result(5)


def test_wait_fails_when_job_is_deleted_meanwhile(r: redis.Redis) -> None:
    """A pending wait fails with JobNotFound when its job is deleted."""
    job = kickq.create("doomed").result(5)
    waiting = kickq.wait(job.id)
    wait_until(lambda: numsub(r, done_channel(job.id)) == 1, timeout=5, what="the subscription")
    assert kickq.delete(job.id).result(5)
    with pytest.raises(kickq.JobNotFound):
        waiting.result(5)


def test_wait_by_id_from_a_second_process(r: redis.Redis, subprocess_env: dict[str, str]) -> None:
    """A job created here is awaited by id in another process, which gets the result."""
    job = kickq.create("shared", {"n": 5}).result(5)
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import kickq, sys, json\n"
            f"done = kickq.wait({job.id!r}, timeout=20).result(25)\n"
            "print(json.dumps(done.result))\n",
        ],
        env=subprocess_env,
        stdout=subprocess.PIPE,
        text=True,
    )
    # the completion reaches the child by pub/sub: it is subscribed before the job runs
    wait_until(lambda: numsub(r, done_channel(job.id)) == 1, timeout=20, what="the child's wait")
    kickq.process("shared", lambda j, d: d["n"] * 3)
    out, _ = child.communicate(timeout=30)
    assert child.returncode == 0 and json.loads(out) == 15


@pytest.mark.timeout(240)  # 1,000 jobs through 2 slots: slow on a loaded machine
def test_thousand_hotjobs_share_one_pubsub_connection(r: redis.Redis) -> None:
    """1,000 concurrent hotjobs open one pub/sub connection, not one each."""
    release = threading.Event()

    def held(job: kickq.Job, data: int) -> int:
        release.wait(scaled(120))  # until the connections are counted
        return data

    kickq.process("held", held, concurrent_jobs=2)
    timeout = scaled(180)
    creates = [kickq.create("held", i, hotjob=True, hotjob_timeout=timeout) for i in range(1000)]
    jobs = [f.result(30) for f in creates]
    reply = kickq._engine.runtime.get().waits.reply_channel
    wait_until(lambda: numsub(r, reply) == 1, timeout=10, what="the reply channel")
    clients = client_lists(r)
    pubsub_clients = [c for c in clients if int(c.get("sub", 0)) > 0]
    assert len(pubsub_clients) == 1
    assert len(clients) < 15
    release.set()
    assert [j.hotjob_future.result(120).result for j in jobs] == list(range(1000))  # type: ignore[union-attr]


def test_waits_survive_pubsub_connection_kill(r: redis.Redis) -> None:
    """Killing the pub/sub connection while waits are pending: every wait still resolves."""
    release = threading.Event()
    kickq.process("killme", lambda job, data: release.wait(20) and data, concurrent_jobs=20)
    jobs = [f.result(5) for f in [kickq.create("killme", i, hotjob=True) for i in range(20)]]
    wait_until(lambda: any(int(c.get("sub", 0)) for c in client_lists(r)), timeout=10)
    killed = r.client_kill_filter(_type="pubsub")
    assert killed >= 1
    release.set()  # jobs finish while the listener is reconnecting
    assert [j.hotjob_future.result(20).result for j in jobs] == list(range(20))  # type: ignore[union-attr]


def test_await_create_and_hotjob_inside_asyncio() -> None:
    """create() and the hotjob future can be awaited; awaiting does not block the loop."""
    kickq.process("async-hot", lambda job, data: data + 1)

    async def main() -> tuple[int, int]:
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0.001)

        task = asyncio.create_task(ticker())
        job = await kickq.create("async-hot", 1, hotjob=True)
        done = await job.hotjob_future  # type: ignore[misc]
        task.cancel()
        return done.result, ticks

    result, ticks = asyncio.run(main())
    assert result == 2 and ticks > 0


def test_reset_cancels_pending_waits() -> None:
    """kickq.reset() cancels futures still waiting for a job."""
    job = kickq.create("never", hotjob=True, hotjob_timeout=60).result(5)
    kickq.reset()
    assert job.hotjob_future is not None
    wait_until(job.hotjob_future.done, timeout=5)
    assert job.hotjob_future.cancelled()
