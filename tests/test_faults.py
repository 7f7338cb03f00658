"""Faults survived: Redis killed and restarted, dropped connections, out of memory, stuck and
rude handlers, and job records damaged at rest.
"""

from __future__ import annotations

import collections
import concurrent.futures
import json
import logging
import pathlib
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis

import kickq
import kickq._engine.runtime
from kickq._model.job import Job
from kickq._redis.record import to_record
from support import RedisServer, free_port, outcome, wait_until

pytestmark = pytest.mark.both_parsers

NS = "kickq"
# every field create() writes, plus the version the transition script adds
RECORD_FIELDS = frozenset(to_record(Job(id="x", name="y"))) | {"version"}


def pace(seconds: float) -> None:
    """Spread traffic out (not a wait for a condition: those use wait_until)."""
    threading.Event().wait(seconds)


def job_keys(client: redis.Redis) -> list[str]:
    return sorted(client.scan_iter(f"{NS}:job:*", count=1000))


def assert_waited(future: concurrent.futures.Future[Any], timeout: float) -> None:
    """The wait ended in time, with the job's success."""
    done = outcome(future, timeout)
    assert isinstance(done, kickq.Job) and done.state == "success", done


def job_ids_in_indexes(client: redis.Redis) -> set[str]:
    ids: set[str] = set()
    for zset in ("scheduled", "processing", "finished"):
        ids.update(client.zrange(f"{NS}:{zset}", 0, -1))
    for queue in client.scan_iter(f"{NS}:queue:*"):
        ids.update(client.zrange(queue, 0, -1))
    return ids


@pytest.fixture
def private_server(tmp_path: pathlib.Path) -> Iterator[RedisServer]:
    """A persistent (appendfsync always) redis-server of the test's own, kickq pointed at it."""
    server = RedisServer(tmp_path / "redis", persistent=True).start()
    kickq.reset()
    kickq.config(redis_url=server.url)
    try:
        yield server
    finally:
        kickq.reset()
        server.stop()


# -- Redis dies -------------------------------------------------------------------------------


def crash_traffic(
    stop: threading.Event,
    creates: list[tuple[int, concurrent.futures.Future[kickq.Job]]],
    waits: list[tuple[float, concurrent.futures.Future[kickq.Job]]],
) -> None:
    """Create "crash" jobs until `stop` is set, every 7th a hotjob, recording each create's
    future in `creates` and, for every 5th job, a wait on it (with its deadline) in `waits`.
    The waits start once their create is saved, without holding the traffic up: a create
    whose reply a kill lost stays pending until Redis is back and settles it."""

    def wait_on(future: concurrent.futures.Future[kickq.Job]) -> None:
        if not future.cancelled() and future.exception() is None:
            job = future.result()
            waits.append((time.monotonic() + 30, kickq.wait(job.id, timeout=30)))

    i = 0
    while not stop.is_set():
        future = kickq.create("crash", i, hotjob=i % 7 == 0, hotjob_timeout=30)
        creates.append((i, future))
        if i % 5 == 0:  # also wait on it by id, from this process
            future.add_done_callback(wait_on)
        i += 1
        pace(0.004)


def kill_twice(
    server: RedisServer, creates: list[tuple[int, concurrent.futures.Future[kickq.Job]]]
) -> None:
    """SIGKILL the server and start it again, twice: each kill once creates have been saved
    since the last start, each start once a create has failed for the kill, so that the kills
    hit traffic however slow the machine is."""

    def one_settled(saved: bool, since: int) -> Callable[[], bool]:
        def check() -> bool:
            return any(
                future.done() and (future.exception() is None) is saved
                for _, future in list(creates)[since:]
            )

        return check

    for _ in range(2):
        wait_until(one_settled(True, len(creates)), 20, what="a saved create")
        pace(0.2)
        server.stop(kill=True)
        wait_until(one_settled(False, len(creates)), 20, what="a failed create")
        server.start()
    pace(0.5)


