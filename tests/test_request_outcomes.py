"""The exact outcome of every create, whatever happens to its reply: script calls are sent once,
a create whose reply was lost is settled by its job's id (saved, or fenced and failed), and a
stall shorter than the read timeout is a slow reply.
"""

from __future__ import annotations

import pathlib
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import redis

import kickq
import kickq._engine.runtime
from kickq._model import clock, lifecycle
from kickq._redis.outage import Unanswered
from support import RedisServer, outcome, wait_until

pytestmark = pytest.mark.both_parsers

NS = "kickq"
SHORT = 0.3  # a read timeout the tests' stalls outlast: the create's reply is lost


@pytest.fixture
def server(tmp_path: pathlib.Path) -> Iterator[RedisServer]:
    """A persistent (appendfsync always) redis-server of the test's own that obeys DEBUG."""
    started = RedisServer(
        tmp_path / "redis", True, "--enable-debug-command", "yes", "--slowlog-max-len", "10000"
    ).start()
    kickq.reset()
    try:
        yield started
    finally:
        kickq.reset()
        started.stop()


def records(client: redis.Redis, name: str) -> dict[str, str]:
    """The stored jobs of `name`: id -> data."""
    found = {}
    for key in client.scan_iter(f"{NS}:job:*", count=1000):
        if client.hget(key, "name") == name:
            found[key.rsplit(":", 1)[1]] = client.hget(key, "data")
    return found


def fences(client: redis.Redis) -> set[str]:
    """The ids fenced: their lost create can never save them."""
    return set(client.zrange(f"{NS}:fenced", 0, -1))


def stall(server: RedisServer, seconds: float) -> threading.Thread:
    """Redis busy for `seconds` (DEBUG SLEEP), from a thread of its own; returns once Redis is
    asleep (a PING from another connection then goes unanswered)."""
    sleeper = threading.Thread(
        target=lambda: server.client().execute_command("DEBUG", "SLEEP", seconds), daemon=True
    )
    sleeper.start()

    def asleep() -> bool:
        probe = redis.Redis(port=server.port, socket_timeout=0.2, retry=None)
        try:
            probe.ping()
        except (redis.TimeoutError, redis.ConnectionError):  # a timeout, while connecting too
            return True
        finally:
            probe.close()
        return False

    wait_until(asleep, timeout=5, what="Redis to sleep")
    return sleeper


def create_sends(client: redis.Redis) -> int:
    """How many times create.lua was sent since the slow log was reset: every command is
    logged (slowlog-log-slower-than 0), its script named by its SHA."""
    sha = kickq._engine.runtime.get().store._create.sha
    return sum(1 for command in logged(client) if command.split()[:2] == ["EVALSHA", sha])


def logged(client: redis.Redis) -> list[str]:
    """The commands of the slow log (redis-py gives them as bytes)."""
    return [
        command.decode() if isinstance(command, bytes) else str(command)
        for command in (entry["command"] for entry in client.slowlog_get(10000))
    ]


def settles(client: redis.Redis) -> int:
    """How many times settle.lua was sent since the slow log was reset (EVAL the first time)."""
    sha = kickq._engine.runtime.get().store._settle.sha
    return sum(
        1 for command in logged(client) if command.startswith(("EVAL -- settle:", f"EVALSHA {sha}"))
    )


def watch_sends(client: redis.Redis) -> None:
    kickq.create("warm").result(10)  # the script is loaded: every create is an EVALSHA
    client.config_set("slowlog-log-slower-than", 0)
    client.slowlog_reset()


# -- a SIGKILL mid-batch ------------------------------------------------------------------


