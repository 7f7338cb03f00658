"""Hotjobs are awaited on one reply channel per process: no subscription per hotjob, and every
way a job ends (finished, deleted, set aside damaged, cancelled) reaches its creator there."""

from __future__ import annotations

import os
import select
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis

import kickq
import kickq._engine.runtime
from support import ChildWorkers, client_lists, job_key, numsub, wait_until

pytestmark = [pytest.mark.both_backends, pytest.mark.both_parsers]


def nodes(client: Any) -> list[Any]:
    """A client for each node (one for a single server)."""
    if isinstance(client, redis.RedisCluster):
        return [client.get_redis_connection(node) for node in client.get_nodes()]
    return [client]


def calls(client: Any, command: str) -> int:
    """How many times `command` ran, on every node (INFO commandstats)."""
    return sum(
        int(node.info("commandstats").get(f"cmdstat_{command}", {}).get("calls", 0))
        for node in nodes(client)
    )


def reply_channel() -> str:
    return kickq._engine.runtime.get().waits.reply_channel


def subscriptions(client: Any) -> int:
    """Channels subscribed, over every pub/sub connection of every node (CLIENT LIST sub)."""
    return sum(int(c.get("sub", 0)) for c in client_lists(client))


def test_hotjobs_subscribe_nothing_of_their_own(r: Any) -> None:
    """200 hotjobs from one process after the first: no SUBSCRIBE or UNSUBSCRIBE at all, no
    channel more on the pub/sub connection, and each resolves with its own result."""
    release = threading.Event()
    kickq.process("echo", lambda job, data: release.wait(20) and data, concurrent_jobs=4)
    release.set()
    first = kickq.create("echo", -1, hotjob=True).result(5)
    assert first.hotjob_future is not None and first.hotjob_future.result(10).result == -1
    subscribed, unsubscribed = calls(r, "subscribe"), calls(r, "unsubscribe")
    channels = subscriptions(r)

    release.clear()  # all 200 are pending at once
    jobs = [f.result(10) for f in [kickq.create("echo", i, hotjob=True) for i in range(200)]]
    assert subscriptions(r) == channels
    release.set()
    assert [job.hotjob_future.result(20).result for job in jobs] == list(range(200))  # type: ignore[union-attr]
    assert calls(r, "subscribe") == subscribed
    assert calls(r, "unsubscribe") == unsubscribed
    assert numsub(r, reply_channel()) == 1


def test_only_a_hotjob_record_names_the_reply_channel(r: Any) -> None:
    """The record of a hotjob names its creator's reply channel; any other job's has no such
    field (no cost to it)."""
    hot = kickq.create("named", hotjob=True, hotjob_timeout=60).result(5)
    cold = kickq.create("named").result(5)
    assert r.hget(job_key(hot.id), "reply_to") == reply_channel()
    assert r.hget(job_key(cold.id), "reply_to") is None
    assert kickq.get(hot.id).result(5).reply_to == reply_channel()


@pytest.fixture
def gated_listener() -> Iterator[threading.Event]:
    """The engine's pub/sub listener, made to wait at its next (re)connect until the returned
    event is set: what is published meanwhile reaches nobody."""
    listener = kickq._engine.runtime.get().listener
    gate = threading.Event()
    connect = listener._connect

    def gated() -> Any:
        gate.wait(30)
        return connect()

    listener._connect = gated
    try:
        yield gate
    finally:
        gate.set()


def load_calls(store: Any) -> list[list[str]]:
    """The ids of each batched re-read the engine's waits make from now on."""
    seen: list[list[str]] = []
    read = store.load_waited

    def counted(job_ids: Any) -> Any:
        seen.append(list(job_ids))
        return read(job_ids)

    store.load_waited = counted
    return seen