def sort_creates(
    creates: list[tuple[int, concurrent.futures.Future[kickq.Job]]],
) -> tuple[dict[int, kickq.Job], list[BaseException], list[concurrent.futures.Future[kickq.Job]]]:
    """The jobs saved (by their data), the errors of the creates that failed, and the hotjob
    futures of the saved jobs."""
    saved: dict[int, kickq.Job] = {}
    failed_creates: list[BaseException] = []
    hotjobs: list[concurrent.futures.Future[kickq.Job]] = []
    for data, future in creates:
        result = outcome(future, 15)
        if isinstance(result, kickq.Job):
            saved[data] = result
            if result.hotjob_future is not None:
                hotjobs.append(result.hotjob_future)
        else:
            failed_creates.append(result)
    return saved, failed_creates, hotjobs


def assert_saved_jobs_succeeded_once(
    server: RedisServer, saved: dict[int, kickq.Job], calls: collections.Counter[int]
) -> None:
    """Every stored job ends in success; each saved one is still there, with one successful run
    after nothing but ghosts, and its handler ran at least once and no more than it has runs."""
    client = server.client()
    try:

        def all_succeeded() -> bool:
            states = [client.hget(key, "state") for key in job_keys(client)]
            return all(state == "success" for state in states)

        wait_until(all_succeeded, timeout=30, what="every stored job to succeed")
        for data, job in saved.items():
            record = client.hgetall(f"{NS}:job:{job.id}")
            assert record, f"job {data} was reported saved but is gone"
            final = kickq.get(job.id).result(5)
            states = [run.state for run in final.runs]
            assert final.state == "success" and final.result == data
            assert states.count("success") == 1 and states[-1] == "success", states
            assert set(states[:-1]) <= {"ghost"}, states  # only ghosts of in-flight runs
            assert 1 <= calls[data] <= len(states), (data, calls[data], states)
    finally:
        client.close()


@pytest.mark.slow
def test_sigkilled_redis_mid_traffic_loses_no_saved_job(private_server: RedisServer) -> None:
    """Redis SIGKILLed twice while jobs are created, run and awaited: every saved job succeeds
    exactly once, nothing hangs."""
    server = private_server
    calls: collections.Counter[int] = collections.Counter()
    lock = threading.Lock()

    def handler(job: kickq.Job, data: int) -> int:
        with lock:
            calls[data] += 1
        pace(0.002)
        return data

    kickq.config(
        job_flags={"crash": {"process_timeout": 2, "ghost_interval": 0, "ghost_count": 10}}
    )
    kickq.process("crash", handler, concurrent_jobs=4)
    creates: list[tuple[int, concurrent.futures.Future[kickq.Job]]] = []
    waits: list[tuple[float, concurrent.futures.Future[kickq.Job]]] = []
    stop = threading.Event()
    creator = threading.Thread(
        target=crash_traffic, args=(stop, creates, waits), name="test-traffic"
    )
    creator.start()
    try:
        kill_twice(server, creates)
    finally:
        stop.set()
        creator.join(30)
    assert not creator.is_alive()

    saved, failed_creates, hotjobs = sort_creates(creates)
    assert saved and failed_creates, "the kills should have hit some creates and spared others"
    assert all(isinstance(exc, kickq.RedisUnavailable) for exc in failed_creates), {
        type(exc).__name__ for exc in failed_creates
    }
    assert_saved_jobs_succeeded_once(server, saved, calls)
    for deadline, future in waits:
        assert_waited(future, max(deadline - time.monotonic(), 0) + 5)
    for future in hotjobs:
        assert_waited(future, 35)


@pytest.mark.slow
def test_killed_client_connections_while_draining_500_jobs(r: redis.Redis) -> None:
    """CLIENT KILL of every normal and pub/sub connection while a worker drains 500 jobs: all
    500 finish, and so do the waits on them."""
    kickq.config(
        job_flags={"drain": {"process_timeout": 1, "ghost_interval": 0, "ghost_count": 20}}
    )
    jobs = [f.result(10) for f in [kickq.create("drain", i) for i in range(500)]]
    waits = [kickq.wait(job.id, timeout=40) for job in jobs[::10]]
    ran: collections.Counter[int] = collections.Counter()
    lock = threading.Lock()

    def handler(job: kickq.Job, data: int) -> int:
        with lock:
            ran[data] += 1
        pace(0.01)
        return data

    kickq.process("drain", handler, concurrent_jobs=5)
    killed = {"normal": 0, "pubsub": 0}

    def drained() -> bool:
        for kind in killed:
            killed[kind] += int(r.client_kill_filter(_type=kind, skipme=True))
        pace(0.02)
        return r.zcard(f"{NS}:finished") == 500

    wait_until(drained, timeout=40, what="500 jobs finished under CLIENT KILL")
    assert killed["normal"] > 0 and killed["pubsub"] > 0, killed
    states = collections.Counter(r.hget(f"{NS}:job:{job.id}", "state") for job in jobs)
    assert states == {"success": 500}
    assert all(ran[i] >= 1 for i in range(500))
    for future in waits:
        assert_waited(future, 45)