def test_create_many_with_redis_killed_mid_batch_settles_every_future_exactly(
    server: RedisServer,
) -> None:
    """10,000 jobs in one create_many, Redis SIGKILLed once the first are stored (AOF, fsync
    always), restarted: a future resolves if and only if its job is stored; the jobs whose
    future failed are absent, and fenced so that they stay absent."""
    kickq.config(redis_url=server.url)
    kickq.create("warm").result(10)
    watcher = server.client()

    def kill_once_some_are_stored() -> None:
        while True:
            try:
                if watcher.zcard(f"{NS}:queue:{{many}}") > 0:
                    break
            except redis.RedisError:
                pass
        server.stop(kill=True)

    killer = threading.Thread(target=kill_once_some_are_stored)
    killer.start()
    futures = kickq.create_many("many", list(range(10_000)))
    killer.join(30)
    assert not killer.is_alive()
    engine = kickq._engine.runtime.get()

    def down_noticed() -> bool:  # the batch failed: its creates wait to be settled, or failed
        settler = getattr(engine, "settler", None)
        return any(f.done() for f in futures) or (settler is not None and settler.pending() > 0)

    wait_until(down_noticed, timeout=30, what="the batch to fail")
    server.start()

    results = [outcome(future, 60) for future in futures]
    client = server.client()
    stored = records(client, "many")
    resolved = {job.id: job.data for job in results if isinstance(job, kickq.Job)}
    failed = [error for error in results if not isinstance(error, kickq.Job)]
    assert all(isinstance(error, kickq.RedisUnavailable) for error in failed), failed[:3]
    assert {job_id: int(data) for job_id, data in stored.items()} == resolved
    assert len(resolved) + len(failed) == 10_000
    # each failed create whose call was sent is fenced: it cannot be saved later
    assert len(fences(client)) <= len(failed)
    assert not fences(client) & set(stored)
    every_job = set(client.scan_iter(f"{NS}:job:*", count=1000))
    assert every_job == {f"{NS}:job:{job_id}" for job_id in [*stored, *records(client, "warm")]}
    queued = client.zrange(f"{NS}:queue:{{many}}", 0, -1)
    assert set(queued) == set(resolved)


# -- a stall -------------------------------------------------------------------------------


def test_a_stall_shorter_than_the_read_timeout_is_a_slow_reply(server: RedisServer) -> None:
    """With kickq's read timeout, a Redis busy for 1.5 s answers the create late: sent once,
    no settle, the job saved."""
    kickq.config(redis_url=server.url)
    client = server.client()
    watch_sends(client)
    sleeper = stall(server, 1.5)
    job = outcome(kickq.create("slow", "data"))
    sleeper.join(10)
    assert isinstance(job, kickq.Job)
    assert records(client, "slow") == {job.id: '"data"'}
    assert create_sends(client) == 1
    settle_sha = kickq._engine.runtime.get().store._settle.sha
    assert not [command for command in logged(client) if settle_sha in command]


@pytest.mark.parametrize("kind", ["plain", "delayed", "unique", "hotjob", "many"])
def test_a_lost_reply_is_settled_as_saved_and_the_call_was_sent_once(
    server: RedisServer, kind: str
) -> None:
    """A read timeout shorter than a stall loses the create's reply; the call is not sent
    again, and the create is settled by its id: saved, as a normal create resolves."""
    kickq.config(redis_url=server.url, redis_options={"socket_timeout": SHORT})
    client = server.client()
    watch_sends(client)
    options: dict[str, Any] = {
        "plain": {},
        "delayed": {"delay": 0.5},
        "unique": {"unique_key": "only"},
        "hotjob": {"hotjob": True, "hotjob_timeout": 30},
        "many": {},
    }[kind]
    sleeper = stall(server, 1.5)
    if kind == "many":
        futures = kickq.create_many("stalled", [1, 2, 3], options)
    else:
        futures = [kickq.create("stalled", 1, options)]
    jobs = [outcome(future) for future in futures]
    sleeper.join(10)
    assert all(isinstance(job, kickq.Job) for job in jobs), jobs
    assert create_sends(client) == 1
    assert settles(client) >= 1  # the reply was lost, the create settled
    stored = records(client, "stalled")
    assert set(stored) == {job.id for job in jobs}
    assert not fences(client)
    if kind == "delayed":
        assert jobs[0].state == "delayed"
    if kind == "unique":  # the saved job holds the key: a second create answers with it
        again = kickq.create("stalled", 2, options).result(10)
        assert again.id == jobs[0].id
    kickq.process("stalled", lambda job, data: data * 10)
    if kind == "hotjob":
        assert jobs[0].hotjob_future is not None
        assert jobs[0].hotjob_future.result(15).result == 10
    for job in jobs:
        assert kickq.wait(job.id, timeout=15).result(20).state == "success"


