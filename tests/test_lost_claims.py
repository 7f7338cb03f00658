"""A claim whose reply is lost is found again and run, never left to ghost.

A worker sends a claim and the reply never comes: the server stalled past the read timeout, or
the connection broke after the claim went out. Redis may have started runs for it. The worker
then asks with the claim's token (scripts/reclaim.lua) and runs what the claim started, or makes
sure the claim, if it reaches Redis later, starts nothing.
"""

from __future__ import annotations

import collections
import logging
import pathlib
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import redis

import kickq
from kickq._redis.store import Store
from support import RedisServer, wait_until

pytestmark = pytest.mark.both_parsers

NS = "kickq"


@pytest.fixture
def server(tmp_path: pathlib.Path) -> Iterator[RedisServer]:
    """A redis-server of the test's own (a stall must not reach other tests), kickq reading it
    with a short read timeout, so that a short stall loses replies."""
    own = RedisServer(tmp_path / "redis").start()
    kickq.reset()
    kickq.config(redis_url=own.url, redis_options={"socket_timeout": 0.25})
    try:
        yield own
    finally:
        kickq.reset()
        own.stop()


# A script that keeps the server busy for ARGV[1] ms: a stall, as a long fork, a slow disk or
# a busy host make (DEBUG SLEEP does the same where it is enabled). Commands sent meanwhile wait
# in the socket unread; those whose sender gave up are still run afterwards, their replies lost.
STALL = """
local t = redis.call('TIME')
local start = t[1] * 1000000 + t[2]
repeat t = redis.call('TIME') until t[1] * 1000000 + t[2] - start >= tonumber(ARGV[1]) * 1000
"""


def stall(client: redis.Redis, ms: int) -> None:
    """Make the server answer no client for `ms` milliseconds, in another thread."""
    threading.Thread(target=client.eval, args=(STALL, 0, ms), daemon=True).start()


def test_claims_whose_replies_a_stall_lost_still_run_at_once(
    server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Stalls longer than the read timeout during a drain: every job runs exactly once, long
    before any run's deadline (a lost claim used to leave its jobs to ghost at process_timeout)."""
    caplog.set_level(logging.WARNING, logger="kickq")
    count = 120
    saved = kickq.create_many("stalled", list(range(count)), process_timeout=120)
    for future in saved:
        future.result(10)
    runs: collections.Counter[int] = collections.Counter()
    lock = threading.Lock()

    def handler(job: kickq.Job, data: int) -> int:
        with lock:
            runs[data] += 1
        threading.Event().wait(0.01)
        return data

    observer = server.client()
    kickq.process("stalled", handler, concurrent_jobs=4)
    for stalls in range(1, 4):
        wait_until(lambda s=stalls: sum(runs.values()) >= s * 10, 30, what="runs between stalls")
        stall(observer, 1500)
    wait_until(
        lambda: observer.zcard(f"{NS}:finished") == count,
        timeout=40,  # well under process_timeout: no lost claim may wait out its deadline
        what="every job finished",
    )
    assert runs == {data: 1 for data in range(count)}
    counts = [observer.hget(f"{NS}:job:{job.result().id}", "run_count") for job in saved]
    assert set(counts) == {"1"}
    assert any("Redis unavailable" in r.getMessage() for r in caplog.records), (
        "no stall reached a worker: the test proved nothing"
    )
    observer.close()


def claim_store(server: RedisServer) -> tuple[Store, redis.Redis]:
    client = redis.Redis.from_url(server.url, decode_responses=True)
    return Store(client, NS), client


def ids(jobs: list[Any]) -> set[str]:
    return {item.job.id for item in jobs}


def test_a_reclaim_returns_what_the_lost_claim_started(server: RedisServer) -> None:
    """The claim went through but its reply was lost: the reclaim with its token returns the
    runs it started, once more if its own reply is lost too."""
    store, client = claim_store(server)
    created = {kickq.create("lost", i).result(5).id for i in range(3)}
    claim = store.claim_call(["lost"], 5, "w1", "w1.7")
    store.run(claim)  # the reply is thrown away, as a broken connection would
    reclaim = store.reclaim_call(claim)
    assert ids(store.parse_claimed(store.run(reclaim))) == created
    assert ids(store.parse_claimed(store.run(reclaim))) == created
    assert not client.exists(f"{NS}:claim:w1")  # the usual path leaves no key behind
    client.close()


def test_a_claim_given_up_takes_nothing_when_it_reaches_redis_later(server: RedisServer) -> None:
    """The reclaim came first (the lost claim was still on its way): the claim then takes
    nothing, and the jobs stay queued for the next claim."""
    store, client = claim_store(server)
    created = {kickq.create("late", i).result(5).id for i in range(3)}
    late = store.claim_call(["late"], 5, "w1", "w1.8")
    assert store.parse_claimed(store.run(store.reclaim_call(late))) == []
    assert store.parse_claimed(store.run(late)) == []
    assert client.zcard(f"{NS}:queue:{{late}}") == 3
    fresh = store.run(store.claim_call(["late"], 5, "w1", "w1.9"))
    assert ids(store.parse_claimed(fresh)) == created
    client.close()


def test_a_reclaim_skips_runs_that_ended_or_moved_on(server: RedisServer) -> None:
    """A run the lost claim started that is no longer its own (ghosted and claimed again, say)
    is not returned: only the very runs the claim started are the worker's."""
    store, client = claim_store(server)
    job = kickq.create("moved", 1).result(5)
    claim = store.claim_call(["moved"], 1, "w1", "w1.b")
    store.run(claim)
    client.hset(f"{NS}:job:{job.id}", "claim", "w2.1")  # claimed again by another worker
    assert store.parse_claimed(store.run(store.reclaim_call(claim))) == []
    client.close()