def test_get_and_delete_on_an_unreachable_redis_fail_with_redis_unavailable() -> None:
    """get() and delete() against a Redis nobody listens on fail with kickq.RedisUnavailable,
    as create() does."""
    kickq.config(redis_url=f"redis://127.0.0.1:{free_port()}/0")
    with pytest.raises(kickq.RedisUnavailable):
        kickq.create("nowhere").result(10)
    for future in (kickq.get("some-id"), kickq.delete("some-id")):
        with pytest.raises(kickq.RedisUnavailable):
            future.result(10)


def test_wait_survives_a_dropped_connection_during_its_recheck(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A wait whose re-read of the job hits a dropped connection keeps waiting and resolves when
    the job finishes."""
    job = kickq.create("recheck", "x").result(5)
    store = kickq._engine.runtime.get().store
    dropped: list[str] = []
    real = store.load_waited

    def flaky(job_ids: list[str]) -> Any:
        if job.id in job_ids and not dropped:
            dropped.append(job.id)
            raise redis.ConnectionError("Connection closed by server.")
        return real(job_ids)

    monkeypatch.setattr(store, "load_waited", flaky)
    waiting = kickq.wait(job.id, timeout=10)
    wait_until(lambda: dropped, timeout=5, what="the wait's re-read to hit the dropped connection")
    kickq.process("recheck", lambda job, data: data)
    assert waiting.result(15).result == "x"


# -- Redis out of memory ----------------------------------------------------------------------


def test_out_of_memory_fails_create_and_leaves_no_half_job(tmp_path: pathlib.Path) -> None:
    """With Redis at maxmemory (noeviction), create() fails with an OOM error and every record
    left is whole and indexed; once memory is back, creating works again."""
    server = RedisServer(tmp_path / "oom").start()
    client = server.client()
    try:
        kickq.reset()
        kickq.config(redis_url=server.url)
        kickq.create("big", "warm-up", delay=3600).result(5)  # scripts loaded, engine up
        used = int(client.info("memory")["used_memory"])
        client.config_set("maxmemory-policy", "noeviction")
        client.config_set("maxmemory", used + 300_000)
        payload = "x" * 8_000
        futures = [
            kickq.create("big", {"n": i, "pad": payload}, delay=(i % 2) * 3600) for i in range(100)
        ]
        results = [outcome(future, 10) for future in futures]
        errors = [result for result in results if isinstance(result, BaseException)]
        assert errors, "100 x 8 kB must not fit in 300 kB"
        assert any(isinstance(result, kickq.Job) for result in results)
        # a documented kickq error (it used to be redis-py's own OutOfMemoryError)
        assert all(isinstance(exc, kickq.RedisUnavailable) for exc in errors), errors[0]
        assert all("oom" in str(exc).lower() or "memory" in str(exc).lower() for exc in errors), (
            errors[0]
        )

        keys = job_keys(client)
        saved = {result.id for result in results if isinstance(result, kickq.Job)}
        assert {key.split(":")[-1] for key in keys} >= saved
        assert len(keys) == len(saved) + 1  # the warm-up, and no job of a failed create
        for key in keys:
            missing = RECORD_FIELDS - set(client.hkeys(key))
            assert not missing, (key, missing)
        assert job_ids_in_indexes(client) == {key.split(":")[-1] for key in keys}

        client.config_set("maxmemory", 0)
        again = kickq.create("big", "after").result(5)
        assert client.hget(f"{NS}:job:{again.id}", "state") == "queued"
    finally:
        client.close()
        kickq.reset()
        server.stop()


def script_calls(client: redis.Redis) -> int:
    stats = client.info("commandstats")
    return sum(
        int(stats.get(f"cmdstat_{name}", {}).get("calls", 0)) for name in ("evalsha", "eval")
    )


def test_a_run_ending_while_redis_is_out_of_memory_is_kept_and_runs_once(
    tmp_path: pathlib.Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A run that finishes while Redis refuses writes (OOM) is kept and its end sent again once
    Redis takes it: the job succeeds after one run. Meanwhile no loop spins (a few script
    calls a second, not thousands) and the failure is logged once, not at every retry."""
    server = RedisServer(tmp_path / "oom").start()
    client = server.client()
    release = threading.Event()
    try:
        kickq.reset()
        kickq.config(redis_url=server.url)
        caplog.set_level(logging.INFO, logger="kickq")
        kickq.process("oom", lambda job, data: data if release.wait(30) else None)
        kickq.process("oom-later", lambda job, data: data)
        job = kickq.create("oom", "kept").result(5)
        wait_until(lambda: client.hget(f"{NS}:job:{job.id}", "state") == "processing")
        later = kickq.create("oom-later", "due during the outage", delay=0.3).result(5)
        client.config_set("maxmemory-policy", "noeviction")
        client.config_set("maxmemory", 1)  # every write refused from now on
        refused = kickq.create("oom", "refused")
        assert isinstance(outcome(refused, 10), kickq.RedisUnavailable)
        release.set()
        caplog.clear()
        before = script_calls(client)
        pace(3.0)  # a window to count the calls in (the waits below are bounded polls)
        calls = script_calls(client) - before
        assert calls < 60, f"{calls} script calls in 3 s while Redis refused writes"
        problems = [r for r in caplog.records if r.levelno >= logging.WARNING]
        assert len(problems) <= 4, [r.getMessage() for r in problems]
        assert client.hget(f"{NS}:job:{job.id}", "state") == "processing"

        client.config_set("maxmemory", 0)
        done = kickq.wait(job.id, timeout=10).result(15)
        assert done.result == "kept" and [run.state for run in done.runs] == ["success"]
        assert kickq.wait(later.id, timeout=10).result(15).result == "due during the outage"
    finally:
        release.set()
        client.close()
        kickq.reset()
        server.stop()


# -- handlers that misbehave ------------------------------------------------------------------


def test_handler_blocking_forever_ghosts_and_the_worker_goes_on() -> None:
    """A handler stuck forever ghosts after process_timeout, is re-run at once with
    ghost_interval=0, and meanwhile its worker's only slot serves other jobs."""
    release = threading.Event()
    stuck_runs: list[int] = []

    def handler(job: kickq.Job, data: Any) -> Any:
        if data == "stuck":
            stuck_runs.append(len(job.runs))
            release.wait(60)
            return "late"
        return data

    try:
        kickq.process("hang", handler, concurrent_jobs=1)
        stuck = kickq.create(
            "hang", "stuck", process_timeout=0.5, ghost_interval=0, ghost_count=1
        ).result(5)
        wait_until(lambda: stuck_runs, timeout=10, what="the stuck run to start")
        others = [kickq.create("hang", i).result(5) for i in range(5)]
        for other in others:
            assert kickq.wait(other.id, timeout=10).result(15).result == other.data
        with pytest.raises(kickq.JobFailed) as failed:
            kickq.wait(stuck.id, timeout=10).result(15)
        assert stuck_runs == [1, 2]
        assert [run.state for run in failed.value.job.runs] == ["ghost", "ghost"]
        release.set()
        marker = kickq.create("hang", "marker").result(5)
        kickq.wait(marker.id, timeout=10).result(15)
        final = kickq.get(stuck.id).result(5)
        assert final.state == "fail" and final.result is None  # the late returns changed nothing
    finally:
        release.set()


BASE_EXCEPTIONS = [KeyboardInterrupt, SystemExit, GeneratorExit]


@pytest.mark.parametrize("error", BASE_EXCEPTIONS)
def test_thread_handler_raising_base_exception_fails_only_that_run(
    error: type[BaseException],
) -> None:
    """A plain handler raising KeyboardInterrupt, SystemExit or GeneratorExit fails that run
    only: the job is retried and succeeds, and the worker serves the next job."""

    def handler(job: kickq.Job, data: str) -> str:
        if data == "boom" and len(job.runs) == 1:
            raise error()
        return data

    kickq.process("rude", handler)
    boom = kickq.create("rude", "boom", retry=True, retry_count=1, retry_interval=0).result(5)
    done = kickq.wait(boom.id, timeout=8).result(12)
    assert [run.state for run in done.runs] == ["fail", "success"]
    assert done.runs[0].error == error.__name__
    after = kickq.create("rude", "after").result(5)
    assert kickq.wait(after.id, timeout=8).result(12).result == "after"


RUDE_COROUTINE = """
import asyncio, builtins, json, sys
import kickq

error = getattr(builtins, sys.argv[1])

async def handler(job, data):
    await asyncio.sleep(0)
    if data == "boom" and len(job.runs) == 1:
        raise error()
    return data

def outcome(job_id):
    try:
        done = kickq.wait(job_id, timeout=3).result(8)
        return [[run.state.value, run.error] for run in done.runs]
    except Exception as exc:
        return type(exc).__name__

kickq.process("rude", handler)
boom = kickq.create("rude", "boom", retry=True, retry_count=1, retry_interval=0).result(5)
report = {"boom": outcome(boom.id)}
report["after"] = outcome(kickq.create("rude", "after").result(5).id)
print(json.dumps(report), flush=True)
"""


@pytest.mark.parametrize("error", BASE_EXCEPTIONS)
def test_coroutine_handler_raising_base_exception_fails_only_that_run(
    error: type[BaseException], subprocess_env: dict[str, str]
) -> None:
    """A coroutine handler raising KeyboardInterrupt, SystemExit or GeneratorExit fails that run
    only: the job is retried and succeeds, and the next job runs (in a child process, so that a
    dead event loop cannot take the test session with it)."""
    child = subprocess.run(
        [sys.executable, "-c", RUDE_COROUTINE, error.__name__],
        env=subprocess_env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert child.returncode == 0, child.stderr[-2000:]
    report = json.loads(child.stdout.strip().splitlines()[-1])
    assert report["boom"] == [["fail", error.__name__], ["success", None]], child.stderr[-2000:]
    assert report["after"] == [["success", None]]


# -- bad data at rest -------------------------------------------------------------------------


def corrupt(client: redis.Redis, key: str, how: str) -> None:
    if how == "bad-json":
        client.hset(key, "data", "not json{")
    elif how.startswith("no-"):
        client.hdel(key, how[3:])
    elif how == "string":
        client.delete(key)
        client.set(key, "not a hash")
    else:
        raise AssertionError(how)


DAMAGE = [
    pytest.param("queued", "bad-json"),
    pytest.param("queued", "no-data"),
    pytest.param("queued", "no-name"),
    pytest.param("queued", "no-state"),
    pytest.param("queued", "string"),
    pytest.param("delayed", "bad-json"),
    pytest.param("delayed", "string"),
]


@pytest.mark.parametrize(("where", "how"), DAMAGE)
def test_damaged_record_is_set_aside_and_the_worker_goes_on(
    r: redis.Redis, caplog: pytest.LogCaptureFixture, where: str, how: str
) -> None:
    """A record corrupted by hand while waiting to run: a good job behind it still runs, the bad
    one is moved to <ns>:damaged:<id>, and an ERROR naming it is logged."""
    caplog.set_level(logging.ERROR, logger="kickq")
    delay = 0.3 if where == "delayed" else None
    bad = kickq.create("fragile", "bad", delay=delay).result(5)
    key = f"{NS}:job:{bad.id}"
    corrupt(r, key, how)
    good = kickq.create("fragile", "good", delay=delay).result(5)
    kickq.process("fragile", lambda job, data: data)

    assert kickq.wait(good.id, timeout=8).result(12).result == "good"

    aside = f"{NS}:damaged:{bad.id}"
    wait_until(lambda: r.exists(aside), timeout=3, what="the damaged record to be set aside")
    assert not r.exists(key) and bad.id not in job_ids_in_indexes(r)
    if how == "string":
        assert r.get(aside) == "not a hash"  # kept as it was, for a human to look at
    else:
        assert r.hget(aside, "damaged_error") and r.hget(aside, "create_time")
    wait_until(
        lambda: [
            rec
            for rec in caplog.records
            if rec.levelno >= logging.ERROR and bad.id in rec.getMessage()
        ],
        timeout=3,
        what="an ERROR log naming the damaged job",
    )
    after = kickq.create("fragile", "after").result(5)
    assert kickq.wait(after.id, timeout=8).result(12).result == "after"