def test_hotjobs_finished_while_pubsub_is_down_resolve_in_one_read(
    r: Any, gated_listener: threading.Event
) -> None:
    """The pub/sub connection is killed (CLIENT KILL) while 20 hotjobs are pending; 10 finish
    before it is back, so their messages are lost: once the reply channel is confirmed again,
    one pipelined re-read of every pending hotjob resolves them, and the other 10 resolve by
    message as they finish."""
    gates = {i: threading.Event() for i in range(20)}
    kickq.process("down", lambda job, data: gates[data].wait(20) and data, concurrent_jobs=20)
    engine = kickq._engine.runtime.get()
    jobs = [f.result(5) for f in [kickq.create("down", i, hotjob=True) for i in range(20)]]
    wait_until(lambda: numsub(r, reply_channel()) == 1, timeout=10, what="the reply channel")
    reads = load_calls(engine.store)

    assert sum(int(n.client_kill_filter(_type="pubsub")) for n in nodes(r)) >= 1
    wait_until(lambda: numsub(r, reply_channel()) == 0, timeout=10, what="the kill")
    for i in range(10):
        gates[i].set()
    wait_until(
        lambda: all(r.hget(job_key(j.id), "state") == "success" for j in jobs[:10]),
        timeout=10,
        what="10 jobs finished while nobody listened",
    )
    assert not any(j.hotjob_future.done() for j in jobs)  # type: ignore[union-attr]
    gated_listener.set()
    for i, job in enumerate(jobs[:10]):
        assert job.hotjob_future.result(10).result == i  # type: ignore[union-attr]
    assert len(reads) == 1 and sorted(reads[0]) == sorted(j.id for j in jobs)
    for i in range(10, 20):
        gates[i].set()
    for i, job in enumerate(jobs[10:], start=10):
        assert job.hotjob_future.result(10).result == i  # type: ignore[union-attr]
    assert len(reads) == 1  # the rest by message


DOUBLER = """
import kickq
kickq.process("early", lambda job, data: data * 2, concurrent_jobs=4)
print("ready", flush=True)
"""


def test_hotjobs_saved_while_pubsub_is_down_resolve(
    r: Any, gated_listener: threading.Event, subprocess_env: dict[str, str]
) -> None:
    """Hotjobs created and finished (by a worker in another process) while this process's
    pub/sub connection is down resolve once it is back: a completion before the reply
    channel's subscription is confirmed is not missed."""
    workers = ChildWorkers(subprocess_env)
    try:
        workers.start(DOUBLER + "import time\ntime.sleep(60)\n")
        warm = kickq.create("early", 0, hotjob=True).result(5)
        assert warm.hotjob_future is not None and warm.hotjob_future.result(10).result == 0
        assert sum(int(n.client_kill_filter(_type="pubsub")) for n in nodes(r)) >= 1
        wait_until(lambda: numsub(r, reply_channel()) == 0, timeout=10, what="the kill")
        jobs = [f.result(5) for f in [kickq.create("early", i, hotjob=True) for i in range(1, 30)]]
        wait_until(
            lambda: all(r.hget(job_key(j.id), "state") == "success" for j in jobs),
            timeout=20,
            what="every job finished while nobody here listened",
        )
        assert not any(j.hotjob_future.done() for j in jobs)  # type: ignore[union-attr]
        gated_listener.set()
        assert [j.hotjob_future.result(10).result for j in jobs] == [i * 2 for i in range(1, 30)]  # type: ignore[union-attr]
    finally:
        workers.stop_all()


def test_a_hotjob_saved_before_the_reply_channel_is_confirmed_reads_its_record(
    r: Any, gated_listener: threading.Event, subprocess_env: dict[str, str]
) -> None:
    """The reply channel is confirmed again while a hotjob's save is acknowledged but not yet
    handled, and the job finished before that, unheard: handling the acknowledgement reads
    the record, and the hotjob resolves (it would otherwise wait out its timeout)."""
    workers = ChildWorkers(subprocess_env)
    engine = kickq._engine.runtime.get()
    try:
        workers.start(DOUBLER + "import time\ntime.sleep(60)\n")
        warm = kickq.create("early", 0, hotjob=True).result(5)
        assert warm.hotjob_future is not None and warm.hotjob_future.result(10).result == 0
        acknowledged, handle = threading.Event(), threading.Event()
        saved: list[Any] = []
        created = engine.waits.created

        def held(waiter: Any) -> None:
            saved.append(waiter)
            acknowledged.set()
            handle.wait(30)
            created(waiter)

        engine.waits.created = held  # type: ignore[method-assign]
        assert sum(int(n.client_kill_filter(_type="pubsub")) for n in nodes(r)) >= 1
        wait_until(lambda: numsub(r, reply_channel()) == 0, timeout=10, what="the kill")
        future = kickq.create("early", 21, hotjob=True, hotjob_timeout=60)
        assert acknowledged.wait(10)
        job_id = saved[0].job_id
        wait_until(
            lambda: r.hget(job_key(job_id), "state") == "success",
            timeout=20,
            what="the job finished while nobody here listened",
        )
        gated_listener.set()
        wait_until(lambda: saved[0].check_when_created, timeout=10, what="the confirmation")
        handle.set()
        job = future.result(10)
        assert job.hotjob_future is not None and job.hotjob_future.result(10).result == 42
    finally:
        workers.stop_all()