def test_a_lost_create_that_redis_never_ran_fails_and_is_fenced(server: RedisServer) -> None:
    """Writes paused (CLIENT PAUSE WRITE) past the read timeout: the create's reply is lost
    and Redis drops the call with its connection. The settle finds no record, fences the id
    and fails the future with RedisUnavailable; the hotjob's wait ends too."""
    kickq.config(redis_url=server.url, redis_options={"socket_timeout": SHORT})
    client = server.client()
    watch_sends(client)
    client.execute_command("CLIENT", "PAUSE", 1500, "WRITE")
    future = kickq.create("dropped", 1, hotjob=True, hotjob_timeout=30)
    error = outcome(future)
    assert isinstance(error, kickq.RedisUnavailable)
    assert "nothing was stored" in str(error)
    assert records(client, "dropped") == {}
    assert len(fences(client)) == 1
    assert client.zcard(f"{NS}:queue:{{dropped}}") == 0


def test_a_fenced_create_never_saves_its_job(server: RedisServer) -> None:
    """The lost call reaching Redis after its settle (bytes late on the wire) saves nothing."""
    kickq.config(redis_url=server.url)
    store = kickq._engine.runtime.get().store
    change = lifecycle.create(store.new_id("late"), "late", 1, {}, clock.now(), None)
    assert store.run(store.settle_call([change.job.id])) == [0]
    assert store.run(store.settle_call([change.job.id])) == [0]  # settling twice: the same
    assert store.run(store.create_call([change], ["1"])) == [-1]
    client = server.client()
    assert records(client, "late") == {}
    assert client.zcard(f"{NS}:queue:{{late}}") == 0
    assert fences(client) == {change.job.id}
    assert 0 < client.ttl(f"{NS}:fenced") <= 3600  # the set goes once its fences have ended
    other = lifecycle.create(store.new_id("late"), "late", 2, {}, clock.now(), None)
    assert store.run(store.create_call([other], ["2"])) == [1]  # only fenced ids are refused


def test_reset_while_a_settle_waits_cancels_the_create(server: RedisServer) -> None:
    """kickq.reset() with a create still unsettled (Redis paused) cancels its future at once."""
    kickq.config(redis_url=server.url, redis_options={"socket_timeout": SHORT})
    client = server.client()
    kickq.create("warm").result(10)
    client.execute_command("CLIENT", "PAUSE", 10_000, "WRITE")
    try:
        future = kickq.create("unsettled", 1)
        settler = kickq._engine.runtime.get().settler
        wait_until(lambda: settler.pending() > 0 or future.done(), timeout=10, what="a settle")
        assert not future.done()
        kickq.reset()
        assert future.cancelled()
    finally:
        client.execute_command("CLIENT", "UNPAUSE")


# -- sent once, or not at all ---------------------------------------------------------------


def test_run_batch_raises_unanswered_only_after_the_send(server: RedisServer) -> None:
    """A batch whose reply is lost raises Unanswered; one that cannot connect raises another
    connection error (nothing was sent)."""
    kickq.config(redis_url=server.url, redis_options={"socket_timeout": SHORT})
    store = kickq._engine.runtime.get().store
    kickq.create("warm").result(10)
    change = lifecycle.create(store.new_id("x"), "x", 1, {}, clock.now(), None)
    sleeper = stall(server, 1.0)
    with pytest.raises(Unanswered):
        store.run_batch([store.create_call([change], ["1"])])
    sleeper.join(10)
    server.stop()
    with pytest.raises(redis.ConnectionError) as raised:
        store.run_batch([store.create_call([change], ["1"])])
    assert not isinstance(raised.value, Unanswered)


def test_a_create_refused_by_redis_stores_nothing_and_is_not_settled(
    server: RedisServer,
) -> None:
    """An error reply (a key of the wrong type) fails that create alone: nothing stored."""
    kickq.config(redis_url=server.url)
    client = server.client()
    client.set(f"{NS}:queue:{{bad}}", "not a zset")
    futures = [kickq.create("bad", 1), kickq.create("good", 2)]
    error, job = outcome(futures[0]), outcome(futures[1])
    assert isinstance(error, redis.ResponseError) and "not a zset" in str(error)
    assert isinstance(job, kickq.Job)
    assert records(client, "bad") == {} and not fences(client)
    assert kickq._engine.runtime.get().settler.pending() == 0


# -- a lone create, written from the caller's thread ------------------------------------------


