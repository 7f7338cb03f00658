"""Load held: thousands of jobs through worker processes, each run exactly once, none lost, every
key purged and Redis memory back to its baseline. A smaller bench/load.py (100,000 jobs, 4
processes), on a private redis-server so that nothing else moves its memory."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis

import kickq
from kickq._redis.keys import Keys
from support import RedisServer, namespace_keys, wait_until

N = 3000
# all that stays of the jobs once purged: the name's bounded stats, the last deadline announced
STATS_KEYS = {"kickq:names", "kickq:minutes:{load}", "kickq:times:{load}", "kickq:next_due"}
PROCS = 2
CONCURRENCY = 10
PURGE_TIMEOUT = 1.0
# What stays after a run is fixed, not per job: the script cache of the scripts first loaded
# during the run (about 5 KiB) and small internal caches (bench/load.py: +6 to +20 KiB). 256 KiB
# leaves room for a client's buffers and still fails any leak of 90 bytes per job or more (a
# job record takes about 700 bytes).
MEMORY_TOLERANCE = 256 * 1024

WORKER = """
import os, sys
import redis
import kickq

kickq.config(purge_timeout=float(os.environ["LOAD_PURGE_TIMEOUT"]))
counts = redis.Redis.from_url(os.environ["KICKQ_REDIS_URL"])
pid = str(os.getpid())

def count(job, data):
    pipe = counts.pipeline(transaction=False)
    pipe.hincrby("load:runs", str(data["seq"]), 1)
    pipe.hincrby("load:procs", pid, 1)
    pipe.execute()

worker = kickq.process("load", count, concurrent_jobs=int(os.environ["LOAD_CONCURRENCY"]))
kickq.get("warm-up").exception(timeout=30)  # connected
counts.sadd("load:ready", pid)
sys.stdin.read()  # until the test closes our stdin
worker.stop(timeout=10)
kickq.reset()
counts.close()
"""


@pytest.fixture
def server(tmp_path: pathlib.Path) -> Iterator[RedisServer]:
    """A private redis-server, kickq of this process connected to it."""
    private = RedisServer(tmp_path / "load").start()
    kickq.reset()
    kickq.config(redis_url=private.url, purge_timeout=PURGE_TIMEOUT)
    try:
        yield private
    finally:
        kickq.reset()
        private.stop()


@pytest.fixture
def r(server: RedisServer) -> Iterator[redis.Redis]:
    """A plain client on the private server."""
    client = server.client()
    yield client
    client.close()


# Valkey 9 grows used_memory by 16 bytes at each INFO and CONFIG RESETSTAT, however idle
SETTLED_DRIFT = 256


def quiet_memory(client: redis.Redis) -> dict[str, Any]:
    """INFO memory once Redis has settled: 3 s on, used_memory unchanged over 1 s (within
    SETTLED_DRIFT bytes).

    Redis accounts a new client's memory in its cron and frees an idle client's query buffer
    after 2 s; CONFIG RESETSTAT drops the per-command latency histograms (about 24 KiB for each
    command run since the last reset), which would otherwise look like a leak.
    """
    started = time.monotonic()
    recent: list[int] = []

    def settled() -> dict[str, Any] | None:
        client.config_resetstat()
        info: dict[str, Any] = client.info("memory")
        recent[:] = [*recent[-4:], int(info["used_memory"])]
        if (
            time.monotonic() - started >= 3
            and len(recent) == 5
            and max(recent) - min(recent) <= SETTLED_DRIFT
        ):
            return info
        return None

    result: dict[str, Any] = wait_until(settled, timeout=30, interval=0.25, what="quiet memory")
    return result


def start_workers(server: RedisServer) -> list[subprocess.Popen[bytes]]:
    env = dict(os.environ)
    env["KICKQ_REDIS_URL"] = server.url
    env["LOAD_PURGE_TIMEOUT"] = str(PURGE_TIMEOUT)
    env["LOAD_CONCURRENCY"] = str(CONCURRENCY)
    root = str(pathlib.Path(__file__).parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    return [
        subprocess.Popen(
            [sys.executable, "-c", WORKER],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            env=env,
        )
        for _ in range(PROCS)
    ]


def stop_workers(workers: list[subprocess.Popen[bytes]]) -> list[int | None]:
    """Close their stdin (they stop kickq and exit); kill what is still there after 20 s."""
    for proc in workers:
        assert proc.stdin is not None
        proc.stdin.close()
    codes = []
    for proc in workers:
        try:
            codes.append(proc.wait(20))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
            codes.append(None)
    return codes


@pytest.mark.slow
def test_thousands_of_jobs_through_worker_processes_run_once_and_leave_nothing(
    server: RedisServer, r: redis.Redis
) -> None:
    """3,000 jobs through 2 worker processes x 10 concurrent jobs: every job runs exactly once
    (none lost, none twice), both processes take part, no run fails or ghosts, every record
    left is a success, the purge then removes every kickq key, the workers exit cleanly, and
    Redis used_memory is back within 256 KiB of its baseline, with an empty database."""
    failed: list[kickq.Job] = []
    kickq.on("fail", failed.append)
    wait_until(lambda: dict(r.pubsub_numsub("kickq:fail"))["kickq:fail"] == 1, what="SUBSCRIBE")
    baseline = quiet_memory(r)
    assert r.dbsize() == 0

    workers = start_workers(server)
    try:
        wait_until(lambda: r.scard("load:ready") == PROCS, timeout=30, what="workers up")
        futures = [kickq.create("load", {"seq": i}) for i in range(N)]
        ids = {future.result(30).id for future in futures}
        assert len(ids) == N

        def drained() -> bool:
            pipe = r.pipeline(transaction=False)
            pipe.hlen("load:runs")
            pipe.zcard(Keys("kickq").queue("load"))
            pipe.zcard("kickq:scheduled")
            pipe.zcard("kickq:processing")
            ran, *left = pipe.execute()
            return bool(ran == N and not any(left))

        wait_until(drained, timeout=60, interval=0.05, what=f"{N} jobs run")
        runs = r.hgetall("load:runs")
        assert set(runs) == {str(seq) for seq in range(N)}  # none lost
        assert set(runs.values()) == {"1"}  # none twice
        per_process = r.hgetall("load:procs")
        assert len(per_process) == PROCS and sum(map(int, per_process.values())) == N

        keys = namespace_keys(r)
        pipe = r.pipeline(transaction=False)
        for key in keys:
            if key.startswith("kickq:job:"):
                pipe.hmget(key, "state", "run:2")
        records = pipe.execute()
        assert {state for state, _ in records} <= {"success", None}  # None: purged meanwhile
        assert [second for _, second in records if second is not None] == []
        assert [key for key in keys if key.startswith("kickq:damaged:")] == []
        assert failed == []

        wait_until(
            lambda: set(namespace_keys(r)) - {"kickq:workers"} == STATS_KEYS,
            timeout=PURGE_TIMEOUT + 30,
            interval=0.1,
            what="purge",
        )
    finally:
        codes = stop_workers(workers)
    assert codes == [0] * PROCS

    r.delete("load:runs", "load:procs", "load:ready", *STATS_KEYS, "kickq:workers")
    after = quiet_memory(r)
    assert r.dbsize() == 0
    diff = int(after["used_memory"]) - int(baseline["used_memory"])
    assert abs(diff) <= MEMORY_TOLERANCE, (baseline["used_memory"], after["used_memory"])