def test_a_deleted_hotjob_fails_at_once_with_job_not_found() -> None:
    """Deleting a pending hotjob fails its future with JobNotFound, long before its timeout."""
    job = kickq.create("deleted", hotjob=True, hotjob_timeout=60).result(5)
    assert kickq.delete(job.id).result(5)
    with pytest.raises(kickq.JobNotFound):
        job.hotjob_future.result(10)  # type: ignore[union-attr]


def test_a_cancelled_hotjob_fails_with_job_cancelled() -> None:
    """Cancelling a queued hotjob fails its future with JobCancelled, before its timeout."""
    job = kickq.create("cancelled", hotjob=True, hotjob_timeout=60).result(5)
    assert kickq.cancel(job.id).result(5)
    with pytest.raises(kickq.JobCancelled):
        job.hotjob_future.result(10)  # type: ignore[union-attr]


def test_a_hotjob_whose_record_is_damaged_after_its_claim_fails_at_once(r: Any) -> None:
    """A hotjob whose data no process can decode is set aside by the worker that claims it
    (quarantine.lua): its future fails at once with DamagedRecord, not at its timeout."""
    job = kickq.create("damaged-data", hotjob=True, hotjob_timeout=60).result(5)
    r.hset(job_key(job.id), "data", "[" * 100_000 + "]" * 100_000)
    kickq.process("damaged-data", lambda job, data: data)
    with pytest.raises(kickq.DamagedRecord, match=job.id):
        job.hotjob_future.result(10)  # type: ignore[union-attr]


def test_a_hotjob_whose_record_the_claim_sets_aside_fails_at_once(r: Any) -> None:
    """A hotjob whose record the claim script itself sets aside (an unknown state): its future
    fails at once with DamagedRecord, not at its timeout."""
    job = kickq.create("damaged-state", hotjob=True, hotjob_timeout=60).result(5)
    r.hset(job_key(job.id), "state", "bogus")
    kickq.process("damaged-state", lambda job, data: data)
    with pytest.raises(kickq.DamagedRecord, match=job.id):
        job.hotjob_future.result(10)  # type: ignore[union-attr]


def test_a_hotjob_is_still_awaited_by_id_elsewhere(r: Any) -> None:
    """kickq.wait(id) on a hotjob (here on its done channel, as any other process would) gets
    the result as the creator does."""
    release = threading.Event()
    kickq.process("both", lambda job, data: release.wait(20) and data + 1)
    job = kickq.create("both", 1, hotjob=True).result(5)
    waiting = kickq.wait(job.id, timeout=20)
    done_channel = kickq._engine.runtime.get().keys.done(job.id)
    wait_until(lambda: numsub(r, done_channel) == 1, timeout=10, what="the wait by id")
    release.set()
    assert waiting.result(20).result == 2
    assert job.hotjob_future.result(20).result == 2  # type: ignore[union-attr]


def in_child(work: Callable[[], str], deadline: float = 30.0) -> str:
    """Run `work` in a child made by os.fork(); what it reported (it leaves with os._exit)."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:
        status = 1
        try:
            os.close(read_fd)
            os.write(write_fd, work().encode())
            status = 0
        except BaseException as exc:
            os.write(write_fd, f"{type(exc).__name__}: {exc}".encode())
        finally:
            os._exit(status)
    os.close(write_fd)
    chunks = []
    end = time.monotonic() + deadline
    try:
        while (left := end - time.monotonic()) > 0 and select.select([read_fd], [], [], left)[0]:
            chunk = os.read(read_fd, 65536)
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(read_fd)
        if time.monotonic() >= end:
            os.kill(pid, 9)
        _, status = os.waitpid(pid, 0)
    text = b"".join(chunks).decode()
    assert os.waitstatus_to_exitcode(status) == 0, text
    return text


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork() is POSIX only")
@pytest.mark.filterwarnings("ignore:This process.*multi-threaded:DeprecationWarning")
def test_a_forked_child_gets_a_reply_channel_of_its_own() -> None:
    """A child forked after the parent used hotjobs replies on a channel of its own; the
    parent's worker runs the child's hotjob, and each side's hotjobs resolve."""
    kickq.process("forked", lambda job, data: data * 10, concurrent_jobs=2)
    mine = kickq.create("forked", 1, hotjob=True).result(5)
    assert mine.hotjob_future is not None and mine.hotjob_future.result(10).result == 10
    parent_channel = reply_channel()

    def child() -> str:
        job = kickq.create("forked", 2, hotjob=True).result(10)
        assert job.hotjob_future is not None
        result = job.hotjob_future.result(20).result
        return f"{reply_channel()} {result}"

    channel, result = in_child(child).split()
    assert channel != parent_channel and result == "20"
    again = kickq.create("forked", 3, hotjob=True).result(5)
    assert again.hotjob_future is not None and again.hotjob_future.result(10).result == 30