def test_a_lone_create_is_written_from_the_callers_thread(
    server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Sequential creates on an idle dispatcher are written by the thread that calls create():
    the dispatcher only reads the reply. Each is saved once, as usual."""
    kickq.config(redis_url=server.url)
    kickq.create("warm").result(10)  # a connection of the pool is now idle and connected
    store = kickq._engine.runtime.get().store
    writes: list[tuple[str, bool]] = []
    write = store.write

    def recorded(calls: Any) -> Any:
        written = write(calls)
        writes.append((threading.current_thread().name, written is not None))
        return written

    monkeypatch.setattr(store, "write", recorded)
    jobs = [kickq.create("lone", i).result(10) for i in range(20)]
    assert sum(1 for thread, wrote in writes if wrote and thread == "MainThread") > 10, writes
    stored = records(server.client(), "lone")
    assert stored == {job.id: str(i) for i, job in enumerate(jobs)}


def test_creates_issued_together_still_leave_together(
    server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Creates queued while the dispatcher is busy go out in batches, not one by one."""
    kickq.config(redis_url=server.url)
    kickq.create("warm").result(10)
    store = kickq._engine.runtime.get().store
    sizes: list[int] = []
    run_batch = store.run_batch

    def recorded(calls: Any) -> Any:
        sizes.append(len(calls))
        return run_batch(calls)

    monkeypatch.setattr(store, "run_batch", recorded)
    futures = [kickq.create("together", i) for i in range(200)]
    jobs = [future.result(10) for future in futures]
    assert max(sizes) > 1, sizes
    assert len(records(server.client(), "together")) == len(jobs) == 200


def test_reset_while_a_lone_create_waits_for_its_reply_cancels_it(server: RedisServer) -> None:
    """reset() with a lone create written and Redis not answering (writes paused) returns at
    once and cancels the create's future."""
    kickq.config(redis_url=server.url)
    client = server.client()
    kickq.create("warm").result(10)
    client.execute_command("CLIENT", "PAUSE", 10_000, "WRITE")
    try:
        future = kickq.create("paused", 1)
        wait_until(lambda: paused_clients(client) > 0, timeout=5, what="the create to be held")
        kickq.reset()
        assert future.cancelled()
    finally:
        client.execute_command("CLIENT", "UNPAUSE")


def paused_clients(client: redis.Redis) -> int:
    """Clients whose command CLIENT PAUSE holds back (blocked, flag b)."""
    return sum(1 for entry in client.client_list() if "b" in entry["flags"])


def test_the_read_timeout_is_kickqs_unless_the_user_sets_one(server: RedisServer) -> None:
    """kickq reads with a 30 s timeout (redis-py's own is 5 s); redis_options still win."""
    kickq.config(redis_url=server.url)
    pool = kickq._engine.runtime.get().client.connection_pool  # type: ignore[union-attr]
    assert pool.connection_kwargs["socket_timeout"] == 30
    assert pool.connection_kwargs["socket_keepalive"] is True
    kickq.reset()
    kickq.config(redis_url=server.url, redis_options={"socket_timeout": 2.5})
    pool = kickq._engine.runtime.get().client.connection_pool  # type: ignore[union-attr]
    assert pool.connection_kwargs["socket_timeout"] == 2.5


@pytest.mark.skipif(
    not hasattr(redis.ConnectionPool, "ensure_connection"),
    reason="redis-py before 8.2 calls connect() (a no-op then) on each connection it hands out, "
    "and reopens a pool's connections on whichever thread asks first",
)
def test_a_lone_create_never_connects_on_the_callers_thread(
    server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After a restart of Redis the pool's idle connections are closed: a create then goes
    the usual way, the dispatcher connecting, not the caller's thread."""
    kickq.config(redis_url=server.url)
    kickq.create("warm").result(10)
    pool = kickq._engine.runtime.get().client.connection_pool  # type: ignore[union-attr]
    connects: list[str] = []
    connect = pool.connection_class.connect

    def recorded(self: Any) -> None:
        if self in pool._in_use_connections:  # kickq's, not a test client's
            connects.append(threading.current_thread().name)
        connect(self)

    monkeypatch.setattr(pool.connection_class, "connect", recorded)
    server.restart()
    job = kickq.create("after", 1).result(10)
    assert "MainThread" not in connects, connects
    assert "kickq-dispatcher" in connects
    assert records(server.client(), "after") == {job.id: "1"}
